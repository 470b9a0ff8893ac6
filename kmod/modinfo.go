package kmod

import (
	"bytes"
	"fmt"
	"strings"
)

// fillModinfo fills m's metadata from the bytes of a .modinfo section: a run of
// NUL-terminated "key=value" strings. The first value of a key wins, as in
// the kernel's get_modinfo; parm= and parmtype= repeat, one per parameter.
func (m *Module) fillModinfo(info []byte) error {
	var seen struct{ vermagic, srcversion, license, depends, description bool }
	paramIdx := map[string]int{}
	param := func(name string) *Param {
		i, ok := paramIdx[name]
		if !ok {
			if len(m.Params) >= maxParams {
				return nil
			}
			i = len(m.Params)
			paramIdx[name] = i
			m.Params = append(m.Params, Param{Name: name})
		}
		return &m.Params[i]
	}
	for len(info) > 0 {
		if info[0] == 0 {
			info = info[1:]
			continue
		}
		end := bytes.IndexByte(info, 0)
		if end < 0 {
			return fmt.Errorf("%w: the last .modinfo entry is not NUL-terminated", ErrMalformedELF)
		}
		entry := info[:end]
		info = info[end+1:]
		eq := bytes.IndexByte(entry, '=')
		if eq < 0 {
			continue // not key=value; the kernel ignores it too
		}
		key, val := string(entry[:eq]), entry[eq+1:]
		switch key {
		case "vermagic":
			once(&seen.vermagic, &m.Vermagic, val)
		case "srcversion":
			once(&seen.srcversion, &m.Srcversion, val)
		case "license":
			once(&seen.license, &m.License, val)
		case "description":
			once(&seen.description, &m.Description, val)
		case "author":
			if len(m.Authors) < maxAuthors {
				m.Authors = append(m.Authors, string(val))
			}
		case "intree":
			m.InTree = string(val) == "Y"
		case "depends":
			if !seen.depends {
				seen.depends = true
				m.Depends = splitDepends(string(val))
			}
		case "parm", "parmtype":
			// parm=name:description, parmtype=name:type
			name, rest, ok := strings.Cut(string(val), ":")
			if !ok || name == "" {
				continue
			}
			p := param(name)
			if p == nil {
				continue
			}
			if key == "parm" {
				p.Description = rest
			} else {
				p.Type = rest
			}
		}
	}
	return nil
}

// A hostile .modinfo may repeat entries at will; these bound what one
// module can make Inspect hold (Debian 6.1's largest: 89 parameters, 15
// dependencies, 9 authors). Entries past a bound are dropped.
const (
	maxParams  = 1024
	maxDepends = 256
	maxAuthors = 64
)

func once(seen *bool, dst *string, val []byte) {
	if !*seen {
		*seen = true
		*dst = string(val)
	}
}

func splitDepends(s string) []string {
	var out []string
	for d := range strings.SplitSeq(s, ",") {
		if d = strings.TrimSpace(d); d != "" && len(out) < maxDepends {
			out = append(out, d)
		}
	}
	return out
}
