//go:build linux

package lsm

import (
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

func TestGuardedTargets(t *testing.T) {
	targets, err := guardedTargets()
	if err != nil {
		t.Fatal(err)
	}
	if len(targets) != len(hooks) {
		t.Errorf("%d targets for %d hooks: %v", len(targets), len(hooks), targets)
	}
	for _, fn := range []string{"security_kernel_post_read_file", "security_kernel_post_load_data", "security_bpf", "security_sb_umount"} {
		if !targets[fn] {
			t.Errorf("%s is not among the targets %v", fn, targets)
		}
	}
}

// TestOverridesOnHost lists this host's links, with a tracing link of our
// own among them (tp_btf, whose target resolves in vmlinux BTF like an
// fmod_ret's): none is an override, and the walk must work. The guest
// test enforcer.TestGuestOverrideFound attaches real overrides.
func TestOverridesOnHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN) to open BPF links by id")
	}
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: "sys_enter", License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		t.Skipf("tp_btf program refused here (%v): the walk is tested in the guests", err)
	}
	defer p.Close()
	l, err := link.AttachTracing(link.TracingOptions{Program: p})
	if err != nil {
		t.Skipf("tp_btf attach refused here (%v): the walk is tested in the guests", err)
	}
	defer l.Close()
	o, err := findOverrides(ownObjects{}, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(o) != 0 {
		t.Fatalf("overrides on a host that refuses fmod_ret: %+v", o)
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		"/sys/fs/cgroup":         "/sys/fs/cgroup",
		`/mnt/with\040space`:     "/mnt/with space",
		`/a\011tab\134backslash`: "/a\ttab\\backslash",
		`/short\04`:              `/short\04`,
		`/not\99octal`:           `/not\99octal`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestQueryLSMCgroupOnHost asks the host's cgroup2 root for its cgroup LSM
// programs the way the override search does (with the attach flags buffer
// the kernel wants for this attach type): no error, whatever the answer.
// The guests attach real ones (enforcer.TestSealGapsGuest).
func TestQueryLSMCgroupOnHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN) for BPF_PROG_QUERY")
	}
	root := cgroup2Root()
	if root == "" {
		t.Skip("no cgroup2 mount in this mount namespace")
	}
	f, err := os.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ids, err := queryLSMCgroup(int(f.Fd()))
	if err != nil {
		t.Fatalf("query lsm_cgroup programs of %s: %v", root, err)
	}
	t.Logf("%s: %d lsm_cgroup program(s)", root, len(ids))
}

func TestOverrideString(t *testing.T) {
	for _, c := range []struct {
		o    Override
		want string
	}{
		{Override{Kind: "fmod_ret", Target: "security_kernel_post_read_file", LinkID: 38, ProgID: 42, ProgName: "evil"},
			`fmod_ret program 42 ("evil", link 38) on security_kernel_post_read_file`},
		{Override{Kind: "lsm_cgroup", Target: "bpf_lsm_kernel_post_read_file", ProgID: 22, Cgroup: "/sys/fs/cgroup"},
			`lsm_cgroup program 22 ("", no link, cgroup /sys/fs/cgroup) on bpf_lsm_kernel_post_read_file`},
		{Override{Kind: "lsm_cgroup", LinkID: 19, ProgID: 22, Cgroup: "/sys/fs/cgroup/x"},
			`lsm_cgroup program 22 ("", link 19, cgroup /sys/fs/cgroup/x) on an LSM hook it hides under the seal`},
	} {
		if got := c.o.String(); got != c.want {
			t.Errorf("%+v: %s, want %s", c.o, got, c.want)
		}
	}
}
