package allowlist

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
)

// Source is an allowlist file that is kept in force: loaded once by
// NewSource, then read again by Reload (for example on SIGHUP) or by
// ReloadIfChanged when the file or its signature changed. A new version
// that does not load (parse, validate, and verify under the options)
// never replaces the allowlist in force; Failures counts them.
//
// The plugin, the enforcer daemon and `kmodguard watch` all keep their
// allowlist through a Source, so they share one signature rule (see
// LoadWith: a public key means a valid signature is required) and one
// notion of a changed file (FileID).
type Source struct {
	path string
	opts LoadOptions

	cur      atomic.Pointer[Allowlist]
	failures atomic.Uint64

	mu   sync.Mutex // serializes reloads
	seen [2]FileID  // the file and its signature, as last read
}

// NewSource loads the allowlist at path under opts.
func NewSource(path string, opts LoadOptions) (*Source, error) {
	s := &Source{path: path, opts: opts}
	s.seen = s.ids()
	a, err := LoadWith(path, opts)
	if err != nil {
		return nil, err
	}
	s.cur.Store(a)
	s.raise(a)
	return s, nil
}

// raise makes a's serial the floor of every later version: once a release
// is taken, the file cannot go back to an older one.
func (s *Source) raise(a *Allowlist) {
	if a.Metadata.Serial > s.opts.MinSerial {
		s.opts.MinSerial = a.Metadata.Serial
	}
}

// Serial is the highest serial this Source took (or was given as
// LoadOptions.MinSerial).
func (s *Source) Serial() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opts.MinSerial
}

// Path is the allowlist file.
func (s *Source) Path() string { return s.path }

// Current returns the allowlist in force.
func (s *Source) Current() *Allowlist { return s.cur.Load() }

// Failures counts the new versions refused since NewSource.
func (s *Source) Failures() uint64 { return s.failures.Load() }

func (s *Source) ids() [2]FileID { return [2]FileID{StatID(s.path), StatID(s.path + SigSuffix)} }

// Changed reports whether the file or its signature differs from the
// version last read.
func (s *Source) Changed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ids() != s.seen
}

// Reload reads the file again and puts it in force. On error the
// allowlist in force stays, and the error is counted in Failures.
func (s *Source) Reload() (*Allowlist, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reload()
}

// ReloadIfChanged reloads the file when it or its signature changed since
// it was last read; changed says whether it did.
func (s *Source) ReloadIfChanged() (a *Allowlist, changed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids() == s.seen {
		return s.cur.Load(), false, nil
	}
	a, err = s.reload()
	return a, true, err
}

func (s *Source) reload() (*Allowlist, error) {
	s.seen = s.ids()
	a, err := LoadWith(s.path, s.opts)
	if err != nil {
		s.failures.Add(1)
		return nil, fmt.Errorf("reload: %w", err)
	}
	s.cur.Store(a)
	s.raise(a)
	return a, nil
}

// FileID identifies a version of a file: a change of any part is a new
// version. A file replaced by rename (an editor's save, a Kubernetes
// ConfigMap's ..data swap) has a new inode even when its size and times
// are the same. The zero FileID is a file that does not exist.
type FileID struct {
	ok               bool
	dev, ino         uint64
	size             int64
	mtimeNs, ctimeNs int64
}

// StatID returns the FileID of path, following symbolic links.
func StatID(path string) FileID {
	fi, err := os.Stat(path)
	if err != nil {
		return FileID{}
	}
	id := FileID{ok: true, size: fi.Size(), mtimeNs: fi.ModTime().UnixNano()}
	id.dev, id.ino, id.ctimeNs = sysID(fi)
	return id
}
