// Package allowlist is kmodguard's one source of truth: the list of kernel
// modules a host may load. The CLI builds, checks and signs it, the Falco
// plugin and the sensor match events against it, and the enforcer turns it
// into kernel maps.
//
// An allowlist is a small, versioned YAML document:
//
//	apiVersion: kmodguard.io/v1
//	kind: ModuleAllowlist
//	metadata:
//	  name: prod-hosts
//	spec:
//	  mode: enforce          # enforce | audit
//	  modules:
//	    - name: dummy
//	      sha256:            # the ELF image's digest and the file's (.ko.xz)
//	        - 5f0c...
//	        - 9ab1...
//	      kernel: 6.1.0-56-amd64
//	      comment: test NIC
//	    - name: veth         # no digest: matches on name alone (lint warns)
//
// Decoding is strict: unknown keys, aliases, duplicate keys and malformed
// values are errors that name the file, the line and the field. Matching
// (see [Allowlist.Match]) is O(1) per module through indexes built once per
// allowlist. Saving is atomic, and an allowlist can carry a detached ed25519
// signature in FILE.sig (see [LoadVerified]).
package allowlist

import (
	"encoding/hex"
	"errors"
	"fmt"
	"iter"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kmodguard/kmodguard/kmod"
)

// APIVersion and Kind identify an allowlist document.
const (
	APIVersion = "kmodguard.io/v1"
	Kind       = "ModuleAllowlist"
)

// Mode says what an enforcer does with a module that is not allowed.
type Mode string

const (
	// ModeEnforce refuses the load.
	ModeEnforce Mode = "enforce"
	// ModeAudit lets the load through and reports what enforce would have done.
	ModeAudit Mode = "audit"
)

// MaxNameLen is the longest module name the kernel accepts:
// MODULE_NAME_LEN (64 - sizeof(unsigned long)) minus the terminating NUL.
const MaxNameLen = 55

// Allowlist is one decoded allowlist document.
//
// An Allowlist is safe for concurrent Match calls. Code that edits
// Spec.Modules directly must call Reindex afterwards; Add and Remove do it
// themselves.
type Allowlist struct {
	APIVersion string   `yaml:"apiVersion" json:"apiVersion"`
	Kind       string   `yaml:"kind" json:"kind"`
	Metadata   Metadata `yaml:"metadata" json:"metadata"`
	Spec       Spec     `yaml:"spec" json:"spec"`

	source string                // file name for messages, set by Parse
	parsed []byte                // the bytes Parse read (see Signed)
	sig    []byte                // their detached signature, as given (see Signed)
	idx    atomic.Pointer[index] // built on first use
}

// Metadata names an allowlist, and says which release of it this is.
type Metadata struct {
	Name string `yaml:"name,omitempty" json:"name,omitempty"`
	// Serial numbers the releases of a signed allowlist: each release has
	// a greater one. A consumer refuses a list older than one it already
	// took (see [Allowlist.CheckFresh]), so that an old signed list (the
	// audit-mode one of a rollout, one that still admitted a banned
	// module) cannot be replayed. Zero is no serial.
	Serial uint64 `yaml:"serial,omitempty" json:"serial,omitempty"`
	// NotAfter, when set, is the time after which no consumer takes the
	// list any more: a signed list then expires even if nobody replaces it.
	NotAfter *time.Time `yaml:"notAfter,omitempty" json:"notAfter,omitempty"`
}

// ErrRollback is the error of a list older than one already taken.
var ErrRollback = errors.New("older than the allowlist already taken: a signed allowlist cannot be rolled back")

// ErrExpired is the error of a list past its notAfter.
var ErrExpired = errors.New("expired")

// CheckFresh refuses the list when its serial is below minSerial (the
// highest serial the consumer took before) or when now is past its
// notAfter. Equal serials pass: a consumer reads the same release again
// after a restart or a reload.
func (a *Allowlist) CheckFresh(minSerial uint64, now time.Time) error {
	if a.Metadata.Serial < minSerial {
		return fmt.Errorf("%s: serial %d: %w (serial %d was; publish a release with a serial of at least %d)",
			a.source, a.Metadata.Serial, ErrRollback, minSerial, minSerial)
	}
	if na := a.Metadata.NotAfter; na != nil && now.After(*na) {
		return fmt.Errorf("%s: %w at %s (metadata.notAfter): sign a new release", a.source, ErrExpired, na.UTC().Format(time.RFC3339))
	}
	return nil
}

