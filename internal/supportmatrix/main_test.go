package main

import (
	"strings"
	"testing"
	"time"

	"github.com/kmodguard/kmodguard/internal/vmtest"
)

// TestWrite: one row per architecture and series (the build run last),
// cells from the tests' verdicts, and red with the test's own words.
func TestWrite(t *testing.T) {
	day := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	rec := func(pkg, release, series, kernel string, at time.Time, passed, failed []string, msgs map[string][]string) vmtest.Record {
		return vmtest.Record{Package: module + "/" + pkg, Test: "TestVM", Time: at, Arch: "amd64", Series: series, Release: release,
			Kernel: kernel, Passed: passed, Failed: failed, Messages: msgs}
	}
	recs := []vmtest.Record{
		// An older 6.1 build: replaced by the newer one.
		rec("bpf", "6.1.0-56-amd64", "6.1", "linux-image-6.1.0-56-amd64 6.1.190-1", day.Add(-48*time.Hour),
			[]string{"TestGuestSensorLoadUnload/fentry"}, nil, nil),
		rec("bpf", "6.1.0-57-amd64", "6.1", "linux-image-6.1.0-57-amd64 6.1.192-3", day,
			[]string{"TestGuestSensorLoadUnload/tp_btf", "TestGuestSensorLoadUnload/raw_tracepoint"},
			[]string{"TestGuestSensorLoadUnload", "TestGuestSensorLoadUnload/fentry"},
			map[string][]string{"TestGuestSensorLoadUnload/fentry": {"vm_test.go:80: hook fentry refused in a real kernel | ambiguous"}}),
		rec("enforcer", "6.1.0-57-amd64", "6.1", "linux-image-6.1.0-57-amd64 6.1.192-3", day,
			[]string{"TestGuestListedLoads", "TestGuestZSealed", "TestGuestCompressed"}, nil,
			map[string][]string{"TestGuestCompressed": {"vm_test.go:9: SUPPORT: decided on the file digest"}}),
		rec("enforcer", "5.10.0-32-amd64", "5.10", "linux-image-5.10.0-32-amd64 5.10.223-1", day,
			[]string{"TestBelowFloorRefused/sensor"}, []string{"TestBelowFloorRefused", "TestBelowFloorRefused/guard"},
			map[string][]string{
				"TestBelowFloorRefused/sensor": {"f.go:1: SUPPORT: sensor refused: needs Linux 5.17 or later"},
				"TestBelowFloorRefused/guard":  {"f.go:2: does not name the kernel it needs"},
			}),
	}
	var b strings.Builder
	if err := write(&b, recs); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Log(out)
	lines := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.SplitN(l, " ", 3); len(f) == 3 && f[0] == "|" && lines[f[1]] == "" {
			lines[f[1]] = l // the matrix's row, not the timing table's
		}
	}
	if strings.Contains(out, "6.1.0-56") {
		t.Error("the replaced 6.1 build is in the matrix")
	}
	for series, want := range map[string][]string{
		"6.1": {"`linux-image-6.1.0-57-amd64 6.1.192-3`", "🟢 pass | 🟢 pass | 🔴 FAIL: hook fentry refused in a real kernel \\| ambiguous |",
			"🟢 1 guest tests pass | 🟢 pass | 🟢 decided on the file digest |"},
		"5.10": {"🟡 refused (below the floor): sensor refused: needs Linux 5.17 or later", "🔴 FAIL: does not name the kernel it needs"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[series], w) {
				t.Errorf("row %s lacks %q:\n%s", series, w, lines[series])
			}
		}
	}
	if strings.Index(out, "| 5.10 ") > strings.Index(out, "| 6.1 ") {
		t.Error("the refusal row does not come first")
	}
}
