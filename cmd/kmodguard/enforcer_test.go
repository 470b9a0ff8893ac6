//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmodguard/kmodguard/lsm"
)

func TestEnforcerHelpTeaches(t *testing.T) {
	for _, sub := range []string{"", "run", "status", "apply", "stop"} {
		args := []string{"enforcer"}
		if sub != "" {
			args = append(args, sub)
		}
		out, _, code := kg(t, append(args, "--help")...)
		if code != exitOK || !strings.Contains(out, "Examples:") || !strings.Contains(out, "kmodguard enforcer") {
			t.Errorf("kmodguard %s --help: exit %d, no example:\n%s", strings.Join(args, " "), code, out)
		}
	}
}

func TestEnforcerWithoutGuard(t *testing.T) {
	pins := filepath.Join(t.TempDir(), "none")
	for _, args := range [][]string{
		{"enforcer", "status", "--pin-dir", pins},
		{"enforcer", "stop", "--pin-dir", pins},
	} {
		_, stderr, code := kg(t, args...)
		if code != exitError || !strings.Contains(stderr, "no guard is pinned") {
			t.Errorf("%v: exit %d, %q; want exit 2 and 'no guard is pinned'", args, code, stderr)
		}
	}
}

func TestEnforcerRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("apiVersion: kmodguard.io/v1\nkind: ModuleAllowlist\nspec:\n  mode: enforce\n  modules:\n    - name: veth\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(dir, "broken.yaml")
	if err := os.WriteFile(broken, []byte("apiVersion: kmodguard.io/v1\nkind: ModuleAllowlist\nspec: {mode: enforce, modules: [{name: veth, sha256: [xyz]}]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pins := filepath.Join(dir, "pins")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"enforcer", "run", "--allowlist", broken, "--pin-dir", pins}, "broken.yaml:3"},
		{[]string{"enforcer", "run", "--allowlist", filepath.Join(dir, "missing.yaml"), "--pin-dir", pins}, "missing.yaml"},
		{[]string{"enforcer", "run", "--allowlist", good, "--log-format", "xml", "--pin-dir", pins}, "log format"},
		{[]string{"enforcer", "apply", broken, "--pin-dir", pins}, "broken.yaml:3"},
		{[]string{"enforcer", "run", "--allowlist", good, "--require-signature", "--pin-dir", pins}, "signature"},
	} {
		_, stderr, code := kg(t, tc.args...)
		if code != exitError || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, %q; want exit 2 mentioning %q", tc.args, code, stderr, tc.want)
		}
	}
	// Without BPF LSM (this host), run explains what to add to the kernel
	// command line.
	if lsm.Supported() != nil {
		_, stderr, code := kg(t, "enforcer", "run", "--allowlist", good, "--pin-dir", pins)
		if code != exitError || !strings.Contains(stderr, "BPF LSM is not active") {
			t.Errorf("run without BPF LSM: exit %d, %q", code, stderr)
		}
	}
}