// Spec is the policy: the mode and the modules.
type Spec struct {
	Mode Mode `yaml:"mode" json:"mode"`
	// RequireHostNamespaces refuses every load from a caller outside the
	// initial user and PID namespaces (a container, as far as namespaces
	// tell: the event field host_ns false), whatever the modules list.
	RequireHostNamespaces bool `yaml:"requireHostNamespaces,omitempty" json:"requireHostNamespaces,omitempty"`
	// RequireModuleSignature refuses every image that carries no appended
	// module signature (the event field signed false), whatever the
	// modules list. Whether a signature verifies is the kernel's check
	// (module.sig_enforce=1).
	RequireModuleSignature bool `yaml:"requireModuleSignature,omitempty" json:"requireModuleSignature,omitempty"`
	// Autoload governs the kernel's own module requests (request_module).
	Autoload Autoload `yaml:"autoload,omitempty" json:"autoload,omitzero"`
	Modules  []Entry  `yaml:"modules" json:"modules"`
}

// Entry admits one module name, optionally pinned to digests.
type Entry struct {
	// Name is the module name; '-' and '_' are the same character.
	Name string `yaml:"name" json:"name"`
	// SHA256 lists lowercase hex digests: a module matches when its file
	// digest or its ELF digest is listed. Empty means "by name alone".
	SHA256 []string `yaml:"sha256,omitempty" json:"sha256,omitempty"`
	// Kernel is the release the digests were taken on (informational).
	Kernel  string `yaml:"kernel,omitempty" json:"kernel,omitempty"`
	Comment string `yaml:"comment,omitempty" json:"comment,omitempty"`

	line int // where the entry starts in its source, 0 when unknown
}

// Line is the line of the entry in the file it was parsed from, or 0.
func (e *Entry) Line() int { return e.line }

// NameOnly reports whether the entry matches on the name alone.
func (e *Entry) NameOnly() bool { return len(e.SHA256) == 0 }

// New returns an empty, valid allowlist.
func New(name string, mode Mode) *Allowlist {
	return &Allowlist{
		APIVersion: APIVersion,
		Kind:       Kind,
		Metadata:   Metadata{Name: name},
		Spec:       Spec{Mode: mode, Modules: []Entry{}},
	}
}

// Source is the file name the allowlist was parsed from, or "".
func (a *Allowlist) Source() string { return a.source }

// ValidateName checks a module name against the kernel's rules: non-empty,
// at most MaxNameLen bytes, no '/', and only printable ASCII without spaces.
func ValidateName(name string) error {
	switch {
	case name == "":
		return errors.New("module name is empty")
	case len(name) > MaxNameLen:
		return fmt.Errorf("module name %q is %d bytes, over the kernel's %d", name, len(name), MaxNameLen)
	case strings.ContainsRune(name, '/'):
		return fmt.Errorf("module name %q contains '/'", name)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("module name %q contains the byte 0x%02x (not printable ASCII)", name, c)
		}
	}
	return nil
}

// NormalizeDigest checks a hex SHA-256 digest and returns it in lowercase.
func NormalizeDigest(d string) (string, error) {
	if len(d) != 2*32 {
		return "", fmt.Errorf("%q is not a hex SHA-256 digest (%d characters, want 64)", d, len(d))
	}
	if _, err := hex.DecodeString(d); err != nil {
		return "", fmt.Errorf("%q is not a hex SHA-256 digest", d)
	}
	return strings.ToLower(d), nil
}

// Validate checks an allowlist built in code, the same way Parse checks a
// file (without lines). It normalizes digests to lowercase in place.
func (a *Allowlist) Validate() error {
	errs := &errList{source: a.source}
	a.validate(errs, nil)
	a.Reindex()
	return errs.err()
}

