//go:build linux

package enforcer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/companion"
	"github.com/kmodguard/kmodguard/companion/companiontest"
	pb "github.com/kmodguard/kmodguard/companion/proto"
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/lsm"
)

// fakeEngine stands for an Enforcer: it records what is applied and
// delivers the decisions a test sends.
type fakeEngine struct {
	mu       sync.Mutex
	applied  []*allowlist.Allowlist
	applyErr error
	gen      uint64
	ch       chan Message
	closed   bool
}

func newFake() *fakeEngine { return &fakeEngine{ch: make(chan Message, 16), gen: 1} }

func (f *fakeEngine) Apply(a *allowlist.Allowlist) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.applyErr != nil {
		return f.applyErr
	}
	f.applied = append(f.applied, a)
	f.gen++
	return nil
}

func (f *fakeEngine) Status() (Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Status{Mode: "enforce", Generation: f.gen, Entries: 1, PinDir: "/pins",
		Links: []lsm.LinkStatus{{Hook: "kernel_post_read_file"}}, Blocked: 3}, nil
}

func (f *fakeEngine) Allowlist() *allowlist.Allowlist {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.applied) == 0 {
		return nil
	}
	return f.applied[len(f.applied)-1]
}

func (f *fakeEngine) Decisions() <-chan Message { return f.ch }

func (f *fakeEngine) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *fakeEngine) appliedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.applied)
}

const listYAML = "apiVersion: kmodguard.io/v1\nkind: ModuleAllowlist\nmetadata: {name: test}\nspec:\n  mode: enforce\n  modules:\n    - name: veth\n"

// writeList replaces the file by rename, as editors and ConfigMap swaps do:
// written in place, a poll between the truncation and the write could
// take the file twice (the partial version's FileID, then the whole one's).
func writeList(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// testDaemon is a Daemon over a fake engine, its log and its notifications.
func testDaemon(t *testing.T) (*Daemon, *fakeEngine, *logtest.Hook, *[]string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "allowlist.yaml")
	writeList(t, path, listYAML)
	src, err := allowlist.NewSource(path, allowlist.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	log, hook := logtest.NewNullLogger()
	f := newFake()
	d := newDaemon(DaemonConfig{Config: Config{Logger: log}, Allowlist: src, Poll: 10 * time.Millisecond}, f)
	var (
		mu    sync.Mutex
		notes []string
	)
	d.notify = func(state string) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		notes = append(notes, state)
		return true, nil
	}
	t.Cleanup(func() { d.Close() })
	return d, f, hook, &notes
}

func TestDaemonReload(t *testing.T) {
	for _, tc := range []struct {
		name     string
		content  string
		applyErr error
		applied  int
		msg      string
	}{
		{"valid", listYAML, nil, 1, "allowlist applied"},
		{"does not parse", "spec: [", nil, 0, "allowlist not reloaded: the one in force stays"},
		{"refused by the guard", listYAML, ErrSealed, 0, "allowlist not applied: the one in force stays"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, f, hook, notes := testDaemon(t)
			f.applyErr = tc.applyErr
			writeList(t, d.cfg.Allowlist.Path(), tc.content)
			d.Reload("SIGHUP")
			if got := f.appliedCount(); got != tc.applied {
				t.Errorf("applied %d allowlists, want %d", got, tc.applied)
			}
			if e := hook.LastEntry(); e == nil || e.Message != tc.msg || e.Data["trigger"] != "SIGHUP" {
				t.Errorf("last log %+v, want %q with the trigger", e, tc.msg)
			}
			if tc.applied > 0 && (len(*notes) != 1 || !strings.HasPrefix((*notes)[0], "STATUS=enforcing: generation 2")) {
				t.Errorf("notifications %q, want the new generation's status", *notes)
			}
			if d.cfg.Allowlist.Changed() {
				t.Error("the file counts as changed right after a reload")
			}
		})
	}
}

// TestDaemonRun: READY=1 once running, every decision logged (reports
// excepted), a file change reloaded, STOPPING=1 at the end.
func TestDaemonRun(t *testing.T) {
	d, f, hook, notes := testDaemon(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	f.ch <- Decision{Op: lsm.OpFinitModule, Verdict: lsm.Blocked, Reason: "not on the allowlist", Name: "dummy"}
	f.ch <- Report{Kind: event.ReportMissing, Count: 2}
	f.ch <- Decision{Op: lsm.OpUnlink, Verdict: lsm.Blocked, Reason: "refused: the guard is sealed", Object: 7}
	time.Sleep(20 * time.Millisecond)
	writeList(t, d.cfg.Allowlist.Path(), listYAML+"    - name: dummy\n")
	deadline := time.Now().Add(5 * time.Second)
	for f.appliedCount() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if f.appliedCount() != 1 {
		t.Errorf("the changed file was applied %d times, want 1", f.appliedCount())
	}
	var logged []string
	for _, e := range hook.AllEntries() {
		if e.Data["op"] != nil {
			logged = append(logged, e.Level.String()+" "+e.Message)
		}
	}
	want := []string{"warning not on the allowlist", "warning refused: the guard is sealed"}
	if strings.Join(logged, "|") != strings.Join(want, "|") {
		t.Errorf("decisions logged %q, want %q", logged, want)
	}
	if len(*notes) < 3 || !strings.HasPrefix((*notes)[0], "READY=1\nSTATUS=enforcing") ||
		!strings.HasPrefix((*notes)[len(*notes)-1], "STOPPING=1") {
		t.Errorf("notifications %q", *notes)
	}
}

func TestDaemonStreamEnds(t *testing.T) {
	d, f, _, _ := testDaemon(t)
	close(f.ch)
	if err := d.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "decision stream ended") {
		t.Errorf("Run after the stream ended: %v", err)
	}
}

