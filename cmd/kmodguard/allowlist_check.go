package main

import (
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/kmod"
)

// checkResult is one module of 'allowlist check -o json'.
type checkResult struct {
	Path           string              `json:"path"`
	Name           string              `json:"name,omitempty"`
	ThisModuleName string              `json:"this_module_name,omitempty"`
	SHA256         string              `json:"sha256,omitempty"`
	ELFSHA256      string              `json:"elf_sha256,omitempty"`
	Allowed        bool                `json:"allowed"`
	Via            allowlist.MatchKind `json:"via,omitempty"`
	Entry          string              `json:"entry,omitempty"`
	Reason         string              `json:"reason,omitempty"`
	Error          string              `json:"error,omitempty"`
}

func newAllowlistCheckCmd() *cobra.Command {
	var (
		path  string
		o     *output
		trust trustFlags
	)
	cmd := &cobra.Command{
		Use:   "check MODULE...",
		Short: "Say whether module files are allowed, and why",
		Long: `Inspect each module file and match it against the allowlist the way the
plugin and the enforcer do, and say why: which digest or name admitted it,
or which digest is not listed.

Exit codes: 0 when every module is allowed, 1 when any is not, 2 on an
error (an unreadable or malformed allowlist or module, a bad signature).
The mode of the list does not change the answer: in audit mode a module
that is not allowed still makes the exit code 1.`,
		Example: `  kmodguard allowlist check /lib/modules/$(uname -r)/kernel/drivers/net/dummy.ko.xz
  kmodguard allowlist check -a allow.yaml --pubkey signing.pub -o json ./*.ko | jq '.[] | select(.allowed|not)'`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := trust.load(path)
			if err != nil {
				return err
			}
			return runCheck(cmd.OutOrStdout(), cmd.ErrOrStderr(), a, args, o.format)
		},
	}
	cmd.Flags().StringVarP(&path, "allowlist", "a", defaultAllowlist, "allowlist file")
	o = addOutput(cmd)
	o.addJSONAlias(cmd)
	trust.bind(cmd)
	return cmd
}

func runCheck(stdout, stderr io.Writer, a *allowlist.Allowlist, paths []string, format outputFormat) error {
	results := make([]checkResult, 0, len(paths))
	denied, failed := 0, 0
	for _, p := range paths {
		r := checkResult{Path: p}
		m, err := kmod.Inspect(p)
		if err != nil {
			r.Error = err.Error()
			failed++
			results = append(results, r)
			continue
		}
		d := a.Match(m)
		if a.Spec.RequireModuleSignature && !m.Signature.Present && d.Allowed {
			// As the guard judges it: the requirement comes before the
			// list. (A file's caller is unknown here: requireHostNamespaces
			// is for loads.)
			d = allowlist.Decision{Reason: "no module signature appended (spec.requireModuleSignature)"}
		}
		r.Name, r.ThisModuleName, r.SHA256, r.ELFSHA256 = m.Name, m.ThisModuleName, m.FileSHA256, m.ELFSHA256
		r.Allowed, r.Via, r.Reason = d.Allowed, d.Via, d.Reason
		if d.Entry != nil {
			r.Entry = d.Entry.Name
		}
		if !d.Allowed {
			denied++
		}
		results = append(results, r)
	}
	if format != formatText {
		// Errors too are in the report, each in its module's record.
		if err := encode(stdout, format, results); err != nil {
			return err
		}
	} else {
		for _, r := range results {
			switch {
			case r.Error != "":
				fmt.Fprintf(stderr, "kmodguard: %s\n", r.Error)
			case r.Allowed:
				fmt.Fprintf(stdout, "%s: allowed: %s\n", r.Path, r.Reason)
			default:
				fmt.Fprintf(stdout, "%s: NOT ALLOWED: %s\n", r.Path, r.Reason)
			}
		}
	}
	switch {
	case failed > 0:
		return withCode(exitError, fmt.Errorf("could not inspect %d of %d modules", failed, len(paths)))
	case denied > 0:
		return withCode(exitDenied, fmt.Errorf("%d of %d modules are not allowed", denied, len(paths)))
	}
	return nil
}

