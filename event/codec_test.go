package event

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
)

func ptr[T any](v T) *T { return &v }

// sample is a load as the sensor reports it, with every field set.
func sample() *Event {
	return &Event{
		TS: 1764190000123456789, Syscall: InitModule, Res: -38,
		Name: "dummy", ThisModuleName: "dumbo", NameMismatch: true,
		SHA256:    "3b1f5e0c2d4a6b8c9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f",
		ELFSHA256: "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100",
		Size:      37640, Params: "numdummies=3 debug", Path: "/lib/modules/6.1.0-56-amd64/kernel/drivers/net/dummy.ko",
		Flags: []string{"MODULE_INIT_IGNORE_MODVERSIONS", "MODULE_INIT_IGNORE_VERMAGIC"}, RawFlags: 3, FD: -7,
		Inode: 1 << 40, Dev: 0x803, Mtime: -1, Ctime: 1764189999000000001,
		Vermagic: "6.1.0-56-amd64 SMP preempt mod_unload modversions ", Srcversion: "B5E3B7F6F0C26D9C2A6A1C4",
		Depends: []string{"", "a-b"}, Signed: true, Signer: "Debian Secure Boot CA",
		Truncated: true, Unreadable: true, FileChanged: true,
		Allowed: ptr(false), AllowlistEntry: "dummy", Verdict: VerdictBlocked,
		GuardSHA256: "NOT-HEX", TOCTOU: true,
		Pid: math.MaxUint32, Tid: 2, Ppid: 1, Comm: "insmod", Exe: "/usr/bin/kmod", Cmdline: "insmod dummy.ko numdummies=3",
		UID: 0, GID: 5, LoginUID: math.MaxUint32,
		CgroupID: 9, Cgroup: "/system.slice/sshd.service", ContainerID: "0123456789ab",
		PidNS: InitPidNS, MntNS: 4026531841, UserNS: InitUserNS, HostNS: true, HostMntNS: ptr(false),
		CapEffective: 1<<41 - 1,
	}
}

// key returns a version byte and the key of field num.
func key(num, wire int) []byte {
	return binary.AppendUvarint([]byte{CodecVersion}, uint64(num)<<3|uint64(wire))
}

func roundTrip(t *testing.T, in *Event) *Event {
	t.Helper()
	b, err := in.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	out := new(Event)
	if err := out.UnmarshalBinary(b); err != nil {
		t.Fatalf("UnmarshalBinary: %v", err)
	}
	return out
}

func TestCodecRoundTrip(t *testing.T) {
	tests := map[string]*Event{
		"full":            sample(),
		"empty":           {},
		"allowed true":    {Syscall: FinitModule, Allowed: ptr(true), Verdict: VerdictAllowed},
		"negative fd":     {FD: math.MinInt32, Res: math.MinInt64, Mtime: math.MaxInt64, Ctime: math.MinInt64},
		"ctime alone":     {Syscall: FinitModule, Ctime: 1},
		"params at exit":  {Syscall: FinitModule, Params: "numdummies=2", ParamsAtExit: true},
		"upper-case hex":  {SHA256: "ABCDEF", ELFSHA256: "abc"},
		"empty in lists":  {Flags: []string{""}, Depends: []string{"", ""}},
		"binary in names": {Name: "\x00\xff", Cmdline: strings.Repeat("a\x00", 2048)},
		"delete":          {Syscall: DeleteModule, Name: "dummy", Flags: []string{"O_TRUNC"}, RawFlags: 0o1000},
		"host mntns":      {Pid: 1, PidNS: InitPidNS, UserNS: InitUserNS, HostNS: true, HostMntNS: ptr(true)},
		"user namespace":  {Pid: 1, PidNS: InitPidNS, UserNS: 4026532000, HostMntNS: ptr(false)},
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			out := roundTrip(t, in)
			if !reflect.DeepEqual(in, out) {
				t.Errorf("round trip changed the event\n in: %+v\nout: %+v", in, out)
			}
		})
	}
}

