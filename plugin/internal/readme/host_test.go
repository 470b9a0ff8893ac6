package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/falcosecurity/plugin-sdk-go/pkg/sdk"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/plugin"
)

// buildHost compiles testdata/falcohost.c, a minimal Falco stand-in that
// drives the .so through the plugin API's C symbols: init, open,
// next_batch and extract_fields, as Falco does.
func buildHost(t *testing.T) string {
	t.Helper()
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("needs a C compiler (cc) to build the Falco stand-in")
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/falcosecurity/plugin-sdk-go").Output()
	if err != nil {
		t.Fatalf("find plugin-sdk-go: %v", err)
	}
	inc := filepath.Join(strings.TrimSpace(string(out)), "pkg", "sdk")
	bin := filepath.Join(t.TempDir(), "falcohost")
	cmd := exec.Command(cc, "-O1", "-Wall", "-Werror", "-I", inc, "-o", bin, "testdata/falcohost.c", "-ldl")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build falcohost: %v\n%s", err, msg)
	}
	return bin
}

// hostArgs names every field of the plugin with its C type.
func hostArgs() []string {
	var args []string
	for _, f := range plugin.New().Fields() {
		typ := map[string]uint32{"string": sdk.FieldTypeCharBuf, "uint64": sdk.FieldTypeUint64, "bool": sdk.FieldTypeBool}[f.Type]
		list := 0
		if f.IsList {
			list = 1
		}
		args = append(args, fmt.Sprintf("%s:%d:%d", f.Name, typ, list))
	}
	return args
}

// runHost runs the stand-in and returns its lines.
func runHost(t *testing.T, host, so, config, params string) []string {
	t.Helper()
	cmd := exec.Command(host, append([]string{so, config, params}, hostArgs()...)...)
	cmd.Stderr = nil // the plugin logs to stderr; only stdout is read
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("falcohost: %v\n%s", err, out)
	}
	return strings.Split(strings.TrimRight(string(out), "\n"), "\n")
}

// render formats a field value as falcohost prints it.
func render(v any, ok bool) string {
	if !ok {
		return "<NA>"
	}
	switch v := v.(type) {
	case string:
		return v
	case []string:
		if len(v) == 0 {
			return "<NA>" // an empty list has no values to print
		}
		return strings.Join(v, "|")
	case bool:
		return strconv.FormatBool(v)
	case uint64:
		return strconv.FormatUint(v, 10)
	}
	return fmt.Sprintf("<%T>", v)
}

func hostEvents() []*event.Event {
	const d1 = "3b1f5e0c2d4a6b8c9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f"
	return []*event.Event{
		{TS: 1764190000000000001, Syscall: event.InitModule, Res: -38, Name: "dummy", ThisModuleName: "dummy",
			SHA256: d1, ELFSHA256: d1, Size: 37640, Params: "numdummies=3", Signed: true, Signer: "Debian Secure Boot CA",
			Vermagic: "6.1.0-56-amd64 SMP preempt mod_unload modversions ", Pid: 42, Tid: 43, Ppid: 1, Comm: "insmod",
			Exe: "/usr/bin/kmod", Cmdline: "insmod dummy.ko numdummies=3", LoginUID: 1000, HostNS: true, CapEffective: 1 << 16},
		{TS: 1764190000000000002, Syscall: event.FinitModule, Name: "dumbo", ThisModuleName: "dummy", NameMismatch: true,
			SHA256: d1, ELFSHA256: d1, Path: "/tmp/x.ko", Flags: []string{"MODULE_INIT_IGNORE_VERMAGIC"}, FileChanged: true,
			Depends: []string{"a", "b"}, Verdict: event.VerdictBlocked, TOCTOU: true, Pid: 7, Tid: 7, Comm: "python3",
			ContainerID: "0123456789ab", Cgroup: "/kubepods/x", CapEffective: 1<<16 | 1<<21},
		{TS: 1764190000000000003, Syscall: event.DeleteModule, Res: -2, Name: "dummy",
			Flags: []string{"O_NONBLOCK", "O_TRUNC"}, Pid: 9, Tid: 9, Comm: "rmmod", HostNS: true},
	}
}

