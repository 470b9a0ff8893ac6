package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/falcosecurity/plugin-sdk-go/pkg/sdk"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/companion"
	"github.com/kmodguard/kmodguard/companion/companiontest"
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/internal/debkernel"
	"github.com/kmodguard/kmodguard/internal/version"
)

// fakeSensor stands in for the BPF sensor: the test sends the events the
// sensor would report for a load. (The sensor itself is tested live in
// live_test.go; loads cannot succeed on this host, which has no module
// support, and the guard's decisions come from the companion.)
type fakeSensor struct{ ch chan *event.Event }

func newFakeSensor() *fakeSensor                  { return &fakeSensor{ch: make(chan *event.Event, 16)} }
func (f *fakeSensor) Events() <-chan *event.Event { return f.ch }
func (f *fakeSensor) Close() error                { return nil }

func moduleImage(t *testing.T, name string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	k, err := debkernel.Get(ctx, debkernel.Series61)
	if err != nil {
		t.Skipf("needs a Debian 6.1 kernel package: %v", err)
	}
	p, err := k.Module(name)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hexDigest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// falcoLoop drives the instance as Falco does (NextBatch, then Extract of
// every field) until done is satisfied by the events so far, or timeout.
func falcoLoop(t *testing.T, p *Plugin, inst *liveInstance, timeout time.Duration, done func([]map[string]any) bool) []map[string]any {
	t.Helper()
	var out []map[string]any
	evts := newMemEvents(batchSize)
	deadline := time.Now().Add(timeout)
	for !done(out) {
		if time.Now().After(deadline) {
			t.Fatalf("after %v, Falco has seen %d events:\n%v", timeout, len(out), out)
		}
		n, err := inst.NextBatch(p, evts)
		for i := 0; i < n; i++ {
			out = append(out, extractAll(t, p, uint64(len(out)+1), evts.evts[i].payload()))
		}
		if err != nil && !errors.Is(err, sdk.ErrTimeout) {
			t.Fatalf("NextBatch: %v", err)
		}
	}
	return out
}

// lossOf returns Falco's event for the loss of the guard's view.
func lossOf(evts []map[string]any) map[string]any {
	for _, e := range evts {
		if e["kmod.syscall"] == "guard" && e["kmod.verdict"] == "none" {
			return e
		}
	}
	return nil
}

func byTid(evts []map[string]any, tid uint64) map[string]any {
	for _, e := range evts {
		if e["kmod.tid"] == tid {
			return e
		}
	}
	return nil
}

func saveAllowlist(t *testing.T, a *allowlist.Allowlist) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "allowlist.yaml")
	if err := allowlist.Save(path, a); err != nil {
		t.Fatal(err)
	}
	return path
}

