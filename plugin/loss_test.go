package plugin

import (
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/falcosecurity/plugin-sdk-go/pkg/sdk"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/bpf"
	"github.com/kmodguard/kmodguard/event"
)

// countingSource is a chanSource whose loss counters the test sets.
type countingSource struct {
	chanSource
	mu    sync.Mutex
	st    bpf.Stats
	reads int
}

func (c *countingSource) Stats() bpf.Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads++
	return c.st
}

func (c *countingSource) set(drops, throttled uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.Drops, c.st.Throttled = drops, throttled
	// Counters that are not losses must not make a loss event.
	c.st.Events += 7
	c.st.ChunkDrops++
}

// fakeClock is the loss meter's time, moved by the test.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

// evtNum numbers the events batch extracts, as Falco does: the plugin
// caches the event it decoded last by number.
var evtNum uint64

// batch runs NextBatch and returns the fields of what it wrote, through the
// plugin's own extraction.
func batch(t *testing.T, p *Plugin, in *liveInstance, evts *memEvents) ([]map[string]any, error) {
	t.Helper()
	n, err := in.NextBatch(p, evts)
	var out []map[string]any
	for i := 0; i < n; i++ {
		evtNum++
		out = append(out, extractAll(t, p, evtNum, evts.evts[i].payload()))
	}
	return out, err
}

func TestLiveInstanceReportsLoss(t *testing.T) {
	// An allowlist, so that judge would have something to say about a
	// loss event if it were let near one.
	list := filepath.Join(t.TempDir(), "allow.yaml")
	writeAllowlist(t, list, allowlist.Entry{Name: "dummy", SHA256: []string{dummyDigest}})
	p := newPlugin(t, `{"allowlist": "`+list+`"}`)
	src := &countingSource{chanSource: chanSource{ch: make(chan *event.Event, 16)}}
	in := newLiveInstance(p, src)
	clock := &fakeClock{t: time.Unix(1764190000, 0)}
	in.loss.now = clock.now
	in.timeout = 5 * time.Millisecond
	evts := newMemEvents(batchSize)

	// Idle with nothing lost: a timeout, as before.
	if got, err := batch(t, p, in, evts); len(got) != 0 || err != sdk.ErrTimeout {
		t.Fatalf("idle NextBatch: %d events, %v; want sdk.ErrTimeout", len(got), err)
	}

	// Losses while idle: one event, at once, then idle again.
	src.set(5, 2)
	clock.advance(lossInterval)
	got, err := batch(t, p, in, evts)
	if err != nil || len(got) != 1 {
		t.Fatalf("NextBatch after a loss: %d events, %v; want 1", len(got), err)
	}
	want := map[string]any{"kmod.syscall": "sensor_loss", "kmod.lost": uint64(5), "kmod.throttled": uint64(2)}
	if !equalFields(got[0], want) {
		t.Errorf("loss event fields %v, want exactly %v", got[0], want)
	}
	if ts := evts.evts[0].ts; ts != uint64(clock.t.UnixNano()) {
		t.Errorf("loss event timestamp %d, want %d", ts, clock.t.UnixNano())
	}
	for i := 0; i < 3; i++ {
		clock.advance(lossInterval)
		if got, err := batch(t, p, in, evts); len(got) != 0 || err != sdk.ErrTimeout {
			t.Fatalf("NextBatch with nothing more lost: %d events, %v; want sdk.ErrTimeout", len(got), err)
		}
	}

	// A growth within the interval waits for it; the counters are not read
	// on every call.
	src.set(9, 2)
	reads := src.reads
	clock.advance(lossInterval / 2)
	if got, err := batch(t, p, in, evts); len(got) != 0 || err != sdk.ErrTimeout {
		t.Fatalf("NextBatch within the interval: %d events, %v", len(got), err)
	}
	if src.reads != reads {
		t.Errorf("the counters were read %d times within the interval", src.reads-reads)
	}

	// Once due, the loss event comes first, with the events that are ready
	// behind it, judged as usual; only the growth is reported.
	src.ch <- initEvent()
	src.ch <- deleteEvent()
	clock.advance(lossInterval / 2)
	got, err = batch(t, p, in, evts)
	if err != nil || len(got) != 3 {
		t.Fatalf("NextBatch with a loss and two events: %d events, %v; want 3", len(got), err)
	}
	want = map[string]any{"kmod.syscall": "sensor_loss", "kmod.lost": uint64(4), "kmod.throttled": uint64(0)}
	if !equalFields(got[0], want) {
		t.Errorf("second loss event fields %v, want exactly %v", got[0], want)
	}
	if got[1]["kmod.syscall"] != "init_module" || got[1]["kmod.allowed"] != true || got[1]["kmod.lost"] != nil {
		t.Errorf("event after the loss event: %v", got[1])
	}
	if got[2]["kmod.syscall"] != "delete_module" {
		t.Errorf("last event: %v", got[2])
	}

	// Throttling alone is reported too, with nothing lost.
	src.set(9, 12)
	clock.advance(lossInterval)
	got, err = batch(t, p, in, evts)
	want = map[string]any{"kmod.syscall": "sensor_loss", "kmod.lost": uint64(0), "kmod.throttled": uint64(10)}
	if err != nil || len(got) != 1 || !equalFields(got[0], want) {
		t.Fatalf("NextBatch after throttling: %v, %v; want %v", got, err, want)
	}

	// A loss reported just as the sensor stops still comes out, then the
	// stop.
	src.set(10, 12)
	clock.advance(lossInterval)
	close(src.ch)
	if got, err := batch(t, p, in, evts); err != nil || len(got) != 1 || got[0]["kmod.lost"] != uint64(1) {
		t.Fatalf("NextBatch with a loss as the sensor stopped: %v, %v", got, err)
	}
	if _, err := in.NextBatch(p, evts); !errors.Is(err, errSensorStopped) {
		t.Errorf("after the sensor stopped: %v", err)
	}
}