func TestLogDecision(t *testing.T) {
	for _, tc := range []struct {
		d     Decision
		level logrus.Level
		keys  []string
	}{
		{Decision{Op: lsm.OpInitModule, Verdict: lsm.Allowed, Entry: "dummy", NameMismatch: true}, logrus.InfoLevel,
			[]string{"module", "this_module", "sha256", "size", "entry", "name_mismatch"}},
		{Decision{Op: lsm.OpFinitModule, Verdict: lsm.Audit, Compressed: true}, logrus.WarnLevel, []string{"module", "compressed"}},
		{Decision{Op: lsm.OpBPF, Verdict: lsm.Blocked, Sealed: true}, logrus.WarnLevel, []string{"object"}},
	} {
		log, hook := logtest.NewNullLogger()
		logDecision(log, tc.d)
		e := hook.LastEntry()
		if e == nil || e.Level != tc.level {
			t.Errorf("%s %s: logged %+v, want level %s", tc.d.Op, tc.d.Verdict, e, tc.level)
			continue
		}
		for _, k := range tc.keys {
			if _, ok := e.Data[k]; !ok {
				t.Errorf("%s %s: no field %q in %v", tc.d.Op, tc.d.Verdict, k, e.Data)
			}
		}
	}
}

// companionPair serves c through go-plugin's test connection, the real
// gRPC adapters on both sides.
func companionPair(t *testing.T, c *Companion) companion.Enforcer {
	t.Helper()
	e, _ := companiontest.GRPCPair(t, c)
	return e
}

func TestCompanion(t *testing.T) {
	log, _ := logtest.NewNullLogger()
	f := newFake()
	loads := 0
	c, err := newCompanion(Config{Logger: log}, nil, Trust{}, nil, func(Config, *allowlist.Allowlist) (engine, error) {
		loads++
		return f, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	e := companionPair(t, c)
	ctx := t.Context()
	a, err := allowlist.Parse([]byte(listYAML), "test")
	if err != nil {
		t.Fatal(err)
	}
	for i, wantGen := range []uint64{1, 2} {
		got, err := e.Apply(ctx, a)
		if err != nil || got.Generation != wantGen || got.Mode != "enforce" {
			t.Fatalf("Apply %d: %+v, %v; want generation %d", i, got, err, wantGen)
		}
	}
	if loads != 1 || f.appliedCount() != 1 {
		t.Errorf("guard loaded %d times, applied %d times; want 1 and 1", loads, f.appliedCount())
	}
	st, err := e.Status(ctx)
	if err != nil || st.Allowlist != "test" || st.Blocked != 3 || len(st.Links) != 1 || st.Version == "" {
		t.Errorf("Status: %+v, %v", st, err)
	}
	ch, err := e.Decisions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The stream is open once the server has subscribed; send until one
	// arrives.
	want := Decision{Op: lsm.OpFinitModule, Verdict: lsm.Blocked, Name: "dummy", Tid: 9, Time: time.Unix(1, 0)}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-ch:
			d, ok := m.(event.Decision)
			if !ok || d.Op != "finit_module" || d.Verdict != "blocked" || d.Name != "dummy" || d.Tid != 9 || !d.Time.Equal(want.Time) {
				t.Errorf("decision %+v", d)
			}
			return
		case <-tick.C:
			f.ch <- want
		case <-timeout:
			t.Fatal("no decision within 10s")
		}
	}
}

func TestCompanionRefuses(t *testing.T) {
	log, _ := logtest.NewNullLogger()
	noLSM := errors.New("BPF LSM is not active")
	unavailable, err := newCompanion(Config{Logger: log}, nil, Trust{}, noLSM, nil)
	if err != nil {
		t.Fatal(err)
	}
	readOnly := &Companion{log: log, enf: newFake(), subs: map[int]chan Message{}, readOnly: true}
	a := allowlist.New("test", allowlist.ModeEnforce)
	for _, tc := range []struct {
		name        string
		c           *Companion
		want        string
		unavailable bool
	}{
		{"unavailable", unavailable, "BPF LSM is not active", true},
		{"read-only", readOnly, "applies its own allowlist file", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := companionPair(t, tc.c)
			if _, err := e.Apply(t.Context(), a); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Apply: %v, want %q", err, tc.want)
			}
			_, err := e.Status(t.Context())
			if errors.Is(err, companion.ErrUnavailable) != tc.unavailable {
				t.Errorf("Status: %v; want unavailable %v", err, tc.unavailable)
			}
		})
	}
}

