package rules

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kmodguard/kmodguard/event"
)

// EnvFalco names a Falco binary for TestScenariosInFalco when falco is not
// on PATH.
const EnvFalco = "KMODGUARD_FALCO"

// TestScenariosInFalco runs the scenarios of TestRulesFire through a real
// Falco: the events are written to a record file, replayed by the plugin
// built from this tree, and judged by Falco's own rule engine with this
// rules file. It checks that Falco loads the file and that each event
// fires exactly the rules the scenario names, so the small evaluator of
// TestRulesFire cannot drift from Falco unseen. It skips without a Falco
// binary; it was run with Falco 0.41.3 (plugin API 3.11).
func TestScenariosInFalco(t *testing.T) {
	falco := os.Getenv(EnvFalco)
	if falco == "" {
		var err error
		if falco, err = exec.LookPath("falco"); err != nil {
			t.Skipf("needs a Falco binary: falco on PATH, or %s=/path/to/falco", EnvFalco)
		}
	}
	dir := t.TempDir()
	so := filepath.Join(dir, "libkmodguard.so")
	build := exec.Command("go", "build", "-buildmode=c-shared", "-o", so, "github.com/kmodguard/kmodguard/cmd/plugin")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the plugin: %v\n%s", err, out)
	}

	// One event a second, so that each alert names its scenario by time.
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rec := filepath.Join(dir, "scenarios.kgrec")
	f, err := os.Create(rec)
	if err != nil {
		t.Fatal(err)
	}
	w := event.NewRecordWriter(f)
	if err := w.WriteHeader(); err != nil {
		t.Fatal(err)
	}
	for i, tc := range scenarios {
		e := *tc.event
		e.TS = uint64(start.Add(time.Duration(i) * time.Second).UnixNano())
		if err := w.Write(&e); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	rules, err := filepath.Abs("kmodguard_rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Falco's order of rules is the file's: under rule_matching first an
	// event raises the first rule it matches, under all every one.
	var order []string
	for _, r := range load(t).rules {
		order = append(order, r.Rule)
	}
	for _, matching := range []string{"first", "all"} {
		t.Run(matching, func(t *testing.T) {
			fired := replayInFalco(t, falco, dir, so, rec, rules, matching, start)
			for i, tc := range scenarios {
				want := slices.Clone(tc.want)
				sort.Strings(want)
				if matching == "first" && len(want) > 1 {
					want = want[:0]
					for _, r := range order {
						if slices.Contains(tc.want, r) {
							want = append(want, r)
							break
						}
					}
				}
				got := fired[i]
				sort.Strings(got)
				if !slices.Equal(got, want) {
					t.Errorf("%s: Falco fired %q, want %q", tc.name, got, want)
				}
			}
		})
	}
}

// replayInFalco runs Falco on the record file with the rules and returns
// the rules each scenario's event raised, found by the alert's time.
func replayInFalco(t *testing.T, falco, dir, so, rec, rules, matching string, start time.Time) [][]string {
	t.Helper()
	cfg := filepath.Join(dir, "falco-"+matching+".yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, `engine:
  kind: nodriver
load_plugins: [kmodguard]
plugins:
  - name: kmodguard
    library_path: %s
    init_config:
      log_level: warning
    open_params: "replay:%s"
rules_files: [%s]
rule_matching: %s
json_output: true
priority: debug
stdout_output:
  enabled: true
`, so, rec, rules, matching), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, falco, "-c", cfg, "--disable-source", "syscall")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("falco: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
	}
	fired := make([][]string, len(scenarios))
	alerts := 0
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var a struct {
			Rule string    `json:"rule"`
			Time time.Time `json:"time"`
		}
		line := sc.Text()
		if !strings.HasPrefix(line, "{") {
			continue
		}
		if err := json.Unmarshal([]byte(line), &a); err != nil || a.Rule == "" {
			t.Fatalf("alert %q: %v", line, err)
		}
		i := int(a.Time.Sub(start) / time.Second)
		if i < 0 || i >= len(scenarios) || a.Time.Sub(start)%time.Second != 0 {
			t.Fatalf("alert at %s matches no scenario: %s", a.Time, line)
		}
		fired[i] = append(fired[i], a.Rule)
		alerts++
	}
	t.Logf("%s, rule_matching %s: %d scenarios replayed, %d alerts", falco, matching, len(scenarios), alerts)
	return fired
}
