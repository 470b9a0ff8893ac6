package bpf

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/kmodguard/kmodguard/event"
)

func TestJoinPath(t *testing.T) {
	for _, tc := range []struct {
		raw       string
		truncated bool
		want      string
	}{
		{"dummy.ko\x00net\x00drivers\x00lib\x00", false, "/lib/drivers/net/dummy.ko"},
		{"", false, "/"},
		{"a\x00", false, "/a"},
		{"x\x00y", false, "/y/x"}, // no final NUL: the walk stopped at the bound
		{"leaf\x00mid\x00", true, "…/mid/leaf"},
		{"", true, "…"},
	} {
		if got := joinPath([]byte(tc.raw), tc.truncated); got != tc.want {
			t.Errorf("joinPath(%q, %v) = %q, want %q", tc.raw, tc.truncated, got, tc.want)
		}
	}
}

func TestCmdline(t *testing.T) {
	if got := cmdline([]byte("insmod\x00dummy.ko\x00numdummies=3\x00")); got != "insmod dummy.ko numdummies=3" {
		t.Errorf("cmdline = %q", got)
	}
}

func TestContainerID(t *testing.T) {
	id := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tc := range []struct{ cgroup, want string }{
		{"/system.slice/docker-" + id + ".scope", id},
		{"/docker/" + id, id},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-" + id + ".scope", id},
		{"/kubepods/besteffort/pod1/" + id, id},
		{"/machine.slice/libpod-" + id + ".scope", id},
		{"/system.slice/crio-" + id + ".scope", id},
		{"/user.slice/user-1000.slice/session-2.scope", ""},
		{"/", ""},
		{"/docker/" + id[:63], ""},
		{"/docker/" + id + "0", ""},
	} {
		if got := ContainerID(tc.cgroup); got != tc.want {
			t.Errorf("ContainerID(%q) = %q, want %q", tc.cgroup, got, tc.want)
		}
	}
}

func TestFlagNames(t *testing.T) {
	if got := deleteFlags(0x800 | 0x200 | 0x1); len(got) != 3 || got[0] != "O_NONBLOCK" || got[1] != "O_TRUNC" || got[2] != "0x1" {
		t.Errorf("deleteFlags = %v", got)
	}
	if got := finitFlags(0); got != nil {
		t.Errorf("finitFlags(0) = %v", got)
	}
}

// rawRecord lays a record out as the kernel does.
func rawRecord(v any) []byte {
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.NativeEndian, v); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func chunkRecord(tid uint32, ts, off uint64, data []byte) []byte {
	c := sensorKgChunk{Kind: uint8(sensorKgRecordKG_REC_CHUNK), Tid: tid, Ts: ts, Off: off, Total: off + uint64(len(data)), Len: uint32(len(data))}
	b := rawRecord(&c)
	return append(b[:chunkHeaderSize], data...)
}

func eventRecord(sc sensorKgSyscall, tid uint32, ts, length, captured uint64) []byte {
	e := sensorKgEvent{Kind: uint8(sensorKgRecordKG_REC_EVENT), Syscall: uint8(sc), Tid: tid, Pid: tid, Ts: ts, Len: length, Captured: captured}
	return rawRecord(&e)[:eventHeaderSize]
}

// eventWithData is an event record whose data holds the given segments:
// name, params, path, exe, cmdline, cgroup.
func eventWithData(sc sensorKgSyscall, tid uint32, segs ...string) []byte {
	e := sensorKgEvent{Kind: uint8(sensorKgRecordKG_REC_EVENT), Syscall: uint8(sc), Tid: tid, Pid: tid}
	lens := []*uint16{&e.NameLen, &e.ParamsLen, &e.PathLen, &e.ExeLen, &e.CmdlineLen, &e.CgroupLen}
	var data []byte
	for i, seg := range segs {
		*lens[i] = uint16(len(seg))
		data = append(data, seg...)
	}
	e.DataLen = uint16(len(data))
	return append(rawRecord(&e)[:eventHeaderSize], data...)
}

func exitRecord(sc sensorKgSyscall, tid uint32, ret int64) []byte {
	return exitWithParams(sc, tid, ret, 0, "")
}

