//go:build linux

package bpftest

import (
	"crypto/sha256"
	"os"
	"testing"

	"github.com/kmodguard/kmodguard/internal/vmtest"
)

// TestVM runs the guest tests below on Debian's 6.1 and 6.12 kernels under
// QEMU (make vmtest), so that the helpers are verified and run on the
// oldest and newest kernels the guard supports, not only on this host.
func TestVM(t *testing.T) {
	vmtest.Run(t, vmtest.Spec{
		Modules:    []string{"dummy", "veth"},
		FailOnSkip: true,
	})
}

// TestGuestHelpers runs the host tests of this package inside the guest,
// plus the fixture modules of the guest's own kernel.
func TestGuestHelpers(t *testing.T) {
	vmtest.RequireGuest(t)
	t.Logf("kernel %s", vmtest.Release())
	t.Run("VerifierBudget", TestVerifierBudget)
	t.Run("SHA256Vectors", TestSHA256Vectors)
	t.Run("SHA256Random", TestSHA256Random)
	t.Run("SHA256Errors", TestSHA256Errors)
	t.Run("ScratchBusy", TestScratchBusy)
	t.Run("ELFNamesCrafted", TestELFNamesCrafted)
	t.Run("ELFNamesFault", TestELFNamesFault)
	t.Run("ReadKind", TestReadKind)
	t.Run("Glob", TestGlob)
	t.Run("AutoloadPolicy", TestAutoloadPolicy)
	t.Run("Fixtures", func(t *testing.T) {
		h := newHarness(t, 4<<20)
		for _, name := range []string{"dummy", "veth"} {
			img, err := os.ReadFile(vmtest.Fixture(t, name))
			if err != nil {
				t.Fatal(err)
			}
			r := checkAgree(t, h, name, img)
			if r.status != bpftestKgElfStatusKG_ELF_OK || r.modinfo != name || r.thisModule != name {
				t.Errorf("%s: kg_elf_names: %v, want both names %q", name, r, name)
			}
			got, err := h.sha256(img)
			if err != nil {
				t.Fatal(err)
			}
			if want := sha256.Sum256(img); got != want {
				t.Errorf("%s: kg_sha256 = %x, crypto/sha256 = %x", name, got, want)
			}
		}
	})
}
