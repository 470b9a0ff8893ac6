// Package kfloor holds the oldest kernel kmodguard's BPF programs run on,
// and the check that says, below it, what is missing.
//
// Both the sensor and the guard hash module images and walk their ELF
// sections with bpf_loop (helper 181, Linux 5.17), and send records through
// the BPF ring buffer (5.8). Those are the floor. Kernels before 5.11 also
// charge BPF maps to RLIMIT_MEMLOCK, which Check lifts first, so that a
// probe refused for locked memory is not taken for a missing feature.
package kfloor

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Min is the oldest kernel release kmodguard supports.
const Min = "5.17"

// ErrTooOld is wrapped by Check's error on a kernel below Min.
var ErrTooOld = errors.New("kernel too old for kmodguard")

// Check lifts the locked-memory limit for BPF maps and probes what every
// kmodguard BPF program needs. what names the caller ("the sensor", "the
// guard") in the error, which names the running release and what it lacks.
func Check(what string) error {
	// Harmless from 5.11 on, where maps are charged to the memory cgroup.
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("%s: lift the locked-memory limit for BPF maps: %w", what, err)
	}
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		return tooOld(what, "the BPF ring buffer (5.8)", err)
	}
	if err := features.HaveProgramHelper(ebpf.RawTracepoint, asm.FnLoop); err != nil {
		return tooOld(what, "the bpf_loop helper (5.17)", err)
	}
	return nil
}

func tooOld(what, missing string, err error) error {
	if !errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("%s: probe for %s: %w", what, missing, err)
	}
	return fmt.Errorf("%w: %s needs Linux %s or later, and this kernel (%s) lacks %s",
		ErrTooOld, what, Min, Release(), missing)
}

// Release is the running kernel's release (uname -r), or "unknown".
func Release() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}
