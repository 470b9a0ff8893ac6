package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"sigs.k8s.io/yaml"

	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/internal/preflight"
)

const testDigest = "5f0c6a0fb3d9d5c7ae2e0c3c6a3f4a1d8e9b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"

// testLists writes two allowlists that differ, the first with a
// name-only entry (a lint warning), and returns their paths.
func testLists(t *testing.T) (a, b string) {
	t.Helper()
	dir := t.TempDir()
	a, b = filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")
	writeFile(t, a, []byte("apiVersion: kmodguard.io/v1\nkind: ModuleAllowlist\nmetadata:\n  name: test\nspec:\n  mode: enforce\n  modules:\n"+
		"    - name: dummy\n      sha256:\n        - "+testDigest+"\n      kernel: 6.1.0-57-amd64\n      comment: test NIC\n    - name: veth\n"))
	writeFile(t, b, []byte("apiVersion: kmodguard.io/v1\nkind: ModuleAllowlist\nspec:\n  mode: audit\n  modules:\n    - name: dummy\n"))
	return a, b
}

// sameData decodes a JSON and a YAML rendering of one report and fails
// unless they hold the same data.
func sameData(t *testing.T, what, jsonOut, yamlOut string) {
	t.Helper()
	var fromJSON, fromYAML any
	if err := json.Unmarshal([]byte(jsonOut), &fromJSON); err != nil {
		t.Fatalf("%s -o json: %v\n%s", what, err, jsonOut)
	}
	if err := yaml.Unmarshal([]byte(yamlOut), &fromYAML); err != nil {
		t.Fatalf("%s -o yaml: %v\n%s", what, err, yamlOut)
	}
	if !reflect.DeepEqual(fromJSON, fromYAML) {
		t.Errorf("%s: -o json and -o yaml differ:\n%s\n---\n%s", what, jsonOut, yamlOut)
	}
	if strings.HasPrefix(strings.TrimSpace(yamlOut), "{") || strings.HasPrefix(strings.TrimSpace(yamlOut), "[") {
		t.Errorf("%s -o yaml is JSON:\n%s", what, yamlOut)
	}
}

// reportCommands are the report commands that run here without root,
// BPF or a kernel package, each with the exit code it ends with.
func reportCommands(t *testing.T) map[string]struct {
	args []string
	code int
} {
	a, b := testLists(t)
	missing := filepath.Join(t.TempDir(), "missing.ko")
	return map[string]struct {
		args []string
		code int
	}{
		"version":         {[]string{"version"}, exitOK},
		"allowlist list":  {[]string{"allowlist", "list", "-a", a}, exitOK},
		"allowlist lint":  {[]string{"allowlist", "lint", a}, exitOK},
		"allowlist diff":  {[]string{"allowlist", "diff", a, b}, exitOK},
		"allowlist check": {[]string{"allowlist", "check", "-a", a, missing}, exitError}, // the error is in the report
	}
}

func TestOutputJSONAndYAML(t *testing.T) {
	for name, c := range reportCommands(t) {
		t.Run(name, func(t *testing.T) {
			jsonOut, stderr, code := kg(t, append(c.args, "-o", "json")...)
			if code != c.code {
				t.Fatalf("-o json: exit %d, want %d\n%s", code, c.code, stderr)
			}
			yamlOut, stderr, code := kg(t, append(c.args, "--output", "yaml")...)
			if code != c.code {
				t.Fatalf("--output yaml: exit %d, want %d\n%s", code, c.code, stderr)
			}
			sameData(t, name, jsonOut, yamlOut)
		})
	}

	t.Run("inspect", func(t *testing.T) {
		dummy := debianDummy(t)
		jsonOut, _, code := kg(t, "inspect", "-o", "json", dummy)
		yamlOut, _, code2 := kg(t, "inspect", "-o", "yaml", dummy)
		if code != exitOK || code2 != exitOK {
			t.Fatalf("exit %d and %d", code, code2)
		}
		sameData(t, "inspect", jsonOut, yamlOut)
		if !strings.Contains(yamlOut, "name: dummy\n") {
			t.Errorf("-o yaml does not use the JSON keys:\n%s", yamlOut)
		}
	})

	t.Run("probe", func(t *testing.T) {
		r := &preflight.Report{Kernel: "6.1.0-57-amd64", Arch: "amd64", Detection: true,
			Checks: []preflight.Check{{Name: "BPF LSM", Status: preflight.Fail, Detail: "bpf not in lsm=", Needed: []string{"enforcement"}}}}
		var j, y bytes.Buffer
		_ = runProbe(&j, r, formatJSON)
		_ = runProbe(&y, r, formatYAML)
		sameData(t, "probe", j.String(), y.String())
	})

	// watch prints a stream: JSON lines, or one YAML document an event.
	t.Run("watch", func(t *testing.T) {
		yes := true
		evs := []*event.Event{
			{TS: 1, Syscall: event.FinitModule, Name: "dummy", Path: "/x/dummy.ko", Allowed: &yes, Pid: 7, Comm: "insmod"},
			{TS: 2, Syscall: event.SensorLoss, Lost: 3},
		}
		var j, y bytes.Buffer
		for _, ev := range evs {
			if err := encodeItem(&j, formatJSON, ev); err != nil {
				t.Fatal(err)
			}
			if err := encodeItem(&y, formatYAML, ev); err != nil {
				t.Fatal(err)
			}
		}
		lines := strings.Split(strings.TrimSuffix(j.String(), "\n"), "\n")
		docs := strings.Split(strings.TrimPrefix(y.String(), "---\n"), "---\n")
		if len(lines) != len(evs) || len(docs) != len(evs) {
			t.Fatalf("%d events: %d JSON lines, %d YAML documents\n%s\n%s", len(evs), len(lines), len(docs), j.String(), y.String())
		}
		for i := range evs {
			sameData(t, "watch", lines[i], docs[i])
		}
	})
}

