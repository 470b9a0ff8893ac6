package plugin

import (
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/falcosecurity/plugin-sdk-go/pkg/sdk"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/bpf"
	"github.com/kmodguard/kmodguard/event"
)

// metricValues returns the plugin's metrics by name.
func metricValues(p *Plugin) map[string]uint64 {
	vals := make([]uint64, NumMetrics)
	p.MetricValues(vals)
	out := map[string]uint64{}
	for i, d := range Metrics() {
		out[d.Name] = vals[i]
	}
	return out
}

func TestMetricDescs(t *testing.T) {
	want := []MetricDesc{
		{"sensor_events", Monotonic}, {"sensor_drops", Monotonic}, {"sensor_chunk_drops", Monotonic},
		{"sensor_exit_drops", Monotonic}, {"sensor_truncations", Monotonic}, {"sensor_read_failures", Monotonic},
		{"sensor_throttled", Monotonic}, {"events_delivered", Monotonic}, {"allowlist_entries", NonMonotonic},
		{"allowlist_reload_failures", Monotonic}, {"companion_connected", NonMonotonic}, {"guard_decisions", Monotonic},
		{"sensor_unrelated_programs", NonMonotonic}, {"sensor_coalesced", Monotonic},
	}
	if got := Metrics(); !reflect.DeepEqual(got, want) {
		t.Errorf("Metrics() = %v, want %v", got, want)
	}
	// Metrics hands out a copy.
	Metrics()[0].Name = "x"
	if Metrics()[0].Name != "sensor_events" {
		t.Error("Metrics() returned the plugin's own table")
	}
}

// TestMetricValuesLive checks the sensor's counters and events_delivered
// through a live instance on a source whose counters the test sets.
func TestMetricValuesLive(t *testing.T) {
	list := filepath.Join(t.TempDir(), "allow.yaml")
	writeAllowlist(t, list, allowlist.Entry{Name: "dummy", SHA256: []string{dummyDigest}}, allowlist.Entry{Name: "veth"})
	p := newPlugin(t, `{"allowlist": "`+list+`"}`)
	clock := &fakeClock{t: time.Unix(1764190000, 0)}
	p.live.now = clock.now

	zero := map[string]uint64{
		"sensor_events": 0, "sensor_drops": 0, "sensor_chunk_drops": 0, "sensor_exit_drops": 0,
		"sensor_truncations": 0, "sensor_read_failures": 0, "sensor_throttled": 0, "events_delivered": 0,
		"allowlist_entries": 2, "allowlist_reload_failures": 0, "companion_connected": 0, "guard_decisions": 0,
		"sensor_unrelated_programs": 0, "sensor_coalesced": 0,
	}
	if got := metricValues(p); !reflect.DeepEqual(got, zero) {
		t.Fatalf("before any instance: %v, want %v", got, zero)
	}

	src := &countingSource{chanSource: chanSource{ch: make(chan *event.Event, 16)}}
	src.st = bpf.Stats{Events: 10, Drops: 1, ChunkDrops: 2, ExitDrops: 3, Truncations: 4, ReadFailures: 5, Throttled: 6,
		Delivered: 99, Orphans: 98, UnrelatedPrograms: 1, Coalesced: 7}
	in := newLiveInstance(p, src)
	in.loss.now = clock.now
	in.timeout = 5 * time.Millisecond
	got := metricValues(p)
	for name, v := range map[string]uint64{"sensor_events": 10, "sensor_drops": 1, "sensor_chunk_drops": 2,
		"sensor_exit_drops": 3, "sensor_truncations": 4, "sensor_read_failures": 5, "sensor_throttled": 6,
		"sensor_unrelated_programs": 1, "sensor_coalesced": 7} {
		if got[name] != v {
			t.Errorf("%s = %d, want %d", name, got[name], v)
		}
	}

	// Three events out of NextBatch (a sensor_loss event first, as the
	// drops are new to the loss meter), then a timeout, which adds none.
	src.ch <- initEvent()
	src.ch <- deleteEvent()
	evts := newMemEvents(batchSize)
	if n, err := in.NextBatch(p, evts); n != 3 || err != nil {
		t.Fatalf("NextBatch: %d, %v; want 3 events", n, err)
	}
	if n, err := in.NextBatch(p, evts); n != 0 || err != sdk.ErrTimeout {
		t.Fatalf("idle NextBatch: %d, %v", n, err)
	}

	// The counters are read at most once a statsInterval.
	reads := src.reads
	src.mu.Lock()
	src.st.Events = 25
	src.mu.Unlock()
	clock.advance(statsInterval / 2)
	got = metricValues(p)
	if got["sensor_events"] != 10 || src.reads != reads {
		t.Errorf("within the interval: sensor_events %d after %d reads, want the cached 10 and no read", got["sensor_events"], src.reads-reads)
	}
	if got["events_delivered"] != 3 {
		t.Errorf("events_delivered = %d, want 3", got["events_delivered"])
	}
	clock.advance(statsInterval / 2)
	if got = metricValues(p); got["sensor_events"] != 25 {
		t.Errorf("after the interval: sensor_events %d, want 25", got["sensor_events"])
	}

	// Two live instances add up; once closed, an instance's counters leave
	// at once, and events_delivered stays.
	src2 := &countingSource{chanSource: chanSource{ch: make(chan *event.Event, 1)}}
	src2.st = bpf.Stats{Events: 5, Drops: 7, UnrelatedPrograms: 2}
	in2 := newLiveInstance(p, src2)
	if got = metricValues(p); got["sensor_events"] != 30 || got["sensor_drops"] != 8 || got["sensor_unrelated_programs"] != 2 {
		t.Errorf("two instances: sensor_events %d, sensor_drops %d, sensor_unrelated_programs %d; want 30, 8 and the most, 2",
			got["sensor_events"], got["sensor_drops"], got["sensor_unrelated_programs"])
	}
	in2.Close()
	in.Close()
	want := zero
	want["events_delivered"] = 3
	if got = metricValues(p); !reflect.DeepEqual(got, want) {
		t.Errorf("after Close: %v, want %v", got, want)
	}
}

