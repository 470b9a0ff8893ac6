package plugin

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/falcosecurity/plugin-sdk-go/pkg/sdk"
	"github.com/falcosecurity/plugin-sdk-go/pkg/sdk/plugins/source"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/bpf"
	"github.com/kmodguard/kmodguard/event"
)

// Batch geometry. Module events are rare and small; a batch of 64 events
// of up to 256 KiB each leaves room for long command lines and parameters.
const (
	batchSize    = 64
	maxEventSize = 256 << 10
	// idleTimeout bounds how long NextBatch waits for a first event, so
	// that an idle sensor never stalls Falco's event loop.
	idleTimeout = 100 * time.Millisecond
	// trimLen is what strings are cut to when an event does not fit
	// maxEventSize (see shrink).
	trimLen = 4096
)

// ReplayPrefix starts the open params that replay a recording.
const ReplayPrefix = "replay:"

// OpenParams suggests the two forms of open params.
func (p *Plugin) OpenParams() ([]sdk.OpenParam, error) {
	return []sdk.OpenParam{
		{Value: "", Desc: "The live sensor on this host (needs root: CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN)"},
		{Value: ReplayPrefix + "/var/lib/kmodguard/events.kgrec", Desc: "Replay a file written by `kmodguard watch --record FILE`"},
	}, nil
}

// Open starts a capture: the live sensor for empty params, a recording for
// "replay:FILE".
func (p *Plugin) Open(params string) (source.Instance, error) {
	params = strings.TrimSpace(params)
	var (
		in  source.Instance
		err error
	)
	switch {
	case params == "":
		in, err = p.openLive()
	case strings.HasPrefix(params, ReplayPrefix):
		in, err = p.openReplay(strings.TrimPrefix(params, ReplayPrefix))
	default:
		return nil, fmt.Errorf("open_params %q: want empty (the live sensor) or %q", params, ReplayPrefix+"FILE")
	}
	if err != nil {
		return nil, err
	}
	evts, err := sdk.NewEventWriters(batchSize, maxEventSize)
	if err != nil {
		if c, ok := in.(sdk.Closer); ok {
			c.Close()
		}
		return nil, fmt.Errorf("allocate the event batch: %w", err)
	}
	in.SetEvents(evts)
	return in, nil
}

// countDelivered adds the n events of a NextBatch to the plugin's
// events_delivered metric, unless err makes the SDK drop them.
func (p *Plugin) countDelivered(n int, err error) {
	if n > 0 && (err == nil || err == sdk.ErrEOF || err == sdk.ErrTimeout) {
		p.delivered.Add(uint64(n))
	}
}

// writer puts events into a batch in their binary form.
type writer struct {
	buf []byte
}

// put writes e into slot i of evts. An event too big for a slot (the
// sensor bounds every string, so only a hostile recording gets there) is
// shrunk, first its command line and parameters, then every string and
// list, but never dropped.
func (w *writer) put(evts sdk.EventWriters, i int, e *event.Event) error {
	var err error
	w.buf, err = e.AppendBinary(w.buf[:0])
	for stage := 1; err == nil && len(w.buf) > maxEventSize && stage <= 2; stage++ {
		c := shrink(e, stage)
		w.buf, err = c.AppendBinary(w.buf[:0])
	}
	if err == nil && len(w.buf) > maxEventSize {
		err = fmt.Errorf("%d bytes after trimming is over the %d byte event limit", len(w.buf), maxEventSize)
	}
	if err != nil {
		return fmt.Errorf("encode %s event of %q: %w", e.Syscall, e.Name, err)
	}
	return w.putRaw(evts, i, w.buf)
}

// shrink returns a copy of e cut down: at stage 1 its command line and
// parameters, at stage 2 every string to trimLen and both lists to
// trimList elements of trimElem bytes, which always fits maxEventSize.
func shrink(e *event.Event, stage int) *event.Event {
	c := *e
	c.Cmdline, c.Params = cut(c.Cmdline, trimLen), cut(c.Params, trimLen)
	if stage < 2 {
		return &c
	}
	for _, s := range []*string{&c.Name, &c.ThisModuleName, &c.SHA256, &c.ELFSHA256, &c.Path, &c.Vermagic,
		&c.Srcversion, &c.Signer, &c.AllowlistEntry, &c.Verdict, &c.GuardSHA256, &c.Comm, &c.Exe,
		&c.Cgroup, &c.ContainerID, &c.Taint, &c.Inventory, &c.RequestName, &c.RequestComm} {
		*s = cut(*s, trimLen)
	}
	c.Flags, c.Depends = cutList(c.Flags), cutList(c.Depends)
	return &c
}

