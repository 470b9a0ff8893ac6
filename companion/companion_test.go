package companion_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/companion"
	"github.com/kmodguard/kmodguard/companion/companiontest"
	pb "github.com/kmodguard/kmodguard/companion/proto"
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/internal/debkernel"
	"github.com/kmodguard/kmodguard/internal/vmtest"
	"github.com/kmodguard/kmodguard/kmod"
)

// helperEnv makes the test binary serve a companion instead of running
// tests, so that Launch can start it as a real child process.
const helperEnv = "KMODGUARD_COMPANION_TEST_SERVE"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "unavailable":
		companion.Serve(companion.Unavailable(companiontest.ErrNoLSM), quietLogger())
	default:
		companion.Serve(companiontest.New(), quietLogger())
	}
	os.Exit(0)
}

func quietLogger() hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: os.Stderr, JSONFormat: true})
}

var (
	kernelOnce sync.Once
	kernel     *debkernel.Kernel
	kernelErr  error
)

// realModule returns the ELF image of a module of Debian's 6.1 kernel.
func realModule(t *testing.T, name string) []byte {
	t.Helper()
	kernelOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		kernel, kernelErr = debkernel.Get(ctx, debkernel.Series61)
	})
	if kernelErr != nil {
		t.Skipf("needs a Debian 6.1 kernel package: %v", kernelErr)
	}
	p, err := kernel.Module(name)
	if err != nil {
		t.Fatal(err)
	}
	m, err := kmod.Inspect(p)
	if err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if m.Compression != kmod.CompressionNone {
		t.Fatalf("%s is compressed; the 6.1 package ships plain .ko", p)
	}
	return img
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// grpcPair is companiontest.GRPCPair.
var grpcPair = companiontest.GRPCPair

func list(t *testing.T, mode allowlist.Mode, entries ...allowlist.Entry) *allowlist.Allowlist {
	t.Helper()
	a := allowlist.New("test", mode)
	for _, e := range entries {
		if _, err := a.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

func recv(t *testing.T, ch <-chan event.GuardMessage) event.Decision {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("decision stream closed")
		}
		d, ok := m.(event.Decision)
		if !ok {
			t.Fatalf("a %T on the stream, want a decision", m)
		}
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no decision within 10s")
	}
	return event.Decision{}
}

// TestGRPCDecisions runs the service between go-plugin's test client and
// server with companiontest.Enforcer behind it: the real allowlist logic on
// real Debian modules, deciding in user space what the guard decides in the
// kernel (this host refuses BPF LSM).
func TestGRPCDecisions(t *testing.T) {
	dummy := realModule(t, "dummy")
	veth := realModule(t, "veth")
	forged, err := vmtest.Craft(dummy, vmtest.Crafted{ModinfoName: "dumbo", StripSignature: true})
	if err != nil {
		t.Fatal(err)
	}

	impl := companiontest.New()
	e, _ := grpcPair(t, impl)
	ctx := context.Background()

	a := list(t, allowlist.ModeEnforce,
		allowlist.Entry{Name: "dummy", SHA256: []string{digest(dummy), digest(forged)}},
		allowlist.Entry{Name: "loop"})
	res, err := e.Apply(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if res.Generation != 1 || res.Entries != 3 || res.Mode != "enforce" {
		t.Errorf("Apply = %+v, want generation 1, 3 entries, enforce", res)
	}

	ch, err := e.Decisions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		img      []byte
		verdict  event.Verdict
		entry    string
		mismatch bool
	}{
		{"listed digest and names", dummy, event.VerdictAllowed, "dummy", false},
		{"not listed", veth, event.VerdictBlocked, "", false},
		{"digest listed but names forged", forged, event.VerdictBlocked, "", true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tid := uint32(1000 + i)
			if _, err := impl.Load(event.OpInitModule, tt.img, 42, tid, "insmod"); err != nil {
				t.Fatal(err)
			}
			d := recv(t, ch)
			if d.Verdict != tt.verdict || d.Entry != tt.entry || d.NameMismatch != tt.mismatch {
				t.Errorf("decision %+v: want verdict %s, entry %q, mismatch %v", d, tt.verdict, tt.entry, tt.mismatch)
			}
			if d.SHA256 != digest(tt.img) || d.Tid != tid || d.Pid != 42 || d.Comm != "insmod" ||
				d.Op != event.OpInitModule || d.Size != uint64(len(tt.img)) || d.Generation != 1 || d.Time.IsZero() {
				t.Errorf("decision %+v does not carry the load's identity", d)
			}
			if (d.Verdict == event.VerdictBlocked) != (d.Ret != 0) {
				t.Errorf("verdict %s with ret %d", d.Verdict, d.Ret)
			}
		})
	}

	st, err := e.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Allowed != 1 || st.Blocked != 2 || st.Allowlist != "test" || st.Generation != 1 {
		t.Errorf("Status = %+v, want 1 allowed, 2 blocked, allowlist test, generation 1", st)
	}
}

