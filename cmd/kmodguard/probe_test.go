package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/kmodguard/kmodguard/internal/preflight"
)

func TestProbeExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name           string
		detect, guard  bool
		code           int
		summaryHasText string
	}{
		{"everything", true, true, exitOK, "enforcement (the guard):         yes"},
		{"detection only", true, false, exitProbeNoGuard, "enforcement (the guard):         no"},
		{"nothing", false, false, exitProbeNoSensor, "detection (watch, Falco plugin): no"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &preflight.Report{Kernel: "6.1.0-57-amd64", Arch: "amd64", Detection: tc.detect, Enforcement: tc.guard,
				Checks: []preflight.Check{{Name: "BPF LSM", Status: preflight.Fail, Detail: "bpf not in lsm=", Needed: []string{"enforcement"}}}}
			var out bytes.Buffer
			err := runProbe(&out, r, formatText)
			code := exitOK
			var ce *codeError
			if errors.As(err, &ce) {
				code = ce.code
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code {
				t.Errorf("exit %d, want %d", code, tc.code)
			}
			for _, want := range []string{"kernel 6.1.0-57-amd64 (amd64)", "BPF LSM", "FAIL", "[rules out: enforcement]", tc.summaryHasText} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, out.String())
				}
			}

			out.Reset()
			_ = runProbe(&out, r, formatJSON)
			var back preflight.Report
			if err := json.Unmarshal(out.Bytes(), &back); err != nil {
				t.Fatalf("-o json: %v\n%s", err, out.String())
			}
			if back.Detection != tc.detect || back.Enforcement != tc.guard || len(back.Checks) != 1 || back.Checks[0].Needed[0] != "enforcement" {
				t.Errorf("-o json round trip: %+v", back)
			}
		})
	}
}
