package bpf

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/kmodguard/kmodguard/event"
)

// Record sizes, from the bpf2go mirrors of the C structs.
const (
	eventHeaderSize = int(unsafe.Offsetof(sensorKgEvent{}.Data))
	exitHeaderSize  = int(unsafe.Offsetof(sensorKgExit{}.Params))
	chunkHeaderSize = int(unsafe.Offsetof(sensorKgChunk{}.Data))
)

// pendingTimeout is how long an event waits for its result before the
// reader checks whether its thread still exists.
const pendingTimeout = 5 * time.Second

// wakeInterval is kg_wake_ns: the BPF programs wake the reader at most
// once in it, and commit the other records of that time without a wakeup.
// The reader, once woken, therefore polls again one interval later, and
// goes on polling at that pace for as long as it finds records.
const wakeInterval = time.Millisecond

// idlePoll is the longest the reader sleeps. A record committed without a
// wakeup arrives by the next poll at the latest, even when its producer
// was preempted for longer than wakeInterval between deciding on the flag
// and committing.
const idlePoll = time.Second

// pollAfterWake is how long after finding records the reader polls again:
// wakeInterval, plus the millisecond that epoll loses when it truncates a
// deadline to whole milliseconds (a deadline 1.9 ms away waits 1 ms, one
// 0.9 ms away does not wait at all).
const pollAfterWake = wakeInterval + time.Millisecond

// maxAssemblies bounds the images being put together at once: one per
// thread that is inside init_module.
const maxAssemblies = 64

// image is an init_module image being put together from chunks.
type image struct {
	ts  uint64
	buf []byte
	gap bool // a chunk was missing
}

// pending is an event waiting for its sys_exit record.
type pending struct {
	ev    *event.Event
	since time.Time
	// retry keeps the record of an init_module whose image, or of an
	// init_module or finit_module whose params, could not be read at
	// sys_enter: the sensor reads them again at sys_exit, and the event is
	// then decoded once more with that image, or given those params.
	retry *retryRecord
}

// retryRecord is an event record kept until its exit: the header and a
// copy of its strings (the ring buffer's sample is reused).
type retryRecord struct {
	rec  sensorKgEvent
	data eventData
}

func newRetryRecord(rec *sensorKgEvent, data eventData) *retryRecord {
	r := &retryRecord{rec: *rec}
	for _, seg := range []struct {
		src []byte
		dst *[]byte
	}{
		{data.name, &r.data.name}, {data.params, &r.data.params}, {data.path, &r.data.path},
		{data.exe, &r.data.exe}, {data.cmdline, &r.data.cmdline}, {data.cgroup, &r.data.cgroup},
	} {
		*seg.dst = bytes.Clone(seg.src)
	}
	return r
}

// joiner puts records back together: chunks into images, and each event
// with its result. Records of one thread arrive in order: chunks, event,
// exit; after an image unreadable at sys_enter, the chunks read at sys_exit
// come between the event and its exit, and params unreadable at sys_enter
// come in the exit record. It is not safe for concurrent use.
type joiner struct {
	cap     uint64
	images  map[uint32]*image
	pending map[uint32]*pending
	// decode turns an event record and its image into an Event. It must
	// not retain img: the image's buffer is used again for the next.
	decode func(rec *sensorKgEvent, data eventData, img []byte, imgGap bool) *event.Event
	emit   func(*event.Event)
	orphan func()
	// spare is the buffer of an image already decoded, for the next one.
	spare []byte

	// Records are shorter than the structs bpf2go mirrors (only the bytes
	// used travel), so headers are copied out rather than cast.
	eventHdr sensorKgEvent
	chunkHdr sensorKgChunk
	exitHdr  sensorKgExit
}

// eventData is an event record's strings, NULs included.
type eventData struct {
	name, params, path, exe, cmdline, cgroup []byte
}