// TestCodecCoversEveryField fails when a field is added to Event without a
// field number in codec.go: it sets each field alone and expects it back.
func TestCodecCoversEveryField(t *testing.T) {
	typ := reflect.TypeOf(Event{})
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		t.Run(f.Name, func(t *testing.T) {
			var in Event
			v := reflect.ValueOf(&in).Elem().Field(i)
			if !setNonZero(v) {
				t.Fatalf("test does not know how to set a %s", f.Type)
			}
			out := roundTrip(t, &in)
			if !reflect.DeepEqual(&in, out) {
				t.Errorf("field %s is lost by the codec: give it a number in codec.go", f.Name)
			}
		})
	}
}

func setNonZero(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.String:
		v.SetString("x1")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(-3)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(3)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := 0; i < 2; i++ {
			if !setNonZero(s.Index(i)) {
				return false
			}
		}
		v.Set(s)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		v.Set(p) // the zero value behind a non-nil pointer is itself a value
	default:
		return false
	}
	return true
}

func TestCodecIsCompact(t *testing.T) {
	e := sample()
	b, err := e.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if len(b)*2 > len(j) {
		t.Errorf("binary form is %d bytes, JSON %d: want at most half", len(b), len(j))
	}
}

func TestCodecSkipsUnknownFields(t *testing.T) {
	b, err := (&Event{Name: "dummy", Pid: 7}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// A newer writer's field 200 (bytes) and 201 (varint) in the middle.
	extra := []byte{0xc2, 0x0c, 3, 'n', 'e', 'w', 0xc8, 0x0c, 0x7f}
	b = append(b[:1], append(extra, b[1:]...)...)
	var e Event
	if err := e.UnmarshalBinary(b); err != nil {
		t.Fatalf("UnmarshalBinary: %v", err)
	}
	if e.Name != "dummy" || e.Pid != 7 {
		t.Errorf("got %+v", e)
	}
}

// oldFinit is a finit_module event as a writer from before field 51 (Ctime)
// encoded it, byte for byte.
var oldFinit = []byte{
	CodecVersion,
	0x12, 12, 'f', 'i', 'n', 'i', 't', '_', 'm', 'o', 'd', 'u', 'l', 'e', // 2: syscall
	0x78, 42, // 15: inode
	0x88, 0x01, 0x03, // 17: mtime, zigzag -2
	0xc8, 0x01, 1, // 25: file_changed
}

// oldInit is an init_module event whose image was read at sys_exit, as a
// writer from before field 52 (ParamsAtExit) encoded it, byte for byte.
var oldInit = []byte{
	CodecVersion,
	0x12, 11, 'i', 'n', 'i', 't', '_', 'm', 'o', 'd', 'u', 'l', 'e', // 2: syscall
	0x48, 6, // 9: size
	0x52, 3, 'a', '=', '1', // 10: params
	0x80, 0x03, 1, // 48: image_at_exit
}

// TestCodecReadsOldRecords: events written before a field existed decode
// with that field zero and the rest intact, and the new field round-trips
// on its own number without disturbing the others.
func TestCodecReadsOldRecords(t *testing.T) {
	for _, tc := range []struct {
		name  string
		old   []byte
		want  Event
		set   func(*Event)
		field []byte // the new field's bytes once set
	}{
		{"ctime", oldFinit, Event{Syscall: FinitModule, Inode: 42, Mtime: -2, FileChanged: true},
			func(e *Event) { e.Ctime = 7 }, append(binary.AppendUvarint(nil, fCtime<<3|wireVarint), 14)}, // zigzag 7
		{"params_at_exit", oldInit, Event{Syscall: InitModule, Size: 6, Params: "a=1", ImageAtExit: true},
			func(e *Event) { e.ParamsAtExit = true }, append(binary.AppendUvarint(nil, fParamsAtExit<<3|wireVarint), 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e Event
			if err := e.UnmarshalBinary(tc.old); err != nil {
				t.Fatalf("UnmarshalBinary: %v", err)
			}
			if !reflect.DeepEqual(e, tc.want) {
				t.Errorf("old record decoded as %+v, want %+v", e, tc.want)
			}
			tc.set(&e)
			b, err := e.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(b, tc.field) {
				t.Errorf("the new field is not % x in % x", tc.field, b)
			}
			if !bytes.Equal(bytes.Replace(b, tc.field, nil, 1), tc.old) {
				t.Errorf("with the new field removed, % x differs from the old writer's % x", b, tc.old)
			}
		})
	}
}

// TestCodecUpgradesOldHostNS: a writer from before fields 53 and 54
// (UserNS, HostMntNS) set host_ns only in the initial PID and mount
// namespaces. Its events read with today's meaning where they can: a caller
// in the initial PID namespace but a private mount namespace (a udev
// worker) is on the host, with host_mntns false; a caller in another PID
// namespace is not; one it called host stays so, its mount namespace
// unknown to the reader.
func TestCodecUpgradesOldHostNS(t *testing.T) {
	// old encodes a process event as the old writer did: pid, pidns, mntns
	// and host_ns (only when true), by hand.
	old := func(pidns uint32, hostNS bool) []byte {
		b := []byte{CodecVersion}
		b = append(binary.AppendUvarint(b, fPid<<3|wireVarint), 100)
		b = binary.AppendUvarint(binary.AppendUvarint(b, fPidNS<<3|wireVarint), uint64(pidns))
		b = binary.AppendUvarint(binary.AppendUvarint(b, fMntNS<<3|wireVarint), 4026532200)
		if hostNS {
			b = append(binary.AppendUvarint(b, fHostNS<<3|wireVarint), 1)
		}
		return b
	}
	for _, tc := range []struct {
		name      string
		rec       []byte
		hostNS    bool
		hostMntNS *bool
	}{
		{"udev worker: host pid namespace, private mounts", old(InitPidNS, false), true, ptr(false)},
		{"container: own pid namespace", old(4026532300, false), false, nil},
		{"host", old(InitPidNS, true), true, nil},
		{"guard event: no pid namespace", append(binary.AppendUvarint([]byte{CodecVersion}, fPid<<3|wireVarint), 7), false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e Event
			if err := e.UnmarshalBinary(tc.rec); err != nil {
				t.Fatal(err)
			}
			if e.HostNS != tc.hostNS || !reflect.DeepEqual(e.HostMntNS, tc.hostMntNS) || e.UserNS != 0 {
				t.Errorf("host_ns %v host_mntns %v userns %d, want %v %v 0", e.HostNS, fmtBool(e.HostMntNS), e.UserNS,
					tc.hostNS, fmtBool(tc.hostMntNS))
			}
		})
	}
	// Today's writer records the user namespace: its host_ns false stays
	// false (a caller in another user namespace).
	in := &Event{Pid: 5, PidNS: InitPidNS, MntNS: 4026532200, UserNS: 4026532400, HostMntNS: ptr(false)}
	if out := roundTrip(t, in); out.HostNS {
		t.Errorf("a caller in a user namespace of its own came back with host_ns true")
	}
}

