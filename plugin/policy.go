package plugin

import (
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/kmodguard/kmodguard/allowlist"
)

// policy holds the allowlist in force (an allowlist.Source) and looks for
// a changed file at most once per check interval, from the event path. A
// new file that does not load, or whose signature does not verify, is
// logged and the old allowlist stays.
type policy struct {
	src      *allowlist.Source
	interval time.Duration
	log      logrus.FieldLogger
	now      func() time.Time

	mu        sync.Mutex // serializes checks
	nextCheck time.Time
}

// newPolicy loads the allowlist of cfg. With no allowlist configured it
// returns nil: every event then keeps whatever Allowed the sensor set.
func newPolicy(cfg *Config, log logrus.FieldLogger) (*policy, error) {
	if cfg.Allowlist == "" {
		return nil, nil
	}
	interval, err := cfg.checkInterval()
	if err != nil {
		return nil, err
	}
	opts := allowlist.LoadOptions{RequireSignature: cfg.RequireSignature}
	if cfg.PublicKey != "" {
		key, err := allowlist.LoadPublicKey(cfg.PublicKey)
		if err != nil {
			return nil, &ConfigError{Key: "public_key", Err: err}
		}
		opts.PublicKey = key
	}
	src, err := allowlist.NewSource(cfg.Allowlist, opts)
	if err != nil {
		return nil, &ConfigError{Key: "allowlist", Err: err}
	}
	p := &policy{src: src, interval: interval, log: log.WithField(logKeyAllowlist, cfg.Allowlist), now: time.Now}
	p.nextCheck = p.now().Add(p.interval)
	return p, nil
}

// Current returns the allowlist in force, first re-reading the file when the
// check interval has passed and the file changed. It is cheap enough to call
// once per batch: most calls only read the clock.
func (p *policy) Current() *allowlist.Allowlist {
	if p == nil {
		return nil
	}
	now := p.now()
	if p.mu.TryLock() {
		if !now.Before(p.nextCheck) {
			p.nextCheck = now.Add(p.interval)
			p.reloadIfChanged()
		}
		p.mu.Unlock()
	}
	return p.src.Current()
}

func (p *policy) reloadIfChanged() {
	a, changed, err := p.src.ReloadIfChanged()
	switch {
	case err != nil:
		p.log.WithError(err).Error("new allowlist rejected; the previous one stays in force")
	case changed:
		p.log.WithField(logKeyEntries, len(a.Spec.Modules)).Info("allowlist reloaded")
	}
}