// validate checks the decoded document. lines, when not nil, gives the line
// of each field path for messages.
func (a *Allowlist) validate(errs *errList, lines map[string]int) {
	at := func(field string) int { return lines[field] }
	if a.APIVersion != APIVersion {
		errs.add(at("apiVersion"), "apiVersion", fmt.Errorf("%q is not supported (want %q)", a.APIVersion, APIVersion))
	}
	if a.Kind != Kind {
		errs.add(at("kind"), "kind", fmt.Errorf("%q is not supported (want %q)", a.Kind, Kind))
	}
	switch a.Spec.Mode {
	case ModeEnforce, ModeAudit:
	case "":
		errs.add(at("spec"), "spec.mode", errors.New("missing (want enforce or audit)"))
	default:
		errs.add(at("spec.mode"), "spec.mode", fmt.Errorf("%q is not a mode (want enforce or audit)", a.Spec.Mode))
	}
	type key struct{ name, kernel string }
	seen := make(map[key]int, len(a.Spec.Modules))
	type digestOwner struct {
		name string // normalized
		i    int    // entry index
	}
	owner := make(map[string]digestOwner, 2*len(a.Spec.Modules))
	for i := range a.Spec.Modules {
		e := &a.Spec.Modules[i]
		field := fmt.Sprintf("spec.modules[%d]", i)
		if err := ValidateName(e.Name); err != nil {
			errs.add(at(field+".name"), field+".name", err)
		} else {
			k := key{kmod.NormalizeName(e.Name), e.Kernel}
			if j, dup := seen[k]; dup {
				prev := fmt.Sprintf("spec.modules[%d]", j)
				if l := a.Spec.Modules[j].line; l > 0 {
					prev += fmt.Sprintf(" (line %d)", l)
				}
				what := fmt.Sprintf("%q", e.Name)
				if e.Kernel != "" {
					what += fmt.Sprintf(" for kernel %q", e.Kernel)
				}
				errs.add(at(field+".name"), field+".name", fmt.Errorf("%s is listed twice: first at %s", what, prev))
			} else {
				seen[k] = i
			}
		}
		digests := make(map[string]int, len(e.SHA256))
		for j, d := range e.SHA256 {
			df := fmt.Sprintf("%s.sha256[%d]", field, j)
			nd, err := NormalizeDigest(d)
			if err != nil {
				errs.add(at(df), df, err)
				continue
			}
			if nd != d {
				e.SHA256[j] = nd // only when needed: Validate must not race with Match
			}
			if k, dup := digests[nd]; dup {
				errs.add(at(df), df, fmt.Errorf("digest %s is listed twice (also sha256[%d])", nd, k))
			}
			digests[nd] = j
			// One file has one name: a digest under two names is a mistake,
			// and the guard could not say which name it binds.
			if o, ok := owner[nd]; ok && o.name != kmod.NormalizeName(e.Name) {
				errs.add(at(df), df, fmt.Errorf("digest %s is also listed for %q (spec.modules[%d]); one file has one name", nd, a.Spec.Modules[o.i].Name, o.i))
			} else if !ok {
				owner[nd] = digestOwner{kmod.NormalizeName(e.Name), i}
			}
		}
		if strings.ContainsAny(e.Kernel, " \t\r\n/") {
			errs.add(at(field+".kernel"), field+".kernel", fmt.Errorf("%q is not a kernel release", e.Kernel))
		}
	}
	a.validateAutoload(errs, at)
}

// MatchKind says how a decision was reached.
type MatchKind string

const (
	MatchNone       MatchKind = ""
	MatchFileDigest MatchKind = "file-digest"
	MatchELFDigest  MatchKind = "elf-digest"
	MatchName       MatchKind = "name"
)

// Decision is the outcome of matching one module.
type Decision struct {
	Allowed bool `json:"allowed"`
	// Entry is the entry that admitted the module, or, for a module that is
	// refused, the entry of the same name whose digests did not match. It
	// is nil when no entry has the module's name.
	Entry *Entry `json:"entry,omitempty"`
	// Reason says why, in one sentence, naming the digest when it is the
	// digest that failed.
	Reason string `json:"reason"`
	// Via says what admitted the module.
	Via MatchKind `json:"via,omitempty"`
}

// index makes Match O(1).
type index struct {
	byName   map[string][]*Entry // normalized name -> entries
	byDigest map[string][]*Entry // lowercase hex digest -> entries
	nameOnly map[string]*Entry   // normalized name -> first name-only entry
}

// Reindex rebuilds the match indexes after Spec.Modules was edited directly.
func (a *Allowlist) Reindex() { a.idx.Store(buildIndex(a.Spec.Modules)) }

