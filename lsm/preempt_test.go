//go:build linux

package lsm

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// TestSkipsBusy: kallsyms decides whether the trampoline skips a running
// LSM program (6.2's bpf_trampoline_enter, or only the counting
// __bpf_prog_enter before it); without either, the release does.
func TestSkipsBusy(t *testing.T) {
	dir := t.TempDir()
	old := kallsymsPath
	t.Cleanup(func() { kallsymsPath = old })
	for _, tc := range []struct {
		name, kallsyms, release string
		want                    bool
		from                    string
	}{
		{"6.1", "ffffffff81234560 T __bpf_prog_enter\nffffffff81234600 T __bpf_prog_exit\n", "6.1.0-57-amd64", true, "kallsyms"},
		{"6.12", "ffffffff81234560 t __bpf_prog_enter\nffffffff81234580 t __bpf_prog_enter_recur\nffffffff81234700 T bpf_trampoline_enter\n", "6.12.118+deb12-cloud-amd64", false, "kallsyms"},
		{"backport", "0000000000000000 T bpf_trampoline_enter\n", "6.1.0-99-amd64", false, "kallsyms"},
		{"no symbols, old", "", "6.1.0-57-amd64", true, "release"},
		{"no symbols, new", "", "6.12.118", false, "release"},
		{"no symbols, unreadable release", "", "weird", true, "release"},
	} {
		p := filepath.Join(dir, tc.name)
		if err := os.WriteFile(p, []byte(tc.kallsyms), 0o600); err != nil {
			t.Fatal(err)
		}
		kallsymsPath = p
		got, from := skipsBusy(tc.release)
		if got != tc.want || from != tc.from {
			t.Errorf("%s: skipsBusy = %v from %s; want %v from %s", tc.name, got, from, tc.want, tc.from)
		}
	}
}

// TestPreemptModel: debugfs wins; without it, uname -v, preempt= and the
// configuration's default.
func TestPreemptModel(t *testing.T) {
	dir := t.TempDir()
	olds := []string{preemptDebugPath, cmdlinePath, bootConfigDir}
	t.Cleanup(func() { preemptDebugPath, cmdlinePath, bootConfigDir = olds[0], olds[1], olds[2] })
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bootConfigDir = dir
	write("config-6.1.0-57-amd64", "CONFIG_PREEMPT_BUILD=y\n# CONFIG_PREEMPT_NONE is not set\nCONFIG_PREEMPT_VOLUNTARY=y\nCONFIG_PREEMPT_DYNAMIC=y\n")
	for _, tc := range []struct {
		name, debug, cmdline, version string
		model                         string
		dynamic, preemptible          bool
	}{
		{"debugfs full", "none voluntary (full)\n", "", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3", "full", true, true},
		{"debugfs voluntary", "none (voluntary) full\n", "preempt=full", "#1 SMP PREEMPT_DYNAMIC", "voluntary", true, false},
		{"cmdline", "", "BOOT_IMAGE=/vmlinuz root=/dev/vda preempt=full quiet", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3", "full", true, true},
		{"config default", "", "root=/dev/vda", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3", "voluntary", true, false},
		{"rt", "", "", "#1 SMP PREEMPT_RT Debian 6.1.192-3", "rt", false, true},
		{"static full", "", "", "#1 SMP PREEMPT Thu Jan 1", "full", false, true},
		{"static lazy", "", "", "#1 SMP PREEMPT_LAZY Debian 7.2.13-1", "lazy", false, true},
		{"static voluntary", "", "", "#1 SMP Debian 5.10", "voluntary", false, false},
	} {
		preemptDebugPath = filepath.Join(dir, "nodebug")
		if tc.debug != "" {
			preemptDebugPath = write("preempt-"+tc.name, tc.debug)
		}
		cmdlinePath = write("cmdline-"+tc.name, tc.cmdline)
		model, from, dynamic := preemptModel("6.1.0-57-amd64", tc.version)
		p := Preemption{SkipsBusy: true, Model: model, ModelFrom: from, Dynamic: dynamic}
		if model != tc.model || dynamic != tc.dynamic || p.Preemptible() != tc.preemptible || p.Exposed() != tc.preemptible {
			t.Errorf("%s: model %q from %s, dynamic %v, preemptible %v; want %q, %v, %v", tc.name, model, from, dynamic, p.Preemptible(), tc.model, tc.dynamic, tc.preemptible)
		}
	}
}

// TestMissesFromFdinfo: the misses of the guard's programs come from the
// fdinfo of the descriptors a process holds; link descriptors (prog_id,
// no recursion_misses) do not count, and a program it holds none to is
// an error.
func TestMissesFromFdinfo(t *testing.T) {
	if _, err := os.Stat("/proc/self/fdinfo"); err != nil {
		t.Skip("needs /proc")
	}
	pid := uint32(os.Getpid())
	if _, err := missesFromFdinfo(pid, []LinkStatus{{Hook: "kg_bpf", ProgID: 1 << 30}}); err == nil {
		t.Error("a program this process holds no descriptor to was read")
	}
	ms, err := missesFromFdinfo(pid, nil)
	if err != nil || len(ms) != 0 {
		t.Errorf("no links: %v, %v", ms, err)
	}
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SocketFilter, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		t.Skipf("needs BPF program loading (root): %v", err)
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	ms, err = missesFromFdinfo(pid, []LinkStatus{{Hook: "kg_bpf", ProgID: uint32(id)}})
	if err != nil || len(ms) != 1 || ms[0].ProgID != uint32(id) || ms[0].Misses != 0 {
		t.Errorf("a program held here: %+v, %v; want its 0 misses", ms, err)
	}
}
