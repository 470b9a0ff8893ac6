// Command benchtable turns the output of scripts/bench.sh into the
// performance table of the README: each figure the project has a goal for,
// what this run measured, the goal, and whether it was met. It reads the
// benchmark result lines (`go test -bench` lines, and the guests' lines that
// vmtest.LogLines prints as "RELEASE: BenchmarkX ...") from standard input.
//
//	go run ./internal/benchtable < bench.log
//
// A figure that no line carries is printed as "not run", and counts as not
// met: a section that failed or skipped shows in the table, not only in the
// log above it.
package main

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

func main() {
	results, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(2)
	}
	fmt.Printf("Measured by `make bench` on %s, %s.\n\n", machine(), time.Now().UTC().Format("2006-01-02"))
	if unmet := write(os.Stdout, results, goals); unmet > 0 {
		fmt.Printf("\n%d figure(s) not measured or off their goal.\n", unmet)
	}
}

// result is one benchmark's metrics, by unit.
type result map[string]float64

// parse reads benchmark lines. A line's key is the benchmark's name without
// the GOMAXPROCS suffix, after the guest's kernel release when there is one
// ("6.1.0-57-amd64 BenchmarkGuestModuleLoad/dummy"). A later line for the
// same key replaces an earlier one.
func parse(r io.Reader) (map[string]result, error) {
	out := map[string]result{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		i := 0
		for i < len(f) && !strings.HasPrefix(f[i], "Benchmark") {
			i++
		}
		// A result line is NAME ITERATIONS (VALUE UNIT)...
		if i == len(f) || i+2 >= len(f) || !isInt(f[i+1]) {
			continue
		}
		key := trimProcs(f[i])
		if i > 0 && strings.HasSuffix(f[i-1], ":") {
			key = strings.TrimSuffix(f[i-1], ":") + " " + key
		}
		m := result{}
		for j := i + 2; j+1 < len(f); j += 2 {
			var v float64
			if _, err := fmt.Sscan(f[j], &v); err != nil {
				break
			}
			m[f[j+1]] = v
		}
		out[key] = m
	}
	return out, sc.Err()
}

