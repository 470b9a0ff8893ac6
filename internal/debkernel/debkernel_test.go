package debkernel

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestGet(t *testing.T) {
	for _, s := range AllSeries {
		t.Run(string(s), func(t *testing.T) {
			k, err := Get(context.Background(), s)
			if errors.Is(err, ErrNoApt) {
				t.Skip("needs apt-get and dpkg: not a Debian host")
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(k.Vmlinuz()); err != nil {
				t.Fatalf("no vmlinuz: %v", err)
			}
			p, err := k.Module("dummy")
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %s, dummy at %s", s, k.Release, p)
			// A second call must come from the cache.
			k2, err := Get(context.Background(), s)
			if err != nil || k2.Root != k.Root {
				t.Fatalf("second Get: %v, %v", k2, err)
			}
		})
	}
}

func TestModulesDep(t *testing.T) {
	for _, s := range AllSeries {
		t.Run(string(s), func(t *testing.T) {
			k, err := Get(context.Background(), s)
			if errors.Is(err, ErrNoApt) {
				t.Skip("needs apt-get and dpkg: not a Debian host")
			}
			if err != nil {
				t.Fatal(err)
			}
			deps, err := k.ModulesDep()
			if err != nil {
				t.Fatal(err)
			}
			if len(deps) < 1000 {
				t.Fatalf("only %d modules in modules.dep", len(deps))
			}
			withDeps := 0
			for mod, ds := range deps {
				if _, err := os.Stat(filepath.Join(k.ModulesDir(), mod)); err != nil {
					t.Errorf("modules.dep lists a missing file: %v", err)
				}
				for _, d := range ds {
					if _, ok := deps[d]; !ok {
						t.Errorf("%s depends on %s, which modules.dep does not list", mod, d)
					}
				}
				if len(ds) > 0 {
					withDeps++
				}
			}
			if withDeps == 0 {
				t.Error("no module has a dependency: modules.dep is not what depmod writes")
			}
			dummy, err := k.Module("dummy")
			if err != nil {
				t.Fatal(err)
			}
			rel, _ := filepath.Rel(k.ModulesDir(), dummy)
			if ds, ok := deps[rel]; !ok || len(ds) != 0 {
				t.Errorf("dummy: %v, %v; want listed without dependencies", ds, ok)
			}
		})
	}
}
