package preflight

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kmodguard/kmodguard/internal/vmtest"
	"github.com/kmodguard/kmodguard/lsm"
)

// TestVM runs the guest test below on Debian 6.1 and 6.12, where every part
// of kmodguard runs.
func TestVM(t *testing.T) {
	vmtest.Run(t, vmtest.Spec{FailOnSkip: true})
}

// TestGuestEverythingWorks: on Debian's kernels the probe finds the
// sensor in every mode, fentry included, and the guard.
func TestGuestEverythingWorks(t *testing.T) {
	vmtest.RequireGuest(t)
	r := Run()
	for _, c := range r.Checks {
		t.Logf("%-20s %-5s %s", c.Name, c.Status, c.Detail)
		if c.Status == Fail {
			t.Errorf("%s failed: %s", c.Name, c.Detail)
		}
	}
	if !r.Detection || r.SensorHook != "tp_btf" || r.SensorResults != "fexit" || !r.Fentry || !r.Enforcement {
		t.Errorf("detection %v (hook %q, results from %q), fentry %v, enforcement %v: want all, on tp_btf with fexit results",
			r.Detection, r.SensorHook, r.SensorResults, r.Fentry, r.Enforcement)
	}
}

// TestHost probes this machine and checks each verdict against the
// kernel's own answer, asked another way.
func TestHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the probe loads BPF programs")
	}
	r := Run()
	for _, c := range r.Checks {
		t.Logf("%-20s %-5s %s", c.Name, c.Status, c.Detail)
	}
	if !r.Detection {
		t.Fatal("the sensor does not load here, but the sensor's own tests run on this host")
	}
	if want := lsm.Supported() == nil; r.Enforcement != want {
		t.Errorf("enforcement %v, lsm.Supported says %v", r.Enforcement, want)
	}
	_, err := os.Stat("/proc/modules")
	if got := find(t, r, "module support").Status; (got == OK) != (err == nil) {
		t.Errorf("module support %s, /proc/modules: %v", got, err)
	}
}

func TestLockdownAndSignatures(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	defer func(l, s string) { lockdownFile, sigEnforceFile = l, s }(lockdownFile, sigEnforceFile)
	for _, tc := range []struct {
		content string
		want    Status
	}{
		{"[none] integrity confidentiality\n", OK},
		{"none [integrity] confidentiality\n", OK},
		{"none integrity [confidentiality]\n", Fail},
	} {
		lockdownFile = write("lockdown", tc.content)
		if c := lockdown(); c.Status != tc.want {
			t.Errorf("lockdown %q: %s (%s), want %s", tc.content, c.Status, c.Detail, tc.want)
		}
	}
	lockdownFile = filepath.Join(dir, "absent")
	if c := lockdown(); c.Status != Info {
		t.Errorf("no lockdown file: %s", c.Status)
	}
	sigEnforceFile = write("sig_enforce", "Y\n")
	if c := sigEnforce(); c.Detail[:8] != "enforced" {
		t.Errorf("sig_enforce Y: %s", c.Detail)
	}
	sigEnforceFile = write("sig_enforce", "N\n")
	if c := sigEnforce(); c.Detail[:12] != "not enforced" {
		t.Errorf("sig_enforce N: %s", c.Detail)
	}
}

func find(t *testing.T, r *Report, name string) Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %q", name)
	return Check{}
}