// splitData cuts an event's data into its segments, checking that the
// lengths add up.
func splitData(rec *sensorKgEvent, data []byte) (eventData, bool) {
	var d eventData
	if int(rec.DataLen) > len(data) {
		return d, false
	}
	data = data[:rec.DataLen]
	for _, seg := range []struct {
		n   uint16
		dst *[]byte
	}{
		{rec.NameLen, &d.name}, {rec.ParamsLen, &d.params}, {rec.PathLen, &d.path},
		{rec.ExeLen, &d.exe}, {rec.CmdlineLen, &d.cmdline}, {rec.CgroupLen, &d.cgroup},
	} {
		if int(seg.n) > len(data) {
			return d, false
		}
		*seg.dst, data = data[:seg.n], data[seg.n:]
	}
	return d, len(data) == 0
}

// header copies the first n bytes of raw over the struct at p.
func header[T any](p *T, raw []byte, n int) {
	copy(unsafe.Slice((*byte)(unsafe.Pointer(p)), n), raw[:n])
}

func newJoiner(imageCap uint64, decode func(*sensorKgEvent, eventData, []byte, bool) *event.Event, emit func(*event.Event), orphan func()) *joiner {
	return &joiner{
		cap:     imageCap,
		images:  make(map[uint32]*image),
		pending: make(map[uint32]*pending),
		decode:  decode,
		emit:    emit,
		orphan:  orphan,
	}
}

// errMalformed marks a record too short for its kind, or of no known kind.
var errMalformed = errors.New("malformed record")

// record handles one ring buffer record.
func (j *joiner) record(raw []byte, now time.Time) error {
	if len(raw) == 0 {
		return errMalformed
	}
	switch sensorKgRecord(raw[0]) {
	case sensorKgRecordKG_REC_CHUNK:
		if len(raw) < chunkHeaderSize {
			return errMalformed
		}
		c := &j.chunkHdr
		header(c, raw, chunkHeaderSize)
		data := raw[chunkHeaderSize:]
		if uint64(c.Len) > uint64(len(data)) {
			return errMalformed
		}
		j.chunk(c.Tid, c.Ts, c.Off, c.Total, data[:c.Len])
	case sensorKgRecordKG_REC_EVENT:
		if len(raw) < eventHeaderSize {
			return errMalformed
		}
		rec := &j.eventHdr
		header(rec, raw, eventHeaderSize)
		data, ok := splitData(rec, raw[eventHeaderSize:])
		if !ok {
			return fmt.Errorf("%w: event data lengths do not add up", errMalformed)
		}
		if sc := syscallOf(rec.Syscall); sc == event.ModuleRequest || sc == event.ModuleLoad || sc == event.ModuleFree {
			// No exit record follows, and the task is often inside a
			// module syscall (a module's init asking for another; the
			// kernel's own module_load and module_free events): the
			// event goes out now, leaving that syscall's state alone.
			ev := j.decode(rec, data, nil, false)
			ev.Res = 0
			j.emit(ev)
			return nil
		}
		var img []byte
		gap := false
		if im := j.images[rec.Tid]; im != nil && im.ts == rec.Ts {
			img, gap = im.buf, im.gap
		} else if im != nil {
			j.orphan()
		}
		delete(j.images, rec.Tid)
		if old := j.pending[rec.Tid]; old != nil {
			// The thread is in a new syscall, so the old one's result was lost.
			old.ev.Res = ResUnknown
			j.emit(old.ev)
		}
		p := &pending{ev: j.decode(rec, data, img, gap), since: now}
		j.reuse(img)
		if mayRetry(rec) {
			p.retry = newRetryRecord(rec, data)
		}
		j.pending[rec.Tid] = p
	case sensorKgRecordKG_REC_EXIT:
		if len(raw) < exitHeaderSize {
			return errMalformed
		}
		x := &j.exitHdr
		header(x, raw, exitHeaderSize)
		params := raw[exitHeaderSize:]
		if int(x.ParamsLen) > len(params) {
			return errMalformed
		}
		params = params[:x.ParamsLen]
		p := j.pending[x.Tid]
		if p == nil || syscallOf(x.Syscall) != p.ev.Syscall {
			j.orphan()
			return nil
		}
		delete(j.pending, x.Tid)
		if p.retry != nil {
			j.retried(p, x, params)
		}
		p.ev.Res = x.Ret
		j.emit(p.ev)
	default:
		return fmt.Errorf("%w: kind %d", errMalformed, raw[0])
	}
	return nil
}

