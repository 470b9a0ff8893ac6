package main

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/kmodguard/kmodguard/allowlist"
)

func newAllowlistKeygenCmd() *cobra.Command {
	var prefix string
	var force bool
	cmd := &cobra.Command{
		Use:   "keygen --prefix PREFIX",
		Short: "Make an ed25519 key pair for signing allowlists",
		Long: `Write PREFIX.key (the private key, PEM PKCS#8, mode 0600) and PREFIX.pub (the
public key, PEM PKIX). Keep the private key off the hosts that enforce: they
need only the public key.`,
		Example: `  kmodguard allowlist keygen --prefix /secure/kmodguard-signing
  # -> /secure/kmodguard-signing.key and /secure/kmodguard-signing.pub`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if prefix == "" {
				// Not MarkFlagRequired: its message would name the deprecated -o too.
				return withCode(exitError, errors.New("say where to write the keys: --prefix PREFIX"))
			}
			privPath, pubPath := prefix+".key", prefix+".pub"
			if !force {
				for _, p := range []string{privPath, pubPath} {
					if _, err := os.Stat(p); err == nil {
						return withCode(exitError, fmt.Errorf("%s exists; refusing to overwrite a key (use --force)", p))
					}
				}
			}
			pub, priv, err := allowlist.GenerateKey()
			if err != nil {
				return withCode(exitError, err)
			}
			privPEM, err := allowlist.MarshalPrivateKey(priv)
			if err != nil {
				return withCode(exitError, err)
			}
			pubPEM, err := allowlist.MarshalPublicKey(pub)
			if err != nil {
				return withCode(exitError, err)
			}
			if err := os.Remove(privPath); err != nil && !errors.Is(err, os.ErrNotExist) {
				return withCode(exitError, err)
			}
			if err := allowlist.WriteFileAtomic(privPath, privPEM, 0o600); err != nil {
				return withCode(exitError, err)
			}
			if err := allowlist.WriteFileAtomic(pubPath, pubPEM, 0o644); err != nil {
				return withCode(exitError, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s and %s (key id %s)\n", privPath, pubPath, keyID(pub))
			return nil
		},
	}
	cmd.Flags().StringVar(&prefix, "prefix", "", "path prefix for PREFIX.key and PREFIX.pub (required)")
	addFileAlias(cmd, &prefix, "--prefix")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite existing key files")
	return cmd
}

// keyID is a short fingerprint of a public key: the first 8 bytes of the
// SHA-256 of its PKIX encoding.
func keyID(pub any) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "?"
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:8])
}

func newAllowlistSignCmd() *cobra.Command {
	var key string
	cmd := &cobra.Command{
		Use:   "sign --key PRIV FILE",
		Short: "Sign an allowlist (writes FILE.sig)",
		Long: `Check that FILE is a valid allowlist, then write FILE.sig: the base64
ed25519 signature over FILE's exact bytes. Any later change to FILE, even
whitespace, makes the signature fail.`,
		Example: `  kmodguard allowlist sign --key /secure/kmodguard-signing.key allow.yaml
  kmodguard allowlist verify --pubkey /etc/kmodguard/signing.pub allow.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			priv, err := allowlist.LoadPrivateKey(key)
			if err != nil {
				return withCode(exitError, err)
			}
			if err := allowlist.SignFile(args[0], priv); err != nil {
				return withCode(exitError, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (key id %s)\n", args[0]+allowlist.SigSuffix, keyID(priv.Public()))
			return nil
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "PEM PKCS#8 ed25519 private key (required)")
	_ = cmd.MarkFlagRequired("key")
	completeFiles(cmd, "key", "key", "pem")
	cmd.ValidArgsFunction = completeAllowlists
	return cmd
}

func newAllowlistVerifyCmd() *cobra.Command {
	var pubPath string
	cmd := &cobra.Command{
		Use:   "verify --pubkey PUB FILE",
		Short: "Verify an allowlist's signature (FILE.sig)",
		Long: `Check FILE.sig against FILE's exact bytes under the public key, then check
that FILE is a valid allowlist. Exit code 0 when both hold, 2 otherwise.`,
		Example: `  kmodguard allowlist verify --pubkey /etc/kmodguard/signing.pub /etc/kmodguard/allowlist.yaml`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pub, err := allowlist.LoadPublicKey(pubPath)
			if err != nil {
				return withCode(exitError, err)
			}
			a, err := allowlist.LoadVerified(args[0], pub)
			if err != nil {
				return withCode(exitError, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: signature OK (key id %s), %d entries, mode %s\n",
				args[0], keyID(pub), len(a.Spec.Modules), a.Spec.Mode)
			return nil
		},
	}
	cmd.Flags().StringVar(&pubPath, "pubkey", "", "PEM PKIX ed25519 public key (required)")
	_ = cmd.MarkFlagRequired("pubkey")
	completeFiles(cmd, "pubkey", "pub", "pem")
	cmd.ValidArgsFunction = completeAllowlists
	return cmd
}
