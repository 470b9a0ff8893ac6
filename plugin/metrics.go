package plugin

import (
	"sync"
	"time"

	"github.com/kmodguard/kmodguard/bpf"
)

// MetricType says how Falco treats a metric's value.
type MetricType uint8

const (
	// Monotonic is a counter that only grows (while its source lives).
	Monotonic MetricType = iota
	// NonMonotonic is a level that goes up and down.
	NonMonotonic
)

// MetricDesc names one metric of the plugin. Falco (libs) reports it as
// "kmodguard.<Name>"; every value is an unsigned 64-bit integer.
type MetricDesc struct {
	Name string
	Type MetricType
}

// The metrics, in the order of Metrics and MetricValues.
const (
	metricSensorEvents = iota
	metricSensorDrops
	metricSensorChunkDrops
	metricSensorExitDrops
	metricSensorTruncations
	metricSensorReadFailures
	metricSensorThrottled
	metricEventsDelivered
	metricAllowlistEntries
	metricAllowlistReloadFailures
	metricCompanionConnected
	metricGuardDecisions
	metricSensorUnrelatedPrograms
	metricSensorCoalesced

	// NumMetrics is the number of metrics the plugin reports.
	NumMetrics
)

var metricDescs = [NumMetrics]MetricDesc{
	metricSensorEvents:            {"sensor_events", Monotonic},
	metricSensorDrops:             {"sensor_drops", Monotonic},
	metricSensorChunkDrops:        {"sensor_chunk_drops", Monotonic},
	metricSensorExitDrops:         {"sensor_exit_drops", Monotonic},
	metricSensorTruncations:       {"sensor_truncations", Monotonic},
	metricSensorReadFailures:      {"sensor_read_failures", Monotonic},
	metricSensorThrottled:         {"sensor_throttled", Monotonic},
	metricEventsDelivered:         {"events_delivered", Monotonic},
	metricAllowlistEntries:        {"allowlist_entries", NonMonotonic},
	metricAllowlistReloadFailures: {"allowlist_reload_failures", Monotonic},
	metricCompanionConnected:      {"companion_connected", NonMonotonic},
	metricGuardDecisions:          {"guard_decisions", Monotonic},
	// The sensor's programs every unrelated syscall runs: 0 fentry, 1
	// sys_enter with fexit results, 2 sys_enter and sys_exit (the most of
	// the live sensors open).
	metricSensorUnrelatedPrograms: {"sensor_unrelated_programs", NonMonotonic},
	metricSensorCoalesced:         {"sensor_coalesced", Monotonic},
}

// Metrics returns the plugin's metrics, in the order MetricValues fills
// their values.
func Metrics() []MetricDesc {
	out := make([]MetricDesc, NumMetrics)
	copy(out, metricDescs[:])
	return out
}

// statsInterval is how often at most MetricValues reads the sensor's
// counters: a read is a few map lookups.
const statsInterval = time.Second

// liveSet is the live instances open on one plugin state, and the sum of
// their sensors' counters as last read.
type liveSet struct {
	mu    sync.Mutex
	open  map[*liveInstance]struct{}
	now   func() time.Time // nil: time.Now
	next  time.Time        // no sensor read before then
	stats bpf.Stats
}

func (s *liveSet) add(l *liveInstance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open == nil {
		s.open = map[*liveInstance]struct{}{}
	}
	s.open[l] = struct{}{}
	s.next = time.Time{} // read the new sensor at the next call
}

// remove forgets l. Once it returns, MetricValues no longer reads l's
// source, which can then be closed.
func (s *liveSet) remove(l *liveInstance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.open, l)
	s.next = time.Time{}
}

// MetricValues writes the current value of every metric into dst, which
// must hold NumMetrics values, in the order of Metrics. It is safe to call
// from another thread than the one that runs NextBatch (Falco calls it from
// its metrics thread). The sensor's counters are those of the live
// instances open now (0 without one), read at most once a second.
func (p *Plugin) MetricValues(dst []uint64) {
	_ = dst[NumMetrics-1]
	s := &p.live
	s.mu.Lock()
	now := time.Now
	if s.now != nil {
		now = s.now
	}
	if t := now(); !t.Before(s.next) {
		s.next = t.Add(statsInterval)
		s.stats = bpf.Stats{}
		for l := range s.open {
			if l.loss.src == nil {
				continue
			}
			st := l.loss.src.Stats()
			s.stats.Events += st.Events
			s.stats.Drops += st.Drops
			s.stats.ChunkDrops += st.ChunkDrops
			s.stats.ExitDrops += st.ExitDrops
			s.stats.Truncations += st.Truncations
			s.stats.ReadFailures += st.ReadFailures
			s.stats.Throttled += st.Throttled
			s.stats.Coalesced += st.Coalesced
			s.stats.UnrelatedPrograms = max(s.stats.UnrelatedPrograms, st.UnrelatedPrograms)
		}
	}
	st := s.stats
	var connected, decisions uint64
	for l := range s.open {
		if c, ok := l.src.(*companionSource); ok {
			if ok, _ := c.status(); ok {
				connected = 1
			}
			decisions += c.decisions.Load()
		}
	}
	s.mu.Unlock()

	dst[metricSensorEvents] = st.Events
	dst[metricSensorDrops] = st.Drops
	dst[metricSensorChunkDrops] = st.ChunkDrops
	dst[metricSensorExitDrops] = st.ExitDrops
	dst[metricSensorTruncations] = st.Truncations
	dst[metricSensorReadFailures] = st.ReadFailures
	dst[metricSensorThrottled] = st.Throttled
	dst[metricSensorCoalesced] = st.Coalesced
	dst[metricEventsDelivered] = p.delivered.Load()
	dst[metricAllowlistEntries], dst[metricAllowlistReloadFailures] = 0, 0
	if p.policy != nil {
		if a := p.policy.src.Current(); a != nil {
			dst[metricAllowlistEntries] = uint64(len(a.Spec.Modules))
		}
		dst[metricAllowlistReloadFailures] = p.policy.src.Failures()
	}
	dst[metricCompanionConnected] = connected
	dst[metricGuardDecisions] = decisions
	dst[metricSensorUnrelatedPrograms] = st.UnrelatedPrograms
}

// MetricsTable is memory that the exporter of plugin_get_metrics keeps
// with one plugin state (C memory: the array libs reads and the names).
type MetricsTable interface {
	Free()
}

// MetricsTable returns the table kept with this plugin state, first making
// it with alloc. Destroy frees it.
func (p *Plugin) MetricsTable(alloc func() MetricsTable) MetricsTable {
	p.mtMu.Lock()
	defer p.mtMu.Unlock()
	if p.mt == nil {
		p.mt = alloc()
	}
	return p.mt
}

// Destroy frees what the plugin state holds outside Go's heap. The SDK
// calls it from plugin_destroy.
func (p *Plugin) Destroy() {
	p.mtMu.Lock()
	defer p.mtMu.Unlock()
	if p.mt != nil {
		p.mt.Free()
		p.mt = nil
	}
}
