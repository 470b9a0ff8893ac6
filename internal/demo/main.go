// Command demo is what `make demo` runs: it boots Debian's 6.1 kernel in
// QEMU with the kmodguard CLI and real modules, and walks through detection,
// the allowlist and blocking in plain language (guest.sh).
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/kmodguard/kmodguard/internal/debkernel"
	"github.com/kmodguard/kmodguard/internal/vmtest"
)

//go:embed guest.sh
var script string

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	dir, err := os.MkdirTemp("", "kmodguard-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	fmt.Println("kmodguard demo: a Debian 6.1 kernel boots in QEMU (software emulation) with")
	fmt.Println("the kmodguard CLI, busybox and real modules from the kernel's own package.")
	fmt.Println("Fetching the kernel (cached after the first run) and building the guest...")
	var env []string
	if st, err := os.Stdout.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
		env = append(env, "KMODGUARD_DEMO_COLOR=1")
	}
	start := time.Now()
	r, err := vmtest.Exec(ctx, demoSpec(os.Stdout, env), debkernel.Series61, dir)
	if err != nil {
		return err
	}
	fmt.Printf("\n(kernel %s: booted in %s, demo ran %s, %s in all)\n", r.Kernel.Release,
		r.Boot.Round(100*time.Millisecond), r.Tests.Round(100*time.Millisecond), time.Since(start).Round(time.Second))
	if err := r.Err(); err != nil {
		if r.Done {
			return errors.New("some steps did not behave as described (see above)")
		}
		return err
	}
	return nil
}

// demoSpec is the guest of the demo: the CLI, two real modules and a forged
// one, and the scenario script, with its output going to out.
func demoSpec(out io.Writer, env []string) vmtest.Spec {
	return vmtest.Spec{
		Env:     env,
		Modules: []string{"dummy", "veth"},
		Crafted: []vmtest.Crafted{
			{Name: "dumbo", From: "dummy", ModinfoName: "dumbo", StripSignature: true},
		},
		Binaries: []string{"github.com/kmodguard/kmodguard/cmd/kmodguard"},
		Script:   script,
		Timeout:  10 * time.Minute,
		Output:   out,
	}
}
