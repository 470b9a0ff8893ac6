package plugin

import (
	"crypto/ed25519"
	"errors"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/kmod"
)

// policy holds the allowlist in force and re-reads the file when it changes.
// A change is seen by a stat of the file (and of its .sig): inode, size,
// mtime and ctime. A new file that does not load, or whose signature does
// not verify when one is needed, is logged and the old allowlist stays.
type policy struct {
	path     string
	key      ed25519.PublicKey
	require  bool
	interval time.Duration
	log      logrus.FieldLogger
	now      func() time.Time

	cur atomic.Pointer[allowlist.Allowlist]

	mu        sync.Mutex // serializes checks
	nextCheck time.Time
	seen      [2]fileID // the allowlist file and its .sig

	// reloadFailures counts the changed files refused (they did not load
	// or their signature did not verify).
	reloadFailures atomic.Uint64
}

type fileID struct {
	ok               bool
	dev, ino         uint64
	size             int64
	mtimeNs, ctimeNs int64
}

func statID(path string) fileID {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}
	}
	id := fileID{ok: true, size: fi.Size(), mtimeNs: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(st.Dev), st.Ino
		id.ctimeNs = st.Ctim.Nano()
	}
	return id
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
	p := &policy{path: cfg.Allowlist, require: cfg.RequireSignature, interval: interval,
		log: log.WithField(logKeyAllowlist, cfg.Allowlist), now: time.Now}
	if cfg.PublicKey != "" {
		key, err := allowlist.LoadPublicKey(cfg.PublicKey)
		if err != nil {
			return nil, &ConfigError{Key: "public_key", Err: err}
		}
		p.key = key
	}
	p.seen = [2]fileID{statID(p.path), statID(p.path + ".sig")}
	a, err := p.load()
	if err != nil {
		return nil, &ConfigError{Key: "allowlist", Err: err}
	}
	p.cur.Store(a)
	p.nextCheck = p.now().Add(p.interval)
	return p, nil
}

func (p *policy) load() (*allowlist.Allowlist, error) {
	if p.key == nil {
		return allowlist.Load(p.path)
	}
	if !p.require {
		if _, err := os.Stat(p.path + ".sig"); errors.Is(err, fs.ErrNotExist) {
			p.log.Warn("allowlist has no signature; accepted because require_signature is false")
			return allowlist.Load(p.path)
		}
	}
	return allowlist.LoadVerified(p.path, p.key)
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
	return p.cur.Load()
}

func (p *policy) reloadIfChanged() {
	ids := [2]fileID{statID(p.path), statID(p.path + ".sig")}
	if ids == p.seen {
		return
	}
	p.seen = ids
	a, err := p.load()
	if err != nil {
		p.reloadFailures.Add(1)
		p.log.WithError(err).Error("new allowlist rejected; the previous one stays in force")
		return
	}
	p.cur.Store(a)
	p.log.WithField(logKeyEntries, len(a.Spec.Modules)).Info("allowlist reloaded")
}

// judge sets e.Allowed and e.AllowlistEntry from a. The names and digests
// are the event's own, so a recording made without an allowlist can be
// judged at replay. A sensor_loss event names no module and is not judged.
func judge(a *allowlist.Allowlist, e *event.Event) {
	if a == nil || e.Syscall == event.DeleteModule || e.Syscall == event.SensorLoss {
		return
	}
	// An image read only at sys_exit is what the caller's buffer held after
	// the load, and the loaded module's own init can rewrite that buffer:
	// such a load is never shown allowed, whatever the bytes match.
	if e.ImageAtExit {
		no := false
		e.Allowed, e.AllowlistEntry = &no, ""
		return
	}
	d := a.Match(&kmod.Module{
		Name:           e.Name,
		ThisModuleName: e.ThisModuleName,
		NameMismatch:   e.NameMismatch,
		FileSHA256:     e.SHA256,
		ELFSHA256:      e.ELFSHA256,
	})
	allowed := d.Allowed
	e.Allowed = &allowed
	e.AllowlistEntry = ""
	if d.Allowed && d.Entry != nil {
		e.AllowlistEntry = d.Entry.Name
	}
}