// TestCompanionTrust: a companion given a public key (serve-companion
// --pubkey) applies only what is signed under it, whoever the client: the
// bypass of a root client on the socket that sends an unsigned list, or a
// signed one with bytes changed, is refused through a real gRPC
// connection, with PermissionDenied, and the list in force stays.
func TestCompanionTrust(t *testing.T) {
	log, _ := logtest.NewNullLogger()
	pub, priv, err := allowlist.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	_, otherPriv, _ := allowlist.GenerateKey()
	if _, err := newCompanion(Config{Logger: log}, nil, Trust{RequireSignature: true}, nil, nil); !errors.Is(err, ErrNoKey) {
		t.Fatalf("newCompanion requiring a signature without a key = %v, want ErrNoKey", err)
	}
	f := newFake()
	c, err := newCompanion(Config{Logger: log}, nil, Trust{PublicKey: pub, RequireSignature: true}, nil,
		func(Config, *allowlist.Allowlist) (engine, error) { return f, nil })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	e, client := companiontest.GRPCPair(t, c)
	raw := pb.NewEnforcerClient(client.Conn)
	ctx := t.Context()
	doc := []byte(listYAML)
	sig := allowlist.Sign(doc, priv)

	for _, tc := range []struct {
		name     string
		doc, sig []byte
	}{
		{"unsigned", doc, nil},
		{"signed with another key", doc, allowlist.Sign(doc, otherPriv)},
		{"document changed after signing", append([]byte("# veth and more\n"), doc...), sig},
		{"signature not base64", doc, []byte("not a signature\n")},
	} {
		_, err := raw.Apply(ctx, &pb.ApplyRequest{Allowlist: tc.doc, Signature: tc.sig, Source: "socket.yaml"})
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "signature") {
			t.Errorf("%s: Apply = %v, want PermissionDenied naming the signature", tc.name, err)
		}
	}
	// The Go client, with a list built in memory (no signature to send).
	if _, err := e.Apply(ctx, allowlist.New("mem", allowlist.ModeAudit)); !errors.Is(err, companion.ErrUntrusted) {
		t.Errorf("Apply of an unsigned list through the Go client = %v, want ErrUntrusted", err)
	}
	if f.appliedCount() != 0 {
		t.Fatalf("a refused list was applied (%d applies)", f.appliedCount())
	}

	// Signed: the raw request, and the Go client with a list loaded from a
	// signed file, which sends the file's bytes and its signature.
	if res, err := raw.Apply(ctx, &pb.ApplyRequest{Allowlist: doc, Signature: sig, Source: "socket.yaml"}); err != nil || res.GetGeneration() == 0 {
		t.Fatalf("Apply of the signed list = %+v, %v", res, err)
	}
	path := filepath.Join(t.TempDir(), "allow.yaml")
	writeList(t, path, listYAML+"    - name: dummy\n")
	k, err := allowlist.MarshalPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(t.TempDir(), "k.key")
	if err := os.WriteFile(keyPath, k, 0o600); err != nil {
		t.Fatal(err)
	}
	if key, err := allowlist.LoadPrivateKey(keyPath); err != nil {
		t.Fatal(err)
	} else if err := allowlist.SignFile(path, key); err != nil {
		t.Fatal(err)
	}
	a, err := allowlist.LoadVerified(path, pub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Apply(ctx, a); err != nil {
		t.Fatalf("Apply of a list loaded from a signed file through the Go client: %v", err)
	}
	if n := f.appliedCount(); n != 1 { // the first signed one loaded the guard
		t.Fatalf("applied %d times, want 1 after load", n)
	}
	if got := f.Allowlist(); len(got.Spec.Modules) != 2 {
		t.Errorf("list in force %+v, want the signed file's two entries", got.Spec)
	}
}

// TestCompanionFloorOverGRPC: a rollback refused by the guard reaches the
// client as an invalid allowlist naming it.
func TestCompanionFloorOverGRPC(t *testing.T) {
	log, _ := logtest.NewNullLogger()
	f := newFake()
	c, err := newCompanion(Config{Logger: log}, nil, Trust{}, nil, func(Config, *allowlist.Allowlist) (engine, error) { return f, nil })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	e := companionPair(t, c)
	a, err := allowlist.Parse([]byte(listYAML), "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Apply(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.applyErr = fmt.Errorf("apply: %w", allowlist.ErrRollback)
	f.mu.Unlock()
	if _, err := e.Apply(t.Context(), a); !errors.Is(err, companion.ErrInvalidAllowlist) || !strings.Contains(err.Error(), "rolled back") {
		t.Errorf("Apply of a rollback = %v, want ErrInvalidAllowlist naming it", err)
	}
}
