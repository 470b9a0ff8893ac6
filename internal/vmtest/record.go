package vmtest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kmodguard/kmodguard/internal/debkernel"
)

// EnvResults names the folder where Run records each boot's outcome, one
// JSON file per package, host test and kernel (Record); the support matrix
// (docs/support-matrix.md, `make matrix`) is generated from them. Default:
// vmtest-results in the kernel cache (debkernel.CacheDir).
const EnvResults = "KMODGUARD_VMTEST_RESULTS"

// ResultsDir is where Run records its boots.
func ResultsDir() string {
	if d := os.Getenv(EnvResults); d != "" {
		return d
	}
	return filepath.Join(debkernel.CacheDir(), "vmtest-results")
}

// Record is what one boot of Run leaves in ResultsDir: which kernel build
// ran which package's guest tests, and how each test ended.
type Record struct {
	Package string    `json:"package"` // import path of the package under test
	Test    string    `json:"test"`    // the host-side test, e.g. TestVM
	Run     string    `json:"run"`     // the guest tests' pattern
	Time    time.Time `json:"time"`
	Arch    string    `json:"arch"`
	Series  string    `json:"series"`
	Release string    `json:"release"`
	// Kernel is the package and its exact Debian version, e.g.
	// "linux-image-6.1.0-57-amd64 6.1.192-3".
	Kernel  string   `json:"kernel"`
	Parts   []string `json:"parts,omitempty"`
	Passed  []string `json:"passed,omitempty"`
	Failed  []string `json:"failed,omitempty"`
	Skipped []string `json:"skipped,omitempty"`
	// Messages holds, for each failed or skipped test, the last lines it
	// logged (file:line: text; a t.Fatal or t.Skip comes last), and for
	// every test its SupportNote lines and the lines that say in capitals
	// what a kernel cannot do ("FENTRY NOT AVAILABLE ...").
	Messages map[string][]string `json:"messages,omitempty"`
	// Err is the run's verdict (Result.Err); empty when it passed.
	Err     string  `json:"err,omitempty"`
	BootSec float64 `json:"boot_s"`
	TestSec float64 `json:"tests_s"`
	WallSec float64 `json:"wall_s"`
}

// record writes r as a Record of the host test t of the package in the
// working folder. Errors are the caller's to log: a record is a report, not
// a verdict.
func record(test string, r *Result, spec Spec) error {
	if r == nil || r.Kernel == nil {
		return nil
	}
	pkg, err := importPath()
	if err != nil {
		return err
	}
	k := r.Kernel
	rec := Record{
		Package: pkg, Test: test, Run: spec.Run, Time: time.Now().UTC().Truncate(time.Second),
		Arch: spec.Arch, Series: string(k.Series), Release: k.Release, Kernel: k.String(), Parts: k.Parts,
		Passed: r.Passed, Failed: r.Failed, Skipped: r.Skipped,
		Messages: r.messages(),
		BootSec:  r.Boot.Seconds(), TestSec: r.Tests.Seconds(), WallSec: r.Wall.Seconds(),
	}
	if err := r.Err(); err != nil {
		rec.Err = err.Error()
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Join(ResultsDir(), spec.Arch, k.Release)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("record results: %w", err)
	}
	name := strings.NewReplacer("/", "_", ".", "_").Replace(pkg) + "." + test
	if spec.Run != "^TestGuest" {
		// A second Run of the same host test with other guest tests.
		name += "." + regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(spec.Run, "_")
	}
	name += ".json"
	tmp := filepath.Join(dir, "."+name)
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("record results: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("record results: %w", err)
	}
	return nil
}

// importPath returns the import path of the package in the working folder
// (a test's working folder is its package's), from the module's go.mod.
func importPath() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil {
			m := regexp.MustCompile(`(?m)^module\s+(\S+)`).FindSubmatch(b)
			if m == nil {
				return "", fmt.Errorf("%s/go.mod names no module", d)
			}
			rel, err := filepath.Rel(d, dir)
			if err != nil {
				return "", err
			}
			if rel == "." {
				return string(m[1]), nil
			}
			return string(m[1]) + "/" + filepath.ToSlash(rel), nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
	}
}

var (
	runRE     = regexp.MustCompile(`^\s*=== (RUN|CONT|PAUSE)\s+(\S+)`)
	logRE     = regexp.MustCompile(`^\s+(\S+\.go:\d+: .*)$`)
	notAvail  = regexp.MustCompile(`\b[A-Z]+ NOT AVAILABLE\b|` + SupportPrefix)
	logrusRE  = regexp.MustCompile(`level=(?:warning|error|fatal) msg="((?:[^"\\]|\\.)*)" error="((?:[^"\\]|\\.)*)"`)
	verdictLn = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+) \(`)
)

// messages returns, by test name, what failed and skipped tests logged,
// and the NOT AVAILABLE lines of any test. go test -v prints a test's log
// lines right after its === RUN line (and, for a parallel test, after its
// verdict line); the test they belong to is the last one named.
func (r *Result) messages() map[string][]string {
	bad := map[string]bool{}
	for _, n := range r.Failed {
		bad[n] = true
	}
	for _, n := range r.Skipped {
		bad[n] = true
	}
	out := map[string][]string{}
	cur := ""
	for _, line := range strings.Split(r.Output, "\n") {
		if m := runRE.FindStringSubmatch(line); m != nil {
			cur = m[2]
			continue
		}
		if m := verdictLn.FindStringSubmatch(line); m != nil {
			cur = m[2]
			continue
		}
		m := logRE.FindStringSubmatch(line)
		if m == nil && bad[cur] {
			// A library's own warning (logrus) often says why: keep its
			// message and error.
			if w := logrusRE.FindStringSubmatch(line); w != nil {
				m = []string{line, "log: " + w[1] + ": " + w[2]}
			}
		}
		if m == nil || cur == "" {
			continue
		}
		if bad[cur] || notAvail.MatchString(m[1]) {
			// The last lines: a failing test ends with its t.Fatal.
			out[cur] = append(out[cur], strings.TrimSpace(m[1]))
			if len(out[cur]) > 8 {
				out[cur] = out[cur][1:]
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// SupportPrefix begins the log lines of SupportNote.
const SupportPrefix = "SUPPORT: "

// SupportNote logs, from a guest test, one line for the support matrix
// (docs/support-matrix.md): what the kernel did that the test's verdict
// alone does not say, such as which path a load took. Run records it
// with the test, and the matrix shows it in the test's cell.
func SupportNote(t testing.TB, format string, args ...any) {
	t.Helper()
	t.Logf(SupportPrefix+format, args...)
}
