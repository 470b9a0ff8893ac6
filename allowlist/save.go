package allowlist

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"gopkg.in/yaml.v3"
)

// Marshal encodes the allowlist as YAML, deterministically: entries sorted
// by normalized name then kernel, digests sorted. It validates first and
// does not modify a.
func Marshal(a *Allowlist) ([]byte, error) {
	c := a.clone()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("refusing to write an invalid allowlist: %w", err)
	}
	c.Sort()
	var buf bytes.Buffer
	buf.WriteString("# kmodguard module allowlist. Check it with: kmodguard allowlist lint FILE\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c.doc()); err != nil {
		return nil, fmt.Errorf("encode allowlist: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode allowlist: %w", err)
	}
	return buf.Bytes(), nil
}

// doc is the value yaml.v3 encodes: the same fields, with block-style
// digest lists (one per line reads and diffs better than a flow list).
func (a *Allowlist) doc() any {
	type entry struct {
		Name    string   `yaml:"name"`
		SHA256  []string `yaml:"sha256,omitempty"`
		Kernel  string   `yaml:"kernel,omitempty"`
		Comment string   `yaml:"comment,omitempty"`
	}
	type spec struct {
		Mode                   Mode     `yaml:"mode"`
		RequireHostNamespaces  bool     `yaml:"requireHostNamespaces,omitempty"`
		RequireModuleSignature bool     `yaml:"requireModuleSignature,omitempty"`
		Autoload               Autoload `yaml:"autoload,omitempty"`
		Modules                []entry  `yaml:"modules"`
	}
	type doc struct {
		APIVersion string   `yaml:"apiVersion"`
		Kind       string   `yaml:"kind"`
		Metadata   Metadata `yaml:"metadata"`
		Spec       spec     `yaml:"spec"`
	}
	out := doc{APIVersion: a.APIVersion, Kind: a.Kind, Metadata: a.Metadata,
		Spec: spec{Mode: a.Spec.Mode, RequireHostNamespaces: a.Spec.RequireHostNamespaces,
			RequireModuleSignature: a.Spec.RequireModuleSignature, Autoload: a.Spec.Autoload,
			Modules: make([]entry, len(a.Spec.Modules))}}
	for i, e := range a.Spec.Modules {
		out.Spec.Modules[i] = entry{e.Name, e.SHA256, e.Kernel, e.Comment}
	}
	return out
}

// clone deep-copies the document (not the index).
func (a *Allowlist) clone() *Allowlist {
	c := &Allowlist{APIVersion: a.APIVersion, Kind: a.Kind, Metadata: a.Metadata, source: a.source}
	c.Spec.Mode = a.Spec.Mode
	c.Spec.RequireHostNamespaces, c.Spec.RequireModuleSignature = a.Spec.RequireHostNamespaces, a.Spec.RequireModuleSignature
	c.Spec.Autoload.Deny = slices.Clone(a.Spec.Autoload.Deny)
	c.Spec.Modules = make([]Entry, len(a.Spec.Modules))
	for i, e := range a.Spec.Modules {
		e.SHA256 = slices.Clone(e.SHA256)
		c.Spec.Modules[i] = e
	}
	return c
}

// Save writes the allowlist atomically: to a temporary file in the same
// directory, synced, renamed over path, and the directory synced. Readers
// see the old file or the new one, never a mix. An existing file keeps its
// permissions; a new one gets 0644.
func Save(path string, a *Allowlist) error {
	data, err := Marshal(a)
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, data, 0o644)
}

// WriteFileAtomic replaces path with data the way Save does. perm applies
// when path does not exist yet.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	if fi, err := os.Stat(path); err == nil {
		perm = fi.Mode().Perm()
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = tmp.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: sync: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write %s: open directory: %w", path, err)
	}
	defer d.Close()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("write %s: sync directory: %w", path, err)
	}
	return nil
}
