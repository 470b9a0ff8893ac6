//go:build linux

package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kmodguard/kmodguard/enforcer"
	"github.com/kmodguard/kmodguard/internal/version"
	"github.com/kmodguard/kmodguard/lsm"
)

func TestEnforcerHelpTeaches(t *testing.T) {
	for _, sub := range []string{"", "run", "status", "apply", "stop"} {
		args := []string{"enforcer"}
		if sub != "" {
			args = append(args, sub)
		}
		out, _, code := kg(t, append(args, "--help")...)
		if code != exitOK || !strings.Contains(out, "Examples:") || !strings.Contains(out, "kmodguard enforcer") {
			t.Errorf("kmodguard %s --help: exit %d, no example:\n%s", strings.Join(args, " "), code, out)
		}
	}
}

func TestEnforcerWithoutGuard(t *testing.T) {
	pins := filepath.Join(t.TempDir(), "none")
	for _, args := range [][]string{
		{"enforcer", "status", "--pin-dir", pins},
		{"enforcer", "status", "--ready", "--pin-dir", pins},
		{"enforcer", "stop", "--pin-dir", pins},
	} {
		_, stderr, code := kg(t, args...)
		if code != exitError || !strings.Contains(stderr, "no guard is pinned") {
			t.Errorf("%v: exit %d, %q; want exit 2 and 'no guard is pinned'", args, code, stderr)
		}
	}
}

func TestEnforcerRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("apiVersion: kmodguard.io/v1\nkind: ModuleAllowlist\nspec:\n  mode: enforce\n  modules:\n    - name: veth\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(dir, "broken.yaml")
	if err := os.WriteFile(broken, []byte("apiVersion: kmodguard.io/v1\nkind: ModuleAllowlist\nspec: {mode: enforce, modules: [{name: veth, sha256: [xyz]}]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pins := filepath.Join(dir, "pins")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"enforcer", "run", "--allowlist", broken, "--pin-dir", pins}, "broken.yaml:3"},
		{[]string{"enforcer", "run", "--allowlist", filepath.Join(dir, "missing.yaml"), "--pin-dir", pins}, "missing.yaml"},
		{[]string{"enforcer", "run", "--allowlist", good, "--log-format", "xml", "--pin-dir", pins}, "log format"},
		{[]string{"enforcer", "apply", broken, "--pin-dir", pins}, "broken.yaml:3"},
		{[]string{"enforcer", "run", "--allowlist", good, "--require-signature", "--pin-dir", pins}, "signature"},
	} {
		_, stderr, code := kg(t, tc.args...)
		if code != exitError || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, %q; want exit 2 mentioning %q", tc.args, code, stderr, tc.want)
		}
	}
	// Without BPF LSM (this host), run explains what to add to the kernel
	// command line.
	if enforcer.Supported() != nil {
		_, stderr, code := kg(t, "enforcer", "run", "--allowlist", good, "--pin-dir", pins)
		if code != exitError || !strings.Contains(stderr, "BPF LSM is not active") {
			t.Errorf("run without BPF LSM: exit %d, %q", code, stderr)
		}
	}
}

