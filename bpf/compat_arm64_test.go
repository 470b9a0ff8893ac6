//go:build arm64

package bpf

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/internal/vmtest"
)

func init() { guestCompat = guestAarch32 }

// aarch32Results mirrors what bpf/internal/aarch32mod prints.
type aarch32Results struct {
	Tid         int      `json:"tid"`
	FD          int      `json:"fd"`
	Decoys      [6]int64 `json:"decoys"`
	Init        int64    `json:"init_module"`
	DeleteInit  int64    `json:"delete_module_after_init"`
	Finit       int64    `json:"finit_module"`
	DeleteFinit int64    `json:"delete_module_after_finit"`
}

// guestAarch32 runs aarch32mod, a 32-bit ARM program that loads and unloads
// img through init_module and finit_module with the ARM EABI numbers (128,
// 379, 129), and makes getitimer, stat and pciconfig_write, whose ARM
// numbers (105, 106, 273) are arm64's module syscalls. Its four module
// calls must come as four events with their arguments, digest and results,
// and the decoys as none.
func guestAarch32(t *testing.T, c *collector, img []byte) {
	checkNoCompatWrappers(t)
	bin := vmtest.File(t, "aarch32mod")
	path := vmtest.Fixture(t, "dummy")
	cmd := exec.Command(bin, path)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("aarch32mod: %v: %s", err, out)
	}
	var r aarch32Results
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("aarch32mod's output %q: %v", out, err)
	}
	t.Logf("aarch32 caller (pid %d): init_module %d, delete_module %d, finit_module %d, delete_module %d; decoys 105/106/273: %v",
		cmd.Process.Pid, r.Init, r.DeleteInit, r.Finit, r.DeleteFinit, r.Decoys)
	if r.Init != 0 || r.DeleteInit != 0 || r.Finit != 0 || r.DeleteFinit != 0 {
		t.Fatalf("aarch32 module calls did not all succeed: %+v", r)
	}
	if r.Decoys[0] != 0 || r.Decoys[1] != 0 {
		t.Errorf("aarch32 getitimer and stat: %v, want 0 (they are what the ARM table says)", r.Decoys)
	}

	// A native call after the program ended: once its event is in, every
	// event of the program is (one ring buffer, reservation order).
	tid := unix.Gettid()
	const marker = "kg_aarch32_marker"
	_ = unix.DeleteModule(marker, unix.O_NONBLOCK)
	c.wait(t, func(ev *event.Event) bool { return mine(tid, event.DeleteModule)(ev) && ev.Name == marker && !seen(ev) })

	pid := uint32(cmd.Process.Pid)
	c.mu.Lock()
	var got []*event.Event
	for _, ev := range c.events {
		if ev.Pid == pid && !kernelRecord(ev) {
			got = append(got, ev)
		}
	}
	c.mu.Unlock()
	var kinds []string
	for _, ev := range got {
		seen(ev)
		kinds = append(kinds, string(ev.Syscall))
	}
	want := []event.Syscall{event.InitModule, event.DeleteModule, event.FinitModule, event.DeleteModule}
	if len(got) != len(want) {
		t.Fatalf("aarch32 caller: %d events %v, want %v (getitimer 105, stat 106 and pciconfig_write 273 must not show)",
			len(got), kinds, want)
	}
	real, _ := filepath.EvalSymlinks(path)
	for i, ev := range got {
		if ev.Syscall != want[i] || int(ev.Tid) != r.Tid || ev.Res != 0 || ev.Name != "dummy" || ev.Comm != "aarch32mod" ||
			ev.Unreadable || ev.Truncated {
			t.Errorf("aarch32 event %d: %s tid %d (want %d) res %d name %q comm %q unreadable %v truncated %v, want %s of dummy",
				i, ev.Syscall, ev.Tid, r.Tid, ev.Res, ev.Name, ev.Comm, ev.Unreadable, ev.Truncated, want[i])
		}
	}
	if ev := got[0]; ev.SHA256 != sha(img) || ev.Size != uint64(len(img)) || ev.Params != "numdummies=1" || ev.ThisModuleName != "dummy" {
		t.Errorf("aarch32 init_module: sha256 %s (want %s) size %d (want %d) params %q this_module %q",
			ev.SHA256, sha(img), ev.Size, len(img), ev.Params, ev.ThisModuleName)
	}
	if ev := got[2]; ev.SHA256 != sha(img) || ev.FD != int32(r.FD) || ev.Path != real || ev.Params != "numdummies=2" || ev.RawFlags != 0 {
		t.Errorf("aarch32 finit_module: sha256 %s (want %s) fd %d (want %d) path %q (want %q) params %q flags %d",
			ev.SHA256, sha(img), ev.FD, r.FD, ev.Path, real, ev.Params, ev.RawFlags)
	}
	for _, i := range []int{1, 3} {
		if ev := got[i]; strings.Join(ev.Flags, "|") != "O_NONBLOCK" {
			t.Errorf("aarch32 delete_module: flags %v, want O_NONBLOCK", ev.Flags)
		}
	}
}

// checkNoCompatWrappers: arm64's compat syscall table points the aarch32
// module syscalls at the native __arm64_sys_ functions, which is why the
// native fentry programs see aarch32 callers. A kernel with
// __arm64_compat_sys_ wrappers for them would need fentry programs of
// their own: fail then.
func checkNoCompatWrappers(t *testing.T) {
	t.Helper()
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	native := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 {
			continue
		}
		switch fields[2] {
		case "__arm64_sys_init_module", "__arm64_sys_finit_module", "__arm64_sys_delete_module":
			native++
		case "__arm64_compat_sys_init_module", "__arm64_compat_sys_finit_module", "__arm64_compat_sys_delete_module":
			t.Errorf("%s exists: aarch32 callers bypass the native fentry programs", fields[2])
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if native != 3 {
		t.Errorf("found %d of the three __arm64_sys_ module functions in /proc/kallsyms", native)
	}
}
