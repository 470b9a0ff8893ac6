package plugin

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/falcosecurity/plugin-sdk-go/pkg/sdk"

	"github.com/kmodguard/kmodguard/event"
)

// The benchmarks compare the plugin's pipeline (binary events, one decode
// per event) with the way most Go plugins work: JSON events, decoded with
// encoding/json. Both sides read the same events from a file through
// NextBatch and extract the same ten fields per event, alternating in one
// run, so the ratio holds on a noisy machine.

// commonFields are the ten fields a typical rule and its output read.
var commonFields = []uint64{fieldSyscall, fieldRes, fieldName, fieldThisModuleName, fieldSHA256,
	fieldAllowed, fieldComm, fieldExe, fieldPid, fieldContainerID}

// benchEvents returns n varied events.
func benchEvents(n int) []*event.Event {
	kinds := []*event.Event{initEvent(), finitEvent(), deleteEvent()}
	kinds[0].Allowed = ptr(true)
	out := make([]*event.Event, n)
	for i := range out {
		c := *kinds[i%len(kinds)]
		c.Pid, c.Tid = uint32(1000+i), uint32(1000+i)
		c.TS += uint64(i)
		out[i] = &c
	}
	return out
}

func writeJSONLines(tb testing.TB, events []*event.Event) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "rec.jsonl")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for _, e := range events {
		if err := enc.Encode(e); err != nil {
			tb.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	f.Close()
	return path
}

// jsonInstance is the JSON-lines twin of replayInstance: the payload of an
// event is its JSON text.
type jsonInstance struct {
	f *os.File
	s *bufio.Scanner
}

func openJSON(tb testing.TB, path string) *jsonInstance {
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), maxEventSize)
	return &jsonInstance{f: f, s: s}
}

func (j *jsonInstance) NextBatch(_ sdk.PluginState, evts sdk.EventWriters) (int, error) {
	n := 0
	for n < evts.Len() && j.s.Scan() {
		if _, err := evts.Get(n).Writer().Write(j.s.Bytes()); err != nil {
			return 0, err
		}
		n++
	}
	if n == 0 {
		j.f.Close()
		return 0, sdk.ErrEOF
	}
	return n, nil
}

// jsonExtract decodes the payload with encoding/json on every extraction,
// then reads the field like the plugin does.
func jsonExtract(req *memRequest, evt *memReader) error {
	data, err := io.ReadAll(evt.Reader()) // as sdk.EventReader gives it
	if err != nil {
		return err
	}
	var e event.Event
	if err := json.Unmarshal(data, &e); err != nil {
		return err
	}
	if v, ok := fieldValue(&e, req.id); ok {
		req.SetValue(v)
	}
	return nil
}

// jsonCachedExtract decodes once per event number, as the better JSON
// plugins do.
type jsonCachedExtract struct {
	num uint64
	buf []byte
	e   event.Event
}

func (c *jsonCachedExtract) extract(req *memRequest, evt *memReader) error {
	if evt.num != c.num {
		buf := bytes.NewBuffer(c.buf[:0])
		if _, err := buf.ReadFrom(evt.Reader()); err != nil {
			return err
		}
		c.buf = buf.Bytes()
		c.e = event.Event{}
		if err := json.Unmarshal(c.buf, &c.e); err != nil {
			return err
		}
		c.num = evt.num
	}
	if v, ok := fieldValue(&c.e, req.id); ok {
		req.SetValue(v)
	}
	return nil
}

type batcher interface {
	NextBatch(sdk.PluginState, sdk.EventWriters) (int, error)
}

// pump drains in, extracting the common fields of every event with
// extract, and returns the number of events. sample, if set, runs after
// every batch.
func pump(tb testing.TB, p *Plugin, in batcher, extract func(*memRequest, *memReader) error, sample func()) int {
	evts := newMemEvents(batchSize)
	reqs := make([]*memRequest, len(commonFields))
	for i, id := range commonFields {
		reqs[i] = &memRequest{id: id, field: fieldList[id]}
	}
	rd := &memReader{}
	total := 0
	for {
		n, err := in.NextBatch(p, evts)
		if err == sdk.ErrEOF {
			return total
		}
		if err != nil {
			tb.Fatal(err)
		}
		for i := 0; i < n; i++ {
			total++
			rd.num, rd.data = uint64(total), evts.evts[i].buf.Bytes()
			for _, r := range reqs {
				r.set = false
				if err := extract(r, rd); err != nil {
					tb.Fatal(err)
				}
			}
		}
		if sample != nil {
			sample()
		}
	}
}