func newAllowlistExportCmd() *cobra.Command {
	var (
		path, format, listName, outFile string
		files                           bool
		trust                           trustFlags
	)
	cmd := &cobra.Command{
		Use:   "export --format falco-list",
		Short: "Export the allowed module names for other tools",
		Long: `Write the allowlist's module names in another tool's format.

  falco-list  a Falco rules file with the list LIST-NAME of the allowed
              module names, for rules on the plain syscall source, which
              knows a module only by its arguments and paths. Each name is
              given in its '_' and '-' spellings, since file names and
              modprobe arguments use both. With --files, a second list,
              LIST-NAME_files, holds the file names (NAME.ko, .ko.xz,
              .ko.zst, .ko.gz) to compare with fd.filename on finit_module.

Names are all an export can carry: digests and the two-name check need the
kmodguard plugin or the enforcer.`,
		Example: `  kmodguard allowlist export --format falco-list --files --out-file /etc/falco/rules.d/kmodguard_lists.yaml

  # then, in a rule on the syscall source:
  #   condition: evt.type = finit_module and evt.dir = < and
  #              not fd.filename in (kmodguard_allowed_modules_files)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "falco-list" {
				return withCode(exitError, fmt.Errorf("--format %q: the only format is falco-list", format))
			}
			if !reListName.MatchString(listName) {
				return withCode(exitError, fmt.Errorf("--list-name %q: use letters, digits and '_'", listName))
			}
			a, err := trust.load(path)
			if err != nil {
				return err
			}
			data := falcoList(a, listName, path, files)
			if outFile == "" || outFile == "-" {
				if _, err := cmd.OutOrStdout().Write(data); err != nil {
					return withCode(exitError, fmt.Errorf("write: %w", err))
				}
				return nil
			}
			if err := allowlist.WriteFileAtomic(outFile, data, 0o644); err != nil {
				return withCode(exitError, err)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&path, "allowlist", "a", defaultAllowlist, "allowlist file")
	cmd.Flags().StringVar(&format, "format", "falco-list", "export format: falco-list")
	completeValues(cmd, "format", "falco-list")
	cmd.Flags().StringVar(&listName, "list-name", "kmodguard_allowed_modules", "name of the Falco list")
	cmd.Flags().BoolVar(&files, "files", false, "also write LIST-NAME_files with the module file names")
	cmd.Flags().StringVar(&outFile, "out-file", "-", "file to write, or - for stdout")
	completeFiles(cmd, "out-file", "yaml", "yml")
	addFileAlias(cmd, &outFile, "--out-file")
	trust.bind(cmd)
	return cmd
}

// reListName is what a Falco list name may look like here.
var reListName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// falcoList renders a Falco rules file with the list of allowed names and,
// when files is set, the list of their file names.
func falcoList(a *allowlist.Allowlist, listName, source string, files bool) []byte {
	names := a.Names()
	var spellings []string
	for _, n := range names {
		spellings = append(spellings, n)
		if d := strings.ReplaceAll(n, "_", "-"); d != n {
			spellings = append(spellings, d)
		}
	}
	sort.Strings(spellings)
	var b strings.Builder
	from := source
	if a.Metadata.Name != "" {
		from += " (" + a.Metadata.Name + ")"
	}
	fmt.Fprintf(&b, "# Generated by kmodguard from %s, %d modules. Do not edit:\n", from, len(names))
	fmt.Fprintf(&b, "# regenerate with 'kmodguard allowlist export --format falco-list'.\n")
	writeList := func(name string, items []string) {
		fmt.Fprintf(&b, "- list: %s\n", name)
		if len(items) == 0 {
			b.WriteString("  items: []\n")
			return
		}
		b.WriteString("  items:\n")
		for _, it := range items {
			// Quoted, so that YAML never reinterprets a name.
			fmt.Fprintf(&b, "    - %q\n", it)
		}
	}
	writeList(listName, spellings)
	if files {
		var fileNames []string
		for _, n := range spellings {
			for _, suffix := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
				fileNames = append(fileNames, n+suffix)
			}
		}
		sort.Strings(fileNames)
		writeList(listName+"_files", fileNames)
	}
	return []byte(b.String())
}
