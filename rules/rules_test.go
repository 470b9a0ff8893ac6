package rules

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/kmodguard/kmodguard/plugin"
)

// item is one top-level entry of a Falco rules file.
type item struct {
	RequiredEngineVersion  string `yaml:"required_engine_version"`
	RequiredPluginVersions []struct {
		Name    string `yaml:"name"`
		Version string `yaml:"version"`
	} `yaml:"required_plugin_versions"`
	List      string   `yaml:"list"`
	Items     []string `yaml:"items"`
	Macro     string   `yaml:"macro"`
	Rule      string   `yaml:"rule"`
	Desc      string   `yaml:"desc"`
	Condition string   `yaml:"condition"`
	Output    string   `yaml:"output"`
	Priority  string   `yaml:"priority"`
	Source    string   `yaml:"source"`
	Tags      []string `yaml:"tags"`
}

type ruleset struct {
	engine  string
	plugins map[string]string
	lists   map[string][]string
	macros  map[string]string
	rules   []item
}

func load(t *testing.T) *ruleset {
	t.Helper()
	var items []item
	dec := yaml.NewDecoder(bytes.NewReader(YAML))
	dec.KnownFields(true)
	if err := dec.Decode(&items); err != nil {
		t.Fatalf("kmodguard_rules.yaml: %v", err)
	}
	rs := &ruleset{plugins: map[string]string{}, lists: map[string][]string{}, macros: map[string]string{}}
	for _, it := range items {
		switch {
		case it.RequiredEngineVersion != "":
			rs.engine = it.RequiredEngineVersion
		case it.RequiredPluginVersions != nil:
			for _, p := range it.RequiredPluginVersions {
				rs.plugins[p.Name] = p.Version
			}
		case it.List != "":
			if _, dup := rs.lists[it.List]; dup {
				t.Errorf("list %s defined twice", it.List)
			}
			rs.lists[it.List] = it.Items
		case it.Macro != "":
			if _, dup := rs.macros[it.Macro]; dup {
				t.Errorf("macro %s defined twice", it.Macro)
			}
			rs.macros[it.Macro] = it.Condition
		case it.Rule != "":
			rs.rules = append(rs.rules, it)
		default:
			t.Errorf("unknown entry %+v", it)
		}
	}
	return rs
}

func fieldNames() map[string]bool {
	m := map[string]bool{}
	for _, f := range plugin.New().Fields() {
		m[f.Name] = true
	}
	return m
}

