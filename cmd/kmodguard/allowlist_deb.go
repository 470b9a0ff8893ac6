package main

import (
	"fmt"
	"os"

	"github.com/kmodguard/kmodguard/internal/debpkg"
)

// debModules unpacks the module files of the Debian package deb into a
// temporary folder, for inspection. relabel turns the inspected results'
// paths back into "PACKAGE:PATH-IN-PACKAGE", so that messages name the
// package; cleanup removes the folder.
func debModules(deb string) (paths []string, relabel func([]inspected), cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "kmodguard-deb-")
	if err != nil {
		return nil, nil, nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	mods, err := debpkg.ExtractModules(deb, dir)
	if err != nil {
		cleanup()
		return nil, nil, nil, err
	}
	if len(mods) == 0 {
		cleanup()
		return nil, nil, nil, fmt.Errorf("%s: no module files under lib/modules or usr/lib/modules", deb)
	}
	label := make(map[string]string, len(mods))
	for _, m := range mods {
		paths = append(paths, m.Path)
		label[m.Path] = deb + ":" + m.Name
	}
	relabel = func(results []inspected) {
		for i := range results {
			if l, ok := label[results[i].path]; ok {
				results[i].path = l
				if results[i].mod != nil {
					results[i].mod.Path = l
				}
			}
		}
	}
	return paths, relabel, cleanup, nil
}