// exitWithParams is an exit record with flags and, after its header, params
// (as the sensor sends them read at sys_exit, NUL included).
func exitWithParams(sc sensorKgSyscall, tid uint32, ret int64, flags sensorKgFlag, params string) []byte {
	x := sensorKgExit{Kind: uint8(sensorKgRecordKG_REC_EXIT), Syscall: uint8(sc), Tid: tid, Ret: ret, Flags: uint32(flags),
		ParamsLen: uint16(len(params))}
	return append(rawRecord(&x)[:exitHeaderSize], params...)
}

// aligned copies b to 8-byte aligned memory, as ring buffer samples are.
func aligned(b []byte) []byte {
	w := make([]uint64, (len(b)+7)/8+1)
	a := unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), len(w)*8)[:len(b)]
	copy(a, b)
	return a
}

type joined struct {
	ev     *event.Event
	img    []byte
	gap    bool
	orphan int
}

func newTestJoiner(out *[]joined, orphans *int) *joiner {
	n := &enricher{}
	return newJoiner(1<<20, func(rec *sensorKgEvent, data eventData, img []byte, gap bool) *event.Event {
		ev := n.decode(rec, data, img, gap)
		*out = append(*out, joined{ev: ev, img: append([]byte(nil), img...), gap: gap})
		return ev
	}, func(*event.Event) {}, func() { *orphans++ })
}

func TestJoiner(t *testing.T) {
	var got []joined
	var orphans int
	var emitted []*event.Event
	j := newTestJoiner(&got, &orphans)
	j.emit = func(ev *event.Event) { emitted = append(emitted, ev) }
	now := time.Now()
	feed := func(b []byte) {
		t.Helper()
		if err := j.record(aligned(b), now); err != nil {
			t.Fatal(err)
		}
	}
	init := sensorKgSyscallKG_SYS_INIT_MODULE

	// Two threads interleaved: chunks, events and exits join by thread.
	feed(chunkRecord(1, 100, 0, []byte("abc")))
	feed(chunkRecord(2, 200, 0, []byte("xy")))
	feed(chunkRecord(1, 100, 3, []byte("def")))
	feed(eventRecord(init, 2, 200, 2, 2))
	feed(eventRecord(init, 1, 100, 6, 6))
	feed(exitRecord(init, 1, -38))
	feed(exitRecord(init, 2, 0))
	if len(emitted) != 2 || emitted[0].Tid != 1 || emitted[0].Res != -38 || emitted[1].Tid != 2 || emitted[1].Res != 0 {
		t.Fatalf("emitted %+v", emitted)
	}
	if string(got[0].img) != "xy" || string(got[1].img) != "abcdef" || got[1].ev.SHA256 != sha([]byte("abcdef")) {
		t.Errorf("images %q %q", got[0].img, got[1].img)
	}

	// A missing chunk leaves a gap: truncated, no digest.
	feed(chunkRecord(3, 300, 0, []byte("ab")))
	feed(chunkRecord(3, 300, 5, []byte("cd")))
	feed(eventRecord(init, 3, 300, 7, 7))
	if ev := got[len(got)-1].ev; !ev.Truncated || ev.SHA256 != "" {
		t.Errorf("gap: truncated %v sha %q", ev.Truncated, ev.SHA256)
	}
	// Its exit is lost; the thread's next event delivers it as unknown.
	feed(eventRecord(sensorKgSyscallKG_SYS_DELETE_MODULE, 3, 301, 0, 0))
	if ev := emitted[len(emitted)-1]; ev.Tid != 3 || ev.Res != ResUnknown || ev.Syscall != event.InitModule {
		t.Errorf("lost exit: %+v", ev)
	}
	// An exit of the wrong syscall, or with no event, is an orphan.
	feed(exitRecord(init, 3, 0))
	feed(exitRecord(init, 99, 0))
	if orphans != 2 {
		t.Errorf("orphans = %d, want 2", orphans)
	}
	// Close delivers what is still pending.
	j.expire(now, true)
	if ev := emitted[len(emitted)-1]; ev.Syscall != event.DeleteModule || ev.Res != ResUnknown {
		t.Errorf("pending at close: %+v", ev)
	}
	if len(j.pending) != 0 || len(j.images) != 0 {
		t.Errorf("left %d pending, %d images", len(j.pending), len(j.images))
	}
}

