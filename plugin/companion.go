package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/sirupsen/logrus"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/bpf"
	"github.com/kmodguard/kmodguard/companion"
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/internal/version"
)

// Reconnection backoff of the companion link.
const (
	companionBackoffMin = time.Second
	companionBackoffMax = time.Minute
	// companionTick is how often waiting joins expire and the allowlist is
	// checked for a new version to hand to the companion.
	companionTick = 100 * time.Millisecond
)

// Log field keys of the companion link.
const (
	logKeyCompanion = "companion"
	logKeyRetry     = "retry_in"
)

// companionSource wraps the sensor's events with the enforcer companion's
// decisions (see join.go): it launches the companion (enforcer.path) and
// hands it the plugin's allowlist (again each time the allowlist is
// reloaded), or attaches to a running enforcer (enforcer.socket), which
// keeps its own allowlist; it streams the decisions, and sets kmod.verdict
// and kmod.toctou on the sensor's events.
//
// When the companion cannot be reached, or dies, detection goes on: events
// pass through with kmod.verdict "none", the loss is reported once as an
// event (kmod.syscall "guard", kmod.verdict "none") and logged with the
// reason, and the link retries with exponential backoff. The guard itself
// keeps enforcing through its pins whatever happens to the companion.
type companionSource struct {
	inner  eventSource
	out    chan *event.Event
	cfg    EnforcerConfig
	log    logrus.FieldLogger
	policy func() *allowlist.Allowlist
	join   *joiner

	cancel context.CancelFunc
	done   chan struct{}

	mu          sync.Mutex
	lastErr     error
	connected   bool
	peerVersion string // the companion's build version, as it last reported it

	decisions atomic.Uint64 // guard decisions received from the companion
}

// withCompanion returns src joined with the companion's decisions when
// enforcer.enabled is set, else src.
func (p *Plugin) withCompanion(src eventSource) eventSource {
	if !p.cfg.Enforcer.Enabled {
		return src
	}
	var pol func() *allowlist.Allowlist
	if p.policy != nil {
		pol = p.policy.Current
	}
	return newCompanionSource(src, p.cfg.Enforcer, pol, p.logger().WithField(logKeyComponent, logKeyCompanion))
}

func newCompanionSource(inner eventSource, cfg EnforcerConfig, pol func() *allowlist.Allowlist, log logrus.FieldLogger) *companionSource {
	if pol == nil {
		pol = func() *allowlist.Allowlist { return nil }
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &companionSource{
		inner: inner, out: make(chan *event.Event, 256), cfg: cfg, log: log, policy: pol,
		join: newJoiner(JoinWindow), cancel: cancel, done: make(chan struct{}),
	}
	go c.run(ctx)
	return c
}

// Events delivers the joined events. It is closed once the sensor's channel
// is closed and everything waiting has been delivered.
func (c *companionSource) Events() <-chan *event.Event { return c.out }

// Stats is the sensor's counters (zero when the source counts nothing), so
// that losses are reported with the companion too.
func (c *companionSource) Stats() bpf.Stats {
	if s, ok := c.inner.(statsSource); ok {
		return s.Stats()
	}
	return bpf.Stats{}
}

// Close stops the link (a launched companion exits; the guard stays) and
// the sensor.
func (c *companionSource) Close() error {
	c.cancel()
	<-c.done
	return c.inner.Close()
}

// status reports whether decisions are streaming, and the last error of the
// link.
func (c *companionSource) status() (connected bool, lastErr error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected, c.lastErr
}

// logConnected says that the companion is connected, and which builds the
// plugin and the companion are: a warning when they differ (a fleet
// upgraded halfway), so that the skew shows in Falco's log.
func (c *companionSource) logConnected(companionVersion string) {
	c.mu.Lock()
	c.peerVersion = companionVersion
	c.mu.Unlock()
	own := version.Get().Version
	log := c.log.WithFields(logrus.Fields{logKeyVersion: own, logKeyCompanionVersion: companionVersion})
	switch {
	case companionVersion == "":
		log.Warn("enforcer companion connected: guard decisions join the sensor's events; it does not report its version (a build older than the plugin's)")
	case companionVersion != own:
		log.Warn("enforcer companion connected: guard decisions join the sensor's events; it is another build than the plugin")
	default:
		log.Info("enforcer companion connected: guard decisions join the sensor's events")
	}
}

// companionVersion is the version the connected (or last connected)
// companion reported.
func (c *companionSource) companionVersion() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peerVersion
}