// mayRetry reports whether the sensor reads some of an event again at
// sys_exit: an init_module image, or init_module or finit_module params,
// that it could not read at sys_enter.
func mayRetry(rec *sensorKgEvent) bool {
	f := sensorKgFlag(rec.Flags)
	switch syscallOf(rec.Syscall) {
	case event.InitModule:
		return f&(sensorKgFlagKG_F_IMAGE_UNREADABLE|sensorKgFlagKG_F_PARAMS_UNREADABLE) != 0
	case event.FinitModule:
		return f&sensorKgFlagKG_F_PARAMS_UNREADABLE != 0
	}
	return false
}

// retried completes an event with what the sensor read at its sys_exit,
// when those reads succeeded: an init_module event is decoded again with
// the image (the chunks of that read came after the event record, with its
// ts), and params read at exit replace the unreadable ones.
func (j *joiner) retried(p *pending, x *sensorKgExit, params []byte) {
	rec := &p.retry.rec
	xf := sensorKgFlag(x.Flags)
	hdr := *rec
	data := p.retry.data
	gotParams := xf&sensorKgFlagKG_F_PARAMS_AT_EXIT != 0 && sensorKgFlag(rec.Flags)&sensorKgFlagKG_F_PARAMS_UNREADABLE != 0
	if gotParams {
		hdr.Flags = rec.Flags&^uint32(sensorKgFlagKG_F_PARAMS_UNREADABLE) |
			uint32(sensorKgFlagKG_F_PARAMS_AT_EXIT|xf&sensorKgFlagKG_F_PARAMS_TRUNCATED)
		data.params = bytes.Clone(params)
	}

	if sensorKgFlag(rec.Flags)&sensorKgFlagKG_F_IMAGE_UNREADABLE != 0 {
		im := j.images[x.Tid]
		if im != nil && im.ts != rec.Ts {
			im = nil // another syscall's chunks: leave them to it
		}
		if im != nil {
			delete(j.images, x.Tid)
		}
		if xf&sensorKgFlagKG_F_IMAGE_AT_EXIT != 0 && im != nil {
			hdr.Flags = hdr.Flags&^uint32(sensorKgFlagKG_F_IMAGE_UNREADABLE) | uint32(sensorKgFlagKG_F_IMAGE_AT_EXIT)
			hdr.Captured = x.Captured
			p.ev = j.decode(&hdr, data, im.buf, im.gap)
			j.reuse(im.buf)
			return
		}
		if im != nil {
			j.orphan() // a retry that failed part way
		}
	}
	if gotParams {
		// Params change nothing else that decode derives: set them on
		// the event as it stands, rather than read the module again.
		setParams(p.ev, sensorKgFlag(hdr.Flags), data.params)
	}
}

func (j *joiner) chunk(tid uint32, ts, off, total uint64, data []byte) {
	im := j.images[tid]
	if im == nil || im.ts != ts {
		if im != nil {
			j.orphan()
		}
		if len(j.images) >= maxAssemblies {
			// Evict one: a flood of half-sent images must not grow memory.
			for t := range j.images {
				delete(j.images, t)
				j.orphan()
				break
			}
		}
		im = &image{ts: ts, buf: j.buffer(min(total, j.cap))}
		j.images[tid] = im
	}
	if off != uint64(len(im.buf)) || off+uint64(len(data)) > j.cap {
		im.gap = true
		return
	}
	im.buf = append(im.buf, data...)
}

// maxSpare bounds the buffer the joiner keeps between images.
const maxSpare = 4 << 20

// buffer returns an empty buffer for an image of n bytes.
func (j *joiner) buffer(n uint64) []byte {
	if b := j.spare; b != nil && uint64(cap(b)) >= n {
		j.spare = nil
		return b[:0]
	}
	return make([]byte, 0, n)
}

// reuse keeps the buffer of a decoded image for the next image.
func (j *joiner) reuse(b []byte) {
	if cap(b) > 0 && cap(b) <= maxSpare && cap(b) > cap(j.spare) {
		j.spare = b
	}
}