// TestPrintStatus: status says which kmodguard read the guard, in text
// and in JSON, beside the guard's own state.
func TestPrintStatus(t *testing.T) {
	st := enforcer.Status{PinDir: "/sys/fs/bpf/kmodguard", Mode: "enforce", Generation: 3, Entries: 12, Serial: 7, Sealed: true, ReaderPid: 4242}
	v := version.Info{Version: "0.1.0+g0123456789ab", Commit: "0123456789abcdef0123456789abcdef01234567", GoVersion: "go1.26.8"}
	daemon := &version.Info{Version: "0.1.0+gfedcba987654", Commit: "fedcba9876543210fedcba9876543210fedcba98", GoVersion: "go1.26.7"}
	for _, tc := range []struct {
		format outputFormat
		reader *version.Info
		want   []string
		absent []string
	}{
		{formatText, daemon, []string{"version:", "0.1.0+g0123456789ab (commit 0123456789ab, go1.26.8)",
			"daemon version:", "0.1.0+gfedcba987654 (commit fedcba987654, go1.26.7) (pid 4242)", "pin dir:", "/sys/fs/bpf/kmodguard", "sealed:", "true", "serial:", "7 (older allowlists are refused)"}, nil},
		{formatText, nil, []string{"version:"}, []string{"daemon version:"}},
		{formatJSON, daemon, []string{`"version": "0.1.0+g0123456789ab"`, `"commit": "0123456789abcdef0123456789abcdef01234567"`,
			`"reader_version": "0.1.0+gfedcba987654"`, `"reader_pid": 4242`, `"mode": "enforce"`, `"sealed": true`, `"serial": 7`}, nil},
		{formatJSON, nil, []string{`"version": "0.1.0+g0123456789ab"`}, []string{"reader_version"}},
	} {
		var b strings.Builder
		if err := printStatus(&b, st, v, tc.reader, tc.format); err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("%s: %q lacks %q", tc.format, b.String(), w)
			}
		}
		for _, a := range tc.absent {
			if strings.Contains(b.String(), a) {
				t.Errorf("%s, no daemon: %q has %q", tc.format, b.String(), a)
			}
		}
		if tc.format == formatJSON {
			var back struct {
				enforcer.Status
				Version string `json:"version"`
			}
			if err := json.Unmarshal([]byte(b.String()), &back); err != nil || back.Version != v.Version || back.Generation != 3 || back.PinDir != st.PinDir {
				t.Errorf("status -o json does not read back: %+v, %v", back, err)
			}
		}
	}
}

// TestEnforcerOutput: status in JSON and in YAML holds the same data; a
// bad -o is refused before the pins are read, and --json still works.
func TestEnforcerOutput(t *testing.T) {
	st := enforcer.Status{PinDir: "/sys/fs/bpf/kmodguard", Mode: "audit", Generation: 2, Missing: []string{"kernel_read_file"}, Blocked: 4}
	v := version.Info{Version: "0.1.0", GoVersion: "go1.26.8"}
	var j, y strings.Builder
	if err := printStatus(&j, st, v, nil, formatJSON); err != nil {
		t.Fatal(err)
	}
	if err := printStatus(&y, st, v, nil, formatYAML); err != nil {
		t.Fatal(err)
	}
	sameData(t, "enforcer status", j.String(), y.String())

	pins := filepath.Join(t.TempDir(), "none")
	if stdout, stderr, code := kg(t, "enforcer", "status", "--pin-dir", pins, "-o", "xml"); code != exitError || stdout != "" ||
		!strings.Contains(stderr, "want text, json or yaml") || strings.Contains(stderr, "no guard is pinned") {
		t.Errorf("status -o xml: exit %d, %q", code, stderr)
	}
	if _, stderr, code := kg(t, "enforcer", "status", "--pin-dir", pins, "--json"); code != exitError ||
		!strings.Contains(stderr, "--json is deprecated") || !strings.Contains(stderr, "no guard is pinned") {
		t.Errorf("status --json: exit %d, %q", code, stderr)
	}
}

func TestEnforcerCompletion(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"enforcer", "run", "--mode", ""}, []string{"enforce", "audit"}},
		{[]string{"enforcer", "apply", "--mode", ""}, []string{"enforce", "audit"}},
		{[]string{"enforcer", "run", "--log-format", ""}, []string{"text", "json"}},
		{[]string{"enforcer", "run", "--log-level", ""}, logLevels},
		{[]string{"enforcer", "status", "-o", ""}, []string{"text", "json", "yaml"}},
	} {
		if got := completions(t, tc.args...); !slices.Equal(got, tc.want) {
			t.Errorf("complete %q: %q, want %q", tc.args, got, tc.want)
		}
	}
}

