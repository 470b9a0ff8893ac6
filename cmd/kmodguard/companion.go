//go:build linux

package main

import (
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/enforcer"
)

// newEnforcerServeCompanionCmd is `kmodguard enforcer serve-companion`, the
// hidden mode in which the Falco plugin (or another go-plugin client) runs
// the enforcer as its child. See package companion.
func newEnforcerServeCompanionCmd(pinDir *string) *cobra.Command {
	var (
		socket string
		mode   string
		seal   bool
		path   string
		trust  trustFlags
	)
	cmd := &cobra.Command{
		Use:    "serve-companion",
		Short:  "Serve the enforcer to the Falco plugin over go-plugin (started by the plugin)",
		Hidden: true,
		Long: `serve-companion runs the enforcer as a go-plugin gRPC service: Apply (an
allowlist), Status, and a stream of the guard's decisions. The kmodguard Falco
plugin starts it when its init_config has "enforcer": {"enabled": true}, and
talks to it over mutual TLS; its stdout carries the go-plugin handshake, its
log goes to stderr as JSON.

With --socket it serves the same service on a Unix socket (mode 0600) for
clients that attach instead of launching it (init_config "enforcer":
{"socket": PATH}).

With --pubkey, every allowlist is verified under the key, as enforcer run and
apply verify theirs: --allowlist against FILE.sig, and each list a client
applies against the signature it sends with it (a client's unsigned or badly
signed list is refused, and the list in force stays).
--require-signature refuses to start without --pubkey.

The guard is loaded with the first allowlist a client applies (or with
--allowlist at start), or adopted when one is pinned. When the kernel cannot
run it (no BPF LSM), the companion still serves and answers every call with
the reason, so that Falco reports it and keeps detecting.`,
		Example: `  # as the Falco plugin starts it (do not run this by hand)
  kmodguard enforcer serve-companion

  # a standalone companion that Falco attaches to
  kmodguard enforcer serve-companion --socket /run/kmodguard/companion.sock \
    --allowlist /etc/kmodguard/allowlist.yaml --pubkey /etc/kmodguard/signing.pub`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLog(cmd.ErrOrStderr())
			log.SetFormatter(&logrus.JSONFormatter{})
			cfg := enforcer.CompanionConfig{
				Config: enforcer.Config{PinDir: *pinDir, Mode: allowlist.Mode(mode), Seal: seal, Logger: log},
				Socket: socket, Stderr: cmd.ErrOrStderr(),
			}
			if trust.pubkey != "" {
				k, err := allowlist.LoadPublicKey(trust.pubkey)
				if err != nil {
					return withCode(exitError, err)
				}
				cfg.Trust.PublicKey = k
			}
			cfg.Trust.RequireSignature = trust.require
			if path != "" {
				a, err := trust.load(path)
				if err != nil {
					return withCode(exitError, err)
				}
				cfg.Initial = a
			}
			return withCode(exitError, enforcer.ServeCompanion(cmd.Context(), cfg))
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "serve on this Unix socket instead of the go-plugin handshake")
	cmd.Flags().StringVarP(&path, "allowlist", "a", "", "allowlist to load the guard with at start (default: wait for the client's)")
	cmd.Flags().StringVar(&mode, "mode", "", "enforce or audit (default: the allowlist's spec.mode)")
	completeModes(cmd)
	cmd.Flags().BoolVar(&seal, "seal", false, "seal the guard until reboot once the first allowlist is in force")
	trust.bind(cmd)
	return cmd
}
