//go:build linux && arm

// Command aarch32mod is a 32-bit ARM (aarch32) program for the sensor's
// guest tests on arm64 (bpf.TestVMArm64): it makes the module syscalls
// through their ARM EABI numbers (arch/arm/tools/syscall.tbl), which differ
// from arm64's, and the three calls whose ARM numbers are arm64's module
// numbers, which the sensor must not report. It is built on the host with
// GOOS=linux GOARCH=arm GOARM=7 CGO_ENABLED=0 and run in the guest by the
// compat support of arm64 kernels (CONFIG_COMPAT).
//
// Usage: aarch32mod IMAGE
//
// In order: the decoys (getitimer 105, stat 106, pciconfig_write 273), then
// init_module of IMAGE with params numdummies=1, delete_module of dummy,
// finit_module of IMAGE with params numdummies=2, delete_module of dummy
// again, and the decoys once more. It prints one JSON object with its
// thread id, the fd given to finit_module, and every result (the return
// value, or minus the errno), and exits non-zero on a bad argument only:
// the caller judges the results.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"unsafe"
)

// ARM EABI syscall numbers.
const (
	nrInitModule   = 128
	nrDeleteModule = 129
	nrFinitModule  = 379
	// arm64's init_module, delete_module and finit_module numbers, which
	// are other syscalls here.
	nrGetitimer      = 105
	nrStat           = 106
	nrPciconfigWrite = 273
)

// Results is what aarch32mod prints.
type Results struct {
	Tid         int      `json:"tid"`
	FD          int      `json:"fd"`
	Decoys      [6]int64 `json:"decoys"`
	Init        int64    `json:"init_module"`
	DeleteInit  int64    `json:"delete_module_after_init"`
	Finit       int64    `json:"finit_module"`
	DeleteFinit int64    `json:"delete_module_after_finit"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "aarch32mod:", err)
		os.Exit(2)
	}
}

func call(nr uintptr, a0, a1, a2 uintptr) int64 {
	r, _, errno := syscall.Syscall(nr, a0, a1, a2)
	if errno != 0 {
		return -int64(errno)
	}
	return int64(int32(r))
}

func ptr(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

func run() error {
	if len(os.Args) != 2 {
		return fmt.Errorf("usage: aarch32mod IMAGE")
	}
	// Every call from one thread, whose id the caller matches.
	runtime.LockOSThread()
	img, err := os.ReadFile(os.Args[1])
	if err != nil {
		return err
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		return err
	}
	defer f.Close()
	params1 := []byte("numdummies=1\x00")
	params2 := []byte("numdummies=2\x00")
	name := []byte("dummy\x00")
	root := []byte("/\x00")
	buf := make([]byte, 256)

	decoys := func(d []int64) {
		// getitimer(ITIMER_REAL, buf), stat("/", buf), pciconfig_write(0, 0, 0).
		d[0] = call(nrGetitimer, 0, ptr(buf), 0)
		d[1] = call(nrStat, ptr(root), ptr(buf), 0)
		d[2] = call(nrPciconfigWrite, 0, 0, 0)
	}
	r := Results{Tid: syscall.Gettid(), FD: int(f.Fd())}
	decoys(r.Decoys[:3])
	r.Init = call(nrInitModule, ptr(img), uintptr(len(img)), ptr(params1))
	r.DeleteInit = call(nrDeleteModule, ptr(name), syscall.O_NONBLOCK, 0)
	r.Finit = call(nrFinitModule, f.Fd(), ptr(params2), 0)
	r.DeleteFinit = call(nrDeleteModule, ptr(name), syscall.O_NONBLOCK, 0)
	decoys(r.Decoys[3:])
	return json.NewEncoder(os.Stdout).Encode(r)
}