func TestEventData(t *testing.T) {
	var got []joined
	var orphans int
	j := newTestJoiner(&got, &orphans)
	now := time.Now()
	del := sensorKgSyscallKG_SYS_DELETE_MODULE
	fin := sensorKgSyscallKG_SYS_FINIT_MODULE
	if err := j.record(aligned(eventWithData(del, 1, "dummy\x00", "", "", "bin\x00usr\x00", "rmmod\x00dummy\x00", "x.scope\x00system.slice\x00")), now); err != nil {
		t.Fatal(err)
	}
	if err := j.record(aligned(eventWithData(fin, 2, "", "a=1\x00", "dummy.ko\x00net\x00", "", "", "")), now); err != nil {
		t.Fatal(err)
	}
	ev := got[0].ev
	if ev.Name != "dummy" || ev.Exe != "/usr/bin" || ev.Cmdline != "rmmod dummy" || ev.Cgroup != "/system.slice/x.scope" {
		t.Errorf("delete_module: name %q exe %q cmdline %q cgroup %q", ev.Name, ev.Exe, ev.Cmdline, ev.Cgroup)
	}
	ev = got[1].ev
	if ev.Params != "a=1" || ev.Path != "/net/dummy.ko" || ev.Exe != "" || ev.Cgroup != "/" {
		t.Errorf("finit_module: params %q path %q exe %q cgroup %q", ev.Params, ev.Path, ev.Exe, ev.Cgroup)
	}
	// Lengths that do not add up to the data are refused.
	b := eventWithData(del, 3, "dummy\x00")
	b[2]++ // data_len one past the data
	if err := j.record(aligned(b), now); err == nil {
		t.Error("data_len past the record accepted")
	}
	b = eventWithData(del, 3, "dummy\x00", "x\x00")
	b[2]-- // segments longer than data_len
	if err := j.record(aligned(b), now); err == nil {
		t.Error("segments past data_len accepted")
	}
}

func TestJoinerMalformed(t *testing.T) {
	var got []joined
	var orphans int
	j := newTestJoiner(&got, &orphans)
	for _, b := range [][]byte{
		nil,
		{9},
		{byte(sensorKgRecordKG_REC_EVENT), 0, 0},
		{byte(sensorKgRecordKG_REC_EXIT)},
		exitRecord(sensorKgSyscallKG_SYS_INIT_MODULE, 1, 0)[:exitHeaderSize-1],
		// params_len past the end of the record
		exitWithParams(sensorKgSyscallKG_SYS_FINIT_MODULE, 1, 0, sensorKgFlagKG_F_PARAMS_AT_EXIT, "a=1\x00")[:exitHeaderSize+3],
		chunkRecord(1, 1, 0, nil)[:chunkHeaderSize-1],
	} {
		if err := j.record(aligned(b), time.Now()); err == nil {
			t.Errorf("record %x: no error", b)
		}
	}
	// A chunk that claims more data than it carries.
	b := chunkRecord(1, 1, 0, []byte("ab"))
	b[chunkHeaderSize-8] = 200
	if err := j.record(aligned(b), time.Now()); err == nil {
		t.Error("oversized chunk length accepted")
	}
}

// FuzzJoinerRecord feeds arbitrary records: nothing panics, and memory
// stays bounded by the image cap and the assembly limit.
func FuzzJoinerRecord(f *testing.F) {
	f.Add(chunkRecord(1, 1, 0, []byte("abc")))
	f.Add(eventRecord(sensorKgSyscallKG_SYS_INIT_MODULE, 1, 1, 3, 3))
	f.Add(eventRecord(sensorKgSyscallKG_SYS_FINIT_MODULE, 1, 1, 3, 3))
	f.Add(exitRecord(sensorKgSyscallKG_SYS_INIT_MODULE, 1, 0))
	f.Add(exitWithParams(sensorKgSyscallKG_SYS_FINIT_MODULE, 1, 0, sensorKgFlagKG_F_PARAMS_AT_EXIT, "a=1\x00"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		var got []joined
		var orphans int
		j := newTestJoiner(&got, &orphans)
		j.decode = (&enricher{procRoot: dir, fileCap: 1 << 20}).decode
		j.record(aligned(b), time.Now())
		j.record(aligned(b), time.Now())
		for _, im := range j.images {
			if uint64(len(im.buf)) > j.cap {
				t.Fatalf("image grew to %d past the cap", len(im.buf))
			}
		}
		j.expire(time.Now(), true)
	})
}

