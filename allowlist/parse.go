package allowlist

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// MaxFileSize bounds what Load and Parse accept. An allowlist for every
// module of a distribution kernel with two digests each is well under 2 MiB.
const MaxFileSize = 64 << 20

// maxErrors bounds how many problems one Parse reports.
const maxErrors = 50

// FieldError is one problem in an allowlist, located in its source.
type FieldError struct {
	Source string // file name; empty for allowlists built in code
	Line   int    // 1-based; 0 when unknown
	Field  string // e.g. spec.modules[3].sha256[0]; empty for the document
	Err    error
}

func (e *FieldError) Error() string {
	var b strings.Builder
	switch {
	case e.Source != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.Source, e.Line)
	case e.Source != "":
		b.WriteString(e.Source + ": ")
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *FieldError) Unwrap() error { return e.Err }

// errList collects FieldErrors up to maxErrors.
type errList struct {
	source string
	errs   []error
	more   int
}

func (l *errList) add(line int, field string, err error) {
	if len(l.errs) >= maxErrors {
		l.more++
		return
	}
	l.errs = append(l.errs, &FieldError{Source: l.source, Line: line, Field: field, Err: err})
}

func (l *errList) err() error {
	if len(l.errs) == 0 {
		return nil
	}
	errs := l.errs
	if l.more > 0 {
		errs = append(errs, fmt.Errorf("%s: %d more problems not shown", l.source, l.more))
	}
	return errors.Join(errs...)
}

// Load reads and strictly decodes an allowlist file. Errors name the file,
// the line and the field. Load does not check signatures: use LoadVerified
// or LoadWith where a signature is required.
func Load(path string) (*Allowlist, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, path)
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read allowlist: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read allowlist %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, &FieldError{Source: path, Err: fmt.Errorf("file is over the %d-byte limit", MaxFileSize)}
	}
	return data, nil
}

// reYAMLLine picks the line out of yaml.v3's syntax errors.
var reYAMLLine = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

func syntaxError(source string, err error) error {
	msg := err.Error()
	if m := reYAMLLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &FieldError{Source: source, Line: line, Err: fmt.Errorf("invalid YAML: %s", m[2])}
	}
	return &FieldError{Source: source, Err: fmt.Errorf("invalid YAML: %w", err)}
}

// decodeNode runs yaml.v3's parser, turning any panic in it into an error:
// hostile input must never take a consumer down.
func decodeNode(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: %v", r)
		}
	}()
	return dec.Decode(n)
}

// Parse strictly decodes and validates an allowlist. source names the input
// in error messages (a file name). All problems found are reported, each as
// a *FieldError, joined.
func Parse(data []byte, source string) (*Allowlist, error) {
	if source == "" {
		source = "allowlist"
	}
	if len(data) > MaxFileSize {
		return nil, &FieldError{Source: source, Err: fmt.Errorf("input is over the %d-byte limit", MaxFileSize)}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := decodeNode(dec, &doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &FieldError{Source: source, Err: errors.New("empty: no YAML document")}
		}
		return nil, syntaxError(source, err)
	}
	var extra yaml.Node
	switch err := decodeNode(dec, &extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, syntaxError(source, err)
	default:
		return nil, &FieldError{Source: source, Line: extra.Line, Err: errors.New("only one YAML document is allowed")}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, &FieldError{Source: source, Err: errors.New("empty: no YAML document")}
	}

	d := &decoder{errs: &errList{source: source}, lines: map[string]int{}}
	a := &Allowlist{source: source, parsed: bytes.Clone(data)}
	d.document(doc.Content[0], a)
	if err := d.errs.err(); err != nil {
		return nil, err
	}
	a.validate(d.errs, d.lines)
	if err := d.errs.err(); err != nil {
		return nil, err
	}
	a.Reindex()
	return a, nil
}

// decoder walks the YAML node tree by hand, so that it can refuse unknown
// keys, aliases and wrong shapes with the line and the field path.
type decoder struct {
	errs  *errList
	lines map[string]int // field path -> line, for validation messages
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return "a scalar"
	}
	return "empty"
}

