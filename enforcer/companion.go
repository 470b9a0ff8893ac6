//go:build linux

package enforcer

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/sirupsen/logrus"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/companion"
	"github.com/kmodguard/kmodguard/internal/version"
)

// CompanionConfig configures ServeCompanion.
type CompanionConfig struct {
	// Config configures the enforcer the companion loads.
	Config
	// Socket serves on this Unix socket; empty serves the go-plugin
	// handshake to the process that started this one.
	Socket string
	// Initial, when set, loads the guard at start; otherwise the first
	// allowlist a client applies does.
	Initial *allowlist.Allowlist
	// Stderr receives go-plugin's own log (JSON).
	Stderr io.Writer
	// Trust is what Apply requires of a client's allowlist.
	Trust Trust
}

// Trust is what a companion requires of the allowlists its clients apply:
// the rule of every other consumer (allowlist.LoadOptions), so that a
// configured key means a valid signature is required on the socket too.
type Trust struct {
	// PublicKey, when set, makes Apply refuse an allowlist whose detached
	// signature does not verify under it over exactly the bytes the client
	// sent (companion.ErrUntrusted).
	PublicKey ed25519.PublicKey
	// RequireSignature refuses to serve without a PublicKey.
	RequireSignature bool
}

// ErrNoKey is returned by NewCompanion for Trust.RequireSignature without
// Trust.PublicKey.
var ErrNoKey = errors.New("a signature is required (--require-signature) but no public key was given (--pubkey)")

// ErrNotLaunched is returned by ServeCompanion without a socket in a
// process that a go-plugin client did not start.
var ErrNotLaunched = errors.New("serve-companion is started by the kmodguard Falco plugin " +
	`(init_config "enforcer": {"enabled": true}); to serve other clients, add --socket PATH`)

