package vmtest_test

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/internal/vmtest"
)

func TestVM(t *testing.T) {
	vmtest.Run(t, vmtest.Spec{Modules: []string{"dummy", "veth"}, FailOnSkip: true})
}

func TestGuestInitModule(t *testing.T) {
	vmtest.RequireGuest(t)
	img, err := os.ReadFile(vmtest.Fixture(t, "dummy"))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.InitModule(img, ""); err != nil {
		t.Fatalf("init_module(dummy): %v", err)
	}
	b, _ := os.ReadFile("/proc/modules")
	if !strings.Contains(string(b), "dummy ") {
		t.Fatalf("dummy not in /proc/modules:\n%s", b)
	}
	if err := unix.DeleteModule("dummy", 0); err != nil {
		t.Fatalf("delete_module(dummy): %v", err)
	}
}
