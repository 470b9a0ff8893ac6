package debkernel

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestGetBelowFloor fetches bullseye's 5.10, the kernel below the floor that
// the refusal tests boot, through its private apt configuration.
func TestGetBelowFloor(t *testing.T) {
	k, err := Get(context.Background(), Series510)
	if errors.Is(err, ErrNoApt) {
		t.Skip("needs apt-get and dpkg: not a Debian host")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("5.10: %s (%s)", k.Release, k)
	if !strings.HasPrefix(k.Release, "5.10.0-") || k.Version == "" || !fileExists(k.Vmlinuz()) {
		t.Fatalf("Get(5.10) = %+v (vmlinuz %s)", k, k.Vmlinuz())
	}
	if v, err := k.Config("CONFIG_BPF_LSM"); err != nil || v != "y" {
		t.Errorf("%s: CONFIG_BPF_LSM=%q (%v): the refusal test needs BPF LSM built in", k.Release, v, err)
	}
	lsm, _ := k.Config("CONFIG_LSM")
	t.Logf("%s: CONFIG_LSM=%q", k.Release, lsm)
	if _, err := k.Module("dummy"); err != nil {
		t.Error(err)
	}
}