func waitConnected(t *testing.T, src *companionSource, want bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := src.status()
		if c == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("companion link connected=%v after 15s, want %v (last error: %v)", c, want, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// serveSocket serves impl on a Unix socket until the returned stop is
// called (or the test ends).
func serveSocket(t *testing.T, path string, impl companion.Enforcer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- companion.ServeSocket(ctx, path, impl) }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("companion socket did not appear")
		}
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeSocket: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// TestCompanionVerdicts runs the plugin with enforcer.socket set against a
// companion served on a Unix socket, through the real gRPC service. Behind
// the companion is companiontest.Enforcer: the project's allowlist logic on
// real Debian modules, deciding in user space what the BPF LSM guard decides
// in the kernel (this host refuses BPF LSM; the VM test runs the real guard).
func TestCompanionVerdicts(t *testing.T) {
	dummy, veth := moduleImage(t, "dummy"), moduleImage(t, "veth")
	a := allowlist.New("join-test", allowlist.ModeEnforce)
	if _, err := a.Add(allowlist.Entry{Name: "dummy", SHA256: []string{hexDigest(dummy)}}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "companion.sock")
	impl := companiontest.New()
	serveSocket(t, sock, impl)

	p := newPlugin(t, fmt.Sprintf(`{"allowlist": %q, "enforcer": {"enabled": true, "socket": %q}}`, saveAllowlist(t, a), sock))
	sensor := newFakeSensor()
	src := p.withCompanion(sensor).(*companionSource)
	inst := newLiveInstance(p, src)
	defer inst.Close()
	// An attached enforcer keeps its own allowlist (the plugin hands its
	// own only to a companion it launched): here, the same one.
	if _, err := impl.Apply(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, src, true)
	if st, _ := impl.Status(context.Background()); st.Generation != 1 {
		t.Fatalf("the plugin applied an allowlist to an attached enforcer: %+v", st)
	}

	now := time.Now()
	load := func(tid uint32, name string, img []byte, res int64) *event.Event {
		return &event.Event{TS: uint64(now.UnixNano()), Syscall: event.InitModule, Res: res, Tid: tid, Pid: tid,
			Comm: "insmod", SHA256: hexDigest(img), ELFSHA256: hexDigest(img), Size: uint64(len(img)), Name: name, ThisModuleName: name}
	}
	// 501: blocked; the sensor's event comes before the decision.
	sensor.ch <- load(501, "veth", veth, -1)
	time.Sleep(50 * time.Millisecond)
	if _, err := impl.Load(event.OpInitModule, veth, 501, 501, "insmod"); err != nil {
		t.Fatal(err)
	}
	// 502: allowed; the decision comes first.
	if _, err := impl.Load(event.OpInitModule, dummy, 502, 502, "insmod"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	sensor.ch <- load(502, "dummy", dummy, 0)
	// 503: TOCTOU. The sensor copied dummy from the user buffer, but the
	// buffer was rewritten before the kernel copied it: the kernel (and the
	// guard) got veth.
	sensor.ch <- load(503, "dummy", dummy, -1)
	if _, err := impl.Load(event.OpInitModule, veth, 503, 503, "insmod"); err != nil {
		t.Fatal(err)
	}
	// 504: a load the sensor missed.
	if _, err := impl.Load(event.OpInitModule, veth, 504, 504, "insmod"); err != nil {
		t.Fatal(err)
	}
	// 505: an unload, which the guard does not see.
	sensor.ch <- &event.Event{TS: uint64(now.UnixNano()), Syscall: event.DeleteModule, Tid: 505, Name: "dummy"}

	evts := falcoLoop(t, p, inst, 3*JoinWindow, func(evts []map[string]any) bool { return len(evts) >= 5 })
	tests := []struct {
		tid                  uint64
		syscall, verdict     string
		toctou               bool
		guardSHA, allowEntry string
	}{
		{501, "init_module", "blocked", false, hexDigest(veth), ""},
		{502, "init_module", "allowed", false, hexDigest(dummy), "dummy"},
		{503, "init_module", "blocked", true, hexDigest(veth), ""},
		{504, "guard", "blocked", false, hexDigest(veth), ""},
		{505, "delete_module", "", false, "", ""},
	}
	for _, tt := range tests {
		e := byTid(evts, tt.tid)
		if e == nil {
			t.Errorf("tid %d: no event", tt.tid)
			continue
		}
		if e["kmod.syscall"] != tt.syscall {
			t.Errorf("tid %d: kmod.syscall = %v, want %s", tt.tid, e["kmod.syscall"], tt.syscall)
		}
		if tt.verdict != "" && e["kmod.verdict"] != tt.verdict {
			t.Errorf("tid %d: kmod.verdict = %v, want %s", tt.tid, e["kmod.verdict"], tt.verdict)
		}
		if strings.HasSuffix(tt.syscall, "init_module") && e["kmod.toctou"] != tt.toctou {
			t.Errorf("tid %d: kmod.toctou = %v, want %v", tt.tid, e["kmod.toctou"], tt.toctou)
		}
		if tt.guardSHA != "" && e["kmod.guard_sha256"] != tt.guardSHA {
			t.Errorf("tid %d: kmod.guard_sha256 = %v, want %s", tt.tid, e["kmod.guard_sha256"], tt.guardSHA)
		}
		if r, _ := e["kmod.guard_reason"].(string); (tt.verdict != "") != (r != "") {
			t.Errorf("tid %d: kmod.guard_reason = %q with verdict %q", tt.tid, r, tt.verdict)
		}
		if tt.allowEntry != "" && e["kmod.allowlist_entry"] != tt.allowEntry {
			t.Errorf("tid %d: kmod.allowlist_entry = %v, want %s", tt.tid, e["kmod.allowlist_entry"], tt.allowEntry)
		}
	}
	// Four decisions came from the companion (501 to 504), and the link is up.
	if m := metricValues(p); m["guard_decisions"] != 4 || m["companion_connected"] != 1 {
		t.Errorf("metrics guard_decisions=%d companion_connected=%d, want 4 and 1", m["guard_decisions"], m["companion_connected"])
	}
}

// TestCompanionReconnects stops the companion under the plugin and starts a
// new one: Falco gets one loss event, detection goes on meanwhile, and the
// link comes back and decisions flow again.
func TestCompanionReconnects(t *testing.T) {
	a := allowlist.New("reconnect", allowlist.ModeAudit)
	sock := filepath.Join(t.TempDir(), "companion.sock")
	stop := serveSocket(t, sock, companiontest.New())

	p := newPlugin(t, fmt.Sprintf(`{"allowlist": %q, "enforcer": {"enabled": true, "socket": %q}}`, saveAllowlist(t, a), sock))
	sensor := newFakeSensor()
	src := p.withCompanion(sensor).(*companionSource)
	inst := newLiveInstance(p, src)
	defer inst.Close()
	waitConnected(t, src, true)

	if m := metricValues(p); m["companion_connected"] != 1 {
		t.Errorf("companion_connected = %d while connected", m["companion_connected"])
	}
	stop()
	waitConnected(t, src, false)
	if m := metricValues(p); m["companion_connected"] != 0 {
		t.Errorf("companion_connected = %d after the companion stopped", m["companion_connected"])
	}
	sensor.ch <- &event.Event{TS: uint64(time.Now().UnixNano()), Syscall: event.InitModule, Tid: 77, Res: -38, Name: "dummy", ThisModuleName: "dummy"}
	evts := falcoLoop(t, p, inst, 10*time.Second, func(evts []map[string]any) bool {
		return byTid(evts, 77) != nil && lossOf(evts) != nil
	})
	if e := byTid(evts, 77); e["kmod.verdict"] != "none" {
		t.Errorf("load while disconnected: kmod.verdict = %v, want none", e["kmod.verdict"])
	}
	_, lastErr := src.status()
	if !errors.Is(lastErr, companion.ErrDisconnected) {
		t.Errorf("last error %v, want ErrDisconnected", lastErr)
	}

	impl := companiontest.New()
	serveSocket(t, sock, impl)
	waitConnected(t, src, true)
	// Decisions flow again.
	if _, err := impl.Load(event.OpInitModule, []byte("not a module"), 78, 78, "insmod"); err != nil {
		t.Fatal(err)
	}
	evts = falcoLoop(t, p, inst, 3*JoinWindow, func(evts []map[string]any) bool { return byTid(evts, 78) != nil })
	if e := byTid(evts, 78); e["kmod.syscall"] != "guard" || e["kmod.verdict"] != "blocked" {
		t.Errorf("decision after reconnecting: %v, want a blocked guard event", e)
	}
}

// TestCompanionVersion: the plugin asks the companion which build it is
// and says so when it connects, with a warning when the companion is
// another build than the plugin (or too old to say).
func TestCompanionVersion(t *testing.T) {
	own := version.Get().Version
	for _, tc := range []struct {
		name    string
		version string
		level   logrus.Level
	}{
		{"same build", own, logrus.InfoLevel},
		{"another build", "0.0.9+g0123456789ab", logrus.WarnLevel},
		{"a build that does not say", "", logrus.WarnLevel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "companion.sock")
			impl := companiontest.New()
			impl.SetVersion(tc.version)
			serveSocket(t, sock, impl)
			a := allowlist.New("version-test", allowlist.ModeEnforce)
			p := newPlugin(t, fmt.Sprintf(`{"allowlist": %q, "enforcer": {"enabled": true, "socket": %q}}`, saveAllowlist(t, a), sock))
			hook := logtest.NewLocal(p.log)
			src := p.withCompanion(newFakeSensor()).(*companionSource)
			inst := newLiveInstance(p, src)
			defer inst.Close()
			waitConnected(t, src, true)
			if got := src.companionVersion(); got != tc.version {
				t.Errorf("companion version %q, want %q", got, tc.version)
			}
			var found bool
			for _, e := range hook.AllEntries() {
				if strings.HasPrefix(e.Message, "enforcer companion connected") {
					found = true
					if e.Level != tc.level || e.Data[logKeyVersion] != own || e.Data[logKeyCompanionVersion] != tc.version {
						t.Errorf("logged %s %q %v, want level %s with version %q and companion_version %q",
							e.Level, e.Message, e.Data, tc.level, own, tc.version)
					}
				}
			}
			if !found {
				t.Errorf("no log line of the connection")
			}
		})
	}
}

