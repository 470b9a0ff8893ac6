package allowlist

import (
	"slices"
	"sort"

	"github.com/kmodguard/kmodguard/kmod"
)

// Difference is what changed from one allowlist to another. Entries are
// keyed by normalized name and kernel.
type Difference struct {
	ModeFrom Mode          `json:"mode_from,omitempty"`
	ModeTo   Mode          `json:"mode_to,omitempty"`
	Added    []Entry       `json:"added,omitempty"`
	Removed  []Entry       `json:"removed,omitempty"`
	Changed  []EntryChange `json:"changed,omitempty"`
	// Require lists the spec's switches turned on (+name) or off (-name):
	// +requireHostNamespaces narrows the policy, -requireModuleSignature
	// widens it.
	Require []string `json:"require,omitempty"`
	// AutoloadDenyAdded and AutoloadDenyRemoved are spec.autoload.deny's
	// patterns (as written) that only one list has; a removal widens.
	AutoloadDenyAdded   []string `json:"autoload_deny_added,omitempty"`
	AutoloadDenyRemoved []string `json:"autoload_deny_removed,omitempty"`
}

// EntryChange is one entry present in both lists with other contents.
type EntryChange struct {
	Name          string   `json:"name"`
	Kernel        string   `json:"kernel,omitempty"`
	AddedSHA256   []string `json:"added_sha256,omitempty"`
	RemovedSHA256 []string `json:"removed_sha256,omitempty"`
	// NowNameOnly / NoLongerNameOnly flag the widening and narrowing of an
	// entry, which matter more than any single digest.
	NowNameOnly      bool   `json:"now_name_only,omitempty"`
	NoLongerNameOnly bool   `json:"no_longer_name_only,omitempty"`
	CommentFrom      string `json:"comment_from,omitempty"`
	CommentTo        string `json:"comment_to,omitempty"`
}

// Empty reports whether the lists are equivalent.
func (d *Difference) Empty() bool {
	return d.ModeFrom == d.ModeTo && len(d.Added) == 0 && len(d.Removed) == 0 && len(d.Changed) == 0 &&
		len(d.Require) == 0 && len(d.AutoloadDenyAdded) == 0 && len(d.AutoloadDenyRemoved) == 0
}

// Diff compares two allowlists. The result is sorted by name.
func Diff(from, to *Allowlist) *Difference {
	type key struct{ name, kernel string }
	keyOf := func(e *Entry) key { return key{kmod.NormalizeName(e.Name), e.Kernel} }
	old := make(map[key]*Entry, len(from.Spec.Modules))
	for i := range from.Spec.Modules {
		old[keyOf(&from.Spec.Modules[i])] = &from.Spec.Modules[i]
	}
	d := &Difference{}
	if from.Spec.Mode != to.Spec.Mode {
		d.ModeFrom, d.ModeTo = from.Spec.Mode, to.Spec.Mode
	}
	for _, sw := range []struct {
		name     string
		from, to bool
	}{
		{"requireHostNamespaces", from.Spec.RequireHostNamespaces, to.Spec.RequireHostNamespaces},
		{"requireModuleSignature", from.Spec.RequireModuleSignature, to.Spec.RequireModuleSignature},
	} {
		if sw.from != sw.to {
			d.Require = append(d.Require, map[bool]string{true: "+", false: "-"}[sw.to]+sw.name)
		}
	}
	// Patterns compare as the guard holds them (FoldPattern).
	has := func(list []string, p string) bool {
		return slices.ContainsFunc(list, func(q string) bool { return FoldPattern(q) == FoldPattern(p) })
	}
	for _, p := range to.Spec.Autoload.Deny {
		if !has(from.Spec.Autoload.Deny, p) {
			d.AutoloadDenyAdded = append(d.AutoloadDenyAdded, p)
		}
	}
	for _, p := range from.Spec.Autoload.Deny {
		if !has(to.Spec.Autoload.Deny, p) {
			d.AutoloadDenyRemoved = append(d.AutoloadDenyRemoved, p)
		}
	}
	seen := make(map[key]bool, len(to.Spec.Modules))
	for i := range to.Spec.Modules {
		n := &to.Spec.Modules[i]
		k := keyOf(n)
		seen[k] = true
		o, ok := old[k]
		if !ok {
			d.Added = append(d.Added, *n)
			continue
		}
		c := EntryChange{Name: n.Name, Kernel: n.Kernel}
		for _, s := range n.SHA256 {
			if !slices.Contains(o.SHA256, s) {
				c.AddedSHA256 = append(c.AddedSHA256, s)
			}
		}
		for _, s := range o.SHA256 {
			if !slices.Contains(n.SHA256, s) {
				c.RemovedSHA256 = append(c.RemovedSHA256, s)
			}
		}
		c.NowNameOnly = n.NameOnly() && !o.NameOnly()
		c.NoLongerNameOnly = o.NameOnly() && !n.NameOnly()
		if o.Comment != n.Comment {
			c.CommentFrom, c.CommentTo = o.Comment, n.Comment
		}
		if len(c.AddedSHA256)+len(c.RemovedSHA256) > 0 || c.CommentFrom != c.CommentTo {
			slices.Sort(c.AddedSHA256)
			slices.Sort(c.RemovedSHA256)
			d.Changed = append(d.Changed, c)
		}
	}
	for i := range from.Spec.Modules {
		if o := &from.Spec.Modules[i]; !seen[keyOf(o)] {
			d.Removed = append(d.Removed, *o)
		}
	}
	byName := func(x, y string) bool { return kmod.NormalizeName(x) < kmod.NormalizeName(y) }
	sort.SliceStable(d.Added, func(i, j int) bool { return byName(d.Added[i].Name, d.Added[j].Name) })
	sort.SliceStable(d.Removed, func(i, j int) bool { return byName(d.Removed[i].Name, d.Removed[j].Name) })
	sort.SliceStable(d.Changed, func(i, j int) bool { return byName(d.Changed[i].Name, d.Changed[j].Name) })
	return d
}