const (
	trimList = 64
	trimElem = 256
)

func cutList(l []string) []string {
	if len(l) > trimList {
		l = l[:trimList]
	}
	out := make([]string, len(l))
	for i, s := range l {
		out[i] = cut(s, trimElem)
	}
	return out
}

func cut(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// putRaw writes an event already in binary form into slot i.
func (w *writer) putRaw(evts sdk.EventWriters, i int, b []byte) error {
	ew := evts.Get(i)
	ew.SetTimestamp(event.Timestamp(b))
	if _, err := ew.Writer().Write(b); err != nil {
		return fmt.Errorf("write event payload: %w", err)
	}
	return nil
}

// replayInstance reads a record file.
type replayInstance struct {
	source.BaseInstance
	p    *Plugin
	f    *os.File
	r    *event.RecordReader
	w    writer
	e    event.Event
	size int64
	done bool
	err  error // a read error held back until the events before it are out
}

func (p *Plugin) openReplay(path string) (*replayInstance, error) {
	if path == "" {
		return nil, fmt.Errorf("open_params %q: no file after %q", ReplayPrefix, ReplayPrefix)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open replay file: %w", err)
	}
	var size int64
	if fi, err := f.Stat(); err == nil {
		size = fi.Size()
	}
	r := event.NewRecordReader(f)
	if err := r.ReadHeader(); err != nil {
		f.Close()
		return nil, fmt.Errorf("replay file %s: %w", path, err)
	}
	p.logger().WithField(logKeyParams, ReplayPrefix+path).Info("replaying a recording")
	return &replayInstance{p: p, f: f, r: r, size: size}, nil
}

// NextBatch fills the batch from the file and returns sdk.ErrEOF after the
// last event. A damaged record ends the replay with an error, after the
// events before it.
func (r *replayInstance) NextBatch(_ sdk.PluginState, evts sdk.EventWriters) (int, error) {
	n, err := r.nextBatch(evts)
	r.p.countDelivered(n, err)
	return n, err
}

func (r *replayInstance) nextBatch(evts sdk.EventWriters) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.done {
		return 0, sdk.ErrEOF
	}
	a := r.p.policy.Current()
	n := 0
	for n < evts.Len() {
		err := r.one(evts, n, a)
		if err == io.EOF {
			r.done = true
			break
		}
		if err != nil {
			r.err = fmt.Errorf("replay %s: %w", r.f.Name(), err)
			if n == 0 {
				return 0, r.err
			}
			return n, nil // the error comes with the next call
		}
		n++
	}
	if n == 0 {
		return 0, sdk.ErrEOF
	}
	return n, nil
}

// one puts the next recorded event into slot i, judged by a.
func (r *replayInstance) one(evts sdk.EventWriters, i int, a *allowlist.Allowlist) error {
	if a == nil {
		raw, err := r.r.ReadRaw()
		if err != nil {
			return err
		}
		if len(raw) <= maxEventSize {
			// Nothing to judge: the recorded bytes are the payload.
			return r.w.putRaw(evts, i, raw)
		}
		if err := r.e.UnmarshalBinary(raw); err != nil {
			return err
		}
	} else {
		if err := r.r.ReadInto(&r.e); err != nil {
			return err
		}
		a.Judge(&r.e)
	}
	return r.w.put(evts, i, &r.e)
}

// Progress reports how far into the file the replay is.
func (r *replayInstance) Progress(sdk.PluginState) (float64, string) {
	if r.size <= 0 {
		return 0, ""
	}
	off, err := r.f.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, ""
	}
	pct := float64(off) / float64(r.size)
	return pct, fmt.Sprintf("%.2f%%", pct*100)
}

// Close closes the file.
func (r *replayInstance) Close() { r.f.Close() }

// eventSource is what the live instance needs from the sensor.
type eventSource interface {
	Events() <-chan *event.Event
	Close() error
}

