// Command supportmatrix writes docs/support-matrix.md from the records the
// last guest runs left (internal/vmtest Record, in vmtest.ResultsDir):
// one row per kernel build, one column per sensor hook, the guard, the seal
// and compressed module loads. Every cell comes from a real boot; a broken
// one is red with the reason the test gave. `make matrix` runs it.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/kmodguard/kmodguard/internal/debkernel"
	"github.com/kmodguard/kmodguard/internal/vmtest"
)

const module = "github.com/kmodguard/kmodguard"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "supportmatrix:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("results", vmtest.ResultsDir(), "folder of the guest runs' records")
	out := flag.String("o", "docs/support-matrix.md", "markdown file to write (- for stdout)")
	flag.Parse()
	recs, err := load(*dir)
	if err != nil {
		return err
	}
	if len(recs) == 0 {
		return fmt.Errorf("no records in %s: run make vmtest first", *dir)
	}
	var w io.Writer = os.Stdout
	if *out != "-" {
		f, err := os.Create(*out)
		if err != nil {
			return fmt.Errorf("write matrix: %w", err)
		}
		defer f.Close()
		w = f
	}
	return write(w, recs)
}

// load reads every record under dir.
func load(dir string) ([]vmtest.Record, error) {
	var recs []vmtest.Record
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".json") || strings.HasPrefix(d.Name(), ".") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var r vmtest.Record
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read records: %w", err)
	}
	return recs, nil
}

// row is one kernel build: its records by package.
type row struct {
	arch, series, release, kernel string
	newest                        time.Time
	recs                          []vmtest.Record
}

func (r *row) pkg(rel string) []vmtest.Record {
	var out []vmtest.Record
	for _, rec := range r.recs {
		if rec.Package == module+"/"+rel {
			out = append(out, rec)
		}
	}
	return out
}

// rows groups the records by kernel, and keeps for each architecture and
// series only the build run last: Debian replaces its kernels, and the
// matrix is about the archive of the last run.
func rows(recs []vmtest.Record) []*row {
	byRel := map[string]*row{}
	for _, rec := range recs {
		key := rec.Arch + "/" + rec.Release
		r := byRel[key]
		if r == nil {
			r = &row{arch: rec.Arch, series: rec.Series, release: rec.Release, kernel: rec.Kernel}
			byRel[key] = r
		}
		r.recs = append(r.recs, rec)
		if rec.Time.After(r.newest) {
			r.newest, r.kernel = rec.Time, rec.Kernel
		}
	}
	newest := map[string]*row{}
	for _, r := range byRel {
		key := r.arch + "/" + r.series
		if cur := newest[key]; cur == nil || r.newest.After(cur.newest) {
			newest[key] = r
		}
	}
	var out []*row
	for _, r := range newest {
		out = append(out, r)
	}
	order := func(s string) int {
		if i := slices.Index(debkernel.AllSeries, debkernel.Series(s)); i >= 0 {
			return i
		}
		return -1 // kernels below the matrix (refusal rows) first
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].arch != out[j].arch {
			return out[i].arch == debkernel.AMD64
		}
		if oi, oj := order(out[i].series), order(out[j].series); oi != oj {
			return oi < oj
		}
		return out[i].release < out[j].release
	})
	return out
}

// cell is one verdict: ok, not available (the kernel cannot, and the code
// says so), broken, or not run; with what to say.
type cell struct {
	state string // "ok", "na", "fail", "none"
	text  string
}

func (c cell) String() string {
	mark := map[string]string{"ok": "🟢", "na": "🟡", "fail": "🔴", "none": "⚪"}[c.state]
	t := strings.NewReplacer("|", "\\|", "\n", " ").Replace(c.text)
	return strings.TrimSpace(mark + " " + t)
}

// lineRE strips the file:line prefix of a logged line.
var lineRE = regexp.MustCompile(`^\S+\.go:\d+: `)