func TestRulesLint(t *testing.T) {
	rs := load(t)
	if rs.engine == "" {
		t.Error("no required_engine_version")
	}
	if v := rs.plugins[plugin.Name]; v != plugin.Version {
		t.Errorf("required_plugin_versions: kmodguard %q, want %q", v, plugin.Version)
	}
	fields := fieldNames()
	used := map[string]bool{}
	check := func(where, cond string) {
		if _, err := parse(cond, rs, used, fields); err != nil {
			t.Errorf("%s: %v", where, err)
		}
	}
	for name, cond := range rs.macros {
		check("macro "+name, cond)
	}
	for name, items := range rs.lists {
		for _, it := range items {
			if _, ok := rs.lists[it]; ok {
				used[it] = true
			} else if strings.HasPrefix(it, "kmodguard_") {
				t.Errorf("list %s: %s is not a defined list", name, it)
			}
		}
	}
	priorities := []string{"EMERGENCY", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE", "INFORMATIONAL", "DEBUG"}
	outField := regexp.MustCompile(`%([a-z]+\.[a-z_0-9.]+)`)
	mitre := map[string]bool{}
	for _, r := range rs.rules {
		where := "rule " + r.Rule
		if r.Desc == "" || r.Condition == "" || r.Output == "" || r.Priority == "" {
			t.Errorf("%s: needs desc, condition, output and priority", where)
		}
		if r.Source != plugin.EventSource {
			t.Errorf("%s: source %q, want %q", where, r.Source, plugin.EventSource)
		}
		if !slices.Contains(priorities, r.Priority) {
			t.Errorf("%s: priority %q", where, r.Priority)
		}
		if !slices.Contains(r.Tags, "kmodguard") || !slices.ContainsFunc(r.Tags, func(s string) bool { return strings.HasPrefix(s, "mitre_") }) ||
			!slices.ContainsFunc(r.Tags, func(s string) bool { return regexp.MustCompile(`^T\d{4}(\.\d{3})?$`).MatchString(s) }) {
			t.Errorf("%s: tags %v need kmodguard, a mitre_ tactic and a T technique", where, r.Tags)
		}
		for _, tag := range r.Tags {
			mitre[tag] = true
		}
		check(where, r.Condition)
		for _, m := range outField.FindAllStringSubmatch(r.Output, -1) {
			if !fields[m[1]] {
				t.Errorf("%s: output uses unknown field %s", where, m[1])
			}
		}
		if strings.Contains(r.Condition, "kmod.syscall = sensor_loss") {
			// A loss report has no process or module: it says how many
			// events were lost, and nothing else.
			for _, f := range []string{"%kmod.lost", "%kmod.throttled"} {
				if !strings.Contains(r.Output, f) {
					t.Errorf("%s: output lacks %s", where, f)
				}
			}
			continue
		}
		if strings.Contains(r.Condition, "kmod.syscall = hidden") {
			// A hidden module has no caller (a scan found it): what it
			// is, where it is, and where it was seen and not.
			for _, f := range []string{"name", "module_addr", "hidden", "syscall"} {
				if !strings.Contains(r.Output, "%kmod."+f+" ") && !strings.HasSuffix(strings.TrimRight(r.Output, ")\n"), "%kmod."+f) {
					t.Errorf("%s: output lacks %%kmod.%s", where, f)
				}
			}
			continue
		}
		if strings.HasPrefix(r.Condition, "kmodguard_present ") {
			// A module already loaded has no caller: what it is, what
			// the kernel says of it, and which file it was tied to.
			for _, f := range []string{"name", "this_module_name", "syscall", "sha256", "path", "taint", "inventory"} {
				if !strings.Contains(r.Output, "%kmod."+f+" ") && !strings.HasSuffix(strings.TrimRight(r.Output, ")\n"), "%kmod."+f) {
					t.Errorf("%s: output lacks %%kmod.%s", where, f)
				}
			}
			continue
		}
		// Who, what and where, in every alert; the digest and the
		// registered name where there is an image (a delete_module has
		// only the name asked for, and would print <NA> for them).
		want := []string{"uid", "loginuid", "comm", "exe", "cmdline", "ppid", "name", "syscall", "res",
			"container_id", "cgroup", "host_ns"}
		if strings.HasPrefix(r.Condition, "kmodguard_autoload ") {
			// A request names an alias, has no image and no result.
			want = slices.DeleteFunc(want, func(f string) bool { return f == "res" })
		} else if strings.HasPrefix(r.Condition, "kmodguard_autoload_denied ") {
			// The guard's refusal of a request: an alias, no image; its
			// result is the hook's.
		} else if strings.HasPrefix(r.Condition, "kmodguard_kernel_load ") {
			// The kernel's own record: its name, address, verdict and
			// taints; no image and no result (the load syscall's event
			// has those).
			want = append(slices.DeleteFunc(want, func(f string) bool { return f == "res" }), "sig_ok", "taint", "module_addr")
		} else if !strings.HasPrefix(r.Condition, "kmodguard_unload ") {
			want = append(want, "this_module_name", "sha256")
		} else {
			for _, f := range []string{"%kmod.this_module_name", "%kmod.sha256"} {
				if strings.Contains(r.Output, f) {
					t.Errorf("%s: output prints %s, which a delete_module never has", where, f)
				}
			}
		}
		for _, f := range want {
			if !strings.Contains(r.Output, "%kmod."+f+" ") && !strings.HasSuffix(strings.TrimRight(r.Output, ")\n"), "%kmod."+f) {
				t.Errorf("%s: output lacks %%kmod.%s", where, f)
			}
		}
	}
	for _, tag := range []string{"T1547.006", "T1014", "mitre_persistence", "mitre_defense_evasion"} {
		if !mitre[tag] {
			t.Errorf("no rule is tagged %s", tag)
		}
	}
	for name := range rs.lists {
		if !used[name] {
			t.Errorf("list %s is never used", name)
		}
	}
	for name := range rs.macros {
		if !used[name] {
			t.Errorf("macro %s is never used", name)
		}
	}
}

// TestRulesFire evaluates every rule, with a small evaluator of the Falco
// condition syntax the file uses, on events extracted through the plugin,
// and checks which rules fire.
func TestRulesFire(t *testing.T) {
	rs := load(t)
	fields := fieldNames()
	compiled := map[string]node{}
	for _, r := range rs.rules {
		n, err := parse(r.Condition, rs, map[string]bool{}, fields)
		if err != nil {
			t.Fatalf("rule %s: %v", r.Rule, err)
		}
		compiled[r.Rule] = n
	}
	for _, tc := range scenarios {
		t.Run(tc.name, func(t *testing.T) {
			f := extract(t, tc.event)
			var fired []string
			for _, r := range rs.rules {
				if compiled[r.Rule].eval(f) {
					fired = append(fired, r.Rule)
				}
			}
			sort.Strings(fired)
			want := slices.Clone(tc.want)
			sort.Strings(want)
			if !slices.Equal(fired, want) {
				t.Errorf("fired %q\nwant  %q", fired, want)
			}
		})
	}
	// Every rule fires in some scenario.
	seen := map[string]bool{}
	for _, tc := range scenarios {
		for _, w := range tc.want {
			seen[w] = true
		}
	}
	for _, r := range rs.rules {
		if !seen[r.Rule] {
			t.Errorf("no scenario fires rule %q", r.Rule)
		}
	}
}

// --- A small evaluator of Falco conditions --------------------------------

type node interface {
	eval(f map[string]any) bool
}

type (
	andNode []node
	orNode  []node
	notNode struct{ n node }
	cmpNode struct{ field, op, value string }
	setNode struct {
		field, op string
		values    []string
	}
	existsNode struct{ field string }
)

func (n andNode) eval(f map[string]any) bool {
	for _, c := range n {
		if !c.eval(f) {
			return false
		}
	}
	return true
}

func (n orNode) eval(f map[string]any) bool {
	for _, c := range n {
		if c.eval(f) {
			return true
		}
	}
	return false
}

func (n notNode) eval(f map[string]any) bool    { return !n.n.eval(f) }
func (n existsNode) eval(f map[string]any) bool { _, ok := f[n.field]; return ok }

// strs renders a field value as Falco compares it: as strings.
func strs(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []string:
		return v
	case bool:
		return []string{strconv.FormatBool(v)}
	case uint64:
		return []string{strconv.FormatUint(v, 10)}
	}
	return nil
}