// ServeCompanion serves the enforcer as a companion (package companion):
// over the go-plugin handshake to the process that launched it, or on
// cfg.Socket until ctx ends or SIGINT or SIGTERM arrives. When the guard
// cannot run on this kernel, it serves the reason to every call.
func ServeCompanion(ctx context.Context, cfg CompanionConfig) error {
	if cfg.Logger == nil {
		cfg.Logger = logrus.StandardLogger()
	}
	if cfg.Socket == "" && os.Getenv(companion.Handshake.MagicCookieKey) != companion.Handshake.MagicCookieValue {
		return ErrNotLaunched
	}
	svc, err := NewCompanion(cfg.Config, cfg.Initial, cfg.Trust)
	if err != nil {
		return err
	}
	defer svc.Close()
	if cfg.Socket == "" {
		stderr := cfg.Stderr
		if stderr == nil {
			stderr = os.Stderr
		}
		companion.Serve(svc, hclog.New(&hclog.LoggerOptions{
			Name: "kmodguard-companion", Output: stderr, JSONFormat: true, Level: hclog.Info,
		}))
		return nil
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg.Logger.WithField("socket", cfg.Socket).Info("serving the enforcer companion")
	return companion.ServeSocket(ctx, cfg.Socket, svc)
}

// Companion serves the enforcer as a companion.Enforcer. The guard loads
// with the first allowlist; decisions fan out to every subscriber of
// Decisions.
type Companion struct {
	cfg Config
	log logrus.FieldLogger
	// load loads the guard with the first allowlist (Load; tests fake it).
	load func(Config, *allowlist.Allowlist) (engine, error)

	mu     sync.Mutex
	enf    engine
	subs   map[int]chan Message
	nextID int
	// unavailable is why the guard cannot run here, or nil.
	unavailable error
	// readOnly refuses Apply: the enforcer's policy comes from its file.
	readOnly bool
	// trust is what Apply requires of an allowlist.
	trust Trust
}

var _ companion.Enforcer = (*Companion)(nil)

// NewCompanion returns the companion service of an enforcer configured by
// cfg, loaded with initial when it is set, that applies only allowlists
// that satisfy trust (initial too). When the guard cannot run on this
// kernel, the service answers every call with the reason (wrapping
// companion.ErrUnavailable).
func NewCompanion(cfg Config, initial *allowlist.Allowlist, trust Trust) (*Companion, error) {
	load := func(cfg Config, a *allowlist.Allowlist) (engine, error) {
		enf, err := Load(cfg, a)
		if err != nil {
			return nil, err
		}
		return enf, nil
	}
	return newCompanion(cfg, initial, trust, Supported(), load)
}

func newCompanion(cfg Config, initial *allowlist.Allowlist, trust Trust, unsupported error, load func(Config, *allowlist.Allowlist) (engine, error)) (*Companion, error) {
	if cfg.Logger == nil {
		cfg.Logger = logrus.StandardLogger()
	}
	if trust.RequireSignature && trust.PublicKey == nil {
		return nil, ErrNoKey
	}
	c := &Companion{cfg: cfg, log: cfg.Logger, load: load, subs: map[int]chan Message{}, trust: trust}
	if unsupported != nil {
		c.log.WithError(unsupported).Error("the guard cannot run on this kernel: serving the reason to the client")
		c.unavailable = unsupported
		return c, nil
	}
	if initial != nil {
		if _, err := c.Apply(context.Background(), initial); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// serveRunning serves enf (owned by the Daemon) on a Unix socket until ctx
// ends. The daemon passes each decision to publish. The enforcer keeps the
// allowlist it was given: Apply through the socket is refused, so that only
// the verified file sets the policy.
func serveRunning(ctx context.Context, log logrus.FieldLogger, socket string, enf engine) (publish func(Message)) {
	c := &Companion{log: log, enf: enf, subs: map[int]chan Message{}, readOnly: true}
	go func() {
		if err := companion.ServeSocket(ctx, socket, c); err != nil {
			log.WithError(err).Error("companion socket stopped")
		}
	}()
	log.WithField("socket", socket).Info("serving decisions to the Falco plugin")
	return c.publish
}

func (c *Companion) unavail() error {
	return fmt.Errorf("%w: %w", companion.ErrUnavailable, c.unavailable)
}

// Apply puts a in force, loading the guard with it the first time. With a
// public key (Trust), a must carry a signature that verifies under it over
// exactly the document it was parsed from (allowlist.VerifySigned), or it
// is refused and the list in force stays. The guard's rollback floor
// applies either way (Enforcer.Apply; Load checks a pinned guard's).
func (c *Companion) Apply(_ context.Context, a *allowlist.Allowlist) (companion.Applied, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unavailable != nil {
		return companion.Applied{}, c.unavail()
	}
	if c.readOnly {
		return companion.Applied{}, errors.New("this enforcer applies its own allowlist file (kmodguard enforcer run --allowlist); edit that file instead")
	}
	if c.trust.PublicKey != nil {
		if err := a.VerifySigned(c.trust.PublicKey); err != nil {
			c.log.WithError(err).Error("allowlist refused: its signature does not verify under the enforcer's key; the list in force stays")
			return companion.Applied{}, fmt.Errorf("%w: %w", companion.ErrUntrusted, err)
		}
	}
	if c.enf == nil {
		enf, err := c.load(c.cfg, a)
		if err != nil {
			return companion.Applied{}, err
		}
		c.enf = enf
		go c.fanout(enf)
	} else if err := c.enf.Apply(a); err != nil {
		return companion.Applied{}, err
	}
	st, err := c.enf.Status()
	if err != nil {
		return companion.Applied{}, err
	}
	c.log.WithFields(logrus.Fields{"generation": st.Generation, "entries": st.Entries, "mode": st.Mode}).Info("allowlist applied")
	return companion.Applied{Generation: st.Generation, Entries: st.Entries, Mode: st.Mode}, nil
}

// Status reports the state of the guard: this companion's, or the pinned
// one before the first Apply.
func (c *Companion) Status(context.Context) (companion.Status, error) {
	c.mu.Lock()
	enf, unavailable := c.enf, c.unavailable
	c.mu.Unlock()
	if unavailable != nil {
		return companion.Status{}, c.unavail()
	}
	var (
		st  Status
		err error
	)
	if enf != nil {
		st, err = enf.Status()
	} else {
		st, err = ReadStatus(c.cfg.PinDir)
		if errors.Is(err, ErrNotLoaded) {
			return companion.Status{Missing: Hooks(), Version: version.Get().Version}, nil
		}
	}
	if err != nil {
		return companion.Status{}, err
	}
	out := companion.Status{
		Mode: st.Mode, Generation: st.Generation, Entries: st.Entries, Sealed: st.Sealed, PinDir: st.PinDir,
		Missing: st.Missing, Allowed: st.Allowed, Blocked: st.Blocked, Audited: st.Audited, LostEvents: st.LostEvents,
		MissingDecisions: st.MissingDecisions, Version: version.Get().Version,
	}
	for _, l := range st.Links {
		out.Links = append(out.Links, l.Hook)
	}
	if enf != nil {
		if a := enf.Allowlist(); a != nil {
			out.Allowlist = a.Metadata.Name
		}
	}
	return out, nil
}

// Decisions streams the guard's decisions until ctx ends.
func (c *Companion) Decisions(ctx context.Context) (<-chan Message, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unavailable != nil {
		return nil, c.unavail()
	}
	ch := make(chan Message, 256)
	id := c.nextID
	c.nextID++
	c.subs[id] = ch
	go func() {
		<-ctx.Done()
		c.mu.Lock()
		if _, ok := c.subs[id]; ok {
			delete(c.subs, id)
			close(ch)
		}
		c.mu.Unlock()
	}()
	return ch, nil
}

// fanout copies the enforcer's decisions to every subscriber. A subscriber
// that does not keep up loses decisions (logged) rather than stalling the
// guard's ring buffer for everyone.
func (c *Companion) fanout(enf engine) {
	for m := range enf.Decisions() {
		c.publish(m)
	}
	c.mu.Lock()
	for id, ch := range c.subs {
		delete(c.subs, id)
		close(ch)
	}
	c.mu.Unlock()
}

// publish sends m to every subscriber.
func (c *Companion) publish(m Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range c.subs {
		select {
		case ch <- m:
		default:
			c.log.WithField("message", fmt.Sprintf("%T", m)).Warn("a companion client is not keeping up: decision dropped for it")
		}
	}
}

// Close releases the enforcer; the guard stays pinned and enforcing.
func (c *Companion) Close() error {
	c.mu.Lock()
	enf := c.enf
	c.mu.Unlock()
	if enf == nil {
		return nil
	}
	return enf.Close()
}