func fmtBool(b *bool) string {
	if b == nil {
		return "nil"
	}
	return fmt.Sprint(*b)
}

func TestCodecRejects(t *testing.T) {
	good, err := sample().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		in   []byte
		want string
	}{
		"empty":           {nil, "empty"},
		"version":         {[]byte{9}, "codec version 9"},
		"truncated":       {good[:len(good)-3], "truncated value"},
		"cut string":      {[]byte{1, fName<<3 | wireBytes, 4, 'a'}, "runs past the end"},
		"key overflow":    {[]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, "overflows"},
		"length too long": {[]byte{1, fName<<3 | wireBytes, 0xff, 0xff, 0x03}, "runs past the end"},
		"wire type":       {[]byte{1, fName<<3 | 5}, "unknown wire type 5"},
		"string as int":   {[]byte{1, fName<<3 | wireVarint, 1}, "sent as a varint"},
		"int as string":   {append(key(fPid, wireBytes), 1, 'x'), "sent as bytes"},
		"ctime as string": {append(key(fCtime, wireBytes), 1, 'x'), "sent as bytes"},
		"flag as string":  {append(key(fParamsAtExit, wireBytes), 1, 'x'), "sent as bytes"},
		"pid over 32 bit": {append(key(fPid, wireVarint), 0x80, 0x80, 0x80, 0x80, 0x10), "does not fit 32 bits"},
		"too big":         {append([]byte{1}, make([]byte, MaxEventSize)...), "over the"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var e Event
			err := e.UnmarshalBinary(tc.in)
			if err == nil {
				t.Fatalf("no error, decoded %+v", e)
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want ErrCorrupt containing %q", err, tc.want)
			}
		})
	}
}