func (a *Allowlist) index() *index {
	if x := a.idx.Load(); x != nil {
		return x
	}
	x := buildIndex(a.Spec.Modules)
	a.idx.CompareAndSwap(nil, x)
	return a.idx.Load()
}

func buildIndex(mods []Entry) *index {
	x := &index{
		byName:   make(map[string][]*Entry, len(mods)),
		byDigest: make(map[string][]*Entry, 2*len(mods)),
		nameOnly: make(map[string]*Entry),
	}
	for i := range mods {
		e := &mods[i]
		n := kmod.NormalizeName(e.Name)
		x.byName[n] = append(x.byName[n], e)
		if e.NameOnly() {
			if _, ok := x.nameOnly[n]; !ok {
				x.nameOnly[n] = e
			}
		}
		for _, d := range e.SHA256 {
			d = strings.ToLower(d)
			x.byDigest[d] = append(x.byDigest[d], e)
		}
	}
	return x
}

// Match decides whether a module may load. A module is admitted when both
// of its names (.modinfo name= and struct module.name) equal an entry's
// name, and either its file digest or its ELF digest is listed in that
// entry, or the entry lists no digest at all. An entry's name is folded as
// modprobe folds it ("snd-hda-intel" is "snd_hda_intel"), but the module's
// names are taken as the kernel registers them: kbuild never leaves a '-'
// in them, and a module that calls itself "nf-tables" is, to the kernel,
// not nf_tables (it loads beside the real one), so no entry admits it. A
// module whose two names differ is never admitted.
func (a *Allowlist) Match(m *kmod.Module) Decision {
	if m == nil {
		return Decision{Reason: "no module"}
	}
	name, this := m.Name, m.ThisModuleName
	switch {
	case name == "" && this == "":
		return Decision{Reason: "module has no name (neither .modinfo name= nor struct module.name)"}
	case name == "":
		return Decision{Reason: fmt.Sprintf("module %q has no .modinfo name=", this)}
	case this == "":
		return Decision{Reason: fmt.Sprintf("module %q has no struct module.name", name)}
	}
	n := name
	if m.NameMismatch || n != this {
		return Decision{Reason: fmt.Sprintf("name mismatch: .modinfo name=%q but struct module.name=%q (a forgery signal)", name, this)}
	}
	if strings.IndexByte(n, '-') >= 0 {
		return Decision{Reason: fmt.Sprintf("module name %q has a '-': kbuild never makes one, and the kernel would register it beside %q", name, kmod.NormalizeName(name))}
	}
	x := a.index()
	entries := x.byName[n]
	if len(entries) == 0 {
		return Decision{Reason: fmt.Sprintf("no entry for %q", name)}
	}
	file, elf := strings.ToLower(m.FileSHA256), strings.ToLower(m.ELFSHA256)
	for _, c := range [...]struct {
		digest string
		via    MatchKind
	}{{file, MatchFileDigest}, {elf, MatchELFDigest}} {
		if c.digest == "" {
			continue
		}
		for _, e := range x.byDigest[c.digest] {
			if fold(e.Name) == n {
				what := "file "
				switch {
				case file == elf:
					what = ""
				case c.via == MatchELFDigest:
					what = "ELF "
				}
				return Decision{Allowed: true, Entry: e, Via: c.via,
					Reason: fmt.Sprintf("%ssha256 %s of %s is listed for %q", what, c.digest, name, e.Name)}
			}
		}
	}
	if e := x.nameOnly[n]; e != nil {
		return Decision{Allowed: true, Entry: e, Via: MatchName,
			Reason: fmt.Sprintf("entry %q lists no digest: allowed by name alone", e.Name)}
	}
	e := entries[0]
	switch {
	case file == "" && elf == "":
		return Decision{Entry: e, Reason: fmt.Sprintf("%s has no digest, and the entry %q requires one", name, e.Name)}
	case file == elf || elf == "":
		return Decision{Entry: e, Reason: fmt.Sprintf("sha256 %s of %s is not listed for %q", file, name, e.Name)}
	case file == "":
		return Decision{Entry: e, Reason: fmt.Sprintf("ELF sha256 %s of %s is not listed for %q", elf, name, e.Name)}
	default:
		return Decision{Entry: e, Reason: fmt.Sprintf("neither file sha256 %s nor ELF sha256 %s of %s is listed for %q", file, elf, name, e.Name)}
	}
}