func TestOutputBadFormat(t *testing.T) {
	for name, c := range reportCommands(t) {
		for _, bad := range []string{"xml", "JSON", ""} {
			stdout, stderr, code := kg(t, append(c.args, "-o", bad)...)
			if code != exitError || stdout != "" || !strings.Contains(stderr, `invalid argument "`+bad+`" for "-o, --output" flag: want text, json or yaml`) {
				t.Errorf("%s -o %q: exit %d, stdout %q, stderr %q", name, bad, code, stdout, stderr)
			}
		}
	}
	// Refused before the work: these would fail otherwise on the missing
	// allowlist, load the sensor, or probe the kernel.
	for _, args := range [][]string{
		{"allowlist", "list", "-a", "/nonexistent.yaml", "-o", "xml"},
		{"watch", "-o", "xml"},
		{"probe", "-o", "xml"},
		{"inspect", "-o", "xml", "/nonexistent.ko"},
	} {
		stdout, stderr, code := kg(t, args...)
		if code != exitError || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "want text, json or yaml") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
}

// TestOutputJSONAlias: the --json of older releases is -o json, with a
// warning on stderr, and refuses a contradicting -o.
func TestOutputJSONAlias(t *testing.T) {
	const warning = "kmodguard: warning: --json is deprecated: use -o json\n"
	for name, c := range reportCommands(t) {
		if name == "version" {
			continue // never had --json
		}
		want, _, _ := kg(t, append(c.args, "-o", "json")...)
		got, stderr, code := kg(t, append(c.args, "--json")...)
		if code != c.code || got != want || !strings.HasPrefix(stderr, warning) {
			t.Errorf("%s --json: exit %d, stderr %q, stdout:\n%s\nwant:\n%s", name, code, stderr, got, want)
		}
		if got, _, code := kg(t, append(c.args, "--json", "-o", "json")...); code != c.code || got != want {
			t.Errorf("%s --json -o json: exit %d\n%s", name, code, got)
		}
		for _, args := range [][]string{append(c.args, "--json", "-o", "yaml"), append(c.args, "-o", "text", "--json")} {
			if stdout, stderr, code := kg(t, args...); code != exitError || stdout != "" || !strings.Contains(stderr, "give -o alone") {
				t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
			}
		}
	}
	// Hidden from help.
	if out, _, _ := kg(t, "allowlist", "list", "--help"); strings.Contains(out, "--json") || !strings.Contains(out, "-o, --output format") {
		t.Errorf("allowlist list --help:\n%s", out)
	}
}