// expire delivers events that waited longer than pendingTimeout and whose
// thread has gone (it left without sys_exit, or its exit record was lost).
// With all set, it delivers every pending event.
func (j *joiner) expire(now time.Time, all bool) {
	for tid, p := range j.pending {
		if !all {
			if now.Sub(p.since) < pendingTimeout {
				continue
			}
			if _, err := os.Stat(fmt.Sprintf("%s/%d/task/%d", procDir(), p.ev.Pid, tid)); err == nil {
				continue // still in the syscall: a slow module init
			}
		}
		delete(j.pending, tid)
		p.ev.Res = ResUnknown
		j.emit(p.ev)
	}
	if all {
		for tid := range j.images {
			delete(j.images, tid)
			j.orphan()
		}
	}
}

func syscallOf(k uint8) event.Syscall {
	switch sensorKgSyscall(k) {
	case sensorKgSyscallKG_SYS_INIT_MODULE:
		return event.InitModule
	case sensorKgSyscallKG_SYS_FINIT_MODULE:
		return event.FinitModule
	case sensorKgSyscallKG_SYS_DELETE_MODULE:
		return event.DeleteModule
	case sensorKgSyscallKG_SYS_MODULE_REQUEST:
		return event.ModuleRequest
	case sensorKgSyscallKG_SYS_MODULE_LOAD:
		return event.ModuleLoad
	case sensorKgSyscallKG_SYS_MODULE_FREE:
		return event.ModuleFree
	}
	return ""
}

// readLoop reads the ring buffer until stop, then drains it, delivers what
// is pending and closes Events.
func (s *Sensor) readLoop() {
	defer close(s.out)
	draining, abandoned := false, false
	send := func(ev *event.Event) {
		if !draining {
			select {
			case s.out <- ev:
				s.delivered.Add(1)
				return
			case <-s.done:
				draining = true
			}
		}
		// Closing: give a reader a moment; once nobody reads, discard the
		// rest at once, so that Close returns.
		if !abandoned {
			select {
			case s.out <- ev:
				s.delivered.Add(1)
				return
			case <-time.After(time.Second):
				abandoned = true
			}
		}
		s.discarded.Add(1)
	}
	req := newRequests()
	j := newJoiner(s.cfg.ImageCap, s.enr.decode, func(ev *event.Event) {
		req.observe(ev, time.Now())
		send(ev)
	}, func() { s.orphans.Add(1) })
	var rec ringbuf.Record
	// The reader sleeps until a wakeup or its deadline: pollAfterWake after
	// it last found records (see wakeInterval), idlePoll otherwise.
	// SetDeadline takes the reader's lock, so the deadline moves when it
	// passes, or when the first record after a quiet spell arrives; not at
	// each record.
	now := time.Now()
	lastSweep, deadline, found := now, now.Add(s.idlePoll), false
	s.reader.SetDeadline(deadline)
	for {
		err := s.reader.ReadInto(&rec)
		now = time.Now()
		switch {
		case err == nil:
			if err := j.record(rec.RawSample, now); err != nil {
				s.malformed.Add(1)
			}
			if !found {
				found = true
				if next := now.Add(pollAfterWake); next.Before(deadline) {
					deadline = next
					s.reader.SetDeadline(deadline)
				}
			}
		case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, ringbuf.ErrFlushed):
			select {
			case <-s.done:
				// stop flushed the reader: everything is read.
				draining = true
				j.expire(now, true)
				return
			default:
			}
		default:
			// The ring buffer failed: deliver what we have.
			s.log.WithError(err).Warn("sensor: ring buffer read failed")
			draining = true
			j.expire(now, true)
			return
		}
		// A reader that never catches up never sees its deadline pass:
		// the sweep does not wait for it.
		if now.Sub(lastSweep) >= pendingTimeout {
			j.expire(now, false)
			lastSweep = now
		}
		if err != nil {
			// The deadline passed, once every record committed before
			// it was read.
			deadline = now.Add(s.idlePoll)
			if found {
				deadline = now.Add(pollAfterWake)
			}
			found = false
			s.reader.SetDeadline(deadline)
		}
	}
}
