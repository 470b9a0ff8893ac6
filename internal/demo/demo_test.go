package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/kmodguard/kmodguard/internal/debkernel"
	"github.com/kmodguard/kmodguard/internal/vmtest"
)

// TestVMDemo runs the demo's scenario as `make demo` does, so that a change
// to the CLI's output or behaviour that breaks a step shows up in make
// vmtest rather than in front of an audience.
func TestVMDemo(t *testing.T) {
	if !vmtest.Enabled() || vmtest.InGuest() {
		t.Skip("boots Debian 6.1 in QEMU: set KMODGUARD_VMTEST=1 (make vmtest)")
	}
	var out bytes.Buffer
	r, err := vmtest.Exec(context.Background(), demoSpec(&out, nil), debkernel.Series61, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("boot %s, demo %s, wall %s", r.Boot, r.Tests, r.Wall)
	if err := r.Err(); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"== Step 6:", "Demo complete"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "UNEXPECTED") {
		t.Errorf("a step did not behave as described:\n%s", out.String())
	}
}
