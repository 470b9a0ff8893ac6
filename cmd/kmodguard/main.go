// Command kmodguard builds, checks, signs and applies kernel module
// allowlists, watches module syscalls, and runs the BPF LSM enforcer.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// Exit codes, documented in the README and in `kmodguard --help`.
const (
	exitOK     = 0
	exitDenied = 1 // a check found a module that is not allowed, or the guard is not whole or not served, or scan found a hidden module
	exitError  = 2 // bad input, bad usage, or an operational error
)

// codeError carries a specific exit code out of a command.
type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string { return e.err.Error() }
func (e *codeError) Unwrap() error { return e.err }

// withCode wraps err so that main exits with code.
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &codeError{code: code, err: err}
}

// subcommands are added by each file's init, so that commands live in files
// of their own (allowlist.go, inspect.go, watch.go, enforcer.go, ...).
var subcommands []func() *cobra.Command

func register(f func() *cobra.Command) { subcommands = append(subcommands, f) }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "kmodguard",
		Short: "Watch and control Linux kernel module loading with one allowlist",
		Long: `kmodguard watches and controls Linux kernel module loading.

One allowlist drives three things:
  - detection: a Falco plugin and 'kmodguard watch' see init_module,
    finit_module and delete_module with full process context;
  - enforcement: an optional BPF LSM guard refuses modules that are not listed;
  - management: this CLI builds, checks, signs and applies the allowlist.

Commands that print a report take -o text, json or yaml. Completion
scripts for bash, zsh, fish and PowerShell: 'kmodguard completion --help'.

Exit codes:
  0  success (for 'check': every module is allowed)
  1  a module is not allowed ('allowlist check'); the guard is not whole, or
     with --ready not served by a running daemon ('enforcer status'); a
     hidden module was found ('scan')
  2  error: bad input, bad usage, or an operational failure`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	addLogLevel(root)
	for _, f := range subcommands {
		root.AddCommand(f())
	}
	return root
}

func run(args []string) error {
	root := newRootCmd()
	root.SetArgs(args)
	return root.Execute()
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "kmodguard:", err)
		var ce *codeError
		if errors.As(err, &ce) {
			os.Exit(ce.code)
		}
		os.Exit(exitError)
	}
}