// mapping returns the values of a mapping node by key, refusing unknown and
// duplicate keys, aliases and merge keys.
func (d *decoder) mapping(n *yaml.Node, field string, keys ...string) (map[string]*yaml.Node, bool) {
	d.lines[field] = n.Line
	if n.Kind != yaml.MappingNode {
		d.errs.add(n.Line, field, fmt.Errorf("must be a mapping, not %s", kindName(n)))
		return nil, false
	}
	out := make(map[string]*yaml.Node, len(keys))
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		sub := k.Value
		if field != "" {
			sub = field + "." + k.Value
		}
		if k.Kind != yaml.ScalarNode {
			d.errs.add(k.Line, field, fmt.Errorf("keys must be scalars, not %s", kindName(k)))
			continue
		}
		if k.Tag == "!!merge" {
			d.errs.add(k.Line, field, errors.New("merge keys (<<) are not allowed"))
			continue
		}
		known := false
		for _, want := range keys {
			if k.Value == want {
				known = true
				break
			}
		}
		if !known {
			d.errs.add(k.Line, sub, fmt.Errorf("unknown field (want one of %s)", strings.Join(keys, ", ")))
			continue
		}
		if prev, dup := out[k.Value]; dup {
			d.errs.add(k.Line, sub, fmt.Errorf("set twice (first on line %d)", prev.Line))
			continue
		}
		if v.Kind == yaml.AliasNode {
			d.errs.add(v.Line, sub, errors.New("aliases are not allowed"))
			continue
		}
		out[k.Value] = v
		d.lines[sub] = v.Line
	}
	return out, true
}

// scalar decodes a string value. Null is refused unless optional is set,
// in which case it reads as "".
func (d *decoder) scalar(n *yaml.Node, field string, optional bool) string {
	if n == nil {
		return ""
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" && optional {
		return ""
	}
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		d.errs.add(n.Line, field, fmt.Errorf("must be a string, not %s", kindName(n)))
		return ""
	}
	return n.Value
}

// boolean decodes a YAML boolean (true or false); absent or null is false.
func (d *decoder) boolean(n *yaml.Node, field string) bool {
	if n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null") {
		return false
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		d.errs.add(n.Line, field, fmt.Errorf("must be true or false, not %s %q", kindName(n), n.Value))
		return false
	}
	v, err := strconv.ParseBool(n.Value)
	if err != nil {
		// YAML 1.1 spellings (yes, on) are not booleans to yaml.v3.
		d.errs.add(n.Line, field, fmt.Errorf("must be true or false, not %q", n.Value))
	}
	return v
}

// autoload decodes spec.autoload: {deny: [pattern, ...]}.
func (d *decoder) autoload(n *yaml.Node, a *Allowlist) {
	al, ok := d.mapping(n, "spec.autoload", "deny")
	if !ok {
		return
	}
	deny := al["deny"]
	if deny == nil || (deny.Kind == yaml.ScalarNode && deny.Tag == "!!null") {
		return
	}
	if deny.Kind != yaml.SequenceNode {
		d.errs.add(deny.Line, "spec.autoload.deny", fmt.Errorf("must be a list of patterns, not %s", kindName(deny)))
		return
	}
	a.Spec.Autoload.Deny = make([]string, 0, len(deny.Content))
	for i, v := range deny.Content {
		field := fmt.Sprintf("spec.autoload.deny[%d]", i)
		d.lines[field] = v.Line
		if v.Kind == yaml.AliasNode {
			d.errs.add(v.Line, field, errors.New("aliases are not allowed"))
			continue
		}
		a.Spec.Autoload.Deny = append(a.Spec.Autoload.Deny, d.scalar(v, field, false))
	}
}

