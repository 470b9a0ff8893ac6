package metrics

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/falcosecurity/plugin-sdk-go/pkg/cgo"
	"github.com/falcosecurity/plugin-sdk-go/pkg/sdk"
	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/bpf"
	"github.com/kmodguard/kmodguard/internal/elftest"
	"github.com/kmodguard/kmodguard/plugin"
)

func newPlugin(t *testing.T, config string) (*plugin.Plugin, cgo.Handle) {
	t.Helper()
	p := plugin.New()
	if err := p.Init(config); err != nil {
		t.Fatalf("Init(%s): %v", config, err)
	}
	h := cgo.NewHandle(p)
	t.Cleanup(func() {
		p.Destroy()
		h.Delete()
	})
	return p, h
}

func byName(ms []Metric) map[string]Metric {
	out := map[string]Metric{}
	for _, m := range ms {
		out[m.Name] = m
	}
	return out
}

// TestGetMetrics reads the C array as libs does: every metric of
// plugin.Metrics, in order, as a u64 with its type, and the values of the
// plugin state.
func TestGetMetrics(t *testing.T) {
	list := filepath.Join(t.TempDir(), "allow.yaml")
	a := allowlist.New("t", allowlist.ModeEnforce)
	for _, n := range []string{"dummy", "veth", "bonding"} {
		if _, err := a.Add(allowlist.Entry{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	if err := allowlist.Save(list, a); err != nil {
		t.Fatal(err)
	}
	p, h := newPlugin(t, `{"allowlist": "`+list+`", "log_level": "error"}`)

	for round := 0; round < 2; round++ {
		got := Get(h)
		descs := plugin.Metrics()
		if len(got) != len(descs) {
			t.Fatalf("%d metrics, want %d", len(got), len(descs))
		}
		for i, d := range descs {
			m := got[i]
			wantType := 0
			if d.Type == plugin.NonMonotonic {
				wantType = 1
			}
			if m.Name != d.Name || m.Type != wantType || m.ValueType != 2 {
				t.Errorf("metric %d: %+v, want %s type %d value type 2 (u64)", i, m, d.Name, wantType)
			}
		}
		vals := make([]uint64, plugin.NumMetrics)
		p.MetricValues(vals)
		for i := range got {
			if got[i].Value != vals[i] {
				t.Errorf("%s = %d, want %d", got[i].Name, got[i].Value, vals[i])
			}
		}
		if v := byName(got)["allowlist_entries"].Value; v != 3 {
			t.Errorf("allowlist_entries = %d, want 3", v)
		}
	}

	// Destroy frees the array; a later call (libs makes none) gets a new one.
	p.Destroy()
	if got := byName(Get(h)); got["allowlist_entries"].Value != 3 {
		t.Errorf("after Destroy: %v", got)
	}
}

// TestGetMetricsForeignState: a state that is not the plugin (the SDK's own
// after a failed init) has no metrics, and no crash.
func TestGetMetricsForeignState(t *testing.T) {
	h := cgo.NewHandle(struct{}{})
	defer h.Delete()
	if got := Get(h); got != nil {
		t.Errorf("metrics of a foreign state: %v", got)
	}
	if got := Get(0); got != nil {
		t.Errorf("metrics of a null state: %v", got)
	}
}

// TestLiveSensorMetrics opens the live sensor, makes init_module calls and
// expects sensor_events, read through plugin_get_metrics, to grow by at
// least as many.
func TestLiveSensorMetrics(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the live source loads the BPF sensor")
	}
	if err := bpf.CheckSystem(); err != nil {
		t.Skipf("needs the BPF sensor's kernel features: %v", err)
	}
	const calls = 8
	p, h := newPlugin(t, `{"log_level": "error"}`)
	in, err := p.Open("")
	if err != nil {
		t.Fatalf("Open live: %v", err)
	}
	closed := false
	defer func() {
		if !closed {
			in.(sdk.Closer).Close()
		}
	}()
	before := byName(Get(h))
	if before["sensor_events"].Type != 0 {
		t.Errorf("sensor_events is not monotonic: %+v", before["sensor_events"])
	}

	// Not a module, the kernel refuses it; but its header passes the
	// kernel's checks, so the sensor sends every call (junk it folds).
	img := elftest.Header(make([]byte, 256))
	for i := 0; i < calls; i++ {
		if err := unix.InitModule(img, ""); err == nil {
			t.Fatal("init_module of a 256-byte non-module succeeded")
		}
	}
	evts := in.(sdk.Events).Events()
	var delivered uint64
	deadline := time.Now().Add(10 * time.Second)
	var after map[string]Metric
	for time.Now().Before(deadline) {
		n, err := in.NextBatch(p, evts)
		if err != nil && err != sdk.ErrTimeout {
			t.Fatalf("NextBatch: %v", err)
		}
		delivered += uint64(n)
		after = byName(Get(h))
		if after["sensor_events"].Value >= before["sensor_events"].Value+calls && delivered >= calls {
			break
		}
	}
	grew := after["sensor_events"].Value - before["sensor_events"].Value
	t.Logf("sensor_events %d -> %d after %d init_module calls; events_delivered %d (%d read here)",
		before["sensor_events"].Value, after["sensor_events"].Value, calls, after["events_delivered"].Value, delivered)
	if grew < calls {
		t.Errorf("sensor_events grew by %d, want at least %d", grew, calls)
	}
	if after["events_delivered"].Value != delivered+before["events_delivered"].Value {
		t.Errorf("events_delivered = %d, want the %d events NextBatch returned", after["events_delivered"].Value, delivered)
	}

	// Junk from one thread: each call is an event or folded, and the
	// folded ones are counted in sensor_coalesced. The counters are the
	// sensor's, for the whole host: another test loading modules at the
	// same time (go test runs packages in parallel) adds to them, so the
	// sum is at least the calls made here, not exactly.
	func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for range calls {
			unix.InitModule(make([]byte, 256), "")
		}
	}()
	deadline = time.Now().Add(10 * time.Second)
	var junk map[string]Metric
	for time.Now().Before(deadline) {
		if _, err := in.NextBatch(p, evts); err != nil && err != sdk.ErrTimeout {
			t.Fatalf("NextBatch: %v", err)
		}
		junk = byName(Get(h))
		if junk["sensor_events"].Value+junk["sensor_coalesced"].Value >= after["sensor_events"].Value+after["sensor_coalesced"].Value+calls {
			break
		}
	}
	sent, folded := junk["sensor_events"].Value-after["sensor_events"].Value, junk["sensor_coalesced"].Value-after["sensor_coalesced"].Value
	t.Logf("%d junk calls: %d sent, %d folded", calls, sent, folded)
	if sent+folded < calls || folded == 0 || junk["sensor_coalesced"].Type != 0 {
		t.Errorf("%d junk calls: %d sent and %d folded (sensor_coalesced %+v)", calls, sent, folded, junk["sensor_coalesced"])
	}

	// Closed, the live instance no longer counts: the sensor metrics are 0.
	in.(sdk.Closer).Close()
	closed = true
	if got := byName(Get(h)); got["sensor_events"].Value != 0 || got["events_delivered"].Value != junk["events_delivered"].Value {
		t.Errorf("after Close: sensor_events %d, events_delivered %d", got["sensor_events"].Value, got["events_delivered"].Value)
	}
}
