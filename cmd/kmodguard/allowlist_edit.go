package main

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kmodguard/kmodguard/allowlist"
)

func newAllowlistAddCmd() *cobra.Command {
	var (
		path, kernel, comment, key, modulesDir, deb string
		jobs                                        int
		trust                                       trustFlags
	)
	cmd := &cobra.Command{
		Use:   "add (FILE... | --modules-dir DIR | --deb PACKAGE)",
		Short: "Allow module files: add their names and digests to the allowlist",
		Long: `Inspect module files and add each one's file and ELF digests to the entry of
its name (an entry is created when there is none for that name and kernel).
A name-only entry stays name-only. A module whose two names differ is
refused, and so is a file that is not a module: nothing is saved unless
every file was read. The allowlist is saved atomically; give --key to
re-sign it.

  --modules-dir DIR  adds every .ko* file under DIR as well: a whole kernel
                     release (/lib/modules/RELEASE), before rebooting into
                     it. Its entries record the release from each module's
                     vermagic (or --kernel), beside those of the releases
                     already listed.
  --deb PACKAGE      adds every module file of a kernel package (.deb), read
                     as it is, before installing it.`,
		Example: `  kmodguard allowlist add -a /etc/kmodguard/allowlist.yaml ./mydriver.ko
  kmodguard allowlist add --comment "vendor NIC" --key signing.key /opt/vendor/*.ko.xz

  # a new kernel's modules, before rebooting into it
  kmodguard allowlist add -a /etc/kmodguard/allowlist.yaml --modules-dir /lib/modules/6.1.0-57-amd64

  # the same from the package, before it is installed
  kmodguard allowlist add -a fleet.yaml --key signing.key --deb linux-image-6.1.0-57-amd64_6.1.192-3_amd64.deb`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && modulesDir == "" && deb == "" {
				return errors.New("give module files, --modules-dir DIR or --deb PACKAGE")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := trust.load(path)
			if err != nil {
				return err
			}
			paths := slices.Clone(args)
			if modulesDir != "" {
				found, err := findModules(modulesDir)
				if err != nil {
					return withCode(exitError, err)
				}
				if len(found) == 0 {
					return withCode(exitError, fmt.Errorf("no module files under %s", modulesDir))
				}
				paths = append(paths, found...)
			}
			relabel := func([]inspected) {}
			if deb != "" {
				found, rl, cleanup, err := debModules(deb)
				if err != nil {
					return withCode(exitError, err)
				}
				defer cleanup()
				paths, relabel = append(paths, found...), rl
			}
			if jobs < 1 {
				jobs = 1
			}
			bar := newProgress(cmd.ErrOrStderr(), "modules", len(paths))
			results := inspectAll(paths, jobs, bar)
			bar.finish()
			relabel(results)
			var problems []string
			for _, r := range results {
				switch {
				case r.err != nil:
					problems = append(problems, r.err.Error())
				case r.mod.NameMismatch:
					problems = append(problems, fmt.Sprintf("%s: name mismatch: .modinfo name=%q but struct module.name=%q; refusing to allow a forged module", r.path, r.mod.Name, r.mod.ThisModuleName))
				}
			}
			if len(problems) > 0 {
				return withCode(exitError, fmt.Errorf("nothing saved:\n  %s", strings.Join(problems, "\n  ")))
			}
			out := cmd.OutOrStdout()
			// Each file named on the command line gets a line; a tree, a
			// summary.
			verbose := len(args)
			var added, already int
			for i, r := range results {
				m := r.mod
				k := kernel
				if k == "" {
					if f := strings.Fields(m.Vermagic); len(f) > 0 {
						k = f[0]
					}
				}
				changed, err := a.Add(allowlist.Entry{Name: m.Name, SHA256: []string{m.FileSHA256, m.ELFSHA256}, Kernel: k, Comment: comment})
				if err != nil {
					return withCode(exitError, fmt.Errorf("%s: %w", m.Path, err))
				}
				switch {
				case changed && i < verbose:
					fmt.Fprintf(out, "added %s (%s)\n", m.Name, m.Path)
				case i < verbose:
					fmt.Fprintf(out, "%s is already allowed (%s)\n", m.Name, m.Path)
				case changed:
					added++
				default:
					already++
				}
			}
			if tree := strings.TrimSpace(modulesDir + " " + deb); tree != "" {
				fmt.Fprintf(out, "%s: %d modules added, %d already allowed\n", tree, added, already)
			}
			return saveList(cmd.ErrOrStderr(), path, a, key)
		},
	}
	cmd.Flags().StringVarP(&path, "allowlist", "a", defaultAllowlist, "allowlist file to edit")
	cmd.Flags().StringVar(&kernel, "kernel", "", "kernel release to record (default: the module's vermagic)")
	cmd.Flags().StringVar(&comment, "comment", "", "comment for the entries")
	cmd.Flags().StringVar(&key, "key", "", "PEM private key: re-sign the allowlist after saving")
	completeFiles(cmd, "key", "key", "pem")
	cmd.Flags().StringVar(&modulesDir, "modules-dir", "", "also add every .ko* file under this tree (a kernel release)")
	_ = cmd.MarkFlagDirname("modules-dir")
	cmd.Flags().StringVar(&deb, "deb", "", "also add every module file of this kernel package (.deb)")
	completeFiles(cmd, "deb", "deb")
	cmd.Flags().IntVarP(&jobs, "jobs", "j", runtime.GOMAXPROCS(0), "files inspected in parallel")
	trust.bind(cmd)
	return cmd
}