// TestConfigErrors: bad configs are refused with an error that names the
// setting, before anything is loaded (so without root too).
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{RingBufferSize: 1000}, "ring buffer size 1000"},
		{Config{RingBufferSize: 3 << 20}, "power of two"},
		{Config{ImageCap: MaxImageCap + 1}, "image cap"},
		{Config{Hook: "kprobe"}, `hook "kprobe"`},
		{Config{UnprivilegedRate: 1<<30 + 1}, "unprivileged rate"},
	} {
		s, err := NewSensor(tc.cfg)
		if err == nil {
			s.Close()
			t.Errorf("%+v: no error", tc.cfg)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %q does not say %q", tc.cfg, err, tc.want)
		}
	}
}

// TestJoinerExpire: an event whose result never comes is delivered, with
// ResUnknown, once it is old and its thread is gone; not while the thread
// is still in the syscall.
func TestJoinerExpire(t *testing.T) {
	var got []joined
	var orphans int
	var emitted []*event.Event
	j := newTestJoiner(&got, &orphans)
	j.emit = func(ev *event.Event) { emitted = append(emitted, ev) }
	now := time.Now()
	alive := uint32(os.Getpid()) // this process's main thread exists
	gone := uint32(1 << 30)      // above pid_max: no such thread
	for _, tid := range []uint32{alive, gone} {
		if err := j.record(aligned(eventRecord(sensorKgSyscallKG_SYS_INIT_MODULE, tid, 1, 0, 0)), now); err != nil {
			t.Fatal(err)
		}
	}
	j.expire(now.Add(pendingTimeout/2), false)
	if len(emitted) != 0 {
		t.Fatalf("expired too early: %d", len(emitted))
	}
	j.expire(now.Add(2*pendingTimeout), false)
	if len(emitted) != 1 || emitted[0].Tid != gone || emitted[0].Res != ResUnknown {
		t.Fatalf("emitted %+v, want the gone thread's event with ResUnknown", emitted)
	}
	if j.pending[alive] == nil {
		t.Error("the live thread's event was expired")
	}
}

// TestJoinerImageAtExit: an init_module whose image was unreadable at
// sys_enter gets the image the sensor read at sys_exit (chunks between
// the event and the exit, with the event's ts), when that read succeeded.
func TestJoinerImageAtExit(t *testing.T) {
	var got []joined
	var orphans int
	var emitted []*event.Event
	j := newTestJoiner(&got, &orphans)
	j.emit = func(ev *event.Event) { emitted = append(emitted, ev) }
	now := time.Now()
	feed := func(b []byte) {
		t.Helper()
		if err := j.record(aligned(b), now); err != nil {
			t.Fatal(err)
		}
	}
	init := sensorKgSyscallKG_SYS_INIT_MODULE
	unreadable := func(tid uint32, ts, length uint64, params string) []byte {
		e := sensorKgEvent{Kind: uint8(sensorKgRecordKG_REC_EVENT), Syscall: uint8(init), Tid: tid, Pid: tid, Ts: ts, Len: length,
			Flags: uint32(sensorKgFlagKG_F_IMAGE_UNREADABLE), ParamsLen: uint16(len(params)), DataLen: uint16(len(params))}
		return append(rawRecord(&e)[:eventHeaderSize], params...)
	}
	exit := func(tid uint32, ret int64, flags sensorKgFlag, captured uint64) []byte {
		return rawRecord(&sensorKgExit{Kind: uint8(sensorKgRecordKG_REC_EXIT), Syscall: uint8(init), Tid: tid, Ret: ret, Flags: uint32(flags), Captured: captured})[:exitHeaderSize]
	}

	// Read at exit: the event is decoded again, readable, with its params.
	feed(unreadable(1, 100, 6, "a=1\x00"))
	feed(chunkRecord(1, 100, 0, []byte("abc")))
	feed(chunkRecord(1, 100, 3, []byte("def")))
	feed(exit(1, 0, sensorKgFlagKG_F_IMAGE_AT_EXIT, 6))
	ev := emitted[len(emitted)-1]
	if ev.Unreadable || !ev.ImageAtExit || ev.Truncated || ev.SHA256 != sha([]byte("abcdef")) || ev.Params != "a=1" || ev.Res != 0 {
		t.Errorf("read at exit: %+v", ev)
	}

	// Unreadable at exit too: the enter-time event stands.
	feed(unreadable(2, 200, 6, "\x00"))
	feed(chunkRecord(2, 200, 0, []byte("abc")))
	feed(exit(2, -38, sensorKgFlagKG_F_IMAGE_UNREADABLE, 3))
	ev = emitted[len(emitted)-1]
	if !ev.Unreadable || ev.ImageAtExit || ev.SHA256 != "" || ev.Res != -38 || ev.Params != "" {
		t.Errorf("unreadable at exit: %+v", ev)
	}
	if orphans != 1 || len(j.images) != 0 || len(j.pending) != 0 {
		t.Errorf("orphans %d (want the partial retry), images %d, pending %d", orphans, len(j.images), len(j.pending))
	}

	// An exit flag without the event's chunks changes nothing.
	feed(unreadable(3, 300, 6, "\x00"))
	feed(exit(3, 0, sensorKgFlagKG_F_IMAGE_AT_EXIT, 6))
	if ev = emitted[len(emitted)-1]; !ev.Unreadable || ev.ImageAtExit {
		t.Errorf("no chunks: %+v", ev)
	}
}