func (d *decoder) document(n *yaml.Node, a *Allowlist) {
	top, ok := d.mapping(n, "", "apiVersion", "kind", "metadata", "spec")
	if !ok {
		return
	}
	for _, f := range []string{"apiVersion", "kind", "spec"} {
		if top[f] == nil {
			d.errs.add(n.Line, f, errors.New("missing"))
		}
	}
	a.APIVersion = d.scalar(top["apiVersion"], "apiVersion", false)
	a.Kind = d.scalar(top["kind"], "kind", false)
	if m := top["metadata"]; m != nil {
		if md, ok := d.mapping(m, "metadata", "name", "serial", "notAfter"); ok {
			a.Metadata.Name = d.scalar(md["name"], "metadata.name", true)
			if n := md["serial"]; n != nil {
				v, err := strconv.ParseUint(d.scalar(n, "metadata.serial", false), 10, 64)
				if err != nil || n.Tag != "!!int" {
					d.errs.add(n.Line, "metadata.serial", fmt.Errorf("%q is not a whole number from 0 to 2^64-1", n.Value))
				}
				a.Metadata.Serial = v
			}
			if n := md["notAfter"]; n != nil {
				t, err := time.Parse(time.RFC3339, d.scalar(n, "metadata.notAfter", false))
				if err != nil {
					d.errs.add(n.Line, "metadata.notAfter", fmt.Errorf("%q is not an RFC 3339 time (2027-01-31T00:00:00Z)", n.Value))
				} else {
					a.Metadata.NotAfter = &t
				}
			}
		}
	}
	if s := top["spec"]; s != nil {
		d.spec(s, a)
	}
}

func (d *decoder) spec(n *yaml.Node, a *Allowlist) {
	spec, ok := d.mapping(n, "spec", "mode", "requireHostNamespaces", "requireModuleSignature", "autoload", "modules")
	if !ok {
		return
	}
	a.Spec.Mode = Mode(d.scalar(spec["mode"], "spec.mode", true))
	a.Spec.RequireHostNamespaces = d.boolean(spec["requireHostNamespaces"], "spec.requireHostNamespaces")
	a.Spec.RequireModuleSignature = d.boolean(spec["requireModuleSignature"], "spec.requireModuleSignature")
	if al := spec["autoload"]; al != nil && !(al.Kind == yaml.ScalarNode && al.Tag == "!!null") {
		d.autoload(al, a)
	}
	a.Spec.Modules = []Entry{}
	mods := spec["modules"]
	if mods == nil || (mods.Kind == yaml.ScalarNode && mods.Tag == "!!null") {
		return
	}
	if mods.Kind != yaml.SequenceNode {
		d.errs.add(mods.Line, "spec.modules", fmt.Errorf("must be a list, not %s", kindName(mods)))
		return
	}
	a.Spec.Modules = make([]Entry, 0, len(mods.Content))
	for i, m := range mods.Content {
		field := fmt.Sprintf("spec.modules[%d]", i)
		if m.Kind == yaml.AliasNode {
			d.errs.add(m.Line, field, errors.New("aliases are not allowed"))
			continue
		}
		e, ok := d.mapping(m, field, "name", "sha256", "kernel", "comment")
		if !ok {
			continue
		}
		if e["name"] == nil {
			d.errs.add(m.Line, field+".name", errors.New("missing"))
		}
		entry := Entry{
			Name:    d.scalar(e["name"], field+".name", false),
			Kernel:  d.scalar(e["kernel"], field+".kernel", true),
			Comment: d.scalar(e["comment"], field+".comment", true),
			line:    m.Line,
		}
		if s := e["sha256"]; s != nil && !(s.Kind == yaml.ScalarNode && s.Tag == "!!null") {
			if s.Kind != yaml.SequenceNode {
				d.errs.add(s.Line, field+".sha256", fmt.Errorf("must be a list of digests, not %s", kindName(s)))
			} else {
				entry.SHA256 = make([]string, 0, len(s.Content))
				for j, v := range s.Content {
					df := fmt.Sprintf("%s.sha256[%d]", field, j)
					d.lines[df] = v.Line
					entry.SHA256 = append(entry.SHA256, d.scalar(v, df, false))
				}
			}
		}
		a.Spec.Modules = append(a.Spec.Modules, entry)
	}
}
