package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kmodguard/kmodguard/internal/version"
)

func init() { register(newVersionCmd) }

func newVersionCmd() *cobra.Command {
	var o *output
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print this build's version, commit and Go version",
		Long: `version prints the version of this kmodguard build: the version stamped at
build time (make build), or else the one the Go toolchain recorded (a
release tag, or the source tree's version with the commit as build
metadata), with the commit, whether the tree was modified, and the Go
version. The Falco plugin reports the same version (falco --list-plugins),
and the enforcer its own in "enforcer status" and in the metric
kmodguard_build_info: compare them to find a plugin and a companion of
different builds.`,
		Example: `  kmodguard version
  kmodguard version -o json | jq -r .version`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := version.Get()
			out := cmd.OutOrStdout()
			if o.format != formatText {
				return encode(out, o.format, info)
			}
			_, err := fmt.Fprintf(out, "kmodguard %s\n", info)
			return err
		},
	}
	o = addOutput(cmd)
	return cmd
}