// TestOutputOldFileFlags: init, export and keygen wrote to -o FILE. The
// spelling still works, with a warning, unless FILE is a format name.
func TestOutputOldFileFlags(t *testing.T) {
	a, _ := testLists(t)
	dir := t.TempDir()

	prefix := filepath.Join(dir, "signing")
	_, stderr, code := kg(t, "allowlist", "keygen", "-o", prefix)
	if code != exitOK || !strings.Contains(stderr, "warning: -o/--output is deprecated: use --prefix") {
		t.Errorf("keygen -o: exit %d, %q", code, stderr)
	}
	if _, stderr, code := kg(t, "allowlist", "keygen", "--prefix", filepath.Join(dir, "other")); code != exitOK || stderr != "" {
		t.Errorf("keygen --prefix: exit %d, %q", code, stderr)
	}

	rules := filepath.Join(dir, "rules.yaml")
	_, stderr, code = kg(t, "allowlist", "export", "-a", a, "--output", rules)
	if code != exitOK || !strings.Contains(stderr, "use --out-file") || !fileHas(t, rules, "- list: kmodguard_allowed_modules") {
		t.Errorf("export --output FILE: exit %d, %q", code, stderr)
	}

	// The file is taken: what fails next is that there are no modules.
	_, stderr, code = kg(t, "allowlist", "init", "--modules-dir", t.TempDir(), "-o", filepath.Join(dir, "allow.yaml"))
	if code != exitError || !strings.Contains(stderr, "use --out-file") || !strings.Contains(stderr, "no module files found") {
		t.Errorf("init -o FILE: exit %d, %q", code, stderr)
	}

	for _, args := range [][]string{
		{"allowlist", "init", "--modules-dir", t.TempDir(), "-o", "json"},
		{"allowlist", "export", "-a", a, "-o", "yaml"},
		{"allowlist", "keygen", "-o", "text"},
	} {
		stdout, stderr, code := kg(t, args...)
		if code != exitError || stdout != "" || !strings.Contains(stderr, "this command prints no report") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
	for _, args := range [][]string{{"allowlist", "init", "--loaded"}, {"allowlist", "keygen"}} {
		if _, stderr, code := kg(t, args...); code != exitError || strings.Contains(stderr, " -o") || strings.Contains(stderr, "--output") {
			t.Errorf("%v without a destination: exit %d, %q", args, code, stderr)
		}
	}
}

func fileHas(t *testing.T, path, s string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	return err == nil && strings.Contains(string(b), s)
}

func TestLogLevel(t *testing.T) {
	t.Cleanup(func() { logrus.SetLevel(logrus.InfoLevel) })
	if _, stderr, code := kg(t, "--log-level", "debug", "version"); code != exitOK {
		t.Fatalf("--log-level debug: exit %d, %q", code, stderr)
	}
	if logrus.GetLevel() != logrus.DebugLevel || newLog(io.Discard).Level != logrus.DebugLevel {
		t.Errorf("--log-level debug: standard logger at %s, newLog at %s", logrus.GetLevel(), newLog(io.Discard).Level)
	}
	// After the subcommand too, and back to info without the flag.
	kg(t, "version", "--log-level", "warn")
	if logrus.GetLevel() != logrus.WarnLevel {
		t.Errorf("version --log-level warn: %s", logrus.GetLevel())
	}
	kg(t, "version")
	if logrus.GetLevel() != logrus.InfoLevel {
		t.Errorf("no --log-level: %s", logrus.GetLevel())
	}
	for _, bad := range []string{"loud", "warning", "fatal"} {
		_, stderr, code := kg(t, "--log-level", bad, "version")
		if code != exitError || !strings.Contains(stderr, "want trace, debug, info, warn, error") {
			t.Errorf("--log-level %s: exit %d, %q", bad, code, stderr)
		}
	}
}

// completions runs cobra's hidden completion command, as the shell
// scripts do, and returns the values offered.
func completions(t *testing.T, args ...string) []string {
	t.Helper()
	out, stderr, code := kg(t, append([]string{"__complete"}, args...)...)
	if code != exitOK {
		t.Fatalf("__complete %v: exit %d, %q", args, code, stderr)
	}
	var vals []string
	for line := range strings.Lines(out) {
		if v, _, _ := strings.Cut(strings.TrimSuffix(line, "\n"), "\t"); !strings.HasPrefix(v, ":") {
			vals = append(vals, v)
		}
	}
	return vals
}

func TestCompletion(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"inspect", "-o", ""}, []string{"text", "json", "yaml"}},
		{[]string{"allowlist", "check", "--output", ""}, []string{"text", "json", "yaml"}},
		{[]string{"watch", "-o", ""}, []string{"text", "json", "yaml"}},
		{[]string{"version", "-o", "j"}, []string{"text", "json", "yaml"}}, // the shell filters
		{[]string{"--log-level", ""}, logLevels},
		{[]string{"allowlist", "lint", "--log-level", ""}, logLevels},
		{[]string{"allowlist", "init", "--mode", ""}, []string{"enforce", "audit"}},
		{[]string{"allowlist", "export", "--format", ""}, []string{"falco-list"}},
		{[]string{"watch", "--hook", ""}, []string{"tp_btf", "raw_tracepoint", "fentry"}},
	} {
		if got := completions(t, tc.args...); !slices.Equal(got, tc.want) {
			t.Errorf("complete %q: %q, want %q", tc.args, got, tc.want)
		}
	}
	// Files by extension: the shell does the listing.
	if got := completions(t, "allowlist", "list", "-a", ""); !slices.Equal(got, []string{"yaml", "yml"}) {
		t.Errorf("complete allowlist list -a: %q", got)
	}
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		if out, _, code := kg(t, "completion", sh); code != exitOK || !strings.Contains(out, "kmodguard") {
			t.Errorf("completion %s: exit %d", sh, code)
		}
	}
}