// TestFalcoStandIn replays a recording through the .so's C entry points
// and expects every field of every event to equal what package plugin
// extracts in Go.
func TestFalcoStandIn(t *testing.T) {
	so := buildPlugin(t)
	host := buildHost(t)
	dir := t.TempDir()
	rec := filepath.Join(dir, "events.kgrec")
	f, err := os.Create(rec)
	if err != nil {
		t.Fatal(err)
	}
	w := event.NewRecordWriter(f)
	events := hostEvents()
	for _, e := range events {
		if err := w.Write(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	var want []string
	for i, e := range events {
		vals := plugin.FieldValues(e)
		for _, fe := range plugin.New().Fields() {
			v, ok := vals[fe.Name]
			want = append(want, fmt.Sprintf("%d %d %s=%s", i+1, e.TS, fe.Name, render(v, ok)))
		}
	}
	// At debug level the plugin logs, and all of it must go to stderr:
	// stdout, Falco's, holds exactly the stand-in's lines.
	got, metrics := splitMetrics(runHost(t, host, so, `{"log_level": "debug"}`, "replay:"+rec))
	checkMetrics(t, metrics, map[string]uint64{"events_delivered": uint64(len(events))})
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		diff := lineDiff(want, got)
		t.Errorf("the .so extracts other values than package plugin:\n%s", diff)
	}

	// With an allowlist, the .so judges the recording.
	list := filepath.Join(dir, "allow.yaml")
	a := allowlist.New("t", allowlist.ModeEnforce)
	if _, err := a.Add(allowlist.Entry{Name: "dummy", SHA256: []string{events[0].SHA256}}); err != nil {
		t.Fatal(err)
	}
	if err := allowlist.Save(list, a); err != nil {
		t.Fatal(err)
	}
	got, metrics = splitMetrics(runHost(t, host, so, `{"allowlist": "`+list+`", "log_level": "error"}`, "replay:"+rec))
	checkMetrics(t, metrics, map[string]uint64{"events_delivered": uint64(len(events)), "allowlist_entries": uint64(len(a.Spec.Modules))})
	for _, line := range []string{
		"1 1764190000000000001 kmod.allowed=true", "1 1764190000000000001 kmod.allowlist_entry=dummy",
		"2 1764190000000000002 kmod.allowed=false", "2 1764190000000000002 kmod.allowlist_entry=<NA>",
		"3 1764190000000000003 kmod.allowed=<NA>",
	} {
		if !contains(got, line) {
			t.Errorf("missing %q", line)
		}
	}

	// Errors surface through plugin_get_last_error, as Falco shows them.
	for _, tc := range []struct{ config, params, want string }{
		{`{"ringbuf_size": 1000}`, "", "init error: init_config.ringbuf_size: must be a power of two"},
		{`{}`, "tcp://x", `open error: open_params "tcp://x": want empty (the live sensor) or "replay:FILE"`},
		{`{}`, "replay:" + filepath.Join(dir, "none"), "open error: open replay file: "},
	} {
		got := runHost(t, host, so, tc.config, tc.params)
		if len(got) != 1 || !strings.HasPrefix(got[0], tc.want) {
			t.Errorf("config %s, params %q: %q, want %q", tc.config, tc.params, got, tc.want)
		}
	}
}

// splitMetrics separates the stand-in's metric lines from its field lines.
func splitMetrics(lines []string) (fields, metrics []string) {
	for _, l := range lines {
		if strings.HasPrefix(l, "metric ") {
			metrics = append(metrics, l)
		} else {
			fields = append(fields, l)
		}
	}
	return fields, metrics
}

// checkMetrics expects the metrics the stand-in read through the .so's
// plugin_get_metrics after a replay: every metric of plugin.Metrics, in
// order, as a u64 (value type 2) of its type (0 monotonic, 1 not), with
// the values in want and 0 for the others (a replay has no sensor and no
// companion).
func checkMetrics(t *testing.T, got []string, want map[string]uint64) {
	t.Helper()
	var exp []string
	for _, d := range plugin.Metrics() {
		typ := 0
		if d.Type == plugin.NonMonotonic {
			typ = 1
		}
		exp = append(exp, fmt.Sprintf("metric %s %d 2 %d", d.Name, typ, want[d.Name]))
	}
	if strings.Join(got, "\n") != strings.Join(exp, "\n") {
		t.Errorf("metrics through plugin_get_metrics:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(exp, "\n"))
	}
}

func contains(lines []string, s string) bool {
	for _, l := range lines {
		if l == s {
			return true
		}
	}
	return false
}

func lineDiff(want, got []string) string {
	var b strings.Builder
	w := map[string]bool{}
	for _, l := range want {
		w[l] = true
	}
	g := map[string]bool{}
	for _, l := range got {
		g[l] = true
	}
	var lines []string
	for _, l := range want {
		if !g[l] {
			lines = append(lines, "- "+l)
		}
	}
	for _, l := range got {
		if !w[l] {
			lines = append(lines, "+ "+l)
		}
	}
	sort.Strings(lines)
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	return b.String()
}
