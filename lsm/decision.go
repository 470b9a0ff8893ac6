//go:build linux

package lsm

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// Op says what a decision is about.
type Op string

const (
	OpInitModule  Op = "init_module"
	OpFinitModule Op = "finit_module"
	OpBPF         Op = "bpf"
	OpUnlink      Op = "unlink"
	OpRename      Op = "rename"
	OpUmount      Op = "umount"
	OpKexec       Op = "kexec"
)

var ops = map[uint16]Op{1: OpInitModule, 2: OpFinitModule, 3: OpBPF, 4: OpUnlink, 5: OpRename, 6: OpUmount, 7: OpKexec}

// Verdict is the guard's answer.
type Verdict string

const (
	Allowed Verdict = "allowed"
	Blocked Verdict = "blocked"
	// Audit is a load that enforce mode would have blocked.
	Audit Verdict = "audit"
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
	8:  "compressed file: digest not listed (names cannot be parsed from compressed bytes)",
	9:  "load without contents cannot be verified",
	10: "digest could not be computed",
	11: "no allowlist installed",
	12: "refused: the guard is sealed",
	13: "another decision held this CPU's scratch (preempted): refused, fail closed",
}

// Decision is one decision of the guard, as reported through its ring
// buffer.
type Decision struct {
	Time    time.Time `json:"time"`
	Op      Op        `json:"op"`
	Verdict Verdict   `json:"verdict"`
	Reason  string    `json:"reason"`
	// Ret is what the hook returned: 0 or -EPERM.
	Ret int32 `json:"ret"`

	// Module loads.
	SHA256         string `json:"sha256,omitempty"`
	Name           string `json:"name,omitempty"`
	ThisModuleName string `json:"this_module_name,omitempty"`
	NameMismatch   bool   `json:"name_mismatch,omitempty"`
	Compressed     bool   `json:"compressed,omitempty"`
	Entry          string `json:"entry,omitempty"`
	Size           uint64 `json:"size,omitempty"`
	Generation     uint64 `json:"generation"`

	// Seal refusals: the map or link id (with the bpf command in the high
	// 32 bits), the inode, the bpffs device or the kexec id.
	Object uint64 `json:"object,omitempty"`
	Sealed bool   `json:"sealed"`

	Pid  uint32 `json:"pid"`
	Tid  uint32 `json:"tid"`
	UID  uint32 `json:"uid"`
	Comm string `json:"comm"`
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

// Reader reads decisions from the guard's ring buffer.
type Reader struct {
	rd     *ringbuf.Reader
	offset int64
}

// ErrClosed is returned by Read after Close.
var ErrClosed = os.ErrClosed

// NewReader opens a reader on the decision ring buffer. One reader per
// guard: two readers share (and split) the stream.
func (g *Guard) NewReader() (*Reader, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	rd, err := ringbuf.NewReader(g.events)
	if err != nil {
		return nil, fmt.Errorf("open decision ring buffer: %w", err)
	}
	return &Reader{rd: rd, offset: bootOffset()}, nil
}

// Read blocks for the next decision. It returns ErrClosed after Close.
func (r *Reader) Read() (Decision, error) {
	rec, err := r.rd.Read()
	if err != nil {
		if errors.Is(err, ringbuf.ErrClosed) {
			return Decision{}, ErrClosed
		}
		return Decision{}, fmt.Errorf("read decision: %w", err)
	}
	return decode(rec.RawSample, r.offset)
}

// SetDeadline makes Read return os.ErrDeadlineExceeded after t.
func (r *Reader) SetDeadline(t time.Time) { r.rd.SetDeadline(t) }

// Close unblocks Read and releases the reader.
func (r *Reader) Close() error { return r.rd.Close() }
