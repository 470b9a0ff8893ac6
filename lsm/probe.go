//go:build linux

package lsm

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"

	"github.com/kmodguard/kmodguard/internal/kfloor"
)

// lsmFile lists the active LSMs, in order.
const lsmFile = "/sys/kernel/security/lsm"

// ErrNoBPFLSM is wrapped by Supported when BPF LSM is not active.
var ErrNoBPFLSM = errors.New("BPF LSM is not active")

// Supported checks that the running kernel can run the guard: it is at
// least kfloor.Min (the error then wraps kfloor.ErrTooOld and names what is
// missing), BPF LSM programs load, and "bpf" is among the active LSMs. When
// it is not, the error says what to add to the kernel command line.
func Supported() error {
	if err := kfloor.Check("the guard"); err != nil {
		return err
	}
	b, err := os.ReadFile(lsmFile)
	if err != nil {
		return fmt.Errorf("%w: cannot read %s (is securityfs mounted?): %w", ErrNoBPFLSM, lsmFile, err)
	}
	active := strings.TrimSpace(string(b))
	if !hasBPF(active) {
		return fmt.Errorf("%w: the active LSMs are %q; add lsm=%s to the kernel command line and reboot",
			ErrNoBPFLSM, active, withBPF(active))
	}
	if err := features.HaveProgramType(ebpf.LSM); err != nil {
		return fmt.Errorf("%w: the kernel refuses LSM programs: %w", ErrNoBPFLSM, err)
	}
	return nil
}

func hasBPF(list string) bool {
	for _, l := range strings.Split(list, ",") {
		if l == "bpf" {
			return true
		}
	}
	return false
}

// withBPF appends bpf to an LSM list for the lsm= parameter.
func withBPF(list string) string {
	if list == "" {
		return "bpf"
	}
	return list + ",bpf"
}