// TestJoinerParamsAtExit: params unreadable at sys_enter and read at
// sys_exit come in the exit record and complete the event, whatever else
// was or was not read; an exit that says so for an event that needs no such
// read changes nothing.
func TestJoinerParamsAtExit(t *testing.T) {
	init, fin, del := sensorKgSyscallKG_SYS_INIT_MODULE, sensorKgSyscallKG_SYS_FINIT_MODULE, sensorKgSyscallKG_SYS_DELETE_MODULE
	const (
		pUnreadable = sensorKgFlagKG_F_PARAMS_UNREADABLE
		pAtExit     = sensorKgFlagKG_F_PARAMS_AT_EXIT
		pTruncated  = sensorKgFlagKG_F_PARAMS_TRUNCATED
		iUnreadable = sensorKgFlagKG_F_IMAGE_UNREADABLE
		iAtExit     = sensorKgFlagKG_F_IMAGE_AT_EXIT
	)
	long := strings.Repeat("p", 4095) + "\x00"
	type want struct {
		params                    string
		paramsAtExit, imageAtExit bool
		unreadable, truncated     bool
		sha256                    string
		decodes                   int // decode calls: 2 when the image came at exit
	}
	for _, tc := range []struct {
		name      string
		sc        sensorKgSyscall
		enter     sensorKgFlag
		params    string // at sys_enter
		image     string // chunks before the event (at sys_enter)
		exitImage string // chunks after it (at sys_exit)
		exit      sensorKgFlag
		xParams   string
		want      want
	}{
		{"finit read at exit", fin, pUnreadable, "", "", "", pAtExit, "numdummies=2\x00",
			want{params: "numdummies=2", paramsAtExit: true, decodes: 1}},
		{"finit empty at exit", fin, pUnreadable, "", "", "", pAtExit, "\x00",
			want{params: "", paramsAtExit: true, decodes: 1}},
		{"finit cut at exit", fin, pUnreadable, "", "", "", pAtExit | pTruncated, long,
			want{params: long[:4095], paramsAtExit: true, truncated: true, decodes: 1}},
		{"finit unreadable at exit too", fin, pUnreadable, "", "", "", pUnreadable, "",
			want{unreadable: true, decodes: 1}},
		{"init image at enter, params at exit", init, pUnreadable, "", "abcdef", "", pAtExit, "a=1\x00",
			want{params: "a=1", paramsAtExit: true, sha256: sha([]byte("abcdef")), decodes: 1}},
		{"init both at exit", init, pUnreadable | iUnreadable, "", "", "abcdef", pAtExit | iAtExit, "a=1\x00",
			want{params: "a=1", paramsAtExit: true, imageAtExit: true, sha256: sha([]byte("abcdef")), decodes: 2}},
		{"init image at exit, params unreadable", init, pUnreadable | iUnreadable, "", "", "abcdef", iAtExit | pUnreadable, "",
			want{imageAtExit: true, unreadable: true, sha256: sha([]byte("abcdef")), decodes: 2}},
		{"init params at exit, image unreadable", init, pUnreadable | iUnreadable, "", "", "", pAtExit | iUnreadable, "a=1\x00",
			want{params: "a=1", paramsAtExit: true, unreadable: true, decodes: 1}},
		// Hostile or stale exits: params the event did not wait for are ignored.
		{"params read at enter", fin, 0, "x=1\x00", "", "", pAtExit, "evil=1\x00",
			want{params: "x=1", decodes: 1}},
		{"delete_module", del, 0, "", "", "", pAtExit, "evil=1\x00", want{decodes: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []joined
			var orphans int
			var emitted []*event.Event
			j := newTestJoiner(&got, &orphans)
			j.emit = func(ev *event.Event) { emitted = append(emitted, ev) }
			feed := func(b []byte) {
				t.Helper()
				if err := j.record(aligned(b), time.Now()); err != nil {
					t.Fatal(err)
				}
			}
			const tid, ts = 7, 700
			size := uint64(len(tc.image) + len(tc.exitImage))
			e := sensorKgEvent{Kind: uint8(sensorKgRecordKG_REC_EVENT), Syscall: uint8(tc.sc), Tid: tid, Pid: tid, Ts: ts,
				Flags: uint32(tc.enter), ParamsLen: uint16(len(tc.params)), DataLen: uint16(len(tc.params))}
			if tc.sc == init {
				e.Len, e.Captured = size, uint64(len(tc.image))
			}
			if tc.image != "" {
				feed(chunkRecord(tid, ts, 0, []byte(tc.image)))
			}
			feed(append(rawRecord(&e)[:eventHeaderSize], tc.params...))
			x := exitWithParams(tc.sc, tid, 0, tc.exit, tc.xParams)
			if tc.exitImage != "" {
				feed(chunkRecord(tid, ts, 0, []byte(tc.exitImage)))
				// The exit record says how many image bytes it sent.
				binary.NativeEndian.PutUint64(x[unsafe.Offsetof(sensorKgExit{}.Captured):], uint64(len(tc.exitImage)))
			}
			feed(x)
			if len(emitted) != 1 {
				t.Fatalf("emitted %d events, want 1", len(emitted))
			}
			ev := emitted[0]
			g := want{params: ev.Params, paramsAtExit: ev.ParamsAtExit, imageAtExit: ev.ImageAtExit,
				unreadable: ev.Unreadable, truncated: ev.Truncated, sha256: ev.SHA256, decodes: len(got)}
			if g != tc.want {
				t.Errorf("got  %+v\nwant %+v", g, tc.want)
			}
			if ev.Res != 0 || orphans != 0 || len(j.pending) != 0 || len(j.images) != 0 {
				t.Errorf("res %d orphans %d pending %d images %d", ev.Res, orphans, len(j.pending), len(j.images))
			}
		})
	}
}