func pluginExtract(p *Plugin) func(*memRequest, *memReader) error {
	return func(r *memRequest, evt *memReader) error { return p.Extract(r, evt) }
}

// BenchmarkPipeline reports ns per event for NextBatch plus the extraction
// of ten fields: binary (this plugin) against JSON decoded per extraction
// and JSON decoded once per event, in alternation.
func BenchmarkPipeline(b *testing.B) {
	// Short passes, many of them: load from elsewhere on the machine then
	// falls on both sides alike.
	const n = 2000
	events := benchEvents(n)
	bin := writeRecording(b, events...)
	js := writeJSONLines(b, events)
	p := newPlugin(b, `{"log_level": "error"}`)
	var dBin, dJSON, dJSONCached time.Duration
	for b.Loop() {
		t0 := time.Now()
		in, err := p.Open(ReplayPrefix + bin)
		if err != nil {
			b.Fatal(err)
		}
		if got := pump(b, p, in, pluginExtract(p), nil); got != n {
			b.Fatalf("binary replay gave %d events", got)
		}
		in.(sdk.Closer).Close()
		t1 := time.Now()
		if got := pump(b, p, openJSON(b, js), jsonExtract, nil); got != n {
			b.Fatalf("JSON replay gave %d events", got)
		}
		t2 := time.Now()
		c := &jsonCachedExtract{}
		if got := pump(b, p, openJSON(b, js), c.extract, nil); got != n {
			b.Fatalf("JSON replay gave %d events", got)
		}
		t3 := time.Now()
		dBin += t1.Sub(t0)
		dJSON += t2.Sub(t1)
		dJSONCached += t3.Sub(t2)
	}
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N*n) }
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(per(dBin), "binary-ns/event")
	b.ReportMetric(per(dJSON), "json-per-field-ns/event")
	b.ReportMetric(per(dJSONCached), "json-cached-ns/event")
	b.ReportMetric(per(dJSON)/per(dBin), "json-per-field/binary")
	b.ReportMetric(per(dJSONCached)/per(dBin), "json-cached/binary")
}

// BenchmarkReplayMemory replays 100,000 events through NextBatch and
// extraction and reports the peak heap in use, sampled after every batch,
// for the binary recording and for the same events as JSON lines (decoded
// once per event), with the bytes allocated per event and the file sizes.
func BenchmarkReplayMemory(b *testing.B) {
	const n = 100000
	events := benchEvents(n)
	bin := writeRecording(b, events...)
	js := writeJSONLines(b, events)
	events = nil
	p := newPlugin(b, `{"log_level": "error"}`)
	measure := func(run func(sample func())) (peak, alloc uint64) {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base, total := ms.HeapAlloc, ms.TotalAlloc
		k := 0
		run(func() {
			if k++; k%16 != 0 {
				return
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > base && ms.HeapAlloc-base > peak {
				peak = ms.HeapAlloc - base
			}
		})
		runtime.ReadMemStats(&ms)
		return peak, ms.TotalAlloc - total
	}
	var peakBin, peakJSON, allocBin, allocJSON uint64
	for b.Loop() {
		pb, ab := measure(func(sample func()) {
			in, err := p.Open(ReplayPrefix + bin)
			if err != nil {
				b.Fatal(err)
			}
			if got := pump(b, p, in, pluginExtract(p), sample); got != n {
				b.Fatalf("binary replay gave %d events", got)
			}
			in.(sdk.Closer).Close()
		})
		pj, aj := measure(func(sample func()) {
			c := &jsonCachedExtract{}
			if got := pump(b, p, openJSON(b, js), c.extract, sample); got != n {
				b.Fatalf("JSON replay gave %d events", got)
			}
		})
		peakBin, peakJSON = max(peakBin, pb), max(peakJSON, pj)
		allocBin, allocJSON = allocBin+ab, allocJSON+aj
	}
	fi, _ := os.Stat(bin)
	fj, _ := os.Stat(js)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(peakBin)/(1<<20), "binary-peak-heap-MiB")
	b.ReportMetric(float64(peakJSON)/(1<<20), "json-peak-heap-MiB")
	b.ReportMetric(float64(fi.Size())/n, "binary-bytes/event")
	b.ReportMetric(float64(fj.Size())/n, "json-bytes/event")
	b.ReportMetric(float64(allocBin)/float64(b.N*n), "binary-alloc-B/event")
	b.ReportMetric(float64(allocJSON)/float64(b.N*n), "json-alloc-B/event")
}
