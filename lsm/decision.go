//go:build linux

package lsm

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/event"
)

// Op, Verdict and Decision are package event's: one decision type from
// the ring buffer to the Falco plugin.
type (
	Op       = event.Op
	Verdict  = event.Verdict
	Decision = event.Decision
	// Report is what the Reader reports besides decisions: decisions found
	// missing (event.ReportMissing).
	Report = event.Report
)

const (
	OpInitModule  = event.OpInitModule
	OpFinitModule = event.OpFinitModule
	OpBPF         = event.OpBPF
	OpUnlink      = event.OpUnlink
	OpRename      = event.OpRename
	OpUmount      = event.OpUmount
	OpKexec       = event.OpKexec
	OpMount       = event.OpMount
	// OpModuleRequest is an autoload request whose alias matches a deny
	// pattern: Name is the alias, Entry the pattern.
	OpModuleRequest = event.OpModuleRequest
)

var ops = map[uint16]Op{1: OpInitModule, 2: OpFinitModule, 3: OpBPF, 4: OpUnlink, 5: OpRename, 6: OpUmount, 7: OpKexec, 8: OpMount, 9: OpModuleRequest}

// Verdicts of Decision.Verdict.
const (
	Allowed Verdict = event.VerdictAllowed
	Blocked Verdict = event.VerdictBlocked
	// Audit is a load that enforce mode would have blocked.
	Audit Verdict = event.VerdictAudit
)

var verdicts = map[uint8]Verdict{1: Allowed, 2: Blocked, 3: Audit}

// Reasons, in the words decisions and logs use.
var reasons = map[uint8]string{
	1:  "digest listed and both names match the entry",
	2:  "name listed without digest and both names match",
	3:  "compressed file: digest listed (names cannot be parsed from compressed bytes; the entry's name is bound by the digest)",
	4:  "not on the allowlist",
	5:  "digest listed under another module name",
	6:  ".modinfo name and struct module name differ",
	7:  "not both module names could be parsed from the ELF image",
	8:  "not an ELF image (a compressed file, or bytes that are no module): digest not listed, and no names to parse",
	9:  "load without contents cannot be verified",
	10: "digest could not be computed",
	11: "no allowlist installed",
	12: "refused: the guard is sealed",
	13: "other decisions held every slot of this CPU's scratch (preempted): refused, fail closed",
	14: "caller outside the initial user and PID namespaces (the allowlist requires hostNamespaces)",
	15: "no module signature appended (the allowlist requires moduleSignature; a compressed file hides it)",
	16: "autoload request denied: the alias matches a pattern of the allowlist's autoload.deny",
}

const (
	flagCompressed = 1 << 0
	flagNames      = 1 << 1
	flagMismatch   = 1 << 2
	flagDigest     = 1 << 3
	flagSealed     = 1 << 4
)

func cstr[T int8 | uint8](b []T) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}

// decode turns a raw kg_event into a Decision; bootOffset is realtime minus
// boottime in nanoseconds.
func decode(raw []byte, bootOffset int64) (Decision, error) {
	var e guardKgEvent
	if err := binary.Read(bytes.NewReader(raw), binary.NativeEndian, &e); err != nil {
		return Decision{}, fmt.Errorf("decode decision (%d bytes): %w", len(raw), err)
	}
	d := Decision{
		Time:           time.Unix(0, int64(e.TsBoot)+bootOffset),
		Op:             ops[e.Op],
		Verdict:        verdicts[e.Verdict],
		Reason:         reasons[e.Reason],
		Ret:            e.Ret,
		Name:           cstr(e.Name[:]),
		ThisModuleName: cstr(e.ThisName[:]),
		NameMismatch:   e.Flags&flagMismatch != 0,
		Compressed:     e.Flags&flagCompressed != 0,
		Entry:          cstr(e.Entry[:]),
		Size:           e.Size,
		Generation:     e.Generation,
		Object:         e.Object,
		Sealed:         e.Flags&flagSealed != 0,
		Pid:            e.Pid,
		Tid:            e.Tid,
		UID:            e.Uid,
		Comm:           cstr(e.Comm[:]),
	}
	if e.Flags&flagDigest != 0 {
		d.SHA256 = hex.EncodeToString(e.Digest[:])
	}
	if d.Op == "" {
		d.Op = Op(fmt.Sprintf("op(%d)", e.Op))
	}
	if d.Verdict == "" {
		return d, fmt.Errorf("decode decision: unknown verdict %d", e.Verdict)
	}
	if e.Reason == 7 {
		d.Reason += " (" + elfStatus(e.ElfStatus) + ")"
	}
	if d.Reason == "" {
		d.Reason = fmt.Sprintf("reason(%d)", e.Reason)
	}
	return d, nil
}

