package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/bpf"
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/internal/elftest"
)

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestWatchJSONAndRecord(t *testing.T) {
	record, stdout, stderr, cancel, done := startWatch(t, watchOptions{
		duration: 30 * time.Second, ringSize: bpf.DefaultRingBufferSize, imageCap: bpf.DefaultImageCap,
	})
	// The sensor attaches in the background: knock until it sees us. Other
	// tests may make module syscalls meanwhile; watch prints those too.
	const name = "kmodguard_watch_test"
	var err error
poll:
	for {
		unix.DeleteModule(name, unix.O_NONBLOCK)
		if strings.Contains(stdout.String(), name) {
			cancel()
		}
		select {
		case err = <-done:
			break poll
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err != nil {
		t.Fatalf("watch: %v\n%s", err, stderr.String())
	}

	tags := map[string]bool{}
	typ := reflect.TypeFor[event.Event]()
	for i := range typ.NumField() {
		tags[strings.Split(typ.Field(i).Tag.Get("json"), ",")[0]] = true
	}
	var printed []*event.Event
	var ours *event.Event
	for line := range strings.SplitSeq(strings.TrimSpace(stdout.String()), "\n") {
		var keys map[string]any
		if err := json.Unmarshal([]byte(line), &keys); err != nil {
			t.Fatalf("output line %q is not JSON: %v", line, err)
		}
		for k := range keys {
			if !tags[k] {
				t.Errorf("key %q is not an event.Event JSON tag", k)
			}
		}
		ev := new(event.Event)
		if err := json.Unmarshal([]byte(line), ev); err != nil {
			t.Fatal(err)
		}
		printed = append(printed, ev)
		if ev.Name == name && int(ev.Pid) == os.Getpid() && ours == nil {
			ours = ev
		}
	}
	if ours == nil {
		t.Fatalf("our delete_module is not among %d printed events", len(printed))
	}
	if ours.Syscall != event.DeleteModule || ours.Res != -int64(unix.ENOSYS) || strings.Join(ours.Flags, "|") != "O_NONBLOCK" {
		t.Errorf("event %+v", ours)
	}
	if !strings.Contains(stderr.String(), " delivered") {
		t.Errorf("no stats on stderr: %q", stderr.String())
	}

	// The record file holds the same events, in the same order.
	if recorded := readRecord(t, record); !reflect.DeepEqual(recorded, printed) {
		t.Errorf("recorded %d events, printed %d, or they differ", len(recorded), len(printed))
	}
}

// startWatch runs watch with o in the background, printing JSON and
// recording to a new file: it returns the record's path, watch's stdout
// and stderr, what stops it, and where its error comes. It skips without
// root or BPF.
func startWatch(t *testing.T, o watchOptions) (record string, stdout, stderr *syncBuffer, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads the BPF sensor")
	}
	if err := bpf.CheckSystem(); err != nil {
		t.Skipf("needs BPF support: %v", err)
	}
	o.format, o.unprivRate = formatJSON, bpf.DefaultUnprivilegedRate
	o.record = filepath.Join(t.TempDir(), "events.kgrec")
	stdout, stderr = new(syncBuffer), new(syncBuffer)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	errc := make(chan error, 1)
	go func() { errc <- runWatch(ctx, stdout, stderr, o) }()
	return o.record, stdout, stderr, cancel, errc
}

// readRecord returns the events of a record file written by watch.
func readRecord(t *testing.T, path string) []*event.Event {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recorded []*event.Event
	for rr := event.NewRecordReader(f); ; {
		ev, err := rr.Read()
		if errors.Is(err, io.EOF) {
			return recorded
		}
		if err != nil {
			t.Fatalf("record file: %v", err)
		}
		recorded = append(recorded, ev)
	}
}

// TestWatchWithoutPrivileges runs watch as nobody: a clear error, exit 2.
func TestWatchWithoutPrivileges(t *testing.T) {
	if os.Getenv("KMODGUARD_WATCH_HELPER") == "1" {
		err := run([]string{"watch", "--count", "1"})
		if err == nil {
			os.Exit(0)
		}
		os.Stderr.WriteString(err.Error())
		os.Exit(exitError)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: drops to nobody with setpriv")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv (util-linux)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
		exe, "-test.run=^TestWatchWithoutPrivileges$")
	cmd.Env = append(os.Environ(), "KMODGUARD_WATCH_HELPER=1")
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitError {
		t.Fatalf("exit %v, want %d; output:\n%s", err, exitError, out)
	}
	if !strings.Contains(string(out), "needs root") {
		t.Errorf("output does not say what is missing:\n%s", out)
	}
}

func TestFormatEvent(t *testing.T) {
	no := false
	ev := &event.Event{
		TS: uint64(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano()), Syscall: event.FinitModule,
		Res: -1, Name: "dummy", ThisModuleName: "dumbo", NameMismatch: true, FD: 3, Path: "/x/dummy.ko",
		Allowed: &no, Pid: 7, Comm: "insmod", Flags: []string{"MODULE_INIT_IGNORE_VERMAGIC"},
		ContainerID: strings.Repeat("ab", 32),
	}
	got := formatEvent(ev)
	for _, want := range []string{"2026-01-02T03:04:05.000Z", "finit_module", "dummy", "res=-1(EPERM)", "NOT-ALLOWED",
		"NAME-MISMATCH(this_module=dumbo)", "fd=3 path=/x/dummy.ko", "flags=MODULE_INIT_IGNORE_VERMAGIC", "container=abababababab"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
	if strings.Contains(got, "IMAGE-AT-EXIT") || strings.Contains(got, "PARAMS-AT-EXIT") {
		t.Errorf("%q flags an exit-time read that was not", got)
	}
	ev.ImageAtExit = true
	if got := formatEvent(ev); !strings.Contains(got, " IMAGE-AT-EXIT") || strings.Contains(got, "PARAMS-AT-EXIT") {
		t.Errorf("%q does not say (only) that the image was read at sys_exit", got)
	}
	ev.ImageAtExit, ev.ParamsAtExit = false, true
	if got := formatEvent(ev); !strings.Contains(got, " PARAMS-AT-EXIT") || strings.Contains(got, "IMAGE-AT-EXIT") {
		t.Errorf("%q does not say (only) that the params were read at sys_exit", got)
	}
	// Outside a container's cgroup, the namespaces say where the caller
	// is, when not on the host.
	ev.ContainerID, ev.PidNS, ev.UserNS, ev.MntNS = "", event.InitPidNS, 4026532400, 4026532401
	if got := formatEvent(ev); !strings.Contains(got, fmt.Sprintf(" pidns=%d userns=4026532400 mntns=4026532401", event.InitPidNS)) {
		t.Errorf("%q does not name the namespaces of a caller outside the host's", got)
	}
	ev.HostNS = true
	if got := formatEvent(ev); strings.Contains(got, "pidns=") {
		t.Errorf("%q names the namespaces of a caller on the host", got)
	}
	// An autoload request has no result; the load it caused names it.
	req := &event.Event{Syscall: event.ModuleRequest, Name: "net-pf-38", Pid: 9, Comm: "python3", HostNS: true}
	if got := formatEvent(req); !strings.Contains(got, "module_request net-pf-38") || !strings.Contains(got, " request ") || strings.Contains(got, "res=") {
		t.Errorf("%q: want the alias and no result", got)
	}
	load := &event.Event{Syscall: event.FinitModule, Name: "af_alg", Pid: 10, Comm: "modprobe", HostNS: true,
		RequestName: "net-pf-38", RequestComm: "python3", RequestPid: 9}
	if got := formatEvent(load); !strings.Contains(got, ` autoload=net-pf-38 requested_by="python3"(pid 9)`) {
		t.Errorf("%q does not name the request", got)
	}
	// A module already loaded: no caller, its file and taint.
	present := &event.Event{Syscall: event.Present, Name: "veth", Taint: "E", Inventory: "file:build-id", Path: "/lib/modules/r/veth.ko", SHA256: "ab", Allowed: &no}
	if got := formatEvent(present); !strings.Contains(got, `present       veth             NOT-ALLOWED taint="E" file:build-id path=/lib/modules/r/veth.ko sha256=ab`) {
		t.Errorf("present event: %q", got)
	}
	if got := formatRes(bpf.ResUnknown); got != "res=?" {
		t.Errorf("unknown result: %q", got)
	}
}

// TestWatchRecordsLoss floods a small ring buffer with 1 MiB init_module
// images from several threads and expects sensor_loss events, printed and
// recorded, whose counts add up to the drops in watch's final counters.
func TestWatchRecordsLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("load test: skipped with -short")
	}
	record, stdout, stderr, cancel, done := startWatch(t, watchOptions{
		duration: 2 * time.Minute, ringSize: 1 << 16, imageCap: 1 << 20,
	})
	const name = "kmodguard_watch_loss"
	for !strings.Contains(stdout.String(), name) {
		unix.DeleteModule(name, unix.O_NONBLOCK)
		select {
		case err := <-done:
			t.Fatalf("watch ended early: %v\n%s", err, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	const threads, calls = 4, 300
	// Images the kernel would read on from (junk is folded, not sent):
	// every call is an event, and the 64 KiB ring buffer overflows.
	img := elftest.Header(make([]byte, 1<<20))
	var wg sync.WaitGroup
	for range threads {
		wg.Go(func() {
			for range calls {
				unix.InitModule(img, "")
			}
		})
	}
	wg.Wait()
	time.Sleep(lossEvery + 500*time.Millisecond) // one loss check after the flood
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("watch: %v\n%s", err, stderr.String())
	}

	// The drops in the final counters line.
	var drops uint64
	for line := range strings.SplitSeq(stderr.String(), "\n") {
		if i := strings.Index(line, " dropped (ring buffer full)"); i >= 0 {
			f := strings.Fields(line[:i])
			if _, err := fmt.Sscan(f[len(f)-1], &drops); err != nil {
				t.Fatalf("counters line %q: %v", line, err)
			}
		}
	}
	if drops == 0 {
		t.Fatalf("the flood lost no events with a 64 KiB ring buffer: nothing to report\n%s", stderr.String())
	}
	sum := func(evs []*event.Event) (lost uint64, reports int) {
		for _, ev := range evs {
			if ev.Syscall == event.SensorLoss {
				if ev.Lost == 0 && ev.Throttled == 0 {
					t.Errorf("a sensor_loss event with nothing lost: %+v", ev)
				}
				lost += ev.Lost
				reports++
			}
		}
		return lost, reports
	}
	var printed []*event.Event
	for line := range strings.SplitSeq(strings.TrimSpace(stdout.String()), "\n") {
		ev := new(event.Event)
		if err := json.Unmarshal([]byte(line), ev); err != nil {
			t.Fatalf("output line %q: %v", line, err)
		}
		printed = append(printed, ev)
	}
	lost, reports := sum(printed)
	t.Logf("%d calls: %d drops counted; %d sensor_loss events adding up to %d", threads*calls, drops, reports, lost)
	if lost != drops {
		t.Errorf("sensor_loss events say %d lost, the counters %d", lost, drops)
	}
	recorded := readRecord(t, record)
	if rl, rn := sum(recorded); rl != lost || rn != reports {
		t.Errorf("recorded sensor_loss events: %d adding up to %d, printed %d adding up to %d", rn, rl, reports, lost)
	}
}