func newAllowlistRemoveCmd() *cobra.Command {
	var (
		path, kernel, key string
		trust             trustFlags
	)
	cmd := &cobra.Command{
		Use:   "remove NAME...",
		Short: "Remove modules from the allowlist by name",
		Long: `Remove every entry of each name ('-' and '_' are the same), or only the
entry recorded for --kernel. Nothing is saved unless every name was found.`,
		Example: `  kmodguard allowlist remove -a /etc/kmodguard/allowlist.yaml floppy pcspkr
  kmodguard allowlist remove --kernel 6.1.0-56-amd64 dummy`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := trust.load(path)
			if err != nil {
				return err
			}
			var missing []string
			for _, name := range args {
				n := a.Remove(name, kernel)
				if n == 0 {
					missing = append(missing, name)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s (%d entries)\n", name, n)
			}
			if len(missing) > 0 {
				return withCode(exitError, fmt.Errorf("not in %s: %s; nothing saved", path, strings.Join(missing, ", ")))
			}
			return saveList(cmd.ErrOrStderr(), path, a, key)
		},
	}
	cmd.Flags().StringVarP(&path, "allowlist", "a", defaultAllowlist, "allowlist file to edit")
	cmd.Flags().StringVar(&kernel, "kernel", "", "remove only the entry for this kernel release")
	cmd.Flags().StringVar(&key, "key", "", "PEM private key: re-sign the allowlist after saving")
	completeFiles(cmd, "key", "key", "pem")
	trust.bind(cmd)
	return cmd
}

func newAllowlistListCmd() *cobra.Command {
	var (
		path  string
		o     *output
		trust trustFlags
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "Print the allowlist's entries",
		Example: `  kmodguard allowlist list
  kmodguard allowlist list -a allow.yaml -o json | jq '.spec.modules[].name'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := trust.load(path)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if o.format != formatText {
				return encode(out, o.format, a)
			}
			fmt.Fprintf(out, "# %s: %s, mode %s, %d entries\n", path, orNone(a.Metadata.Name), a.Spec.Mode, len(a.Spec.Modules))
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKERNEL\tSHA256\tCOMMENT")
			for _, e := range a.Spec.Modules {
				digests := "(name only)"
				if !e.NameOnly() {
					short := make([]string, len(e.SHA256))
					for i, d := range e.SHA256 {
						short[i] = d[:12]
					}
					digests = strings.Join(short, ",")
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Name, orDash(e.Kernel), digests, e.Comment)
			}
			if err := tw.Flush(); err != nil {
				return withCode(exitError, fmt.Errorf("write: %w", err))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&path, "allowlist", "a", defaultAllowlist, "allowlist file")
	o = addOutput(cmd)
	o.addJSONAlias(cmd)
	trust.bind(cmd)
	return cmd
}

func newAllowlistLintCmd() *cobra.Command {
	var (
		o      *output
		strict bool
		trust  trustFlags
	)
	cmd := &cobra.Command{
		Use:   "lint FILE",
		Short: "Validate an allowlist and warn about weak entries",
		Long: `Decode FILE strictly (unknown keys, bad digests, bad names and duplicate
entries are errors, reported with file:line and the field) and print
warnings: entries that match on the name alone, kernel fields that do not
look like a release, a digest listed under two names, an empty list in
enforce mode.

Exit code 0 when the file is valid (warnings or not; with --strict, 1 when
there are warnings), 2 when it is not.`,
		Example: `  kmodguard allowlist lint /etc/kmodguard/allowlist.yaml
  kmodguard allowlist lint --strict --pubkey signing.pub allow.yaml   # for CI`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := trust.load(args[0])
			if err != nil {
				return err
			}
			ws := a.Lint()
			out := cmd.OutOrStdout()
			if o.format != formatText {
				if ws == nil {
					ws = []allowlist.Warning{}
				}
				if err := encode(out, o.format, ws); err != nil {
					return err
				}
			} else {
				for _, w := range ws {
					fmt.Fprintln(out, w)
				}
				fmt.Fprintf(out, "%s: valid, %d entries, %d warnings\n", args[0], len(a.Spec.Modules), len(ws))
			}
			if strict && len(ws) > 0 {
				return withCode(exitDenied, fmt.Errorf("%s: %d warnings (--strict)", args[0], len(ws)))
			}
			return nil
		},
	}
	o = addOutput(cmd)
	o.addJSONAlias(cmd)
	cmd.Flags().BoolVar(&strict, "strict", false, "exit 1 when there are warnings")
	trust.bind(cmd)
	return cmd
}

