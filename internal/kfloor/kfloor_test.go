package kfloor

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

// TestCheckHost runs the probes on this host's kernel, which is above the
// floor: they must pass.
func TestCheckHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the probes load BPF programs and maps")
	}
	if err := Check("the test"); err != nil {
		t.Fatalf("Check on %s: %v", Release(), err)
	}
}

func TestTooOld(t *testing.T) {
	err := tooOld("the guard", "the bpf_loop helper (5.17)", fmt.Errorf("probe: %w", ebpf.ErrNotSupported))
	if !errors.Is(err, ErrTooOld) {
		t.Fatalf("%v does not wrap ErrTooOld", err)
	}
	for _, want := range []string{"the guard needs Linux " + Min + " or later", Release(), "lacks the bpf_loop helper (5.17)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
	// A probe that failed for another reason is not "too old".
	other := tooOld("the sensor", "the BPF ring buffer (5.8)", errors.New("operation not permitted"))
	if errors.Is(other, ErrTooOld) || !strings.Contains(other.Error(), "operation not permitted") {
		t.Errorf("another failure reads %q", other)
	}
}