// TestChooseProcDir: the callers' /proc is the host's. In a container of
// its own PID namespace, Falco's chart mounts the host's /proc at
// $HOST_ROOT/proc; on the host, or without HOST_ROOT, /proc is the one.
func TestChooseProcDir(t *testing.T) {
	const ownNS = 4026532400
	procfs := func(want string) func(string) bool {
		return func(p string) bool { return p == want }
	}
	for _, tc := range []struct {
		hostRoot string
		pidNS    uint32
		isProc   func(string) bool
		want     string
	}{
		{"", ownNS, procfs("/host/proc"), "/proc"},                // no HOST_ROOT: nothing else to use
		{"/host", event.InitPidNS, procfs("/host/proc"), "/proc"}, // hostPID: /proc shows every caller
		{"/host", ownNS, procfs("/host/proc"), "/host/proc"},      // Falco's chart pod
		{"/host", 0, procfs("/host/proc"), "/host/proc"},          // namespace unknown: the host's when mounted
		{"/host", ownNS, procfs("/elsewhere"), "/proc"},           // HOST_ROOT without a procfs under it
		{"/host/", ownNS, procfs("/host/proc"), "/host/proc"},     // trailing slash
	} {
		if got := chooseProcDir(tc.hostRoot, tc.pidNS, tc.isProc); got != tc.want {
			t.Errorf("HOST_ROOT=%q, pid namespace %d: %s, want %s", tc.hostRoot, tc.pidNS, got, tc.want)
		}
	}
	if !isProcfs("/proc") || isProcfs(t.TempDir()) {
		t.Error("isProcfs does not tell /proc from a directory")
	}
}

