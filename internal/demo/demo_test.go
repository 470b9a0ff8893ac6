package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/kmodguard/kmodguard/internal/debkernel"
	"github.com/kmodguard/kmodguard/internal/vmtest"
)

// TestVMDemo runs the demo's scenario as `make demo` does, so that a change
// to the CLI's output or behaviour that breaks a step shows up in make
// vmtest rather than in front of an audience.
func TestVMDemo(t *testing.T) {
	if !vmtest.Enabled() || vmtest.InGuest() {
		t.Skip("boots Debian 6.1 in QEMU: set KMODGUARD_VMTEST=1 (make vmtest)")
	}
	var out bytes.Buffer
	r, err := vmtest.Exec(context.Background(), demoSpec(&out, nil), debkernel.Series61, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("boot %s, demo %s, wall %s", r.Boot, r.Tests, r.Wall)
	if err := r.Err(); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"== Step 6:", "Demo complete"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, out.String())
		}
	}
	if bad := unexpected(out.String()); bad != "" {
		// The summary comes first: CI shows only part of a long log.
		t.Errorf("steps did not behave as described:\n%s\nthe whole demo:\n%s", bad, out.String())
	}
}

// unexpected lists the demo's UNEXPECTED lines, each under its step.
func unexpected(out string) string {
	var b strings.Builder
	step := ""
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.Contains(line, "== Step"):
			step = strings.TrimSpace(line)
		case strings.Contains(line, "UNEXPECTED"):
			if step != "" {
				b.WriteString(step + "\n")
				step = ""
			}
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

func TestUnexpectedSummary(t *testing.T) {
	out := "== Step 1: a\n   -> fine\n== Step 2: b\n   -> UNEXPECTED: x\n   -> UNEXPECTED: y\n== Step 3: c\n"
	want := "== Step 2: b\n   -> UNEXPECTED: x\n   -> UNEXPECTED: y\n"
	if got := unexpected(out); got != want {
		t.Fatalf("unexpected() = %q, want %q", got, want)
	}
	if got := unexpected("== Step 1: a\n   -> fine\n"); got != "" {
		t.Fatalf("a clean run gave %q", got)
	}
}
