//go:build linux

package enforcer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/internal/version"
)

// SensorStats are the sensor's loss counters, for the metrics of a process
// that runs the sensor next to the enforcer.
type SensorStats struct {
	// Drops counts syscall events the ring buffer refused.
	Drops uint64
	// Truncations counts events with anything cut short.
	Truncations uint64
}

// MetricsSource says where the metrics read their state at scrape time.
// Every field may be nil.
type MetricsSource struct {
	// Status reads the guard (Enforcer.Status, or ReadStatus for a pinned
	// guard).
	Status func() (Status, error)
	// Allowlist returns the allowlist in force (Enforcer.Allowlist).
	Allowlist func() *allowlist.Allowlist
	// Sensor returns the sensor's counters, and false when no sensor runs.
	Sensor func() (SensorStats, bool)
}

// Metrics are the enforcer's Prometheus metrics. Decisions are counted as
// they are observed; the guard's state, the allowlist and the sensor's
// counters are read at each scrape, so a scrape always shows the guard as
// it is (a link removed behind the daemon's back shows up at once).
//
//	kmodguard_decisions_total{op,verdict}      decisions observed by this process
//	kmodguard_decisions_missing_total          decisions another process consumed from the ring buffer
//	kmodguard_guard_decisions_total{verdict}   decisions counted in the kernel since the guard loaded
//	kmodguard_guard_lost_decisions_total       decisions the kernel could not queue
//	kmodguard_guard_up                         1 when the guard's state could be read
//	kmodguard_guard_pinned                     1 when the guard is pinned in bpffs
//	kmodguard_guard_sealed                     1 when the guard is sealed until reboot
//	kmodguard_guard_links{state}               hooks attached ("attached") and not ("missing")
//	kmodguard_guard_overrides                  programs that can decide the guard's hooks before it (lsm.Override)
//	kmodguard_guard_recursion_misses_total{hook} calls to a guard program the kernel skipped (it was running on that CPU)
//	kmodguard_guard_preempt_exposed            1 when a load that preempts the guard can skip it (lsm.Preemption)
//	kmodguard_allowlist_generation             generation of the policy in force
//	kmodguard_allowlist_entries                digests and names in the policy in force
//	kmodguard_allowlist_info{name,mode}        1, labelled with the allowlist in force and the guard's mode
//	kmodguard_sensor_drops_total               syscall events the sensor's ring buffer refused
//	kmodguard_sensor_truncations_total         sensor events cut short
type Metrics struct {
	reg       *prometheus.Registry
	decisions *prometheus.CounterVec
	missing   prometheus.Counter
}

// NewMetrics creates the metrics on a registry of their own, which also
// holds the Go runtime and process collectors.
func NewMetrics(src MetricsSource) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kmodguard_decisions_total",
			Help: "Guard decisions observed by this process, by operation and verdict (allowed, blocked, audit).",
		}, []string{"op", "verdict"}),
		missing: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kmodguard_decisions_missing_total",
			Help: "Guard decisions that never reached this process because another process consumed them from the guard's ring buffer (not the ones the kernel dropped: see kmodguard_guard_lost_decisions_total).",
		}),
	}
	m.reg.MustRegister(m.decisions, m.missing, &stateCollector{src: src}, buildInfo(version.Get()),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// buildInfo is kmodguard_build_info, 1 with this build's version in its
// labels: compared across a fleet, and with the Falco plugin's version, it
// shows hosts that run different builds.
func buildInfo(v version.Info) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kmodguard_build_info",
		Help: "The running kmodguard build: 1, with its version (semantic, as `kmodguard version` and the Falco plugin report it), commit, whether its tree was modified, and Go version in the labels.",
		ConstLabels: prometheus.Labels{
			"version": v.Version, "commit": v.Commit, "modified": strconv.FormatBool(v.Modified), "goversion": v.GoVersion,
		},
	})
	g.Set(1)
	return g
}

// Observe counts one decision, or adds the count of a report of missing
// decisions (event.ReportMissing) to kmodguard_decisions_missing_total.
// Reports of overrides are not counted: kmodguard_guard_overrides reads
// them at scrape time.
func (m *Metrics) Observe(msg Message) {
	switch msg := msg.(type) {
	case Decision:
		m.decisions.WithLabelValues(string(msg.Op), string(msg.Verdict)).Inc()
	case Report:
		if msg.Kind == event.ReportMissing {
			m.missing.Add(float64(msg.Count))
		}
	}
}