// elfStatus names an enum kg_elf_status of elf.h.
func elfStatus(s uint32) string {
	switch s {
	case 1:
		return "no .modinfo section"
	case 2:
		return ".modinfo has no name="
	case 3:
		return "no .gnu.linkonce.this_module section"
	case 10:
		return "not an ELF image"
	case 11:
		return "not ELF64 little-endian"
	case 12:
		return "truncated image"
	case 13:
		return "malformed ELF"
	case 14:
		return "too many sections"
	case 15:
		return ".modinfo too large"
	case 16:
		return "name= too long"
	case 17:
		return "read fault"
	}
	return fmt.Sprintf("status %d", s)
}

// bootOffset is CLOCK_REALTIME - CLOCK_BOOTTIME, in nanoseconds.
func bootOffset() int64 {
	var rt, bt unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_REALTIME, &rt)
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &bt)
	return rt.Nano() - bt.Nano()
}

// Reader reads decisions from the guard's ring buffer, and checks that it
// gets them all: about once per second it compares the records it read
// with the guard's counters (see accounting). When records are missing,
// another process consumed them from the ring buffer (a writable descriptor
// to it is all that takes, even under the seal); Read then returns an
// Report (event.ReportMissing), Missing counts them, and so does Status (through the
// reader pin, for `kmodguard enforcer status` in another process). Records
// the kernel could not write (ring buffer full) are counted as lost, not
// missing.
type Reader struct {
	rd       *ringbuf.Reader
	offset   int64
	counters *ebpf.Map
	state    *ebpf.Map // the reader pin; nil when it could not be created

	acct      accounting
	interval  time.Duration
	nextCheck time.Time
	deadline  time.Time // the caller's (SetDeadline)
	received  uint64    // records read, undecodable ones included
	pending   []Report
	missing   atomic.Uint64
	pid       uint32
	uid       uint32
}

// ErrClosed is returned by Read after Close.
var ErrClosed = os.ErrClosed

// Accounting periods of the Reader: a check at most once per
// checkInterval, on counts at least settleDelay old.
const (
	checkInterval = time.Second
	settleDelay   = 2 * time.Second
)

// NewReader opens a reader on the decision ring buffer. One reader per
// guard: two readers share (and split) the stream, and each reports what
// the other took as missing. It pins the reader's state (the records found
// missing) in the pin directory, replacing that of an earlier reader.
func (g *Guard) NewReader() (*Reader, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	state, err := createReaderPin(filepath.Join(g.pinDir, pinReader))
	if err != nil {
		return nil, err
	}
	counters, err := g.counters.Clone()
	if err != nil {
		state.Close()
		return nil, fmt.Errorf("open the guard's counters: %w", err)
	}
	rd, err := ringbuf.NewReader(g.events)
	if err != nil {
		state.Close()
		counters.Close()
		return nil, fmt.Errorf("open decision ring buffer: %w", err)
	}
	r := &Reader{
		rd: rd, offset: bootOffset(), counters: counters, state: state,
		acct:     accounting{settle: settleDelay},
		interval: checkInterval, pid: uint32(os.Getpid()), uid: uint32(os.Getuid()),
	}
	// The first sample: the counts at the start.
	r.check(time.Now())
	return r, nil
}

// Read blocks for the next decision, or for the Report of decisions found
// missing. It returns ErrClosed after Close. Call it from one goroutine.
func (r *Reader) Read() (event.GuardMessage, error) {
	for {
		if len(r.pending) > 0 {
			d := r.pending[0]
			r.pending = r.pending[1:]
			return d, nil
		}
		dl := r.nextCheck
		if !r.deadline.IsZero() && r.deadline.Before(dl) {
			dl = r.deadline
		}
		r.rd.SetDeadline(dl)
		rec, err := r.rd.Read()
		if err == nil {
			r.received++
		}
		now := time.Now()
		if !now.Before(r.nextCheck) {
			r.check(now)
		}
		switch {
		case err == nil:
			d, err := decode(rec.RawSample, r.offset)
			if err != nil {
				return nil, err
			}
			return d, nil
		case errors.Is(err, ringbuf.ErrClosed), errors.Is(err, os.ErrClosed):
			return nil, ErrClosed
		case errors.Is(err, os.ErrDeadlineExceeded):
			if !r.deadline.IsZero() && !now.Before(r.deadline) && len(r.pending) == 0 {
				return nil, os.ErrDeadlineExceeded
			}
		default:
			return nil, fmt.Errorf("read decision: %w", err)
		}
	}
}

