package main

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestLayering keeps the command a front end: it parses flags and calls the
// enforcer package, which alone drives the guard (lsm) and serves the
// companion (its proto). An arrow from cmd to either would bring engine
// code back into package main, where no unit test reaches it.
func TestLayering(t *testing.T) {
	forbidden := []string{
		"github.com/kmodguard/kmodguard/lsm",
		"github.com/kmodguard/kmodguard/companion/proto",
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			for _, bad := range forbidden {
				if path == bad || strings.HasPrefix(path, bad+"/") {
					t.Errorf("%s imports %s: go through the enforcer package", name, path)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no source files found")
	}
}
