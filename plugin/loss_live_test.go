package plugin

import (
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/falcosecurity/plugin-sdk-go/pkg/sdk"
	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/bpf"
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/internal/elftest"
)

// TestLiveSensorLoss floods a live sensor with a small ring buffer with
// init_module calls of a 1 MiB image from several threads while nobody
// reads, so that the ring buffer refuses events, and expects sensor_loss
// events whose kmod.lost adds up to the sensor's Drops.
func TestLiveSensorLoss(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the live source loads the BPF sensor")
	}
	if testing.Short() {
		t.Skip("load test: skipped with -short")
	}
	if err := bpf.CheckSystem(); err != nil {
		t.Skipf("needs the BPF sensor's kernel features: %v", err)
	}
	p := newPlugin(t, `{"ringbuf_size": 65536, "image_cap": 1048576}`)
	in, err := p.Open("")
	if err != nil {
		t.Fatalf("Open live: %v", err)
	}
	defer in.(sdk.Closer).Close()
	live := in.(*liveInstance)
	if live.loss.src == nil {
		t.Fatal("the live sensor has no loss counters")
	}

	const threads, calls = 4, 300
	// Images the kernel would read further (not junk, which the sensor
	// folds): every call is an event and fills the ring buffer.
	img := elftest.Header(make([]byte, 1<<20))
	var wg sync.WaitGroup
	for range threads {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for range calls {
				unix.InitModule(img, "")
			}
		})
	}
	wg.Wait()

	// Read until the reported losses add up to the sensor's count, reading
	// past at least one loss check after the flood.
	evts := newMemEvents(batchSize)
	var (
		lost, reports uint64
		st            bpf.Stats
	)
	deadline := time.Now().Add(60 * time.Second)
	for {
		quiet := time.Now().Add(lossInterval + 200*time.Millisecond)
		for time.Now().Before(quiet) {
			n, err := in.NextBatch(p, evts)
			if err != nil && err != sdk.ErrTimeout {
				t.Fatalf("NextBatch: %v", err)
			}
			for i := 0; i < n; i++ {
				b := evts.evts[i].payload()
				var e event.Event
				if err := e.UnmarshalBinary(b); err != nil {
					t.Fatal(err)
				}
				if e.Syscall != event.SensorLoss {
					continue
				}
				evtNum++
				f := extractAll(t, p, evtNum, b)
				t.Logf("loss event: %v", f)
				l, ok := f["kmod.lost"].(uint64)
				if !ok || f["kmod.syscall"] != "sensor_loss" || f["kmod.pid"] != nil || f["kmod.uid"] != nil {
					t.Fatalf("loss event fields %v", f)
				}
				if th, _ := f["kmod.throttled"].(uint64); l == 0 && th == 0 {
					t.Errorf("a loss event with nothing lost: %v", f)
				}
				lost += l
				reports++
			}
		}
		st = live.loss.src.Stats()
		if lost == st.Drops || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("%d calls: sensor events %d, drops %d, chunk drops %d; %d loss reports with kmod.lost adding up to %d",
		threads*calls, st.Events, st.Drops, st.ChunkDrops, reports, lost)
	if st.Drops == 0 {
		t.Fatalf("the flood lost no events (stats %+v): nothing to report", st)
	}
	if lost != st.Drops {
		t.Errorf("loss events report %d lost, the sensor counted %d drops", lost, st.Drops)
	}
}