// TestCompanionProcess has the plugin launch the real kmodguard binary,
// built here, as its companion over go-plugin with AutoMTLS. This host
// refuses BPF LSM, so the companion must say so, the plugin must surface
// that error, and Falco must keep receiving the sensor's events.
func TestCompanionProcess(t *testing.T) {
	if b, err := os.ReadFile("/sys/kernel/security/lsm"); err == nil && strings.Contains(","+strings.TrimSpace(string(b))+",", ",bpf,") {
		t.Skip("needs a kernel without BPF LSM: this test checks how the unavailable guard is reported (the VM test covers the guard itself)")
	}
	if testing.Short() {
		t.Skip("builds kmodguard: skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "kmodguard")
	build := exec.Command("go", "build", "-o", bin, "github.com/kmodguard/kmodguard/cmd/kmodguard")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build kmodguard: %v\n%s", err, out)
	}
	a := allowlist.New("process", allowlist.ModeEnforce)
	p := newPlugin(t, fmt.Sprintf(`{"allowlist": %q, "enforcer": {"enabled": true, "path": %q}}`, saveAllowlist(t, a), bin))
	sensor := newFakeSensor()
	src := p.withCompanion(sensor).(*companionSource)
	inst := newLiveInstance(p, src)
	defer inst.Close()

	sensor.ch <- &event.Event{TS: uint64(time.Now().UnixNano()), Syscall: event.FinitModule, Tid: 88, Res: -38, Name: "veth", ThisModuleName: "veth"}
	evts := falcoLoop(t, p, inst, 30*time.Second, func(evts []map[string]any) bool {
		return byTid(evts, 88) != nil && lossOf(evts) != nil
	})
	if e := byTid(evts, 88); e["kmod.syscall"] != "finit_module" || e["kmod.verdict"] != "none" {
		t.Errorf("sensor event %v: want finit_module with kmod.verdict none", e)
	}
	if r, _ := lossOf(evts)["kmod.guard_reason"].(string); !strings.Contains(r, "enforcer companion lost") || !strings.Contains(r, "BPF LSM") {
		t.Errorf("loss event kmod.guard_reason = %q: want the companion's error", r)
	}
	connected, lastErr := src.status()
	if connected || !errors.Is(lastErr, companion.ErrUnavailable) {
		t.Fatalf("link connected=%v, last error %v: want ErrUnavailable", connected, lastErr)
	}
	if msg := lastErr.Error(); !strings.Contains(msg, "BPF LSM") || !strings.Contains(msg, "lsm") {
		t.Errorf("the error does not tell the operator what is missing: %q", msg)
	}
	t.Logf("the plugin reports: %v", lastErr)
}