func (c *companionSource) setState(connected bool, err error) {
	c.mu.Lock()
	c.connected = connected
	if err != nil {
		c.lastErr = err
	}
	c.mu.Unlock()
}

// link is one connection to the companion.
type link struct {
	client    *companion.Client
	decisions <-chan event.GuardMessage
	applied   *allowlist.Allowlist
	cancel    context.CancelFunc
	// version is the companion's build version, "" when it does not say.
	version string
}

func (l *link) close() {
	l.cancel()
	l.client.Close()
}

// hclogLevel maps the plugin's log level onto go-plugin's logger, which
// relays the companion's own log lines.
func hclogLevel(log logrus.FieldLogger) hclog.Level {
	if e, ok := log.(*logrus.Entry); ok && e.Logger.IsLevelEnabled(logrus.DebugLevel) {
		return hclog.Debug
	}
	return hclog.Warn
}

// connect launches or dials the companion, applies the allowlist and opens
// the decision stream.
func (c *companionSource) connect(ctx context.Context) (*link, error) {
	var (
		client *companion.Client
		err    error
	)
	if c.cfg.Socket != "" {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		client, err = companion.DialSocket(dctx, c.cfg.Socket)
		cancel()
	} else {
		client, err = companion.Launch(companion.LaunchConfig{
			Path: c.cfg.Path,
			// Loading the guard verifies and attaches a dozen programs:
			// seconds on a busy or emulated machine.
			StartTimeout: 30 * time.Second,
			Logger: hclog.New(&hclog.LoggerOptions{
				Name: "kmodguard-companion", Level: hclogLevel(c.log), Output: os.Stderr, JSONFormat: true,
			}),
		})
	}
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithCancel(ctx)
	l := &link{client: client, cancel: cancel}
	// A launched companion is the plugin's own: it gets the plugin's
	// allowlist. An enforcer attached through its socket keeps the
	// allowlist it was given (and verifies) itself.
	if a := c.policy(); a != nil && c.cfg.Socket == "" {
		res, err := client.Apply(lctx, a)
		if err != nil {
			l.close()
			return nil, err
		}
		l.applied = a
		c.log.WithFields(logrus.Fields{"generation": res.Generation, "mode": res.Mode, logKeyEntries: res.Entries}).
			Info("allowlist handed to the enforcer companion")
	}
	l.decisions, err = client.Decisions(lctx)
	if err != nil {
		l.close()
		return nil, err
	}
	// Which build the companion is, for the connection's log line. Not
	// knowing does not stop the decisions.
	if st, err := client.Status(lctx); err == nil {
		l.version = st.Version
	} else {
		c.log.WithError(err).Debug("enforcer companion status")
	}
	return l, nil
}

// lossEvent reports that the guard's view is missing, and why: from now
// on, load events carry kmod.verdict "none" until the companion is back.
func lossEvent(err error) *event.Event {
	return &event.Event{
		TS:          uint64(time.Now().UnixNano()),
		Syscall:     event.Guard,
		Verdict:     event.VerdictNone,
		Comm:        "kmodguard",
		GuardReason: "enforcer companion lost: " + err.Error(),
	}
}