func TestGRPCAuditMode(t *testing.T) {
	veth := realModule(t, "veth")
	impl := companiontest.New()
	e, _ := grpcPair(t, impl)
	ctx := context.Background()
	if _, err := e.Apply(ctx, list(t, allowlist.ModeAudit, allowlist.Entry{Name: "dummy"})); err != nil {
		t.Fatal(err)
	}
	ch, err := e.Decisions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := impl.Load(event.OpFinitModule, veth, 1, 1, "modprobe"); err != nil {
		t.Fatal(err)
	}
	d := recv(t, ch)
	if d.Verdict != event.VerdictAudit || d.Ret != 0 || d.Op != event.OpFinitModule || d.Name != "veth" {
		t.Errorf("decision %+v: want an audit verdict for veth with ret 0", d)
	}
}

// TestGRPCReports: the enforcer's reports about the guard cross the wire as
// reports, in the form companions of protocol version 1 have always sent
// (a Decision message whose op names the report).
func TestGRPCReports(t *testing.T) {
	impl := companiontest.New()
	e, _ := grpcPair(t, impl)
	ch, err := e.Decisions(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1_800_000_000, 7)
	for _, want := range []event.Report{
		{Time: at, Kind: event.ReportMissing, Reason: "3 guard decisions never reached the enforcer", Count: 3, Pid: 40, UID: 0, Comm: "kmodguard"},
		{Time: at, Kind: event.ReportOverride, Reason: "override: fmod_ret on security_kernel_read_file", LinkID: 12},
	} {
		impl.Report(want)
		select {
		case m := <-ch:
			got, ok := m.(event.Report)
			if !ok || got.Kind != want.Kind || got.Reason != want.Reason || got.Count != want.Count ||
				got.LinkID != want.LinkID || got.Pid != want.Pid || got.Comm != want.Comm || !got.Time.Equal(want.Time) {
				t.Errorf("sent %+v, received %T %+v", want, m, m)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s report within 10s", want.Kind)
		}
	}
}

// TestGRPCUnavailable checks that a companion whose guard cannot load says
// why on every call, through the wire.
func TestGRPCUnavailable(t *testing.T) {
	e, _ := grpcPair(t, companion.Unavailable(companiontest.ErrNoLSM))
	ctx := context.Background()
	_, errApply := e.Apply(ctx, list(t, allowlist.ModeEnforce))
	_, errStatus := e.Status(ctx)
	_, errDecisions := e.Decisions(ctx)
	for name, err := range map[string]error{"apply": errApply, "status": errStatus, "decisions": errDecisions} {
		if !errors.Is(err, companion.ErrUnavailable) {
			t.Errorf("%s: %v, want ErrUnavailable", name, err)
			continue
		}
		if !strings.Contains(err.Error(), "lsm=") || !strings.Contains(err.Error(), "enforcer unavailable") {
			t.Errorf("%s: %q does not say why", name, err)
		}
	}
}

// TestGRPCHostileApply sends what a confused or hostile client might, below
// the Go client's validation: the server must refuse it with a clear error.
func TestGRPCHostileApply(t *testing.T) {
	impl := companiontest.New()
	_, client := grpcPair(t, impl)
	raw := pb.NewEnforcerClient(client.Conn)
	tests := []struct {
		name string
		doc  string
		want string
	}{
		{"empty", "", ""},
		{"not yaml", "\x00\x01{{{", ""},
		{"unknown field", "apiVersion: kmodguard.io/v1\nkind: ModuleAllowlist\nspec:\n  mode: enforce\n  modules: []\n  extra: 1\n", "extra"},
		{"bad mode", "apiVersion: kmodguard.io/v1\nkind: ModuleAllowlist\nspec:\n  mode: maybe\n  modules: []\n", "mode"},
		{"bad digest", "apiVersion: kmodguard.io/v1\nkind: ModuleAllowlist\nspec:\n  mode: enforce\n  modules:\n  - name: dummy\n    sha256: [xyz]\n", "sha256"},
		{"too large", strings.Repeat("#", 3<<20+1), "bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := raw.Apply(context.Background(), &pb.ApplyRequest{Allowlist: []byte(tt.doc), Source: "hostile.yaml"})
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("Apply: %v, want InvalidArgument", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name %q", err, tt.want)
			}
		})
	}
	// A signature far larger than one (base64 of 64 bytes).
	valid := "apiVersion: kmodguard.io/v1\nkind: ModuleAllowlist\nspec:\n  mode: enforce\n  modules: []\n"
	_, err := raw.Apply(context.Background(), &pb.ApplyRequest{Allowlist: []byte(valid), Signature: []byte(strings.Repeat("A", 4096)), Source: "hostile.yaml"})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "signature") {
		t.Errorf("Apply with a 4 KiB signature: %v, want InvalidArgument naming the signature", err)
	}
	if st, _ := impl.Status(context.Background()); st.Generation != 0 {
		t.Errorf("a refused allowlist was applied: %+v", st)
	}
}

func TestSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "companion.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- companion.ServeSocket(ctx, path, companiontest.New()) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("socket did not appear")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v (%v), want 0600", fi.Mode(), err)
	}
	c, err := companion.DialSocket(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Apply(ctx, list(t, allowlist.ModeEnforce, allowlist.Entry{Name: "dummy"})); err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(ctx)
	if err != nil || st.Generation != 1 || st.Mode != "enforce" {
		t.Errorf("Status = %+v, %v", st, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ServeSocket: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	if _, err := companion.DialSocket(context.Background(), path); err == nil {
		t.Error("DialSocket succeeded without a server")
	}
}

func TestServeSocketRefusesRegularFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "not-a-socket")
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := companion.ServeSocket(context.Background(), path, companiontest.New())
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("ServeSocket over a file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "keep me" {
		t.Error("the file was replaced")
	}
}

// TestLaunch starts this test binary as a real companion child process over
// go-plugin with AutoMTLS.
func TestLaunch(t *testing.T) {
	c, err := companion.Launch(companion.LaunchConfig{
		Path: os.Args[0], Args: []string{}, Env: []string{helperEnv + "=enforcer"}, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Apply(ctx, list(t, allowlist.ModeAudit, allowlist.Entry{Name: "dummy"})); err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(ctx)
	if err != nil || st.Mode != "audit" || st.Generation != 1 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	ch, err := c.Decisions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rc := c.ReattachConfig(); rc == nil || rc.Pid == 0 {
		t.Errorf("ReattachConfig = %+v", rc)
	}
	// The companion dies: the stream ends and calls fail as disconnected.
	c.Close()
	select {
	case _, ok := <-ch:
		if ok {
			t.Error("a decision arrived from a killed companion")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("decision stream still open 10s after the companion was killed")
	}
	if !c.Exited() {
		t.Error("Exited() = false after Close")
	}
	if _, err := c.Status(ctx); err == nil {
		t.Error("Status succeeded after the companion was killed")
	}
}

func TestLaunchUnavailable(t *testing.T) {
	c, err := companion.Launch(companion.LaunchConfig{
		Path: os.Args[0], Args: []string{}, Env: []string{helperEnv + "=unavailable"}, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Apply(context.Background(), list(t, allowlist.ModeEnforce))
	if !errors.Is(err, companion.ErrUnavailable) || !strings.Contains(err.Error(), "BPF LSM") {
		t.Errorf("Apply: %v, want ErrUnavailable naming BPF LSM", err)
	}
}

func TestLaunchNotACompanion(t *testing.T) {
	for _, tt := range []struct{ name, path string }{
		{"missing binary", filepath.Join(t.TempDir(), "kmodguard")},
		{"not a companion", "/bin/true"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.path == "/bin/true" {
				if _, err := os.Stat(tt.path); err != nil {
					t.Skip("needs /bin/true")
				}
			}
			c, err := companion.Launch(companion.LaunchConfig{Path: tt.path, StartTimeout: 5 * time.Second, Logger: quietLogger()})
			if err == nil {
				c.Close()
				t.Fatal("Launch succeeded")
			}
			if !strings.HasPrefix(err.Error(), "companion") {
				t.Errorf("error %q does not say it is about the companion", err)
			}
		})
	}
}

// TestAttach serves a companion in go-plugin's test mode (no AutoMTLS, as
// reattaching requires) and attaches to it from its ReattachConfig, the way
// a restarted client finds a companion that is still running.
func TestAttach(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	rcCh := make(chan *plugin.ReattachConfig, 1)
	closed := make(chan struct{})
	impl := companiontest.New()
	go plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: companion.Handshake,
		Plugins:         plugin.PluginSet{companion.PluginName: &companion.EnforcerPlugin{Impl: impl}},
		GRPCServer:      plugin.DefaultGRPCServer,
		Logger:          quietLogger(),
		Test:            &plugin.ServeTestConfig{Context: ctx, ReattachConfigCh: rcCh, CloseCh: closed},
	})
	var rc *plugin.ReattachConfig
	select {
	case rc = <-rcCh:
	case <-time.After(10 * time.Second):
		t.Fatal("no reattach configuration from the test server")
	}
	c, err := companion.Attach(rc, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Apply(ctx, list(t, allowlist.ModeEnforce, allowlist.Entry{Name: "dummy"})); err != nil {
		t.Fatal(err)
	}
	if st, _ := impl.Status(ctx); st.Generation != 1 {
		t.Errorf("the attached client's allowlist did not arrive: %+v", st)
	}
	// Closing an attached client leaves the companion running.
	c.Close()
	if _, err := impl.Status(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
		t.Error("closing the attached client stopped the companion")
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	<-closed
	if _, err := companion.Attach(nil, nil); err == nil {
		t.Error("Attach(nil) succeeded")
	}
}

// statusOnly is an Enforcer whose Status is fixed, for the wire test.
type statusOnly struct {
	companion.Enforcer
	st companion.Status
}

func (s statusOnly) Status(context.Context) (companion.Status, error) { return s.st, nil }

// TestGRPCStatusRoundTrip: every field of Status crosses the wire, the
// count of decisions another reader consumed included.
func TestGRPCStatusRoundTrip(t *testing.T) {
	want := companion.Status{
		Mode: "enforce", Generation: 7, Entries: 12, Sealed: true, PinDir: "/sys/fs/bpf/kmodguard",
		Links: []string{"kernel_post_load_data"}, Missing: []string{"bpf"},
		Allowed: 1, Blocked: 2, Audited: 3, LostEvents: 4, Allowlist: "fleet", MissingDecisions: 5,
		Version: "0.1.0+g0123456789ab",
	}
	// Every field set: a field added to Status but not to the wire fails here.
	v := reflect.ValueOf(want)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Fatalf("test status leaves %s unset", v.Type().Field(i).Name)
		}
	}
	c, _ := grpcPair(t, statusOnly{st: want})
	got, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Status over gRPC\n got %+v\nwant %+v", got, want)
	}
}