func TestCodecListBound(t *testing.T) {
	e := &Event{Flags: make([]string, MaxListLen+1)}
	if _, err := e.MarshalBinary(); err == nil {
		t.Error("MarshalBinary accepted a list over MaxListLen")
	}
	var b []byte
	b = append(b, CodecVersion)
	for i := 0; i <= MaxListLen; i++ {
		b = append(b, fDepends<<3|wireBytes, 0)
	}
	if err := new(Event).UnmarshalBinary(b); err == nil || !errors.Is(err, ErrCorrupt) {
		t.Errorf("UnmarshalBinary of %d list elements: %v, want ErrCorrupt", MaxListLen+1, err)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	var events []*Event
	for i := 0; i < 50; i++ {
		e := sample()
		e.Pid = uint32(i)
		e.Cmdline = strings.Repeat("x", i*40) // lengths cross the one-byte uvarint
		events = append(events, e)
	}
	events = append(events, &Event{})
	var buf bytes.Buffer
	w := NewRecordWriter(&buf)
	for _, e := range events {
		if err := w.Write(e); err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
	if !bytes.HasPrefix(buf.Bytes(), []byte(RecordMagic+"\x01")) {
		t.Fatalf("file starts with %q", buf.Bytes()[:9])
	}
	r := NewRecordReader(&buf)
	for i, want := range events {
		got, err := r.Read()
		if err != nil {
			t.Fatalf("Read %d: %v", i, err)
		}
		if !reflect.DeepEqual(want, got) {
			t.Fatalf("event %d differs\nwant %+v\n got %+v", i, want, got)
		}
	}
	if _, err := r.Read(); err != io.EOF {
		t.Errorf("after the last event: %v, want io.EOF", err)
	}
	if _, err := r.Read(); err != io.EOF {
		t.Errorf("read after io.EOF: %v, want io.EOF again", err)
	}
}

func TestRecordReadHeader(t *testing.T) {
	if err := NewRecordReader(bytes.NewReader(nil)).ReadHeader(); err != nil {
		t.Errorf("empty stream: %v", err)
	}
	if err := NewRecordReader(strings.NewReader("{}\n")).ReadHeader(); !errors.Is(err, ErrNotRecord) {
		t.Errorf("JSON: %v, want ErrNotRecord", err)
	}
	var buf bytes.Buffer
	if err := NewRecordWriter(&buf).Write(sample()); err != nil {
		t.Fatal(err)
	}
	r := NewRecordReader(&buf)
	if err := r.ReadHeader(); err != nil {
		t.Fatal(err)
	}
	if err := r.ReadHeader(); err != nil {
		t.Errorf("second ReadHeader: %v", err)
	}
	if e, err := r.Read(); err != nil || e.Name != "dummy" {
		t.Errorf("Read after ReadHeader: %v %v", e, err)
	}
}

func TestRecordEmpty(t *testing.T) {
	if _, err := NewRecordReader(bytes.NewReader(nil)).Read(); err != io.EOF {
		t.Errorf("empty stream: %v, want io.EOF", err)
	}
	var buf bytes.Buffer
	if err := NewRecordWriter(&buf).WriteHeader(); err != nil {
		t.Fatal(err)
	}
	if _, err := NewRecordReader(&buf).Read(); err != io.EOF {
		t.Errorf("header only: %v, want io.EOF", err)
	}
}

func TestRecordRejects(t *testing.T) {
	var buf bytes.Buffer
	w := NewRecordWriter(&buf)
	for i := 0; i < 3; i++ {
		if err := w.Write(sample()); err != nil {
			t.Fatal(err)
		}
	}
	file := buf.Bytes()
	flip := func(off int) []byte {
		b := bytes.Clone(file)
		b[off] ^= 0x40
		return b
	}
	tests := map[string]struct {
		in        []byte
		is        error
		wantInMsg string
	}{
		"json":        {[]byte(`{"name":"dummy"}`), ErrNotRecord, "bad magic"},
		"short magic": {[]byte("KMOD"), ErrNotRecord, "bad magic"},
		"version":     {[]byte(RecordMagic + "\x02"), ErrNotRecord, "version 2"},
		"truncated":   {file[:len(file)-2], io.ErrUnexpectedEOF, "record 3"},
		"bit flip":    {flip(len(file) - 20), ErrCorrupt, "record 3: corrupt binary event: checksum"},
		"zero length": {append(bytes.Clone(file[:9]), 0), ErrCorrupt, "record 1"},
		"huge length": {append(bytes.Clone(file[:9]), 0xff, 0xff, 0xff, 0xff, 0x0f), ErrCorrupt, "outside"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := NewRecordReader(bytes.NewReader(tc.in))
			var err error
			for i := 0; i < 5 && err == nil; i++ {
				_, err = r.Read()
			}
			if err == nil || err == io.EOF {
				t.Fatalf("got %v, want an error", err)
			}
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.wantInMsg) {
				t.Errorf("error %q, want %v containing %q", err, tc.is, tc.wantInMsg)
			}
		})
	}
}

