package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kmodguard/kmodguard/enforcer"
)

func newEnforcerSealCmd(pinDir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "seal",
		Short: "Seal the pinned guard until reboot, from the host's mount namespace",
		Long: `seal seals the pinned guard, as 'enforcer run --seal' does: from then on only
a reboot removes or changes it (see 'kmodguard enforcer --help').

The seal records the mounts that hold the guard's pins in the host's mount
namespace (PID 1's) and in its own. A daemon sandboxed by systemd
(ProtectSystem=, PrivateMounts=) runs in a mount namespace of its own and
without the privileges to reach the host's, so 'run --seal' refuses there;
seal from the host instead, after the daemon is ready:

  [Service]
  ExecStartPost=+/usr/bin/kmodguard enforcer seal

It also refuses outside the host's PID namespace (a container without
hostPID), where it cannot find the host's mounts. Sealing a sealed guard
does nothing and succeeds.`,
		Example: `  sudo kmodguard enforcer seal`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			already, err := enforcer.SealPinned(*pinDir)
			if err != nil {
				return withCode(exitError, err)
			}
			if already {
				fmt.Fprintln(cmd.OutOrStdout(), "guard already sealed until reboot")
				return nil
			}
			fmt.Fprintln(cmd.OutOrStdout(), "guard sealed until reboot")
			return nil
		},
	}
}