func (n cmpNode) eval(f map[string]any) bool {
	v, ok := f[n.field]
	if !ok {
		return false // Falco: a field without a value fails every comparison
	}
	s := strs(v)
	if len(s) != 1 {
		return false
	}
	switch n.op {
	case "=":
		return s[0] == n.value
	case "!=":
		return s[0] != n.value
	case "contains":
		return strings.Contains(s[0], n.value)
	case "startswith":
		return strings.HasPrefix(s[0], n.value)
	case "endswith":
		return strings.HasSuffix(s[0], n.value)
	case "<", "<=", ">", ">=":
		// Falco compares numeric fields as numbers.
		x, ok := v.(uint64)
		y, err := strconv.ParseUint(n.value, 10, 64)
		if !ok || err != nil {
			return false
		}
		switch n.op {
		case "<":
			return x < y
		case "<=":
			return x <= y
		case ">":
			return x > y
		default:
			return x >= y
		}
	}
	return false
}

func (n setNode) eval(f map[string]any) bool {
	v, ok := f[n.field]
	if !ok {
		return false
	}
	s := strs(v)
	switch n.op {
	case "in": // every value of the field is in the set
		for _, x := range s {
			if !slices.Contains(n.values, x) {
				return false
			}
		}
		return len(s) > 0
	case "intersects":
		for _, x := range s {
			if slices.Contains(n.values, x) {
				return true
			}
		}
	}
	return false
}

var tokenRE = regexp.MustCompile(`"[^"]*"|'[^']*'|!=|<=|>=|[()=<>,]|[^\s(),=<>!]+`)

type parser struct {
	toks   []string
	pos    int
	rs     *ruleset
	used   map[string]bool
	fields map[string]bool
	depth  int
}

// parse compiles a condition, expanding macros and lists, and records the
// macros and lists it uses. Unknown fields, macros and lists are errors.
func parse(cond string, rs *ruleset, used, fields map[string]bool) (node, error) {
	p := &parser{toks: tokenRE.FindAllString(cond, -1), rs: rs, used: used, fields: fields}
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.pos != len(p.toks) {
		return nil, fmt.Errorf("unexpected %q", p.toks[p.pos])
	}
	return n, nil
}

func (p *parser) peek() string {
	if p.pos < len(p.toks) {
		return p.toks[p.pos]
	}
	return ""
}

func (p *parser) next() string { t := p.peek(); p.pos++; return t }