// FuzzUnmarshal feeds hostile bytes to the decoder: it must never panic, and
// whatever it accepts must encode and decode back to the same event.
func FuzzUnmarshal(f *testing.F) {
	for _, e := range []*Event{sample(), {}, {Allowed: ptr(true)}, {Syscall: FinitModule, Mtime: 1, Ctime: -1},
		{Syscall: InitModule, Params: "a=1", ImageAtExit: true, ParamsAtExit: true}} {
		b, err := e.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(oldFinit)
	f.Add(oldInit)
	f.Add([]byte{1, 0xff})
	f.Add([]byte{1, fName<<3 | wireHex, 2, 0xab, 0xcd})
	f.Fuzz(func(t *testing.T, data []byte) {
		var e Event
		if err := e.UnmarshalBinary(data); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		out := roundTrip(t, &e)
		if !reflect.DeepEqual(&e, out) {
			t.Fatalf("re-encoding changed the event\n%+v\n%+v", e, out)
		}
	})
}

// FuzzRecordReader feeds hostile record files to the reader.
func FuzzRecordReader(f *testing.F) {
	var buf bytes.Buffer
	w := NewRecordWriter(&buf)
	for i := 0; i < 2; i++ {
		if err := w.Write(sample()); err != nil {
			f.Fatal(err)
		}
	}
	f.Add(buf.Bytes())
	f.Add([]byte(RecordMagic + "\x01\x05"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewRecordReader(bytes.NewReader(data))
		// Each record consumes at least 6 bytes, so this bound is never hit
		// by a reader that makes progress.
		for i := 0; i <= len(data); i++ {
			if _, err := r.Read(); err != nil {
				return
			}
		}
		t.Fatal(fmt.Sprintf("reader did not stop within %d reads", len(data)+1))
	})
}

func BenchmarkCodec(b *testing.B) {
	e := sample()
	bin, _ := e.MarshalBinary()
	js, _ := json.Marshal(e)
	b.Run("binary/marshal", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 1024)
		for b.Loop() {
			buf, _ = e.AppendBinary(buf[:0])
		}
	})
	b.Run("binary/unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(bin)))
		var out Event
		for b.Loop() {
			if err := out.UnmarshalBinary(bin); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json/unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(js)))
		for b.Loop() {
			var out Event
			if err := json.Unmarshal(js, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestTimestamp(t *testing.T) {
	e := sample()
	b, err := e.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if got := Timestamp(b); got != e.TS {
		t.Errorf("Timestamp = %d, want %d", got, e.TS)
	}
	empty, _ := (&Event{Name: "x"}).MarshalBinary()
	for _, in := range [][]byte{nil, {1}, {2, 8, 1}, {1, 8}, {1, 8, 0x80}, empty} {
		if got := Timestamp(in); got != 0 {
			t.Errorf("Timestamp(%x) = %d, want 0", in, got)
		}
	}
}

func TestRecordReadRaw(t *testing.T) {
	var buf bytes.Buffer
	w := NewRecordWriter(&buf)
	events := []*Event{sample(), {Name: "b"}}
	for _, e := range events {
		if err := w.Write(e); err != nil {
			t.Fatal(err)
		}
	}
	r := NewRecordReader(&buf)
	for i, e := range events {
		raw, err := r.ReadRaw()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := e.MarshalBinary()
		if !bytes.Equal(raw, want) {
			t.Errorf("record %d: raw %x, want %x", i, raw, want)
		}
	}
	if _, err := r.ReadRaw(); err != io.EOF {
		t.Errorf("after the last record: %v", err)
	}
}

// TestRecordConcatenated: a second writer appending to a recording (as
// `watch --record` does to an existing file) and `cat a b` both give one
// valid recording.
func TestRecordConcatenated(t *testing.T) {
	var buf bytes.Buffer
	for i := 0; i < 3; i++ {
		w := NewRecordWriter(&buf) // a fresh writer writes its own header
		for j := 0; j < 2; j++ {
			e := sample()
			e.Pid = uint32(i*10 + j)
			// 75 is 'K', the first byte of the magic, as a length.
			e.Cmdline = strings.Repeat("y", j*(75-40))
			if err := w.Write(e); err != nil {
				t.Fatal(err)
			}
		}
	}
	r := NewRecordReader(bytes.NewReader(buf.Bytes()))
	var pids []uint32
	for {
		e, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %v: %v", pids, err)
		}
		pids = append(pids, e.Pid)
	}
	if want := []uint32{0, 1, 10, 11, 20, 21}; !reflect.DeepEqual(pids, want) {
		t.Errorf("pids %v, want %v", pids, want)
	}
	bad := append(bytes.Clone(buf.Bytes()), []byte("KMODGREC\x07")...)
	r = NewRecordReader(bytes.NewReader(bad))
	var err error
	for err == nil {
		_, err = r.Read()
	}
	if !errors.Is(err, ErrNotRecord) {
		t.Errorf("header of version 7 between records: %v", err)
	}
}

func TestRecordLengthK(t *testing.T) {
	// A record whose length byte is 'K' must not be taken for a header.
	for n := 0; n < 200; n++ {
		var buf bytes.Buffer
		w := NewRecordWriter(&buf)
		e := &Event{Cmdline: strings.Repeat("k", n)}
		if err := w.Write(e); err != nil {
			t.Fatal(err)
		}
		got, err := NewRecordReader(&buf).Read()
		if err != nil || got.Cmdline != e.Cmdline {
			t.Fatalf("cmdline of %d bytes: %v", n, err)
		}
	}
}
