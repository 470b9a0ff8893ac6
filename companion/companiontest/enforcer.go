// Package companiontest provides Enforcer, an in-process companion.Enforcer
// that decides module loads in user space with the project's real allowlist
// logic (kmod.InspectBytes and allowlist.Match) instead of the BPF LSM guard.
//
// It is for tests on hosts where the guard cannot load (BPF LSM is refused on
// the development machines): it exercises the companion protocol, the join
// of decisions with sensor events and everything downstream with the same
// decisions the guard makes, but it enforces nothing. Its reasons and
// verdicts follow package lsm's.
package companiontest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/companion"
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/internal/version"
	"github.com/kmodguard/kmodguard/kmod"
)

// Enforcer decides loads with allowlist.Match. The zero value is not usable;
// call New.
type Enforcer struct {
	mu     sync.Mutex
	list   *allowlist.Allowlist
	gen    uint64
	subs   map[int]chan event.GuardMessage
	nextID int
	st     companion.Status
}

var _ companion.Enforcer = (*Enforcer)(nil)

// New returns an Enforcer with no allowlist: like the guard, it refuses
// every load until Apply.
func New() *Enforcer {
	return &Enforcer{subs: map[int]chan event.GuardMessage{}, st: companion.Status{Version: version.Get().Version}}
}

// SetVersion sets the build version Status reports (by default this
// build's), to stand for a companion of another build.
func (e *Enforcer) SetVersion(v string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.st.Version = v
}

// Apply puts a in force.
func (e *Enforcer) Apply(_ context.Context, a *allowlist.Allowlist) (companion.Applied, error) {
	if a == nil {
		return companion.Applied{}, fmt.Errorf("%w: none given", companion.ErrInvalidAllowlist)
	}
	if err := a.Validate(); err != nil {
		return companion.Applied{}, fmt.Errorf("%w: %w", companion.ErrInvalidAllowlist, err)
	}
	var n uint64
	for _, m := range a.Spec.Modules {
		n += uint64(max(len(m.SHA256), 1))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = a
	e.gen++
	e.st.Mode, e.st.Generation, e.st.Entries, e.st.Allowlist = string(a.Spec.Mode), e.gen, n, a.Metadata.Name
	return companion.Applied{Generation: e.gen, Entries: n, Mode: string(a.Spec.Mode)}, nil
}

// Status reports the policy in force and the decision counters. It has no
// links or pins: nothing is attached.
func (e *Enforcer) Status(context.Context) (companion.Status, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.st, nil
}

// Decisions subscribes to the decisions of Load.
func (e *Enforcer) Decisions(ctx context.Context) (<-chan event.GuardMessage, error) {
	ch := make(chan event.GuardMessage, 64)
	e.mu.Lock()
	id := e.nextID
	e.nextID++
	e.subs[id] = ch
	e.mu.Unlock()
	go func() {
		<-ctx.Done()
		e.mu.Lock()
		delete(e.subs, id)
		close(ch)
		e.mu.Unlock()
	}()
	return ch, nil
}

// Load decides one module load as the guard does on the kernel's copy: img
// is that copy (the ELF image for init_module, the file as read for
// finit_module). The decision is published to every subscriber and
// returned.
func (e *Enforcer) Load(op event.Op, img []byte, pid, tid uint32, comm string) (event.Decision, error) {
	if op != event.OpInitModule && op != event.OpFinitModule {
		return event.Decision{}, fmt.Errorf("companiontest: %q is not a module load", op)
	}
	sum := sha256.Sum256(img)
	d := event.Decision{
		Time: time.Now(), Op: op, SHA256: hex.EncodeToString(sum[:]),
		Size: uint64(len(img)), Pid: pid, Tid: tid, Comm: comm,
	}
	m, inspectErr := kmod.InspectBytes(img)
	if m != nil {
		d.Name, d.ThisModuleName, d.NameMismatch = m.Name, m.ThisModuleName, m.NameMismatch
		d.Compressed = m.Compression != kmod.CompressionNone
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	d.Generation = e.gen
	allowed, enforce := false, true
	switch {
	case e.list == nil:
		d.Reason = "no allowlist installed"
	case inspectErr != nil && m == nil:
		d.Reason = "module names could not be parsed from the ELF image"
		enforce = e.list.Spec.Mode != allowlist.ModeAudit
	default:
		dec := e.list.Match(m)
		allowed, d.Reason = dec.Allowed, dec.Reason
		if dec.Allowed && dec.Entry != nil {
			d.Entry = dec.Entry.Name
		}
		enforce = e.list.Spec.Mode != allowlist.ModeAudit
	}
	switch {
	case allowed:
		d.Verdict = event.VerdictAllowed
		e.st.Allowed++
	case enforce:
		d.Verdict, d.Ret = event.VerdictBlocked, -1 // -EPERM
		e.st.Blocked++
	default:
		d.Verdict = event.VerdictAudit
		e.st.Audited++
	}
	for _, ch := range e.subs {
		select {
		case ch <- d:
		default:
			e.st.LostEvents++
		}
	}
	return d, nil
}

// Report publishes r to every subscriber, as the enforcer does with its
// reports about the guard.
func (e *Enforcer) Report(r event.Report) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ch := range e.subs {
		select {
		case ch <- r:
		default:
		}
	}
}

// GRPCPair connects impl and a client through go-plugin's test connection:
// the real gRPC adapters on both sides, in one process. The pair closes
// when the test ends.
func GRPCPair(t testing.TB, impl companion.Enforcer) (companion.Enforcer, *plugin.GRPCClient) {
	t.Helper()
	client, server := plugin.TestPluginGRPCConn(t, false, map[string]plugin.Plugin{
		companion.PluginName: &companion.EnforcerPlugin{Impl: impl},
	})
	// The server stops first: the client's Close asks the server to stop
	// too (go-plugin's Shutdown call), and a Stop still under way there
	// when this one ran would race with it.
	t.Cleanup(func() { server.Stop(); client.Close() })
	raw, err := client.Dispense(companion.PluginName)
	if err != nil {
		t.Fatal(err)
	}
	e, ok := raw.(companion.Enforcer)
	if !ok {
		t.Fatalf("dispensed %T", raw)
	}
	return e, client
}

// ErrNoLSM is a reason worded like the one the real companion gives on a
// kernel without BPF LSM, for tests of companion.Unavailable.
var ErrNoLSM = errors.New("BPF LSM is not enabled: add bpf to lsm= on the kernel command line")
