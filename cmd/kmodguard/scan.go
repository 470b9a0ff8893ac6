package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kmodguard/kmodguard/scan"
)

func init() { register(newScanCmd) }

func newScanCmd() *cobra.Command {
	var (
		o     *output
		noBPF bool
	)
	cmd := &cobra.Command{
		Use:   "scan",
		Short: "Look for hidden kernel modules: live modules that /proc/modules does not list",
		Long: `Scan compares, once, the modules the kernel's own structures show with
/proc/modules (what lsmod, kmod and delete_module go by), and reports each
live module that one view shows and another leaves out. A rootkit that
unlinks itself from the module list vanishes from /proc/modules; one that
also deletes its kobject vanishes from /sys/module too.

The views:
  /proc/modules  the kernel's list of modules
  /sys/module    the loadable modules' directories (those with initstate)
  mod_tree       the kernel's tree of module memory, walked by a BPF
                 program from its address in /proc/kallsyms: a module
                 cannot leave it and keep running normally. Needs root and
                 BPF; where it cannot run, scan says why and compares the
                 other two.

Only modules in the LIVE state count (a module loading or unloading is in
some views and not others for a moment), and a difference is reported only
when a second look, 200 ms later, finds it again at the same address.

Exit codes: 0 nothing hidden, 1 a hidden module found, 2 error.`,
		Example: `  sudo kmodguard scan
  sudo kmodguard scan -o json | jq '.hidden[].name'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := scan.Scan(scan.Options{NoBPF: noBPF})
			if err != nil {
				return err
			}
			if err := printScan(cmd.OutOrStdout(), o.format, r); err != nil {
				return err
			}
			if len(r.Hidden) > 0 {
				names := make([]string, len(r.Hidden))
				for i, h := range r.Hidden {
					names[i] = h.Name
				}
				return withCode(exitDenied, fmt.Errorf("hidden modules: %s", strings.Join(names, ", ")))
			}
			return nil
		},
	}
	o = addOutput(cmd)
	cmd.Flags().BoolVar(&noBPF, "no-bpf", false, "leave out the BPF walk of mod_tree (compare /sys/module with /proc/modules only)")
	return cmd
}

func printScan(w io.Writer, f outputFormat, r *scan.Report) error {
	if f != formatText {
		return encode(w, f, r)
	}
	for _, s := range r.Sources {
		if s.Error != "" {
			fmt.Fprintf(w, "%-14s not available: %s\n", s.Name, s.Error)
		} else {
			fmt.Fprintf(w, "%-14s %d live modules\n", s.Name, s.Modules)
		}
	}
	if len(r.Hidden) == 0 {
		fmt.Fprintln(w, "no hidden modules")
		return nil
	}
	for _, h := range r.Hidden {
		fmt.Fprintf(w, "HIDDEN %s", h.Name)
		if h.ModuleAddr != 0 {
			fmt.Fprintf(w, " (struct module at %#x)", h.ModuleAddr)
		}
		fmt.Fprintf(w, ": %s\n", h.Describe())
	}
	return nil
}