func (p *parser) or() (node, error) {
	var out orNode
	for {
		n, err := p.and()
		if err != nil {
			return nil, err
		}
		out = append(out, n)
		if p.peek() != "or" {
			break
		}
		p.next()
	}
	if len(out) == 1 {
		return out[0], nil
	}
	return out, nil
}

func (p *parser) and() (node, error) {
	var out andNode
	for {
		n, err := p.not()
		if err != nil {
			return nil, err
		}
		out = append(out, n)
		if p.peek() != "and" {
			break
		}
		p.next()
	}
	if len(out) == 1 {
		return out[0], nil
	}
	return out, nil
}

func (p *parser) not() (node, error) {
	if p.peek() == "not" {
		p.next()
		n, err := p.not()
		if err != nil {
			return nil, err
		}
		return notNode{n}, nil
	}
	return p.primary()
}

func isQuoted(s string) bool {
	return len(s) >= 2 && (s[0] == '"' || s[0] == '\'') && s[len(s)-1] == s[0]
}

func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' || s[0] == '\'') {
		return s[1 : len(s)-1]
	}
	return s
}

func (p *parser) primary() (node, error) {
	tok := p.next()
	switch {
	case tok == "(":
		n, err := p.or()
		if err != nil {
			return nil, err
		}
		if p.next() != ")" {
			return nil, fmt.Errorf("missing )")
		}
		return n, nil
	case strings.Contains(tok, "."):
		if !p.fields[tok] {
			return nil, fmt.Errorf("unknown field %s", tok)
		}
		switch op := p.next(); op {
		case "exists":
			return existsNode{tok}, nil
		case "=", "!=", "contains", "startswith", "endswith":
			v := p.next()
			if v == "" {
				return nil, fmt.Errorf("%s %s: missing value", tok, op)
			}
			return cmpNode{tok, op, unquote(v)}, nil
		case "<", "<=", ">", ">=":
			v := p.next()
			if _, err := strconv.ParseUint(v, 10, 64); err != nil {
				return nil, fmt.Errorf("%s %s %q: want a number", tok, op, v)
			}
			return cmpNode{tok, op, v}, nil
		case "in", "intersects":
			vals, err := p.set()
			if err != nil {
				return nil, err
			}
			return setNode{tok, op, vals}, nil
		default:
			return nil, fmt.Errorf("%s: unsupported operator %q", tok, op)
		}
	case tok == "":
		return nil, fmt.Errorf("unexpected end of condition")
	default:
		cond, ok := p.rs.macros[tok]
		if !ok {
			return nil, fmt.Errorf("%q is neither a field nor a defined macro", tok)
		}
		p.used[tok] = true
		if p.depth > 20 {
			return nil, fmt.Errorf("macro %s: nested too deep", tok)
		}
		sub := &parser{toks: tokenRE.FindAllString(cond, -1), rs: p.rs, used: p.used, fields: p.fields, depth: p.depth + 1}
		n, err := sub.or()
		if err != nil {
			return nil, fmt.Errorf("macro %s: %w", tok, err)
		}
		return n, nil
	}
}

// set reads "(a, b, list_name)" and expands lists.
func (p *parser) set() ([]string, error) {
	if p.next() != "(" {
		return nil, fmt.Errorf("want ( after in")
	}
	var vals []string
	for {
		tok := p.next()
		switch tok {
		case ")":
			return vals, nil
		case ",":
			continue
		case "":
			return nil, fmt.Errorf("unterminated list")
		}
		if items, ok := p.rs.lists[tok]; ok {
			p.used[tok] = true
			for _, it := range items {
				if sub, ok := p.rs.lists[it]; ok {
					vals = append(vals, sub...)
					continue
				}
				// Falco pastes a list's items into the condition text, so
				// each must read there as one value: a bare word, or a
				// string quoted inside the YAML string.
				if vt := tokenRE.FindAllString(it, -1); len(vt) != 1 || vt[0] != it || strings.ContainsAny(it, "(),=<>!") && !isQuoted(it) {
					return nil, fmt.Errorf("list %s: item %q is not one value once pasted into a condition: quote it for the condition too (%q)", tok, it, `"`+it+`"`)
				}
				vals = append(vals, unquote(it))
			}
			continue
		}
		if strings.HasPrefix(tok, "kmodguard_") {
			return nil, fmt.Errorf("%s is not a defined list", tok)
		}
		vals = append(vals, unquote(tok))
	}
}