// TestStatusReadyNeedsTheDaemon: status --ready asks, of a whole guard,
// whether a daemon runs that reads its decisions, from the reader's pinned
// pid and last check.
func TestStatusReadyNeedsTheDaemon(t *testing.T) {
	now := time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)
	daemonStart := now.Add(-time.Hour)
	running := func(pid uint32) (time.Time, error) {
		if pid != 1 {
			return time.Time{}, os.ErrNotExist
		}
		return daemonStart, nil
	}
	for _, tc := range []struct {
		name    string
		pid     uint32
		checked time.Time
		want    string // "" for ready
	}{
		{"the daemon reading", 1, now.Add(-time.Second), ""},
		{"checked in the clock tick of the start, then stalled", 1, daemonStart.Add(-5 * time.Millisecond), "last checked"},
		{"never read", 0, time.Time{}, "no daemon has read"},
		{"pid without a check", 1, time.Time{}, "no daemon has read"},
		{"the daemon gone", 7, now.Add(-time.Second), "is not running here"},
		// A pod's daemon is pid 1: a new pod's process, started after
		// the old daemon's last check, is not the reader.
		{"pid reused", 1, daemonStart.Add(-time.Second), "not the daemon"},
		{"stalled", 1, now.Add(-readerStale - time.Second), "last checked the guard's decisions 11s ago"},
	} {
		st := enforcer.Status{ReaderPid: tc.pid, ReaderChecked: tc.checked}
		err := notServed(st, now, running)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}

// TestProcessStart: a child's start time, read back from /proc, is when
// it was started, to a clock tick.
func TestProcessStart(t *testing.T) {
	before := time.Now()
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	after := time.Now()
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	got, err := processStart(uint32(cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	const tick = 20 * time.Millisecond // a tick, and the clocks' reads apart
	if got.Before(before.Add(-tick)) || got.After(after.Add(tick)) {
		t.Errorf("started %s, want between %s and %s", got, before, after)
	}
	if _, err := processStart(1 << 30); err == nil {
		t.Error("a pid beyond pid_max has a start time")
	}
}

// TestStatusRecursionMisses: calls the kernel skipped are shown per hook
// and make status exit 1, like an override; a kernel that can skip the
// guard says so.
func TestStatusRecursionMisses(t *testing.T) {
	st := enforcer.Status{
		PinDir: "/sys/fs/bpf/kmodguard", Mode: "enforce",
		Links:                 []lsm.LinkStatus{{Hook: "kg_post_load_data", LinkID: 3, ProgID: 41}},
		RecursionMisses:       2,
		RecursionMissesByHook: []lsm.ProgramMisses{{Hook: "kg_post_load_data", ProgID: 41, Misses: 2}},
		Preemption:            lsm.Preemption{SkipsBusy: true, SkipsBusyFrom: "kallsyms", Model: "full", ModelFrom: "/sys/kernel/debug/sched/preempt", Dynamic: true},
	}
	var b strings.Builder
	if err := printStatus(&b, st, version.Info{Version: "0.1.0"}, nil, formatText); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"recursion misses:", "2 call(s) to the guard skipped", "kg_post_load_data", "prog 41, 2 skipped", "preemption:", "YES: a load that preempts the guard"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("status %q lacks %q", b.String(), w)
		}
	}
	err := incomplete(st)
	if err == nil || !strings.Contains(err.Error(), "kg_post_load_data skipped 2 time(s)") {
		t.Errorf("incomplete = %v; want the skipped hook", err)
	}
	st.RecursionMisses, st.RecursionMissesByHook = 0, nil
	st.Preemption.Model = "voluntary"
	b.Reset()
	if err := printStatus(&b, st, version.Info{Version: "0.1.0"}, nil, formatText); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "recursion misses:") || !strings.Contains(b.String(), "root can switch") {
		t.Errorf("status %q: want no misses and a switchable kernel", b.String())
	}
	if err := incomplete(st); err != nil {
		t.Errorf("incomplete with no misses = %v", err)
	}
}