func newAllowlistDiffCmd() *cobra.Command {
	var (
		o        *output
		exitCode bool
		trust    trustFlags
	)
	cmd := &cobra.Command{
		Use:   "diff A B",
		Short: "Show what changes from allowlist A to allowlist B",
		Long: `Compare two allowlists entry by entry (keyed by name and kernel): entries
added (+), removed (-) and changed (~, with the digests added and removed),
and a change of mode. An entry that becomes name-only is called out: it
widens the policy.`,
		Example: `  kmodguard allowlist diff /etc/kmodguard/allowlist.yaml new.yaml
  kmodguard allowlist diff -o json old.yaml new.yaml | jq .added`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := trust.load(args[0])
			if err != nil {
				return err
			}
			b, err := trust.load(args[1])
			if err != nil {
				return err
			}
			d := allowlist.Diff(a, b)
			out := cmd.OutOrStdout()
			if o.format != formatText {
				if err := encode(out, o.format, d); err != nil {
					return err
				}
			} else {
				printDiff(out, d)
			}
			if exitCode && !d.Empty() {
				return withCode(exitDenied, errors.New("the allowlists differ"))
			}
			return nil
		},
	}
	o = addOutput(cmd)
	o.addJSONAlias(cmd)
	cmd.Flags().BoolVar(&exitCode, "exit-code", false, "exit 1 when the lists differ")
	trust.bind(cmd)
	return cmd
}

func printDiff(w io.Writer, d *allowlist.Difference) {
	if d.Empty() {
		fmt.Fprintln(w, "no difference")
		return
	}
	if d.ModeFrom != d.ModeTo {
		fmt.Fprintf(w, "mode: %s -> %s\n", d.ModeFrom, d.ModeTo)
	}
	for _, r := range d.Require {
		fmt.Fprintf(w, "%s (spec)\n", r)
	}
	for _, p := range d.AutoloadDenyRemoved {
		fmt.Fprintf(w, "- autoload.deny %s (wider)\n", p)
	}
	for _, p := range d.AutoloadDenyAdded {
		fmt.Fprintf(w, "+ autoload.deny %s\n", p)
	}
	label := func(name, kernel string) string {
		if kernel != "" {
			return name + " (" + kernel + ")"
		}
		return name
	}
	for _, e := range d.Removed {
		fmt.Fprintf(w, "- %s\n", label(e.Name, e.Kernel))
	}
	for _, e := range d.Added {
		what := fmt.Sprintf("%d digests", len(e.SHA256))
		if e.NameOnly() {
			what = "name only"
		}
		fmt.Fprintf(w, "+ %s [%s]\n", label(e.Name, e.Kernel), what)
	}
	for _, c := range d.Changed {
		fmt.Fprintf(w, "~ %s\n", label(c.Name, c.Kernel))
		if c.NowNameOnly {
			fmt.Fprintln(w, "    now matches on the name alone (wider)")
		}
		if c.NoLongerNameOnly {
			fmt.Fprintln(w, "    now pinned to digests (narrower)")
		}
		for _, s := range c.AddedSHA256 {
			fmt.Fprintf(w, "    + sha256 %s\n", s)
		}
		for _, s := range c.RemovedSHA256 {
			fmt.Fprintf(w, "    - sha256 %s\n", s)
		}
		if c.CommentFrom != c.CommentTo {
			fmt.Fprintf(w, "    comment: %q -> %q\n", c.CommentFrom, c.CommentTo)
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