// Registry is the registry the metrics are on, for adding more.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// ServeMetrics serves h on /metrics at addr until ctx ends. It returns once
// the listener is bound (or failed to bind), with the address bound, which
// tells the port when addr asks for port 0; errc receives the server's
// error, or nil after a clean shutdown.
func ServeMetrics(ctx context.Context, addr string, h http.Handler) (bound net.Addr, errc <-chan error, err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	out := make(chan error, 1)
	go func() {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		out <- err
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	return ln.Addr(), out, nil
}

var (
	descGuardDecisions = prometheus.NewDesc("kmodguard_guard_decisions_total",
		"Decisions counted in the kernel since the guard was loaded, by verdict.", []string{"verdict"}, nil)
	descGuardLost = prometheus.NewDesc("kmodguard_guard_lost_decisions_total",
		"Decisions the guard made but could not queue for user space (ring buffer full).", nil, nil)
	descGuardUp = prometheus.NewDesc("kmodguard_guard_up",
		"1 when the guard's state could be read, 0 when not.", nil, nil)
	descGuardPinned = prometheus.NewDesc("kmodguard_guard_pinned",
		"1 when the guard is pinned in bpffs (it survives the daemon), 0 when not.", nil, nil)
	descGuardSealed = prometheus.NewDesc("kmodguard_guard_sealed",
		"1 when the guard is sealed until reboot.", nil, nil)
	descGuardLinks = prometheus.NewDesc("kmodguard_guard_links",
		"The guard's hooks by state: attached, or missing (not pinned: not enforcing through that hook).", []string{"state"}, nil)
	descGuardOverrides = prometheus.NewDesc("kmodguard_guard_overrides",
		"Someone else's BPF programs that can decide a load before the guard does (fmod_ret on a security_ function it hooks; before 6.12, LSM programs on the hooks where a positive return skips it): anything above 0 means the guard can be bypassed.", nil, nil)
	descGuardMisses = prometheus.NewDesc("kmodguard_guard_recursion_misses_total",
		"Calls to a guard program that the kernel skipped because the program was already running on that CPU (its recursion_misses), by hook. Before Linux 6.2 a skipped module hook admits the load undecided: anything above 0 is a bypass.", []string{"hook"}, nil)
	descGuardExposed = prometheus.NewDesc("kmodguard_guard_preempt_exposed",
		"1 when this kernel skips a guard program already running on a CPU (before 6.2) and its preemption model lets a load preempt the guard (full, lazy, rt): such a load is admitted undecided.", nil, nil)
	descGeneration = prometheus.NewDesc("kmodguard_allowlist_generation",
		"Generation of the policy in force in the guard.", nil, nil)
	descEntries = prometheus.NewDesc("kmodguard_allowlist_entries",
		"Digests and names in the policy in force in the guard.", nil, nil)
	descInfo = prometheus.NewDesc("kmodguard_allowlist_info",
		"Always 1; labelled with the name and mode of the allowlist in force.", []string{"name", "mode"}, nil)
	descSensorDrops = prometheus.NewDesc("kmodguard_sensor_drops_total",
		"Module syscall events the sensor's ring buffer refused (loads not seen).", nil, nil)
	descSensorTrunc = prometheus.NewDesc("kmodguard_sensor_truncations_total",
		"Sensor events with anything cut short (image, path or arguments).", nil, nil)
)

// stateCollector reads the guard, the allowlist and the sensor at scrape
// time.
type stateCollector struct{ src MetricsSource }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descGuardDecisions, descGuardLost, descGuardUp, descGuardPinned,
		descGuardSealed, descGuardLinks, descGuardOverrides, descGuardMisses, descGuardExposed, descGeneration, descEntries, descInfo, descSensorDrops, descSensorTrunc} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	guardMode := ""
	if c.src.Status != nil {
		st, err := c.src.Status()
		guardMode = st.Mode
		ch <- prometheus.MustNewConstMetric(descGuardUp, prometheus.GaugeValue, b2f(err == nil))
		if err == nil {
			for v, n := range map[string]uint64{"allowed": st.Allowed, "blocked": st.Blocked, "audit": st.Audited} {
				ch <- prometheus.MustNewConstMetric(descGuardDecisions, prometheus.CounterValue, float64(n), v)
			}
			ch <- prometheus.MustNewConstMetric(descGuardLost, prometheus.CounterValue, float64(st.LostEvents))
			ch <- prometheus.MustNewConstMetric(descGuardPinned, prometheus.GaugeValue, b2f(st.PinDir != "" && len(st.Links) > 0))
			ch <- prometheus.MustNewConstMetric(descGuardSealed, prometheus.GaugeValue, b2f(st.Sealed))
			ch <- prometheus.MustNewConstMetric(descGuardLinks, prometheus.GaugeValue, float64(len(st.Links)), "attached")
			ch <- prometheus.MustNewConstMetric(descGuardLinks, prometheus.GaugeValue, float64(len(st.Missing)), "missing")
			if st.OverridesError == "" {
				ch <- prometheus.MustNewConstMetric(descGuardOverrides, prometheus.GaugeValue, float64(len(st.Overrides)))
			}
			if st.RecursionMissesError == "" {
				for _, l := range st.Links {
					var n uint64
					for _, m := range st.RecursionMissesByHook {
						if m.Hook == l.Hook {
							n = m.Misses
						}
					}
					ch <- prometheus.MustNewConstMetric(descGuardMisses, prometheus.CounterValue, float64(n), l.Hook)
				}
			}
			ch <- prometheus.MustNewConstMetric(descGuardExposed, prometheus.GaugeValue, b2f(st.Preemption.Exposed()))
			ch <- prometheus.MustNewConstMetric(descGeneration, prometheus.GaugeValue, float64(st.Generation))
			ch <- prometheus.MustNewConstMetric(descEntries, prometheus.GaugeValue, float64(st.Entries))
		}
	}
	if c.src.Allowlist != nil {
		if a := c.src.Allowlist(); a != nil {
			// The guard's mode wins: --mode can override spec.mode.
			mode := guardMode
			if mode == "" {
				mode = string(a.Spec.Mode)
			}
			ch <- prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1, a.Metadata.Name, mode)
		}
	}
	if c.src.Sensor != nil {
		if s, ok := c.src.Sensor(); ok {
			ch <- prometheus.MustNewConstMetric(descSensorDrops, prometheus.CounterValue, float64(s.Drops))
			ch <- prometheus.MustNewConstMetric(descSensorTrunc, prometheus.CounterValue, float64(s.Truncations))
		}
	}
}
