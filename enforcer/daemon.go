//go:build linux

package enforcer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/internal/sdnotify"
	"github.com/kmodguard/kmodguard/internal/version"
	"github.com/kmodguard/kmodguard/lsm"
)

// DefaultPinDir is where the guard's maps and links are pinned.
const DefaultPinDir = lsm.DefaultPinDir

// ErrNotLoaded is returned when no guard is pinned.
var ErrNotLoaded = lsm.ErrNotLoaded

// Hooks names the guard's hooks, in the order Status lists them.
func Hooks() []string { return lsm.Hooks() }

// Supported reports why the guard cannot run on this kernel, or nil.
func Supported() error { return lsm.Supported() }

// engine is what the daemon and the companion service use of an Enforcer;
// their tests give them fakes.
type engine interface {
	Apply(a *allowlist.Allowlist) error
	Status() (Status, error)
	Allowlist() *allowlist.Allowlist
	Decisions() <-chan Message
	Close() error
}

var _ engine = (*Enforcer)(nil)

// DaemonConfig configures a Daemon.
type DaemonConfig struct {
	// Config configures the enforcer (pins, mode, seal, logger).
	Config
	// Allowlist is the allowlist file, loaded and verified.
	Allowlist *allowlist.Source
	// Poll is how often the daemon looks for changes to the file (and its
	// signature); one second when zero.
	Poll time.Duration
	// MetricsAddr serves Prometheus metrics on http://ADDR/metrics when set.
	MetricsAddr string
	// CompanionSocket serves the decisions to the Falco plugin on this Unix
	// socket when set.
	CompanionSocket string
}

// Daemon is `kmodguard enforcer run`: it keeps the guard enforcing the
// allowlist file, reloads the file on SIGHUP and when it changes, logs
// every decision, tells systemd (Type=notify) when the guard is in force,
// and serves metrics and decisions when configured to.
type Daemon struct {
	cfg    DaemonConfig
	log    logrus.FieldLogger
	enf    engine
	notify func(state string) (bool, error)
}

// NewDaemon loads the guard with the allowlist (or adopts the pinned guard
// and applies the allowlist to it). Close releases it; the guard stays
// pinned and enforcing.
func NewDaemon(cfg DaemonConfig) (*Daemon, error) {
	if cfg.Allowlist == nil {
		return nil, errors.New("enforcer daemon: no allowlist")
	}
	if cfg.Logger == nil {
		cfg.Logger = logrus.StandardLogger()
	}
	enf, err := Load(cfg.Config, cfg.Allowlist.Current())
	if err != nil {
		return nil, err
	}
	return newDaemon(cfg, enf), nil
}

func newDaemon(cfg DaemonConfig, enf engine) *Daemon {
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	return &Daemon{cfg: cfg, log: cfg.Logger, enf: enf, notify: sdnotify.Notify}
}

// Close releases the enforcer; the guard stays pinned and enforcing.
func (d *Daemon) Close() error { return d.enf.Close() }

// Run serves until ctx ends or SIGINT or SIGTERM arrives. It returns an
// error when the metrics server cannot start or the decision stream ends.
func (d *Daemon) Run(ctx context.Context) error {
	st, err := d.enf.Status()
	if err != nil {
		return err
	}
	d.log.WithFields(logrus.Fields{
		"allowlist": d.cfg.Allowlist.Path(), "mode": st.Mode, "generation": st.Generation,
		"entries": st.Entries, "sealed": st.Sealed, "pin_dir": st.PinDir, "version": version.Get().Version,
	}).Info("guard enforcing")

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	metrics, err := startMetrics(ctx, d.log, d.cfg.MetricsAddr, d.enf)
	if err != nil {
		return err
	}
	publish := func(Message) {}
	if d.cfg.CompanionSocket != "" {
		publish = serveRunning(ctx, d.log, d.cfg.CompanionSocket, d.enf)
	}
	// Under systemd (Type=notify), READY=1 is what releases the units
	// ordered after this one, modules-load and udev: every hook is
	// attached by now.
	d.sdNotify("READY=1\n" + statusLine(st))
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tick := time.NewTicker(d.cfg.Poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			d.sdNotify("STOPPING=1\nSTATUS=exiting: the guard stays pinned and enforcing")
			d.log.Info("exiting: the guard stays pinned and enforcing")
			return nil
		case <-hup:
			d.Reload("SIGHUP")
		case <-tick.C:
			if d.cfg.Allowlist.Changed() {
				d.Reload("file changed")
			}
		case m, ok := <-d.enf.Decisions():
			if !ok {
				return errors.New("the decision stream ended")
			}
			if dec, ok := m.(Decision); ok {
				// Reports are not: the enforcer logged them, at error level.
				logDecision(d.log, dec)
			}
			if metrics != nil {
				metrics.Observe(m)
			}
			publish(m)
		}
	}
}