// The string decoders as first written, plainly: references for the ones
// the read loop uses, which avoid the regexp and most allocations.
var refContainerIDRe = regexp.MustCompile(`(?:^|[-/:])([0-9a-f]{64})(?:\.scope)?$`)

func refContainerID(cgroup string) string {
	parts := strings.Split(cgroup, "/")
	for i := len(parts) - 1; i >= 0; i-- {
		if m := refContainerIDRe.FindStringSubmatch("/" + parts[i]); m != nil {
			return m[1]
		}
	}
	return ""
}

func refJoinPath(b []byte, truncated bool) string {
	var comps []string
	for len(b) > 0 {
		i := bytes.IndexByte(b, 0)
		if i < 0 {
			i = len(b)
		}
		comps = append(comps, string(b[:i]))
		b = b[min(i+1, len(b)):]
	}
	if len(comps) == 0 && !truncated {
		return "/"
	}
	var sb strings.Builder
	if truncated {
		sb.WriteString("…")
	}
	for i := len(comps) - 1; i >= 0; i-- {
		sb.WriteByte('/')
		sb.WriteString(comps[i])
	}
	return sb.String()
}

func refCmdline(b []byte) string {
	s := strings.TrimRight(string(b), "\x00")
	return strings.ReplaceAll(s, "\x00", " ")
}

// TestDecodersMatchReference checks ContainerID, joinPath and cmdline
// against their references on random strings built from the pieces that
// matter to them: separators, NULs, hex runs around 64 digits, ".scope".
func TestDecodersMatchReference(t *testing.T) {
	id := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	pieces := []string{"/", "-", ":", "\x00", ".scope", "docker", "x", "f", "A", "é", id, id[:63], id[1:], id + "0", ".", "scope"}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		var sb strings.Builder
		for range rng.IntN(8) {
			sb.WriteString(pieces[rng.IntN(len(pieces))])
		}
		s := sb.String()
		if got, want := ContainerID(s), refContainerID(s); got != want {
			t.Fatalf("ContainerID(%q) = %q, want %q", s, got, want)
		}
		for _, tr := range []bool{false, true} {
			if got, want := joinPath([]byte(s), tr), refJoinPath([]byte(s), tr); got != want {
				t.Fatalf("joinPath(%q, %v) = %q, want %q", s, tr, got, want)
			}
		}
		if got, want := cmdline([]byte(s)), refCmdline([]byte(s)); got != want {
			t.Fatalf("cmdline(%q) = %q, want %q", s, got, want)
		}
	}
	// Deep paths overflow joinPath's stack array.
	deep := strings.Repeat("d\x00", 100)
	if got, want := joinPath([]byte(deep), false), refJoinPath([]byte(deep), false); got != want {
		t.Errorf("joinPath of 100 components = %q, want %q", got, want)
	}
}

// TestJoinerReusesBuffers checks that images put together in one buffer,
// one after the other, each get their own digest: the joiner reuses an
// image's buffer once its event is decoded.
func TestJoinerReusesBuffers(t *testing.T) {
	var emitted []*event.Event
	n := &enricher{}
	j := newJoiner(1<<20, n.decode, func(ev *event.Event) { emitted = append(emitted, ev) }, func() { t.Error("orphan") })
	init := sensorKgSyscallKG_SYS_INIT_MODULE
	var want []string
	for i := range 4 {
		img := bytes.Repeat([]byte{byte('a' + i)}, 5000)
		want = append(want, sha(img))
		for _, rec := range [][]byte{
			chunkRecord(7, uint64(i), 0, img),
			eventRecord(init, 7, uint64(i), uint64(len(img)), uint64(len(img))),
			exitRecord(init, 7, -38),
		} {
			if err := j.record(aligned(rec), time.Now()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(emitted) != len(want) {
		t.Fatalf("%d events, want %d", len(emitted), len(want))
	}
	for i, ev := range emitted {
		if ev.SHA256 != want[i] || ev.Truncated {
			t.Errorf("image %d: sha %s truncated %v, want %s", i, ev.SHA256, ev.Truncated, want[i])
		}
	}
}
