package event

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
)

// The binary form of an Event is what the Falco plugin carries as its event
// payload and what record files hold. It is compact and forward compatible:
//
//	event   = version(1 byte) field*
//	field   = key(uvarint) value
//	key     = number<<3 | wiretype
//	varint  (wiretype 0): uvarint; signed values are zigzag encoded
//	bytes   (wiretype 2): uvarint length, then the bytes
//	hexdig  (wiretype 3): uvarint length, then raw bytes that are shown as
//	                      lowercase hex (digests travel at half their size)
//
// Zero values are left out. A decoder skips fields whose number it does not
// know, so an older reader can read what a newer writer wrote. A repeated
// string (Flags, Depends) is the same field number written once per element.
//
// Every Event field has a number below; when you add a field to Event, give
// it the next free number here (TestCodecCoversEveryField checks this).

// CodecVersion is the first byte of every binary event.
const CodecVersion = 1

// Bounds that a decoder enforces on hostile input.
const (
	// MaxEventSize bounds one binary event.
	MaxEventSize = 4 << 20
	// MaxListLen bounds the number of elements of one list field.
	MaxListLen = 4096
)

const (
	wireVarint = 0
	wireBytes  = 2
	wireHex    = 3
)

// Field numbers. Never reuse or renumber one: recorded files depend on them.
const (
	fTS             = 1
	fSyscall        = 2
	fRes            = 3
	fName           = 4
	fThisModuleName = 5
	fNameMismatch   = 6
	fSHA256         = 7
	fELFSHA256      = 8
	fSize           = 9
	fParams         = 10
	fPath           = 11
	fFlags          = 12
	fRawFlags       = 13
	fFD             = 14
	fInode          = 15
	fDev            = 16
	fMtime          = 17
	fVermagic       = 18
	fSrcversion     = 19
	fDepends        = 20
	fSigned         = 21
	fSigner         = 22
	fTruncated      = 23
	fUnreadable     = 24
	fFileChanged    = 25
	fAllowed        = 26
	fAllowlistEntry = 27
	fVerdict        = 28
	fGuardSHA256    = 29
	fTOCTOU         = 30
	fPid            = 31
	fTid            = 32
	fPpid           = 33
	fComm           = 34
	fExe            = 35
	fCmdline        = 36
	fUID            = 37
	fGID            = 38
	fLoginUID       = 39
	fCgroupID       = 40
	fCgroup         = 41
	fContainerID    = 42
	fPidNS          = 43
	fMntNS          = 44
	fHostNS         = 45
	fCapEffective   = 46
	fGuardReason    = 47
	fImageAtExit    = 48
	fLost           = 49
	fThrottled      = 50
	fCtime          = 51
	fParamsAtExit   = 52
	fUserNS         = 53
	fHostMntNS      = 54
	fCoalesced      = 55
	fTaint          = 56
	fInventory      = 57
	fRequestName    = 58
	fRequestPid     = 59
	fRequestComm    = 60
	fParentKthread  = 61
	fSigOK          = 62
	fModuleAddr     = 63
	fHidden         = 64
)

// ErrCorrupt is wrapped by every decoding error about malformed input.
var ErrCorrupt = errors.New("corrupt binary event")

// MarshalBinary encodes e in the compact binary form.
func (e *Event) MarshalBinary() ([]byte, error) {
	return e.AppendBinary(make([]byte, 0, 256))
}

