// Command readme rewrites the fields table of the kmodguard Falco plugin in
// plugin/README.md (the falcosecurity/plugins layout) from the built libkmodguard.so, loaded with plugin-sdk-go's
// loader the way Falco loads it, so that the table is what the plugin
// really exports. `make readme` runs it:
//
//	go run ./plugin/internal/readme -plugin libkmodguard.so -readme plugin/README.md
//
// The table goes between two `<!-- README-PLUGIN-FIELDS -->` lines.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/falcosecurity/plugin-sdk-go/pkg/loader"
	"github.com/falcosecurity/plugin-sdk-go/pkg/sdk"
)

// Marker delimits the generated table; it appears twice.
const Marker = "<!-- README-PLUGIN-FIELDS -->"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "readme:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("readme", flag.ContinueOnError)
	so := fs.String("plugin", "libkmodguard.so", "the built plugin")
	readme := fs.String("readme", "plugin/README.md", "the file to rewrite")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// dlopen searches the library path for a name without a slash.
	abs, err := filepath.Abs(*so)
	if err != nil {
		return err
	}
	p, err := loader.NewValidPlugin(abs)
	if err != nil {
		return fmt.Errorf("load %s: %w", *so, err)
	}
	defer p.Unload()
	old, err := os.ReadFile(*readme)
	if err != nil {
		return err
	}
	out, err := Rewrite(old, FieldsTable(p.Fields()))
	if err != nil {
		return fmt.Errorf("%s: %w", *readme, err)
	}
	if bytes.Equal(out, old) {
		return nil
	}
	return os.WriteFile(*readme, out, 0o644)
}

// FieldsTable renders fields as a Markdown table.
func FieldsTable(fields []sdk.FieldEntry) string {
	var b strings.Builder
	b.WriteString("| Field | Type | Display name | Description |\n|---|---|---|---|\n")
	for _, f := range fields {
		typ := f.Type
		if f.IsList {
			typ += " (list)"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", f.Name, typ, cell(f.Display), cell(f.Desc))
	}
	return b.String()
}

func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// Rewrite replaces what lies between the two markers of doc with table.
func Rewrite(doc []byte, table string) ([]byte, error) {
	s := string(doc)
	start := strings.Index(s, Marker)
	if start < 0 {
		return nil, errors.New("no " + Marker + " marker")
	}
	body := start + len(Marker)
	end := strings.Index(s[body:], Marker)
	if end < 0 {
		return nil, errors.New("only one " + Marker + " marker; the table goes between two")
	}
	end += body
	return []byte(s[:body] + "\n" + table + s[end:]), nil
}