func isInt(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// trimProcs removes the "-N" that go test appends for GOMAXPROCS.
func trimProcs(name string) string {
	if i := strings.LastIndexByte(name, '-'); i > 0 && isInt(name[i+1:]) {
		return name[:i]
	}
	return name
}

// goal is one figure: a metric of the benchmarks whose key ends with Bench
// (each kernel's guest run is a row of its own), and its target.
type goal struct {
	What   string
	Bench  string // suffix of the key
	Metric string
	Op     string // "<=", ">=", "=="
	Target float64
	Scale  float64 // the figure printed is the metric times Scale (0: 1)
	Unit   string  // printed after the figure
}

// goals are issue 17's figures, in its order, and the ones kept from before.
var goals = []goal{
	{What: "getppid() under the sensor with fexit as its exit side, vs no program", Bench: "BenchmarkGetppidInterleaved", Metric: "sensor_fentry/none", Op: "<=", Target: 1.05},
	{What: "getppid() under the sensor with sys_exit as its exit side (where fexit is refused), vs an empty sys_enter+sys_exit pair", Bench: "BenchmarkGetppidInterleaved", Metric: "sensor/empty_pair", Op: "<=", Target: 1.05},
	{What: "getppid() under the sensor with sys_exit as its exit side, vs an empty sys_enter", Bench: "BenchmarkGetppidInterleaved", Metric: "sensor/empty", Op: ">=", Target: 0},
	{What: "kmod.Inspect over 6.12's .ko.xz, CPU time vs xz -dc into SHA-256", Bench: "BenchmarkInspectTree/6.12", Metric: "inspect/xz-dc-cpu", Op: "<=", Target: 1},
	{What: "kmod.Inspect over 6.12's .ko.xz, every core vs as many xz -dc", Bench: "BenchmarkInspectTree/6.12", Metric: "inspect/xz-dc-2cpu", Op: "<=", Target: 1},
	{What: "kmod.Inspect over 6.12's .ko.xz, one stream vs one xz -dc pipeline, wall time (the pipeline runs on two cores)", Bench: "BenchmarkInspectTree/6.12", Metric: "inspect/xz-dc", Op: ">=", Target: 0},
	{What: "kmod.Inspect over 7.2's .ko.xz, CPU time vs xz -dc into SHA-256", Bench: "BenchmarkInspectTree/sid", Metric: "inspect/xz-dc-cpu", Op: "<=", Target: 1},
	{What: "kmod.Inspect over 7.2's .ko.xz, every core vs as many xz -dc", Bench: "BenchmarkInspectTree/sid", Metric: "inspect/xz-dc-2cpu", Op: "<=", Target: 1},
	{What: "kmod.Inspect over .ko.zst, CPU time vs zstd -dc into SHA-256", Bench: "BenchmarkInspectTree/6.1-zst", Metric: "inspect/zstd-dc-cpu", Op: "<=", Target: 1},
	{What: "kmod.Inspect over .ko.zst, every core vs as many zstd -dc", Bench: "BenchmarkInspectTree/6.1-zst", Metric: "inspect/zstd-dc-2cpu", Op: "<=", Target: 1},
	{What: "allowlist init over 6.1's .ko, vs sha256sum", Bench: "BenchmarkInitVsSha256sum", Metric: "ours/sha256sum", Op: "<=", Target: 1},
	{What: "init_module events (4 KiB), flat out from one thread: dropped per 100,000 calls", Bench: "BenchmarkInitModuleEvents", Metric: "drops", Op: "==", Target: 0},
	{What: "init_module events (4 KiB), flat out from one thread", Bench: "BenchmarkInitModuleEvents", Metric: "events/s", Op: ">=", Target: 0, Unit: " events/s"},
	{What: "highest paced init_module rate with no drop", Bench: "BenchmarkInitModulePaced", Metric: "max-events/s", Op: ">=", Target: 200000, Unit: " events/s"},
	{What: "paced init_module: the one producing thread's highest rate, sensor attached", Bench: "BenchmarkInitModulePaced", Metric: "producer-max-calls/s", Op: ">=", Target: 0, Unit: " calls/s"},
	{What: "paced init_module: the search ended with the producer behind and nothing dropped (1), or on a drop (0)", Bench: "BenchmarkInitModulePaced", Metric: "producer-limited", Op: ">=", Target: 0},
	{What: "junk flood from every CPU: real loads delivered / made", Bench: "BenchmarkJunkFlood", Metric: "loads-delivered/made", Op: "==", Target: 1},
	{What: "guard: dummy load+unload latency, with / without (guest)", Bench: "BenchmarkGuestModuleLoad/dummy", Metric: "ratio", Op: "<=", Target: 1.10},
	{What: "guard: veth load+unload latency, with / without (guest)", Bench: "BenchmarkGuestModuleLoad/veth", Metric: "ratio", Op: "<=", Target: 1.10},
	{What: "guard: veth, the init_module hook's own run time per load (guest, emulated CPU)", Bench: "BenchmarkGuestModuleLoad/veth", Metric: "ns/guard-hook", Op: ">=", Target: 0, Scale: 1e-6, Unit: " ms"},
	{What: "guard: veth, that hook time added to a load without the guard, over that load (guest)", Bench: "BenchmarkGuestModuleLoad/veth", Metric: "hook-ratio", Op: ">=", Target: 0},
	{What: "guard: veth load+unload, the loading thread's CPU time, with / without (guest)", Bench: "BenchmarkGuestModuleLoad/veth", Metric: "cpu-ratio", Op: ">=", Target: 0},
}

// write prints the table and returns the number of figures not met.
func write(w io.Writer, results map[string]result, goals []goal) (unmet int) {
	fmt.Fprintln(w, "| figure | where | measured | goal | met |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, g := range goals {
		rows := 0
		for _, key := range sortedKeys(results) {
			where, ok := strings.CutSuffix(key, g.Bench)
			v, has := results[key][g.Metric]
			if !ok || !has || (where != "" && !strings.HasSuffix(where, " ")) {
				continue
			}
			where = strings.TrimSpace(where)
			if where == "" {
				where = "host"
			}
			if g.Scale != 0 {
				v *= g.Scale
			}
			met := g.met(v)
			if !met {
				unmet++
			}
			fmt.Fprintf(w, "| %s | %s | %s%s | %s | %s |\n", g.What, where, format(v), g.Unit, g.goalText(), yesNo(met))
			rows++
		}
		if rows == 0 {
			unmet++
			fmt.Fprintf(w, "| %s | – | not run | %s | no |\n", g.What, g.goalText())
		}
	}
	return unmet
}

func (g goal) met(v float64) bool {
	switch g.Op {
	case "<=":
		return v <= g.Target
	case ">=":
		return v >= g.Target
	default:
		return v == g.Target
	}
}

func (g goal) goalText() string {
	if g.Op == ">=" && g.Target == 0 {
		return "reported"
	}
	op := map[string]string{"<=": "≤ ", ">=": "≥ ", "==": "= "}[g.Op]
	return op + format(g.Target) + g.Unit
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "**no**"
}

// format prints ratios with three significant decimals and rates as
// integers with thousands separators.
func format(v float64) string {
	if v >= 1000 || v == float64(int64(v)) && v >= 10 {
		s := fmt.Sprintf("%.0f", v)
		for i := len(s) - 3; i > 0; i -= 3 {
			s = s[:i] + "," + s[i:]
		}
		return s
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
}

// sortedKeys lists the host's results first, then the guests' by release.
func sortedKeys(m map[string]result) []string {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int {
		ha, hb := strings.HasPrefix(a, "Benchmark"), strings.HasPrefix(b, "Benchmark")
		if ha != hb {
			if ha {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	return keys
}

// machine names the CPU, the number of CPUs and the kernel.
func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "unknown kernel"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = "Linux " + strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%s, %d CPUs, %s", cpu, runtime.NumCPU(), kernel)
}