// AppendBinary appends the binary form of e to b (encoding.BinaryAppender).
func (e *Event) AppendBinary(b []byte) ([]byte, error) {
	start := len(b)
	w := encoder{b: append(b, CodecVersion)}
	w.uint(fTS, e.TS)
	w.str(fSyscall, string(e.Syscall))
	w.int(fRes, e.Res)
	w.str(fName, e.Name)
	w.str(fThisModuleName, e.ThisModuleName)
	w.bool(fNameMismatch, e.NameMismatch)
	w.digest(fSHA256, e.SHA256)
	w.digest(fELFSHA256, e.ELFSHA256)
	w.uint(fSize, e.Size)
	w.str(fParams, e.Params)
	w.str(fPath, e.Path)
	w.list(fFlags, e.Flags)
	w.uint(fRawFlags, uint64(e.RawFlags))
	w.int(fFD, int64(e.FD))
	w.uint(fInode, e.Inode)
	w.uint(fDev, e.Dev)
	w.int(fMtime, e.Mtime)
	w.int(fCtime, e.Ctime)
	w.str(fVermagic, e.Vermagic)
	w.str(fSrcversion, e.Srcversion)
	w.list(fDepends, e.Depends)
	w.bool(fSigned, e.Signed)
	w.str(fSigner, e.Signer)
	w.bool(fTruncated, e.Truncated)
	w.bool(fUnreadable, e.Unreadable)
	w.bool(fFileChanged, e.FileChanged)
	if e.Allowed != nil {
		// Written even when false: nil (no allowlist) and false differ.
		w.key(fAllowed, wireVarint)
		w.b = append(w.b, b2u(*e.Allowed))
	}
	w.str(fAllowlistEntry, e.AllowlistEntry)
	w.str(fVerdict, e.Verdict)
	w.digest(fGuardSHA256, e.GuardSHA256)
	w.bool(fTOCTOU, e.TOCTOU)
	w.uint(fPid, uint64(e.Pid))
	w.uint(fTid, uint64(e.Tid))
	w.uint(fPpid, uint64(e.Ppid))
	w.str(fComm, e.Comm)
	w.str(fExe, e.Exe)
	w.str(fCmdline, e.Cmdline)
	w.uint(fUID, uint64(e.UID))
	w.uint(fGID, uint64(e.GID))
	w.uint(fLoginUID, uint64(e.LoginUID))
	w.uint(fCgroupID, e.CgroupID)
	w.str(fCgroup, e.Cgroup)
	w.str(fContainerID, e.ContainerID)
	w.uint(fPidNS, uint64(e.PidNS))
	w.uint(fMntNS, uint64(e.MntNS))
	w.bool(fHostNS, e.HostNS)
	w.uint(fUserNS, uint64(e.UserNS))
	if e.HostMntNS != nil {
		// Written even when false: nil (unknown) and false differ.
		w.key(fHostMntNS, wireVarint)
		w.b = append(w.b, b2u(*e.HostMntNS))
	}
	w.uint(fCapEffective, e.CapEffective)
	w.str(fGuardReason, e.GuardReason)
	w.bool(fImageAtExit, e.ImageAtExit)
	w.bool(fParamsAtExit, e.ParamsAtExit)
	w.uint(fLost, e.Lost)
	w.uint(fThrottled, e.Throttled)
	w.uint(fCoalesced, uint64(e.Coalesced))
	w.str(fTaint, e.Taint)
	w.str(fInventory, e.Inventory)
	w.str(fRequestName, e.RequestName)
	w.uint(fRequestPid, uint64(e.RequestPid))
	w.str(fRequestComm, e.RequestComm)
	w.bool(fParentKthread, e.ParentKthread)
	if e.SigOK != nil {
		// Written even when false: nil (not known) and false differ.
		w.key(fSigOK, wireVarint)
		w.b = append(w.b, b2u(*e.SigOK))
	}
	w.uint(fModuleAddr, e.ModuleAddr)
	w.str(fHidden, e.Hidden)
	if w.err != nil {
		return b[:start], w.err
	}
	if len(w.b)-start > MaxEventSize {
		return b[:start], fmt.Errorf("encode event: %d bytes is over the %d byte limit", len(w.b)-start, MaxEventSize)
	}
	return w.b, nil
}

// Timestamp returns the TS of a binary event without decoding the rest:
// MarshalBinary writes it first. It returns 0 when the event has none or
// is malformed.
func Timestamp(data []byte) uint64 {
	if len(data) < 2 || data[0] != CodecVersion || data[1] != fTS<<3|wireVarint {
		return 0
	}
	ts, n := binary.Uvarint(data[2:])
	if n <= 0 {
		return 0
	}
	return ts
}

type encoder struct {
	b   []byte
	err error
}

func (w *encoder) key(num, wire int) { w.b = binary.AppendUvarint(w.b, uint64(num)<<3|uint64(wire)) }

func (w *encoder) uint(num int, v uint64) {
	if v != 0 {
		w.key(num, wireVarint)
		w.b = binary.AppendUvarint(w.b, v)
	}
}

func (w *encoder) int(num int, v int64) {
	if v != 0 {
		w.key(num, wireVarint)
		w.b = binary.AppendVarint(w.b, v)
	}
}

func (w *encoder) bool(num int, v bool) {
	if v {
		w.key(num, wireVarint)
		w.b = append(w.b, 1)
	}
}

func (w *encoder) str(num int, s string) {
	if s != "" {
		w.strAlways(num, s)
	}
}

func (w *encoder) strAlways(num int, s string) {
	w.key(num, wireBytes)
	w.b = binary.AppendUvarint(w.b, uint64(len(s)))
	w.b = append(w.b, s...)
}

// digest writes a lowercase hex string as raw bytes, and anything else (upper
// case, odd length, not hex) as a plain string, so that every value survives.
func (w *encoder) digest(num int, s string) {
	if s == "" {
		return
	}
	if !isLowerHex(s) {
		w.strAlways(num, s)
		return
	}
	w.key(num, wireHex)
	w.b = binary.AppendUvarint(w.b, uint64(len(s)/2))
	// isLowerHex has checked the input, so decoding cannot fail.
	w.b, _ = hex.AppendDecode(w.b, []byte(s))
}