func msg(rec vmtest.Record, test string) string {
	ms := rec.Messages[test]
	if len(ms) == 0 {
		return ""
	}
	return lineRE.ReplaceAllString(ms[len(ms)-1], "")
}

func notes(rec vmtest.Record, test string) []string {
	var out []string
	for _, m := range rec.Messages[test] {
		m = lineRE.ReplaceAllString(m, "")
		if s, ok := strings.CutPrefix(m, vmtest.SupportPrefix); ok {
			out = append(out, s)
		} else if strings.Contains(m, "NOT AVAILABLE") {
			out = append(out, m)
		}
	}
	return out
}

// verdict looks one guest test up in the records.
func verdict(recs []vmtest.Record, test string) cell {
	for _, rec := range recs {
		switch {
		case slices.Contains(rec.Failed, test):
			text := "FAIL: " + msg(rec, test)
			for _, m := range rec.Messages[test] {
				if why, ok := strings.CutPrefix(m, "log: "); ok {
					text += " (" + strings.ReplaceAll(why, `\"`, `"`) + ")"
					break
				}
			}
			return cell{"fail", text}
		case slices.Contains(rec.Skipped, test):
			return cell{"na", "skipped: " + msg(rec, test)}
		case slices.Contains(rec.Passed, test):
			if n := notes(rec, test); len(n) > 0 {
				state := "ok"
				if strings.Contains(strings.Join(n, " "), "NOT AVAILABLE") {
					state = "na"
				}
				return cell{state, strings.Join(n, "; ")}
			}
			return cell{"ok", "pass"}
		}
	}
	for _, rec := range recs {
		if rec.Err != "" && !strings.Contains(rec.Err, "guest tests failed") {
			first, _, _ := strings.Cut(rec.Err, "\n")
			return cell{"fail", first}
		}
	}
	return cell{"none", "not run"}
}

// guard is every top-level guard test but the seal's and the compressed
// loads', which have their own columns.
func guard(recs []vmtest.Record) cell {
	if c := verdict(recs, "TestNoTrampolineGuardRefused"); c.state != "none" {
		if c.state == "ok" {
			return cell{"na", "refused, as it must be: " + msg(recs[0], "TestNoTrampolineGuardRefused")}
		}
		return c
	}
	var passed, failed []string
	var why string
	for _, rec := range recs {
		for _, t := range rec.Passed {
			if !strings.Contains(t, "/") && t != "TestGuestZSealed" && t != "TestGuestCompressed" && strings.HasPrefix(t, "TestGuest") {
				passed = append(passed, t)
			}
		}
		for _, t := range rec.Failed {
			if !strings.Contains(t, "/") && t != "TestGuestZSealed" && t != "TestGuestCompressed" {
				failed = append(failed, t)
				if why == "" {
					why = t + ": " + msg(rec, t)
				}
			}
		}
	}
	switch {
	case len(failed) > 0:
		return cell{"fail", fmt.Sprintf("FAIL %d of %d tests: %s", len(failed), len(failed)+len(passed), why)}
	case len(passed) > 0:
		return cell{"ok", fmt.Sprintf("%d guest tests pass", len(passed))}
	}
	return verdict(recs, "TestGuestListedLoads")
}

// refusal is the cell of a kernel below the floor: the refusal test of
// what passed, which must have refused with a clear reason.
func refusal(recs []vmtest.Record, what string) cell {
	c := verdict(recs, "TestBelowFloorRefused/"+what)
	if c.state == "ok" {
		return cell{"na", "refused (below the floor): " + c.text}
	}
	return c
}

// compressed joins the guard's compressed-load test and the harness's
// plain compressed finit_module (no guard).
func compressed(r *row) cell {
	g := verdict(r.pkg("enforcer"), "TestGuestCompressed")
	k := verdict(r.pkg("internal/vmtest"), "TestGuestFinitModule")
	switch {
	case g.state == "fail":
		return g
	case k.state == "fail":
		return cell{"fail", "without the guard: " + k.text}
	}
	return g
}