// check compares the records read with the guard's counters, queues a
// report when more are missing, and saves the reader's state.
func (r *Reader) check(now time.Time) {
	r.nextCheck = now.Add(r.interval)
	// Empty first, counts after: see accounting.
	empty := r.rd.AvailableBytes() == 0
	var n [4]uint64
	for slot := range n {
		var per []uint64
		if err := r.counters.Lookup(uint32(slot), &per); err != nil {
			return // no sample this time
		}
		for _, v := range per {
			n[slot] += v
		}
	}
	total := r.acct.observe(now, written(n[0], n[1], n[2], n[3]), r.received, empty)
	if prev := r.missing.Load(); total > prev {
		r.missing.Store(total)
		r.pending = append(r.pending, Report{
			Time: now,
			Kind: event.ReportMissing,
			Reason: fmt.Sprintf("%d guard decisions never reached the enforcer: another process consumed them "+
				"from the decision ring buffer (%d since the enforcer started reading)", total-prev, total),
			Count: total - prev,
			Pid:   r.pid,
			UID:   r.uid,
			Comm:  "kmodguard",
		})
	}
	r.saveState(now)
}

// Missing is the number of decision records another process consumed
// since the reader started. It is safe to call from any goroutine.
func (r *Reader) Missing() uint64 { return r.missing.Load() }

// SetDeadline makes Read return os.ErrDeadlineExceeded after t.
func (r *Reader) SetDeadline(t time.Time) { r.deadline = t }

// Close unblocks Read and releases the reader. Its pinned state stays for
// status readers until the next reader replaces it.
func (r *Reader) Close() error {
	err := r.rd.Close()
	r.counters.Close()
	if r.state != nil {
		r.state.Close()
	}
	return err
}

// readerState is the value of the reader pin: who reads the decisions and
// what it found missing. Only user space uses it.
type readerState struct {
	Pid      uint32
	Pad      uint32
	Received uint64
	Missing  uint64
	// Checked is the time of the last check, in Unix nanoseconds.
	Checked int64
}

func readerStateSpec() *ebpf.MapSpec {
	return &ebpf.MapSpec{
		Name: "kg_reader", Type: ebpf.Array, KeySize: 4,
		ValueSize: uint32(binary.Size(readerState{})), MaxEntries: 1,
	}
}

// createReaderPin pins a new, zeroed reader state at path, replacing one
// left by an earlier reader.
func createReaderPin(path string) (*ebpf.Map, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("replace the reader pin: %w", err)
	}
	m, err := ebpf.NewMap(readerStateSpec())
	if err != nil {
		return nil, fmt.Errorf("create the reader state: %w", err)
	}
	if err := m.Pin(path); err != nil {
		m.Close()
		return nil, fmt.Errorf("pin the reader state: %w", err)
	}
	return m, nil
}

func (r *Reader) saveState(now time.Time) {
	if r.state == nil {
		return
	}
	st := readerState{Pid: r.pid, Received: r.received, Missing: r.missing.Load(), Checked: now.UnixNano()}
	// Best effort: the status shows the last state saved.
	_ = r.state.Update(uint32(0), &st, ebpf.UpdateAny)
}

// readReaderState reads the reader pin in dir; ok is false when there is
// none (no reader since the guard was loaded) or it is not one.
func readReaderState(dir string) (st readerState, ok bool) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, pinReader), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return st, false
	}
	defer m.Close()
	want := readerStateSpec()
	if m.Type() != want.Type || m.KeySize() != want.KeySize || m.ValueSize() != want.ValueSize {
		return st, false
	}
	if err := m.Lookup(uint32(0), &st); err != nil {
		return readerState{}, false
	}
	return st, true
}