func (w *encoder) list(num int, l []string) {
	if len(l) > MaxListLen {
		w.err = fmt.Errorf("encode event: field %d has %d elements, over the %d limit", num, len(l), MaxListLen)
		return
	}
	for _, s := range l {
		w.strAlways(num, s)
	}
}

func isLowerHex(s string) bool {
	if len(s)%2 != 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func b2u(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// UnmarshalBinary decodes the binary form into e, replacing all of e. It
// rejects malformed input with an error wrapping ErrCorrupt and never panics.
func (e *Event) UnmarshalBinary(data []byte) error {
	*e = Event{}
	if len(data) == 0 {
		return fmt.Errorf("%w: empty", ErrCorrupt)
	}
	if len(data) > MaxEventSize {
		return fmt.Errorf("%w: %d bytes is over the %d byte limit", ErrCorrupt, len(data), MaxEventSize)
	}
	if data[0] != CodecVersion {
		return fmt.Errorf("%w: codec version %d, want %d", ErrCorrupt, data[0], CodecVersion)
	}
	// One copy of the input backs every string field: a decode costs a few
	// allocations instead of one per field.
	d := decoder{b: data, s: string(data), off: 1}
	for d.off < len(d.b) {
		k := d.uvarint()
		if d.err != nil {
			break
		}
		num, wire := k>>3, int(k&7)
		if err := d.field(e, num, wire); err != nil {
			return err
		}
		if d.err != nil {
			break
		}
	}
	if d.err != nil {
		return fmt.Errorf("%w: %v at byte %d", ErrCorrupt, d.err, d.off)
	}
	upgradeHostNS(e)
	return nil
}

// upgradeHostNS reads an event of a writer from before fields 53 and 54
// (UserNS, HostMntNS) with today's meaning of HostNS. Such a writer set
// HostNS only for a caller in the initial PID namespace and in the initial
// mount namespace (where it knew that one): a udev worker, with its private
// mount namespace, came out as outside the host. Its event has a process
// and a PID namespace but no user namespace, and when that PID namespace is
// the initial one and HostNS is false, the mount namespace was the reason:
// HostNS is set and HostMntNS is false. The user namespace, which that
// writer did not record, stays unknown, as it does for today's writer when
// it cannot read it.
func upgradeHostNS(e *Event) {
	if e.UserNS != 0 || e.HostMntNS != nil || e.PidNS != InitPidNS || e.HostNS {
		return
	}
	private := false
	e.HostNS, e.HostMntNS = true, &private
}

type decoder struct {
	b   []byte
	s   string // the same bytes as b
	off int
	err error
}

var (
	errShort    = errors.New("truncated value")
	errOverflow = errors.New("varint overflows 64 bits")
)

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b[d.off:])
	switch {
	case n == 0:
		d.err = errShort
	case n < 0:
		d.err = errOverflow
	default:
		d.off += n
	}
	return v
}

// bytes returns the next length-prefixed value, aliasing d.b.
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)-d.off) {
		d.err = fmt.Errorf("length %d runs past the end", n)
		return nil
	}
	v := d.b[d.off : d.off+int(n)]
	d.off += int(n)
	return v
}

func (d *decoder) field(e *Event, num uint64, wire int) error {
	switch wire {
	case wireVarint:
		v := d.uvarint()
		if d.err != nil {
			return nil
		}
		return d.setVarint(e, num, v)
	case wireBytes, wireHex:
		raw := d.bytes()
		if d.err != nil {
			return nil
		}
		var s string
		if wire == wireHex {
			s = hex.EncodeToString(raw)
		} else {
			s = d.s[d.off-len(raw) : d.off] // raw ends at d.off
		}
		return d.setString(e, num, s)
	default:
		return fmt.Errorf("%w: field %d has unknown wire type %d at byte %d", ErrCorrupt, num, wire, d.off)
	}
}

