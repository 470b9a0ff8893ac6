package vmtest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/kmodguard/kmodguard/internal/debkernel"
)

// TestRecord: a boot's record names the kernel build, and keeps what
// failed and skipped tests said last, and every test's support notes.
func TestRecord(t *testing.T) {
	t.Setenv(EnvResults, t.TempDir())
	r := &Result{Kernel: &debkernel.Kernel{Series: debkernel.SeriesSid, Arch: debkernel.AMD64, Package: "linux-image-7.2.13+deb14-cloud-amd64",
		Version: "7.2.13-1", Release: "7.2.13+deb14-cloud-amd64"}, Started: true, Done: true}
	r.parse(`=== RUN   TestGuestA
    a_test.go:10: setting up
    a_test.go:11: SUPPORT: decided on the ELF
--- PASS: TestGuestA (0.10s)
=== RUN   TestGuestB
=== RUN   TestGuestB/fentry
    b_test.go:20: loading
time="2026-12-06T01:44:51Z" level=warning msg="sensor: hook refused" error="attach: ambiguous \"x\" symbol" hook=fentry
    b_test.go:21: attach: ambiguous kernel symbol
--- FAIL: TestGuestB (0.20s)
    --- FAIL: TestGuestB/fentry (0.20s)
=== RUN   TestGuestC
    c_test.go:5: FENTRY NOT AVAILABLE on arm64 6.1: fell back
--- PASS: TestGuestC (0.01s)
=== RUN   TestGuestD
    d_test.go:7: needs a thing
--- SKIP: TestGuestD (0.00s)
FAIL
@@vmtest-exit enforcer.test 1 0.31
@@vmtest-done
`)
	if err := record("TestVM", r, Spec{Arch: debkernel.AMD64, Run: "^TestGuest"}); err != nil {
		t.Fatal(err)
	}
	m, _ := filepath.Glob(filepath.Join(ResultsDir(), "amd64", "7.2.13+deb14-cloud-amd64", "*.json"))
	if len(m) != 1 || filepath.Base(m[0]) != "github_com_kmodguard_kmodguard_internal_vmtest.TestVM.json" {
		t.Fatalf("records: %v", m)
	}
	b, err := os.ReadFile(m[0])
	if err != nil {
		t.Fatal(err)
	}
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Package != "github.com/kmodguard/kmodguard/internal/vmtest" || rec.Kernel != "linux-image-7.2.13+deb14-cloud-amd64 7.2.13-1" ||
		rec.Series != "sid" || rec.Err == "" {
		t.Errorf("record %+v", rec)
	}
	want := map[string][]string{
		"TestGuestA":        {"a_test.go:11: SUPPORT: decided on the ELF"},
		"TestGuestB/fentry": {"b_test.go:20: loading", `log: sensor: hook refused: attach: ambiguous \"x\" symbol`, "b_test.go:21: attach: ambiguous kernel symbol"},
		"TestGuestC":        {"c_test.go:5: FENTRY NOT AVAILABLE on arm64 6.1: fell back"},
		"TestGuestD":        {"d_test.go:7: needs a thing"},
	}
	if !reflect.DeepEqual(rec.Messages, want) {
		t.Errorf("messages %q\nwant %q", rec.Messages, want)
	}
	if !reflect.DeepEqual(rec.Failed, []string{"TestGuestB", "TestGuestB/fentry"}) || !reflect.DeepEqual(rec.Skipped, []string{"TestGuestD"}) {
		t.Errorf("failed %v, skipped %v", rec.Failed, rec.Skipped)
	}
}