func (c *companionSource) emit(ctx context.Context, evts ...*event.Event) bool {
	for _, e := range evts {
		select {
		case c.out <- e:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

func (c *companionSource) run(ctx context.Context) {
	defer close(c.done)
	defer close(c.out)
	in := c.inner.Events()
	tick := time.NewTicker(companionTick)
	defer tick.Stop()

	type connection struct {
		l   *link
		err error
	}
	var (
		l          *link
		backoff    = companionBackoffMin
		retry      = time.NewTimer(0) // connect at once
		reported   bool               // the current loss was reported
		connected  = make(chan connection, 1)
		connecting bool // a connect is in flight
	)
	defer func() {
		// Do not leave a companion launched after Close.
		if connecting {
			if r := <-connected; r.l != nil {
				r.l.close()
			}
		}
	}()
	defer retry.Stop()
	defer func() {
		if l != nil {
			l.close()
		}
	}()
	lost := func(err error) bool {
		if l != nil {
			l.close()
			l = nil
		}
		c.setState(false, err)
		ok := c.emit(ctx, c.join.flush()...)
		if !reported {
			reported = true
			c.log.WithError(err).WithField(logKeyRetry, backoff.String()).
				Error("enforcer companion unavailable: detection goes on without guard verdicts; the guard, if loaded, keeps enforcing")
			ok = ok && c.emit(ctx, lossEvent(err))
		} else {
			c.log.WithError(err).WithField(logKeyRetry, backoff.String()).Debug("enforcer companion still unavailable")
		}
		retry.Reset(backoff)
		backoff = min(2*backoff, companionBackoffMax)
		return ok
	}

	for {
		var decisions <-chan event.GuardMessage
		if l != nil {
			decisions = l.decisions
		}
		select {
		case <-ctx.Done():
			return
		case <-retry.C:
			// Connecting can take seconds (launching loads the guard):
			// meanwhile the sensor's events keep flowing.
			connecting = true
			go func() {
				nl, err := c.connect(ctx)
				connected <- connection{nl, err}
			}()
		case r := <-connected:
			connecting = false
			if r.err != nil {
				if ctx.Err() != nil {
					return
				}
				if !lost(r.err) {
					return
				}
				continue
			}
			if ctx.Err() != nil {
				r.l.close()
				return
			}
			l, backoff, reported = r.l, companionBackoffMin, false
			c.logConnected(l.version)
			c.setState(true, nil)
		case e, ok := <-in:
			if !ok {
				c.emit(ctx, c.join.flush()...)
				return
			}
			if l == nil {
				if isLoad(e) {
					e.Verdict = event.VerdictNone
				}
				if !c.emit(ctx, e) {
					return
				}
				continue
			}
			if !c.emit(ctx, c.join.addEvent(e, time.Now())...) {
				return
			}
		case m, ok := <-decisions:
			if !ok {
				if !lost(fmt.Errorf("the decision stream ended: %w", companion.ErrDisconnected)) {
					return
				}
				continue
			}
			c.decisions.Add(1)
			evts := []*event.Event{m.Event()} // a report: no load to join
			if d, ok := m.(event.Decision); ok {
				evts = c.join.addDecision(d, time.Now())
			}
			if !c.emit(ctx, evts...) {
				return
			}
		case <-tick.C:
			if !c.emit(ctx, c.join.expire(time.Now())...) {
				return
			}
			if l != nil && c.cfg.Socket == "" {
				if a := c.policy(); a != nil && a != l.applied {
					c.reapply(ctx, l, a)
				}
			}
		}
	}
}

// reapply hands a reloaded allowlist to the companion. A refusal keeps the
// old list in force in the guard, and is logged; it is not retried until
// the allowlist changes again.
func (c *companionSource) reapply(ctx context.Context, l *link, a *allowlist.Allowlist) {
	l.applied = a
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := l.client.Apply(actx, a)
	if err != nil {
		if errors.Is(err, companion.ErrDisconnected) {
			return // the stream ends too, and the link reconnects
		}
		c.setState(true, err)
		c.log.WithError(err).Error("reloaded allowlist refused by the enforcer companion: the guard keeps the previous one")
		return
	}
	c.log.WithFields(logrus.Fields{"generation": res.Generation, "mode": res.Mode, logKeyEntries: res.Entries}).
		Info("reloaded allowlist handed to the enforcer companion")
}
