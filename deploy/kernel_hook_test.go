package deploy_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kmodguard/kmodguard/internal/debkernel"
)

// hookEnv is what the kernel hook test runs with: a modules root holding
// two real modules of a Debian release, the CLI built from this tree, and
// a key pair.
type hookEnv struct {
	cli, modules, release, dir, key string
}

func newHookEnv(t *testing.T) *hookEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a Debian kernel package: skipped in -short mode")
	}
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("needs sh")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	k, err := debkernel.Get(ctx, debkernel.Series612)
	if err != nil {
		t.Skipf("needs the Debian 6.12 kernel package: %v", err)
	}
	e := &hookEnv{dir: t.TempDir(), release: k.Release}
	e.modules = filepath.Join(e.dir, "lib", "modules")
	for _, n := range []string{"dummy", "veth"} {
		src, err := k.Module(n)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(e.modules, k.Release, "kernel", filepath.Base(src))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e.cli = filepath.Join(e.dir, "kmodguard")
	if out, err := exec.Command("go", "build", "-o", e.cli, "github.com/kmodguard/kmodguard/cmd/kmodguard").CombinedOutput(); err != nil {
		t.Fatalf("build the CLI: %v\n%s", err, out)
	}
	e.key = filepath.Join(e.dir, "signing")
	e.kg(t, "allowlist", "keygen", "--prefix", e.key)
	return e
}

func (e *hookEnv) kg(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(e.cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("kmodguard %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// hook runs the hook as the kernel package's postinst does, for release.
func (e *hookEnv) hook(t *testing.T, list, release string) (string, error) {
	t.Helper()
	cmd := exec.Command("sh", "kernel/postinst.d/kmodguard", release, "/boot/vmlinuz-"+release)
	cmd.Env = append(os.Environ(), "KMODGUARD="+e.cli, "KMODGUARD_ALLOWLIST="+list,
		"KMODGUARD_PUBKEY="+e.key+".pub", "KMODGUARD_MODULES="+e.modules)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestKernelPostinstHook runs deploy/kernel/postinst.d/kmodguard on a
// release's real modules: a local list gains them, a signed list that lacks
// them fails the hook with the command to run where the key is, a signed
// list that has them passes, and a host without a list is left alone.
func TestKernelPostinstHook(t *testing.T) {
	e := newHookEnv(t)
	mods := filepath.Join(e.modules, e.release)
	check := func(list string) error {
		args := []string{"allowlist", "check", "-a", list}
		files, _ := filepath.Glob(filepath.Join(mods, "kernel", "*"))
		return exec.Command(e.cli, append(args, files...)...).Run()
	}

	t.Run("no allowlist", func(t *testing.T) {
		list := filepath.Join(t.TempDir(), "allowlist.yaml")
		if out, err := e.hook(t, list, e.release); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if _, err := os.Stat(list); err == nil {
			t.Error("the hook made an allowlist where there was none")
		}
	})

	t.Run("local list", func(t *testing.T) {
		list := filepath.Join(t.TempDir(), "allowlist.yaml")
		// A list of another tree: the new release is not in it.
		e.kg(t, "allowlist", "init", "--modules-dir", filepath.Join(mods, "kernel"), "--mode", "enforce", "--out-file", list)
		e.kg(t, "allowlist", "remove", "-a", list, "dummy", "veth")
		if check(list) == nil {
			t.Fatal("the release is allowed before the hook ran")
		}
		out, err := e.hook(t, list, e.release)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if !strings.Contains(out, "2 modules added") {
			t.Errorf("hook output: %s", out)
		}
		if err := check(list); err != nil {
			t.Errorf("after the hook the release's modules are not allowed: %v", err)
		}
	})

	t.Run("signed list", func(t *testing.T) {
		list := filepath.Join(t.TempDir(), "allowlist.yaml")
		e.kg(t, "allowlist", "init", "--modules-dir", mods, "--mode", "enforce", "--out-file", list)
		e.kg(t, "allowlist", "remove", "-a", list, "veth")
		e.kg(t, "allowlist", "sign", "--key", e.key+".key", list)
		before, _ := os.ReadFile(list)
		out, err := e.hook(t, list, e.release)
		if err == nil {
			t.Fatalf("the hook passed with a signed list that lacks veth:\n%s", out)
		}
		want := "kmodguard allowlist add -a allowlist.yaml --modules-dir /lib/modules/" + e.release + " --key signing.key"
		if !strings.Contains(out, want) {
			t.Errorf("the hook does not say %q:\n%s", want, out)
		}
		if after, _ := os.ReadFile(list); string(after) != string(before) {
			t.Error("the hook changed a signed list")
		}
		// Done where the key is: the hook now passes.
		e.kg(t, "allowlist", "add", "-a", list, "--modules-dir", mods, "--key", e.key+".key")
		if out, err := e.hook(t, list, e.release); err != nil || !strings.Contains(out, "already allows every module") {
			t.Errorf("signed list with the release: %v\n%s", err, out)
		}
	})
}