func (d *decoder) setVarint(e *Event, num, v uint64) error {
	u32 := func() uint32 {
		if v > math.MaxUint32 {
			d.err = fmt.Errorf("field %d: %d does not fit 32 bits", num, v)
		}
		return uint32(v)
	}
	zz := int64(v>>1) ^ -int64(v&1)
	switch num {
	case fTS:
		e.TS = v
	case fRes:
		e.Res = zz
	case fNameMismatch:
		e.NameMismatch = v != 0
	case fSize:
		e.Size = v
	case fRawFlags:
		e.RawFlags = u32()
	case fFD:
		if zz < math.MinInt32 || zz > math.MaxInt32 {
			d.err = fmt.Errorf("field %d: %d does not fit 32 bits", num, zz)
		}
		e.FD = int32(zz)
	case fInode:
		e.Inode = v
	case fDev:
		e.Dev = v
	case fMtime:
		e.Mtime = zz
	case fCtime:
		e.Ctime = zz
	case fSigned:
		e.Signed = v != 0
	case fTruncated:
		e.Truncated = v != 0
	case fUnreadable:
		e.Unreadable = v != 0
	case fFileChanged:
		e.FileChanged = v != 0
	case fAllowed:
		a := v != 0
		e.Allowed = &a
	case fSigOK:
		ok := v != 0
		e.SigOK = &ok
	case fModuleAddr:
		e.ModuleAddr = v
	case fTOCTOU:
		e.TOCTOU = v != 0
	case fPid:
		e.Pid = u32()
	case fTid:
		e.Tid = u32()
	case fPpid:
		e.Ppid = u32()
	case fUID:
		e.UID = u32()
	case fGID:
		e.GID = u32()
	case fLoginUID:
		e.LoginUID = u32()
	case fCgroupID:
		e.CgroupID = v
	case fPidNS:
		e.PidNS = u32()
	case fMntNS:
		e.MntNS = u32()
	case fHostNS:
		e.HostNS = v != 0
	case fUserNS:
		e.UserNS = u32()
	case fHostMntNS:
		h := v != 0
		e.HostMntNS = &h
	case fCapEffective:
		e.CapEffective = v
	case fImageAtExit:
		e.ImageAtExit = v != 0
	case fParamsAtExit:
		e.ParamsAtExit = v != 0
	case fLost:
		e.Lost = v
	case fThrottled:
		e.Throttled = v
	case fCoalesced:
		e.Coalesced = u32()
	case fRequestPid:
		e.RequestPid = u32()
	case fParentKthread:
		e.ParentKthread = v != 0
	case fSyscall, fName, fThisModuleName, fSHA256, fELFSHA256, fParams, fPath, fFlags,
		fVermagic, fSrcversion, fDepends, fSigner, fAllowlistEntry, fVerdict, fGuardSHA256,
		fComm, fExe, fCmdline, fCgroup, fContainerID, fGuardReason, fTaint, fInventory, fRequestName, fRequestComm, fHidden:
		return fmt.Errorf("%w: string field %d sent as a varint", ErrCorrupt, num)
	default:
		// A field from a newer writer: skipped.
	}
	return nil
}

func (d *decoder) setString(e *Event, num uint64, s string) error {
	switch num {
	case fSyscall:
		e.Syscall = Syscall(s)
	case fName:
		e.Name = s
	case fThisModuleName:
		e.ThisModuleName = s
	case fSHA256:
		e.SHA256 = s
	case fELFSHA256:
		e.ELFSHA256 = s
	case fParams:
		e.Params = s
	case fPath:
		e.Path = s
	case fFlags:
		if len(e.Flags) >= MaxListLen {
			return fmt.Errorf("%w: flags has more than %d elements", ErrCorrupt, MaxListLen)
		}
		e.Flags = append(e.Flags, s)
	case fVermagic:
		e.Vermagic = s
	case fSrcversion:
		e.Srcversion = s
	case fDepends:
		if len(e.Depends) >= MaxListLen {
			return fmt.Errorf("%w: depends has more than %d elements", ErrCorrupt, MaxListLen)
		}
		e.Depends = append(e.Depends, s)
	case fSigner:
		e.Signer = s
	case fAllowlistEntry:
		e.AllowlistEntry = s
	case fVerdict:
		e.Verdict = s
	case fGuardSHA256:
		e.GuardSHA256 = s
	case fComm:
		e.Comm = s
	case fExe:
		e.Exe = s
	case fCmdline:
		e.Cmdline = s
	case fCgroup:
		e.Cgroup = s
	case fContainerID:
		e.ContainerID = s
	case fGuardReason:
		e.GuardReason = s
	case fTaint:
		e.Taint = s
	case fInventory:
		e.Inventory = s
	case fRequestName:
		e.RequestName = s
	case fRequestComm:
		e.RequestComm = s
	case fHidden:
		e.Hidden = s
	case fTS, fRes, fNameMismatch, fSize, fRawFlags, fFD, fInode, fDev, fMtime, fSigned,
		fTruncated, fUnreadable, fFileChanged, fAllowed, fTOCTOU, fPid, fTid, fPpid, fUID,
		fGID, fLoginUID, fCgroupID, fPidNS, fMntNS, fHostNS, fCapEffective, fImageAtExit,
		fLost, fThrottled, fCtime, fParamsAtExit, fUserNS, fHostMntNS, fCoalesced, fRequestPid, fParentKthread, fSigOK, fModuleAddr:
		return fmt.Errorf("%w: number field %d sent as bytes", ErrCorrupt, num)
	default:
		// A field from a newer writer: skipped.
	}
	return nil
}
