//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/companion"
	"github.com/kmodguard/kmodguard/enforcer"
	"github.com/kmodguard/kmodguard/internal/version"
	"github.com/kmodguard/kmodguard/lsm"
)

// newEnforcerServeCompanionCmd is `kmodguard enforcer serve-companion`, the
// hidden mode in which the Falco plugin (or another go-plugin client) runs
// the enforcer as its child. See package companion.
func newEnforcerServeCompanionCmd(pinDir *string) *cobra.Command {
	var (
		socket string
		mode   string
		seal   bool
		path   string
		trust  trustFlags
	)
	cmd := &cobra.Command{
		Use:    "serve-companion",
		Short:  "Serve the enforcer to the Falco plugin over go-plugin (started by the plugin)",
		Hidden: true,
		Long: `serve-companion runs the enforcer as a go-plugin gRPC service: Apply (an
allowlist), Status, and a stream of the guard's decisions. The kmodguard Falco
plugin starts it when its init_config has "enforcer": {"enabled": true}, and
talks to it over mutual TLS; its stdout carries the go-plugin handshake, its
log goes to stderr as JSON.

With --socket it serves the same service on a Unix socket (mode 0600) for
clients that attach instead of launching it (init_config "enforcer":
{"socket": PATH}).

The guard is loaded with the first allowlist a client applies (or with
--allowlist at start), or adopted when one is pinned. When the kernel cannot
run it (no BPF LSM), the companion still serves and answers every call with
the reason, so that Falco reports it and keeps detecting.`,
		Example: `  # as the Falco plugin starts it (do not run this by hand)
  kmodguard enforcer serve-companion

  # a standalone companion that Falco attaches to
  kmodguard enforcer serve-companion --socket /run/kmodguard/companion.sock \
    --allowlist /etc/kmodguard/allowlist.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := logrus.New()
			log.SetOutput(cmd.ErrOrStderr())
			log.SetFormatter(&logrus.JSONFormatter{})
			if socket == "" && os.Getenv(companion.Handshake.MagicCookieKey) != companion.Handshake.MagicCookieValue {
				return withCode(exitError, errors.New("serve-companion is started by the kmodguard Falco plugin "+
					`(init_config "enforcer": {"enabled": true}); to serve other clients, add --socket PATH`))
			}
			var initial *allowlist.Allowlist
			if path != "" {
				a, err := trust.load(path)
				if err != nil {
					return withCode(exitError, err)
				}
				initial = a
			}
			impl, err := newCompanionEnforcer(enforcer.Config{
				PinDir: *pinDir, Mode: allowlist.Mode(mode), Seal: seal, Logger: log,
			}, initial, log)
			if err != nil {
				return withCode(exitError, err)
			}
			defer impl.Close()
			if socket == "" {
				companion.Serve(impl, hclog.New(&hclog.LoggerOptions{
					Name: "kmodguard-companion", Output: cmd.ErrOrStderr(), JSONFormat: true, Level: hclog.Info,
				}))
				return nil
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			log.WithField("socket", socket).Info("serving the enforcer companion")
			if err := companion.ServeSocket(ctx, socket, impl); err != nil {
				return withCode(exitError, err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "serve on this Unix socket instead of the go-plugin handshake")
	cmd.Flags().StringVarP(&path, "allowlist", "a", "", "allowlist to load the guard with at start (default: wait for the client's)")
	cmd.Flags().StringVar(&mode, "mode", "", "enforce or audit (default: the allowlist's spec.mode)")
	cmd.Flags().BoolVar(&seal, "seal", false, "seal the guard until reboot once the first allowlist is in force")
	trust.bind(cmd)
	return cmd
}

// companionEnforcer serves package enforcer as a companion.Enforcer. The
// guard loads with the first allowlist; decisions fan out to every
// subscriber of Decisions.
type companionEnforcer struct {
	cfg enforcer.Config
	log logrus.FieldLogger

	mu     sync.Mutex
	enf    *enforcer.Enforcer
	subs   map[int]chan companion.Decision
	nextID int
	// unavailable is why the guard cannot run here, or nil.
	unavailable error
	// readOnly refuses Apply: the enforcer's policy comes from its file.
	readOnly bool
}

func newCompanionEnforcer(cfg enforcer.Config, initial *allowlist.Allowlist, log logrus.FieldLogger) (*companionEnforcer, error) {
	c := &companionEnforcer{cfg: cfg, log: log, subs: map[int]chan companion.Decision{}}
	if err := lsm.Supported(); err != nil {
		log.WithError(err).Error("the guard cannot run on this kernel: serving the reason to the client")
		c.unavailable = err
		return c, nil
	}
	if initial != nil {
		if _, err := c.Apply(context.Background(), initial); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// serveRunningEnforcer serves enf (owned by `enforcer run`) on a Unix
// socket until ctx ends. The run loop passes each decision to publish. The
// enforcer keeps the allowlist it was given: Apply through the socket is
// refused, so that only the verified file (--allowlist, --pubkey) sets the
// policy.
func serveRunningEnforcer(ctx context.Context, log logrus.FieldLogger, socket string, enf *enforcer.Enforcer) (publish func(enforcer.Decision)) {
	c := &companionEnforcer{log: log, enf: enf, subs: map[int]chan companion.Decision{}, readOnly: true}
	go func() {
		if err := companion.ServeSocket(ctx, socket, c); err != nil {
			log.WithError(err).Error("companion socket stopped")
		}
	}()
	log.WithField("socket", socket).Info("serving decisions to the Falco plugin")
	return func(d enforcer.Decision) { c.publish(companionDecision(d)) }
}

func (c *companionEnforcer) unavail() error {
	return fmt.Errorf("%w: %w", companion.ErrUnavailable, c.unavailable)
}

func (c *companionEnforcer) Apply(_ context.Context, a *allowlist.Allowlist) (companion.Applied, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unavailable != nil {
		return companion.Applied{}, c.unavail()
	}
	if c.readOnly {
		return companion.Applied{}, errors.New("this enforcer applies its own allowlist file (kmodguard enforcer run --allowlist); edit that file instead")
	}
	if c.enf == nil {
		enf, err := enforcer.Load(c.cfg, a)
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

func (c *companionEnforcer) Status(context.Context) (companion.Status, error) {
	c.mu.Lock()
	enf, unavailable := c.enf, c.unavailable
	c.mu.Unlock()
	if unavailable != nil {
		return companion.Status{}, c.unavail()
	}
	var (
		st  enforcer.Status
		err error
	)
	if enf != nil {
		st, err = enf.Status()
	} else {
		st, err = enforcer.ReadStatus(c.cfg.PinDir)
		if errors.Is(err, lsm.ErrNotLoaded) {
			return companion.Status{Missing: lsm.Hooks(), Version: version.Get().Version}, nil
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

func (c *companionEnforcer) Decisions(ctx context.Context) (<-chan companion.Decision, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unavailable != nil {
		return nil, c.unavail()
	}
	ch := make(chan companion.Decision, 256)
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
func (c *companionEnforcer) fanout(enf *enforcer.Enforcer) {
	for d := range enf.Decisions() {
		c.publish(companionDecision(d))
	}
	c.mu.Lock()
	for id, ch := range c.subs {
		delete(c.subs, id)
		close(ch)
	}
	c.mu.Unlock()
}

// publish sends d to every subscriber.
func (c *companionEnforcer) publish(d companion.Decision) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range c.subs {
		select {
		case ch <- d:
		default:
			c.log.WithField("op", d.Op).Warn("a companion client is not keeping up: decision dropped for it")
		}
	}
}

func companionDecision(d enforcer.Decision) companion.Decision {
	return companion.Decision{
		Time: d.Time, Op: string(d.Op), Verdict: string(d.Verdict), Reason: d.Reason, Ret: d.Ret,
		SHA256: d.SHA256, Name: d.Name, ThisModuleName: d.ThisModuleName, NameMismatch: d.NameMismatch,
		Compressed: d.Compressed, Entry: d.Entry, Size: d.Size, Generation: d.Generation,
		Object: d.Object, Sealed: d.Sealed, Pid: d.Pid, Tid: d.Tid, UID: d.UID, Comm: d.Comm,
	}
}

// Close releases the enforcer; the guard stays pinned and enforcing.
func (c *companionEnforcer) Close() error {
	c.mu.Lock()
	enf := c.enf
	c.mu.Unlock()
	if enf == nil {
		return nil
	}
	return enf.Close()
}
