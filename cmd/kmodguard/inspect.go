package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kmodguard/kmodguard/kmod"
)

func init() { register(newInspectCmd) }

func newInspectCmd() *cobra.Command {
	var o *output
	cmd := &cobra.Command{
		Use:   "inspect FILE...",
		Short: "Show a module's names, metadata, signature and digests",
		Long: `Inspect kernel module files (.ko, .ko.xz, .ko.zst, .ko.gz; compression is
detected from the content) and print what an allowlist entry is made of:

  - both names: .modinfo name= (checked by the kernel against
    module_blacklist=) and struct module.name (the name the module
    registers under). When they differ the module is forged or broken,
    and inspect says so loudly;
  - vermagic, license, dependencies and parameters;
  - the appended signature: signer, key id and hash algorithm;
  - the SHA-256 of the file and of the ELF image after decompression.
    The allowlist takes both: finit_module sees the file, init_module
    (kmod and busybox decompress first) sees the ELF.

FILE "-" reads one module from standard input. A file that cannot be
inspected is reported on stderr and makes the exit code 2, but every other
file is still printed.`,
		Example: `  # one module, human-readable
  kmodguard inspect /lib/modules/$(uname -r)/kernel/drivers/net/dummy.ko.xz

  # every network driver, as a JSON array
  kmodguard inspect -o json /lib/modules/$(uname -r)/kernel/drivers/net/*.ko* | jq '.[].name'

  # a module that is not a file yet
  curl -s https://example.org/vendor.ko | kmodguard inspect -`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runInspect(cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr(), args, o.format)
		},
	}
	o = addOutput(cmd)
	o.addJSONAlias(cmd)
	return cmd
}

// inspectPath inspects a file, or standard input for "-".
func inspectPath(stdin io.Reader, p string) (*kmod.Module, error) {
	if p != "-" {
		return kmod.Inspect(p)
	}
	m, err := kmod.InspectReader(stdin)
	if err != nil {
		return nil, fmt.Errorf("standard input: %w", err)
	}
	m.Path = "-"
	return m, nil
}

func runInspect(stdin io.Reader, stdout, stderr io.Writer, paths []string, format outputFormat) error {
	mods := make([]*kmod.Module, 0, len(paths))
	var failed []string
	for _, p := range paths {
		m, err := inspectPath(stdin, p)
		if err != nil {
			// Reported here, once, so that the other files still print;
			// the returned error only carries the exit code and a summary.
			fmt.Fprintf(stderr, "kmodguard: %v\n", err)
			failed = append(failed, p)
			continue
		}
		mods = append(mods, m)
	}
	if format != formatText {
		if err := encode(stdout, format, mods); err != nil {
			return err
		}
	} else {
		for i, m := range mods {
			if i > 0 {
				fmt.Fprintln(stdout)
			}
			if err := printModule(stdout, m); err != nil {
				return withCode(exitError, fmt.Errorf("write: %w", err))
			}
		}
	}
	if len(failed) > 0 {
		return withCode(exitError, fmt.Errorf("could not inspect %d of %d files", len(failed), len(paths)))
	}
	return nil
}

func printModule(w io.Writer, m *kmod.Module) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "  %s:\t%s\n", k, v)
		}
	}
	fmt.Fprintf(tw, "%s\n", m.Path)
	if m.NameMismatch {
		fmt.Fprintf(tw, "  !!! NAME MISMATCH: .modinfo says %q but the module registers as %q.\n", m.Name, m.ThisModuleName)
		fmt.Fprintf(tw, "  !!! The kernel checks one name and loads the other: treat this module as forged.\n")
	}
	row("name", orNone(m.Name))
	row("this_module name", orNone(m.ThisModuleName))
	row("description", m.Description)
	row("author", strings.Join(m.Authors, "; "))
	row("vermagic", strings.TrimSpace(m.Vermagic))
	if !m.InTree {
		row("in-tree", "no (built outside the kernel tree: loading it taints the kernel)")
	}
	row("srcversion", m.Srcversion)
	row("license", m.License)
	row("depends", strings.Join(m.Depends, ", "))
	for _, p := range m.Params {
		desc := p.Description
		if p.Type != "" {
			desc = fmt.Sprintf("(%s) %s", p.Type, desc)
		}
		row("param "+p.Name, strings.TrimSpace(desc))
	}
	switch s := m.Signature; {
	case !s.Present:
		row("signature", "none (unsigned)")
	case s.Err != "":
		row("signature", "present but unreadable: "+s.Err)
	default:
		row("signature", fmt.Sprintf("%s, key %s, %s", s.Signer, s.KeyID, s.HashAlgo))
	}
	if m.Compression != kmod.CompressionNone {
		row("compression", fmt.Sprintf("%s (%d bytes, %d unpacked)", m.Compression, m.FileSize, m.ELFSize))
		row("sha256 (file)", m.FileSHA256)
		row("sha256 (elf)", m.ELFSHA256)
	} else {
		row("size", fmt.Sprintf("%d bytes", m.FileSize))
		row("sha256", m.FileSHA256)
	}
	return tw.Flush()
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
