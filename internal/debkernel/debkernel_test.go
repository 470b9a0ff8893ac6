package debkernel

import (
	"context"
	"errors"
	"os"
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
