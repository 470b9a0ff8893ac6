// Package hideme builds the project's self-hiding test module for a guest
// kernel: src/hideme.c unlinks itself from the kernel's list of modules and
// deletes its /sys/module entry on init, the way rootkits hide, so that the
// hidden-module scan (kmodguard scan, the plugin's periodic scan) has a
// real module to find. It is built on the host against the kernel's Debian
// headers packages (debkernel.Kernel.BuildModule) and cached by release and
// source digest.
package hideme

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/kmodguard/kmodguard/internal/debkernel"
)

//go:embed src/hideme.c src/Kbuild
var src embed.FS

// Series are the amd64 kernels it builds for: the host (Debian 12, amd64)
// runs their linux-kbuild tools. sid's are built for a newer C library,
// and arm64's for another architecture.
var Series = []debkernel.Series{debkernel.Series61, debkernel.Series612}

// Buildable reports whether Build can build for k.
func Buildable(k *debkernel.Kernel) bool {
	return k.Arch == debkernel.AMD64 && slices.Contains(Series, k.Series)
}

// Fixture is the guest fixture name Build writes (vmtest.Fixture).
const Fixture = "hideme"

// Build builds hideme for k and writes it to the fixtures folder as
// hideme.ko: a vmtest.Spec.Prepare.
func Build(k *debkernel.Kernel, fixtures string) error {
	if !Buildable(k) {
		return fmt.Errorf("hideme: no build for %s (%s %s): the host cannot run its kbuild tools", k.Release, k.Series, k.Arch)
	}
	files := map[string][]byte{}
	h := sha256.New()
	for _, f := range []string{"hideme.c", "Kbuild"} {
		b, err := src.ReadFile("src/" + f)
		if err != nil {
			return err
		}
		files[f] = b
		h.Write(b)
	}
	out := filepath.Join(debkernel.CacheDir(), "modules", k.Release, "hideme-"+hex.EncodeToString(h.Sum(nil))[:16])
	ko := filepath.Join(out, "hideme.ko")
	if _, err := os.Stat(ko); err != nil {
		dir, err := os.MkdirTemp("", "hideme-src-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		for f, b := range files {
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
				return err
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if ko, err = k.BuildModule(ctx, dir, out, "hideme"); err != nil {
			return err
		}
	}
	b, err := os.ReadFile(ko)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(fixtures, Fixture+".ko"), b, 0o644)
}