// TestMetricValuesReplay counts the events of a replay, including the last
// batch that comes with EOF.
func TestMetricValuesReplay(t *testing.T) {
	var recorded []*event.Event
	for i := 0; i < batchSize+5; i++ {
		recorded = append(recorded, initEvent())
	}
	rec := writeRecording(t, recorded...)
	p := newPlugin(t, `{}`)
	in, err := p.Open(ReplayPrefix + rec)
	if err != nil {
		t.Fatal(err)
	}
	defer in.(sdk.Closer).Close()
	got := batches(t, p, in, 1000)
	if len(got) != len(recorded) {
		t.Fatalf("replayed %d events, want %d", len(got), len(recorded))
	}
	m := metricValues(p)
	if m["events_delivered"] != uint64(len(recorded)) {
		t.Errorf("events_delivered = %d, want %d", m["events_delivered"], len(recorded))
	}
	// No allowlist, no live sensor: nothing else to report.
	if m["allowlist_entries"] != 0 || m["sensor_events"] != 0 {
		t.Errorf("metrics without allowlist or sensor: %v", m)
	}
}

// TestMetricsTable checks that the table is made once per plugin state and
// freed by Destroy.
func TestMetricsTable(t *testing.T) {
	p := New()
	var made, freed int
	alloc := func() MetricsTable { made++; return freeFunc(func() { freed++ }) }
	a, b := p.MetricsTable(alloc), p.MetricsTable(alloc)
	if made != 1 || a == nil || b == nil {
		t.Fatalf("MetricsTable made %d tables", made)
	}
	p.Destroy()
	p.Destroy()
	if freed != 1 {
		t.Errorf("Destroy freed the table %d times, want once", freed)
	}
}

type freeFunc func()

func (f freeFunc) Free() { f() }

// TestMetricValuesConcurrent reads the metrics from another goroutine while
// NextBatch runs and instances open and close, as Falco's metrics thread
// does (run with -race).
func TestMetricValuesConcurrent(t *testing.T) {
	p := newPlugin(t, `{}`)
	done := make(chan struct{})
	go func() {
		defer close(done)
		vals := make([]uint64, NumMetrics)
		for i := 0; i < 2000; i++ {
			p.MetricValues(vals)
		}
	}()
	var sent uint64
	for round := 0; round < 20; round++ {
		src := &countingSource{chanSource: chanSource{ch: make(chan *event.Event, 16)}}
		src.st = bpf.Stats{Events: 1}
		in := newLiveInstance(p, src)
		in.timeout = time.Millisecond
		evts := newMemEvents(batchSize)
		for i := 0; i < 5; i++ {
			src.ch <- initEvent()
			n, err := in.NextBatch(p, evts)
			if err != nil {
				t.Fatal(err)
			}
			sent += uint64(n)
		}
		in.Close()
	}
	<-done
	if got := metricValues(p)["events_delivered"]; got != sent {
		t.Errorf("events_delivered = %d, want %d", got, sent)
	}
}
