//go:build linux

package enforcer

import (
	"context"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/internal/version"
	"github.com/kmodguard/kmodguard/lsm"
)

// scrape fetches url and parses the text exposition strictly.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse exposition: %v", err)
	}
	return fams
}

// value returns the value of the metric of family name whose labels include
// labels, and whether there is one.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		}
	}
	return 0, false
}

// TestMetricsScrape serves the metrics on a real listener on 127.0.0.1 and
// scrapes them as Prometheus would, while the state behind them changes.
func TestMetricsScrape(t *testing.T) {
	var (
		mu     sync.Mutex
		st     = Status{PinDir: "/sys/fs/bpf/kmodguard", Mode: "enforce", Generation: 3, Entries: 12, Allowed: 7, Blocked: 2, LostEvents: 1}
		stErr  error
		sensor = SensorStats{Drops: 4, Truncations: 5}
	)
	for _, h := range lsm.Hooks() {
		st.Links = append(st.Links, lsm.LinkStatus{Hook: h})
	}
	a := allowlist.New("prod-hosts", allowlist.ModeAudit) // the guard's mode (enforce, from --mode) must win
	m := NewMetrics(MetricsSource{
		Status: func() (Status, error) {
			mu.Lock()
			defer mu.Unlock()
			return st, stErr
		},
		Allowlist: func() *allowlist.Allowlist { return a },
		Sensor:    func() (SensorStats, bool) { return sensor, true },
	})
	ctx, cancel := context.WithCancel(context.Background())
	addr, errc, err := ServeMetrics(ctx, "127.0.0.1:0", m.Handler())
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + addr.String() + "/metrics"

	m.Observe(Decision{Op: lsm.OpInitModule, Verdict: lsm.Blocked})
	m.Observe(Decision{Op: lsm.OpInitModule, Verdict: lsm.Blocked})
	m.Observe(Decision{Op: lsm.OpFinitModule, Verdict: lsm.Allowed})
	m.Observe(Decision{Op: lsm.OpBPF, Verdict: lsm.Blocked})
	// Two reports of missing decisions: counted by their figure, and not
	// as decisions.
	m.Observe(Report{Kind: event.ReportMissing, Count: 3})
	m.Observe(Report{Kind: event.ReportMissing, Count: 2})
	m.Observe(Report{Kind: event.ReportOverride, LinkID: 7})

	fams := scrape(t, url)
	if _, ok := value(fams, "kmodguard_decisions_total", "op", string(event.ReportMissing)); ok {
		t.Error("a report of missing decisions counted as a decision")
	}
	want := []struct {
		name   string
		labels []string
		v      float64
	}{
		{"kmodguard_decisions_total", []string{"op", "init_module", "verdict", "blocked"}, 2},
		{"kmodguard_decisions_total", []string{"op", "finit_module", "verdict", "allowed"}, 1},
		{"kmodguard_decisions_total", []string{"op", "bpf", "verdict", "blocked"}, 1},
		{"kmodguard_guard_decisions_total", []string{"verdict", "allowed"}, 7},
		{"kmodguard_guard_decisions_total", []string{"verdict", "blocked"}, 2},
		{"kmodguard_guard_decisions_total", []string{"verdict", "audit"}, 0},
		{"kmodguard_guard_lost_decisions_total", nil, 1},
		{"kmodguard_decisions_missing_total", nil, 5},
		{"kmodguard_guard_up", nil, 1},
		{"kmodguard_build_info", []string{"version", version.Get().Version, "commit", version.Get().Commit,
			"modified", strconv.FormatBool(version.Get().Modified), "goversion", runtime.Version()}, 1},
		{"kmodguard_guard_pinned", nil, 1},
		{"kmodguard_guard_sealed", nil, 0},
		{"kmodguard_guard_links", []string{"state", "attached"}, float64(len(lsm.Hooks()))},
		{"kmodguard_guard_links", []string{"state", "missing"}, 0},
		{"kmodguard_guard_overrides", nil, 0},
		{"kmodguard_guard_recursion_misses_total", []string{"hook", "kg_post_load_data"}, 0},
		{"kmodguard_guard_preempt_exposed", nil, 0},
		{"kmodguard_allowlist_generation", nil, 3},
		{"kmodguard_allowlist_entries", nil, 12},
		{"kmodguard_allowlist_info", []string{"name", "prod-hosts", "mode", "enforce"}, 1},
		{"kmodguard_sensor_drops_total", nil, 4},
		{"kmodguard_sensor_truncations_total", nil, 5},
	}
	for _, w := range want {
		if v, ok := value(fams, w.name, w.labels...); !ok || v != w.v {
			t.Errorf("%s%v = %v (present %v), want %v", w.name, w.labels, v, ok, w.v)
		}
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}

	// A link goes missing and the guard is sealed: the next scrape shows it.
	mu.Lock()
	st.Missing = []string{st.Links[0].Hook}
	st.Links = st.Links[1:]
	st.Sealed = true
	st.Overrides = []lsm.Override{{Target: "security_kernel_post_read_file", LinkID: 9, ProgID: 40}}
	st.RecursionMisses = 3
	st.RecursionMissesByHook = []lsm.ProgramMisses{{Hook: "kg_post_read_file", ProgID: 41, Misses: 3}}
	st.Preemption = lsm.Preemption{SkipsBusy: true, Model: "full"}
	mu.Unlock()
	fams = scrape(t, url)
	if v, _ := value(fams, "kmodguard_guard_overrides"); v != 1 {
		t.Errorf("overrides = %v after one appeared, want 1", v)
	}
	if v, _ := value(fams, "kmodguard_guard_recursion_misses_total", "hook", "kg_post_read_file"); v != 3 {
		t.Errorf("recursion misses of kg_post_read_file = %v, want 3", v)
	}
	if v, _ := value(fams, "kmodguard_guard_preempt_exposed"); v != 1 {
		t.Errorf("preempt exposed = %v on a kernel that skips and preempts, want 1", v)
	}
	if v, _ := value(fams, "kmodguard_guard_links", "state", "missing"); v != 1 {
		t.Errorf("missing links = %v after removing one, want 1", v)
	}
	if v, _ := value(fams, "kmodguard_guard_sealed"); v != 1 {
		t.Errorf("sealed = %v, want 1", v)
	}

	// The guard cannot be read: up drops to 0 and its state is not invented.
	mu.Lock()
	stErr = errors.New("no guard is pinned")
	mu.Unlock()
	fams = scrape(t, url)
	if v, ok := value(fams, "kmodguard_guard_up"); !ok || v != 0 {
		t.Errorf("guard_up = %v (present %v), want 0", v, ok)
	}
	if _, ok := fams["kmodguard_allowlist_generation"]; ok {
		t.Error("generation reported for a guard that cannot be read")
	}

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("server: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("metrics server still running 5s after cancel")
	}
}

func TestMetricsNoSensor(t *testing.T) {
	m := NewMetrics(MetricsSource{Sensor: func() (SensorStats, bool) { return SensorStats{}, false }})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, _, err := ServeMetrics(ctx, "127.0.0.1:0", m.Handler())
	if err != nil {
		t.Fatal(err)
	}
	fams := scrape(t, "http://"+addr.String()+"/metrics")
	for name := range fams {
		if strings.HasPrefix(name, "kmodguard_sensor_") || strings.HasPrefix(name, "kmodguard_guard_") {
			t.Errorf("%s reported without its source", name)
		}
	}
}

func TestServeMetricsBadAddr(t *testing.T) {
	if _, _, err := ServeMetrics(context.Background(), "256.0.0.1:bad", NewMetrics(MetricsSource{}).Handler()); err == nil ||
		!strings.HasPrefix(err.Error(), "metrics:") {
		t.Fatalf("ServeMetrics on a bad address: %v", err)
	}
}