// statsSource is an eventSource that also counts what it lost (the sensor
// does). The live instance reports the growth of its counters as
// sensor_loss events.
type statsSource interface {
	Stats() bpf.Stats
}

// lossInterval is how often at most the live instance reads the sensor's
// counters: a read is a few map lookups, kept off the per-event path.
const lossInterval = time.Second

// lossMeter reads the sensor's loss counters at most once a lossInterval
// and turns their growth into sensor_loss events (bpf.LossMeter).
type lossMeter struct {
	src  statsSource // nil when the source counts nothing
	now  func() time.Time
	next time.Time // no read before then
	m    bpf.LossMeter
}

// check reads the counters when lossInterval has passed since the last
// read, and returns a sensor_loss event when a counter grew since then,
// else nil.
func (m *lossMeter) check() *event.Event {
	if m.src == nil {
		return nil
	}
	now := m.now()
	if now.Before(m.next) {
		return nil
	}
	m.next = now.Add(lossInterval)
	return m.m.Observe(m.src.Stats(), now)
}

// liveInstance reads the sensor's events.
type liveInstance struct {
	source.BaseInstance
	p       *Plugin
	src     eventSource
	loss    lossMeter
	w       writer
	timer   *time.Timer
	timeout time.Duration
	closed  bool
	// pending holds the inventory taken at open (event.Present), sent
	// before anything else.
	pending []event.Event
}

func newLiveInstance(p *Plugin, src eventSource) *liveInstance {
	t := time.NewTimer(idleTimeout)
	t.Stop()
	l := &liveInstance{p: p, src: src, timer: t, timeout: idleTimeout}
	l.loss.now = time.Now
	if s, ok := src.(statsSource); ok {
		l.loss.src = s
	}
	p.live.add(l)
	return l
}

// errSensorStopped is returned once the sensor has closed its channel.
var errSensorStopped = errors.New("the kmodguard sensor stopped")

// NextBatch waits up to idleTimeout for a first event, then takes what else
// is ready without waiting. It returns sdk.ErrTimeout when idle. At most
// once per lossInterval it also reads the sensor's loss counters, and when
// they grew, the batch starts with a sensor_loss event and does not wait.
func (l *liveInstance) NextBatch(_ sdk.PluginState, evts sdk.EventWriters) (int, error) {
	n, err := l.nextBatch(evts)
	l.p.countDelivered(n, err)
	return n, err
}

func (l *liveInstance) nextBatch(evts sdk.EventWriters) (int, error) {
	if l.closed {
		return 0, errSensorStopped
	}
	n := 0
	if e := l.loss.check(); e != nil {
		if err := l.w.put(evts, n, e); err != nil {
			return 0, err
		}
		n++
	}
	if len(l.pending) > 0 {
		a := l.p.policy.Current()
		for len(l.pending) > 0 && n < evts.Len() {
			e := &l.pending[0]
			a.Judge(e)
			if err := l.w.put(evts, n, e); err != nil {
				return 0, err
			}
			l.pending = l.pending[1:]
			n++
		}
		return n, nil
	}
	ch := l.src.Events()
	var first *event.Event
	select {
	case e, ok := <-ch:
		if !ok {
			l.closed = true
			if n > 0 {
				return n, nil
			}
			return 0, errSensorStopped
		}
		first = e
	default:
		if n > 0 {
			return n, nil
		}
		l.timer.Reset(l.timeout)
		select {
		case e, ok := <-ch:
			// Since Go 1.23 Stop leaves no stale tick behind for Reset.
			l.timer.Stop()
			if !ok {
				l.closed = true
				return 0, errSensorStopped
			}
			first = e
		case <-l.timer.C:
			return 0, sdk.ErrTimeout
		}
	}
	a := l.p.policy.Current()
	e := first
	for {
		a.Judge(e)
		if err := l.w.put(evts, n, e); err != nil {
			return 0, err
		}
		n++
		if n == evts.Len() {
			return n, nil
		}
		select {
		case next, ok := <-ch:
			if !ok {
				l.closed = true
				return n, nil
			}
			e = next
		default:
			return n, nil
		}
	}
}

// Close stops the sensor. Its counters leave the plugin's metrics first.
func (l *liveInstance) Close() {
	l.p.live.remove(l)
	if err := l.src.Close(); err != nil {
		l.p.logger().WithError(err).Warn("closing the sensor")
	}
}