// fold is kmod.NormalizeName without an allocation for the common name
// that has no '-'.
func fold(name string) string {
	if strings.IndexByte(name, '-') < 0 {
		return name
	}
	return kmod.NormalizeName(name)
}

// Lookup returns the entries with a name (after '-'/'_' folding), for
// consumers that only know a name, such as delete_module events.
func (a *Allowlist) Lookup(name string) []*Entry {
	return slices.Clone(a.index().byName[kmod.NormalizeName(name)])
}

// Digests yields every listed digest (decoded) with its entry, for the
// enforcer's kernel maps. A digest listed in several entries is yielded once
// per entry.
func (a *Allowlist) Digests() iter.Seq2[[32]byte, *Entry] {
	return func(yield func([32]byte, *Entry) bool) {
		for i := range a.Spec.Modules {
			e := &a.Spec.Modules[i]
			for _, d := range e.SHA256 {
				var sum [32]byte
				if n, err := hex.Decode(sum[:], []byte(d)); err != nil || n != len(sum) {
					continue // Validate refuses these
				}
				if !yield(sum, e) {
					return
				}
			}
		}
	}
}

// NameOnlyEntries yields the entries that match on the name alone.
func (a *Allowlist) NameOnlyEntries() iter.Seq[*Entry] {
	return func(yield func(*Entry) bool) {
		for i := range a.Spec.Modules {
			if e := &a.Spec.Modules[i]; e.NameOnly() && !yield(e) {
				return
			}
		}
	}
}

// Names returns the distinct module names, sorted, in their normalized
// ('_') form.
func (a *Allowlist) Names() []string {
	names := make([]string, 0, len(a.Spec.Modules))
	for n := range a.index().byName {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Add merges an entry into the allowlist: into the entry with the same name
// (after folding) and kernel when there is one, as a new entry otherwise. A
// name-only entry stays name-only. It reports whether anything changed.
func (a *Allowlist) Add(e Entry) (bool, error) {
	if err := ValidateName(e.Name); err != nil {
		return false, err
	}
	digests := make([]string, 0, len(e.SHA256))
	for _, d := range e.SHA256 {
		nd, err := NormalizeDigest(d)
		if err != nil {
			return false, err
		}
		if !slices.Contains(digests, nd) {
			digests = append(digests, nd)
		}
	}
	e.SHA256, e.line = digests, 0
	defer a.Reindex()
	n := kmod.NormalizeName(e.Name)
	for i := range a.Spec.Modules {
		old := &a.Spec.Modules[i]
		if kmod.NormalizeName(old.Name) != n || old.Kernel != e.Kernel {
			continue
		}
		if old.NameOnly() {
			return false, nil
		}
		changed := false
		for _, d := range e.SHA256 {
			if !slices.Contains(old.SHA256, d) {
				old.SHA256 = append(old.SHA256, d)
				changed = true
			}
		}
		if e.NameOnly() {
			// An explicit name-only entry widens the old one.
			old.SHA256, changed = nil, true
		}
		if e.Comment != "" && e.Comment != old.Comment {
			old.Comment, changed = e.Comment, true
		}
		return changed, nil
	}
	a.Spec.Modules = append(a.Spec.Modules, e)
	return true, nil
}

// Remove deletes every entry with the name (after folding), or only the one
// for kernel when kernel is not empty. It returns how many it removed.
func (a *Allowlist) Remove(name, kernel string) int {
	n := kmod.NormalizeName(name)
	before := len(a.Spec.Modules)
	a.Spec.Modules = slices.DeleteFunc(a.Spec.Modules, func(e Entry) bool {
		return kmod.NormalizeName(e.Name) == n && (kernel == "" || e.Kernel == kernel)
	})
	a.Reindex()
	return before - len(a.Spec.Modules)
}

// Sort puts the entries in the order Save writes them: by normalized name,
// then kernel, with each entry's digests sorted.
func (a *Allowlist) Sort() {
	for i := range a.Spec.Modules {
		slices.Sort(a.Spec.Modules[i].SHA256)
	}
	slices.SortStableFunc(a.Spec.Modules, func(x, y Entry) int {
		if c := strings.Compare(kmod.NormalizeName(x.Name), kmod.NormalizeName(y.Name)); c != 0 {
			return c
		}
		return strings.Compare(x.Kernel, y.Kernel)
	})
	a.Reindex()
}