// Reload reads the allowlist file again and applies it. A file that does
// not load (parse, validate, verify) or does not apply leaves the one in
// force: the error is logged, why names the trigger.
func (d *Daemon) Reload(why string) {
	l := d.log.WithFields(logrus.Fields{"allowlist": d.cfg.Allowlist.Path(), "trigger": why})
	a, err := d.cfg.Allowlist.Reload()
	if err != nil {
		l.WithError(err).Error("allowlist not reloaded: the one in force stays")
		return
	}
	if err := d.enf.Apply(a); err != nil {
		l.WithError(err).Error("allowlist not applied: the one in force stays")
		return
	}
	st, _ := d.enf.Status()
	l.WithFields(logrus.Fields{"generation": st.Generation, "entries": st.Entries, "mode": st.Mode}).Info("allowlist applied")
	d.sdNotify(statusLine(st))
}

// sdNotify sends state to the service manager. A failed notification is
// logged, not fatal: the guard is in force either way.
func (d *Daemon) sdNotify(state string) {
	if _, err := d.notify(state); err != nil {
		d.log.WithError(err).Warn("could not notify the service manager")
	}
}

func statusLine(st Status) string {
	return fmt.Sprintf("STATUS=enforcing: generation %d, %d entries, mode %s, sealed %v", st.Generation, st.Entries, st.Mode, st.Sealed)
}

// startMetrics serves the enforcer's Prometheus metrics on addr until ctx
// ends; it returns nil metrics when addr is empty (metrics are off by
// default).
func startMetrics(ctx context.Context, log logrus.FieldLogger, addr string, enf engine) (*Metrics, error) {
	if addr == "" {
		return nil, nil
	}
	m := NewMetrics(MetricsSource{Status: enf.Status, Allowlist: enf.Allowlist})
	bound, errc, err := ServeMetrics(ctx, addr, m.Handler())
	if err != nil {
		return nil, err
	}
	log.WithField("addr", bound.String()).Info("serving Prometheus metrics on /metrics")
	go func() {
		if err := <-errc; err != nil {
			log.WithError(err).Error("metrics server stopped")
		}
	}()
	return m, nil
}

// logDecision logs a decision of the guard: allowed at info level, the
// rest at warning level.
func logDecision(log logrus.FieldLogger, d Decision) {
	f := logrus.Fields{
		"op": d.Op, "verdict": d.Verdict, "pid": d.Pid, "tid": d.Tid, "comm": d.Comm,
		"uid": d.UID, "generation": d.Generation,
	}
	if d.IsLoad() {
		f["module"] = d.Name
		f["this_module"] = d.ThisModuleName
		f["sha256"] = d.SHA256
		f["size"] = d.Size
		if d.Entry != "" {
			f["entry"] = d.Entry
		}
		if d.NameMismatch {
			f["name_mismatch"] = true
		}
		if d.Compressed {
			f["compressed"] = true
		}
	} else {
		f["object"] = d.Object
	}
	l := log.WithFields(f)
	if d.Verdict == lsm.Allowed {
		l.Info(d.Reason)
		return
	}
	l.Warn(d.Reason)
}