// A source that counts nothing, like the test doubles, makes no loss
// events and is never asked.
func TestLiveInstanceWithoutStats(t *testing.T) {
	p := newPlugin(t, "")
	in := newLiveInstance(p, &chanSource{ch: make(chan *event.Event)})
	in.timeout = time.Millisecond
	if in.loss.src != nil {
		t.Fatal("a source without Stats got a loss meter")
	}
	if n, err := in.NextBatch(p, newMemEvents(1)); n != 0 || err != sdk.ErrTimeout {
		t.Fatalf("NextBatch: %d %v", n, err)
	}
}

// The companion passes the sensor's counters through.
func TestCompanionSourceStats(t *testing.T) {
	inner := &countingSource{chanSource: chanSource{ch: make(chan *event.Event)}}
	inner.set(3, 1)
	c := &companionSource{inner: inner}
	if st := c.Stats(); st.Drops != 3 || st.Throttled != 1 {
		t.Errorf("Stats through the companion: %+v", st)
	}
	c = &companionSource{inner: &chanSource{}}
	if st := c.Stats(); st != (bpf.Stats{}) {
		t.Errorf("Stats of a source that counts nothing: %+v", st)
	}
}

func TestLossEventFields(t *testing.T) {
	e := &event.Event{TS: 1, Syscall: event.SensorLoss, Lost: 3, Throttled: 0}
	got := FieldValues(e)
	want := map[string]any{"kmod.syscall": "sensor_loss", "kmod.lost": uint64(3), "kmod.throttled": uint64(0)}
	if !equalFields(got, want) {
		t.Errorf("FieldValues(sensor_loss) = %v, want exactly %v", got, want)
	}
	for _, e := range []*event.Event{initEvent(), deleteEvent(), {Syscall: event.Guard, Verdict: event.VerdictNone}} {
		if v, ok := FieldValues(e)["kmod.lost"]; ok {
			t.Errorf("%s event has kmod.lost %v", e.Syscall, v)
		}
		if v, ok := FieldValues(e)["kmod.throttled"]; ok {
			t.Errorf("%s event has kmod.throttled %v", e.Syscall, v)
		}
	}
}

func equalFields(got, want map[string]any) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}