func write(w io.Writer, recs []vmtest.Record) error {
	rs := rows(recs)
	var b strings.Builder
	b.WriteString(`# Support matrix

Generated by ` + "`make matrix`" + ` (internal/supportmatrix) from the records of the last
guest runs (` + "`make vmtest`" + `): every cell is the outcome of tests that booted that
Debian kernel build under QEMU. Do not edit by hand.

- **Sensor** columns: ` + "`bpf.TestGuestSensorLoadUnload`" + ` with that hook: real
  ` + "`init_module`" + `, ` + "`finit_module`" + ` and ` + "`delete_module`" + ` calls, every event field checked.
- **Guard**: the guard's guest tests (` + "`enforcer`" + `): allow, refuse, audit, names,
  TOCTOU, overrides, daemon death; without the seal and compressed loads.
- **Seal**: ` + "`enforcer.TestGuestZSealed`" + `: root cannot detach, unpin, override or kexec.
- **Compressed finit_module**: ` + "`enforcer.TestGuestCompressed`" + ` (` + "`MODULE_INIT_COMPRESSED_FILE`" + `),
  and the kernel's own decompression without the guard (` + "`internal/vmtest`" + `).

🟢 works · 🟡 not available on that kernel (the code says so and falls back or refuses) · 🔴 broken · ⚪ not run

Kernels below the floor (Debian 11's 5.10, booted with ` + "`bpf`" + ` added to ` + "`lsm=`" + `) are
listed for their refusal: ` + "`enforcer.TestBelowFloorRefused`" + ` runs ` + "`kmodguard enforcer run`" + `
and ` + "`kmodguard watch`" + ` there, and each must exit naming the kernel it needs.

| kernel | Debian package | sensor tp_btf | sensor raw_tp | sensor fentry | guard | seal | compressed finit_module | run |
|---|---|---|---|---|---|---|---|---|
`)
	for _, r := range rs {
		sensor := r.pkg("bpf")
		enf := r.pkg("enforcer")
		var cells []cell
		if !slices.Contains(debkernel.AllSeries, debkernel.Series(r.series)) {
			// Below the floor: what matters is that both refuse, and say why.
			s, g := refusal(enf, "sensor"), refusal(enf, "guard")
			same := cell{s.state, "as tp_btf"}
			cells = []cell{s, same, same, g, {"none", "— (no guard)"}, {"none", "—"}}
		} else {
			cells = []cell{
				verdict(sensor, "TestGuestSensorLoadUnload/tp_btf"),
				verdict(sensor, "TestGuestSensorLoadUnload/raw_tracepoint"),
				verdict(sensor, "TestGuestSensorLoadUnload/fentry"),
				guard(enf),
				verdict(enf, "TestGuestZSealed"),
				compressed(r),
			}
			if cells[3].state == "na" {
				// The guard refuses this kernel: nothing to seal or decide.
				cells[4], cells[5] = cell{"none", "— (no guard)"}, cell{"none", "— (no guard)"}
			}
		}
		fmt.Fprintf(&b, "| %s %s (%s) | `%s` |", r.series, r.arch, r.release, r.kernel)
		for _, c := range cells {
			fmt.Fprintf(&b, " %s |", c)
		}
		fmt.Fprintf(&b, " %s |\n", r.newest.Format("2006-01-02"))
	}
	b.WriteString("\nGuest time per kernel (QEMU TCG, host clock: boot + tests, summed over the packages run):\n\n")
	b.WriteString("| kernel | packages | guest time |\n|---|---|---|\n")
	for _, r := range rs {
		var total float64
		var pkgs []string
		for _, rec := range r.recs {
			total += rec.WallSec
			pkgs = append(pkgs, strings.TrimPrefix(rec.Package, module+"/"))
		}
		sort.Strings(pkgs)
		pkgs = slices.Compact(pkgs)
		fmt.Fprintf(&b, "| %s %s | %s | %.0f s |\n", r.series, r.arch, strings.Join(pkgs, ", "), total)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
