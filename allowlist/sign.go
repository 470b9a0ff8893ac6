package allowlist

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"
)

// SigSuffix is appended to an allowlist's path to name its detached
// signature: the base64 ed25519 signature over the file's exact bytes.
const SigSuffix = ".sig"

var (
	// ErrUnsigned means a signature was required and FILE.sig is missing.
	ErrUnsigned = errors.New("allowlist is not signed")
	// ErrBadSignature means FILE.sig does not verify under the key.
	ErrBadSignature = errors.New("allowlist signature does not verify")
)

// GenerateKey makes a new ed25519 key pair for signing allowlists.
func GenerateKey() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate ed25519 key: %w", err)
	}
	return pub, priv, nil
}

// MarshalPrivateKey encodes a private key as PEM PKCS#8 ("PRIVATE KEY").
func MarshalPrivateKey(priv ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// MarshalPublicKey encodes a public key as PEM PKIX ("PUBLIC KEY").
func MarshalPublicKey(pub ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

func onePEM(data []byte, want string) ([]byte, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("no PEM block (want %q)", want)
	}
	if block.Type != want {
		return nil, fmt.Errorf("PEM block is %q, want %q", block.Type, want)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("trailing data after the PEM block")
	}
	return block.Bytes, nil
}

// ParsePrivateKey decodes a PEM PKCS#8 ed25519 private key.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	der, err := onePEM(data, "PRIVATE KEY")
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("parse private key: %T is not an ed25519 key", k)
	}
	return priv, nil
}

// ParsePublicKey decodes a PEM PKIX ed25519 public key.
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	der, err := onePEM(data, "PUBLIC KEY")
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("parse public key: %T is not an ed25519 key", k)
	}
	return pub, nil
}

// LoadPrivateKey reads a key written by MarshalPrivateKey.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read private key: %w", err)
	}
	k, err := ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// LoadPublicKey reads a key written by MarshalPublicKey.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read public key: %w", err)
	}
	k, err := ParsePublicKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// Sign returns the detached signature of data as FILE.sig holds it: base64
// and a newline.
func Sign(data []byte, priv ed25519.PrivateKey) []byte {
	sig := ed25519.Sign(priv, data)
	out := make([]byte, base64.StdEncoding.EncodedLen(len(sig)), base64.StdEncoding.EncodedLen(len(sig))+1)
	base64.StdEncoding.Encode(out, sig)
	return append(out, '\n')
}

// Verify checks a detached signature (as Sign writes it) over data.
func Verify(data, sig []byte, pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: the public key is %d bytes, want %d", ErrBadSignature, len(pub), ed25519.PublicKeySize)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(string(bytes.TrimRight(sig, "\r\n")))
	if err != nil {
		return fmt.Errorf("%w: not base64: %w", ErrBadSignature, err)
	}
	if len(raw) != ed25519.SignatureSize {
		return fmt.Errorf("%w: signature is %d bytes, want %d", ErrBadSignature, len(raw), ed25519.SignatureSize)
	}
	if !ed25519.Verify(pub, data, raw) {
		return fmt.Errorf("%w: the file was changed after signing, or signed with another key", ErrBadSignature)
	}
	return nil
}

// SignFile writes path+".sig" for the current bytes of path. It refuses to
// sign a file that is not a valid allowlist, and it signs exactly the bytes
// it validated.
func SignFile(path string, priv ed25519.PrivateKey) error {
	if len(priv) != ed25519.PrivateKeySize {
		return fmt.Errorf("sign %s: the private key is %d bytes, want %d", path, len(priv), ed25519.PrivateKeySize)
	}
	data, err := readFile(path)
	if err != nil {
		return err
	}
	if _, err := Parse(data, path); err != nil {
		return fmt.Errorf("refusing to sign an invalid allowlist: %w", err)
	}
	return WriteFileAtomic(path+SigSuffix, Sign(data, priv), 0o644)
}

// VerifyFile checks path against path+".sig".
func VerifyFile(path string, pub ed25519.PublicKey) error {
	data, err := readFile(path)
	if err != nil {
		return err
	}
	_, err = verifyBytes(path, data, pub)
	return err
}

// maxSigSize bounds a detached signature: base64 of 64 bytes is 88.
const maxSigSize = 1024

// verifyBytes checks path+".sig" over data and returns the signature.
func verifyBytes(path string, data []byte, pub ed25519.PublicKey) ([]byte, error) {
	sig, err := os.ReadFile(path + SigSuffix)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w: %s is missing", path, ErrUnsigned, path+SigSuffix)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: read signature: %w", path, err)
	}
	if len(sig) > maxSigSize {
		return nil, fmt.Errorf("%s: %w: %s is %d bytes, not a signature", path, ErrBadSignature, path+SigSuffix, len(sig))
	}
	if err := Verify(data, sig, pub); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return sig, nil
}

// ParseSigned parses data as Parse does and keeps sig as the detached
// signature that came with it, unchecked: VerifySigned checks it. For a
// consumer that is handed a document and its signature rather than a file.
func ParseSigned(data, sig []byte, source string) (*Allowlist, error) {
	a, err := Parse(data, source)
	if err != nil {
		return nil, err
	}
	if len(sig) > 0 {
		a.sig = bytes.Clone(sig)
	}
	return a, nil
}

// Signed returns the document a was parsed from and the detached signature
// that came with it: the one LoadVerified checked, or the one given to
// ParseSigned. doc is nil for an allowlist built in memory, sig for one
// loaded without a signature. Neither follows changes made to a after it
// was parsed: a consumer that verifies again (VerifySigned) verifies, and
// applies, the document.
func (a *Allowlist) Signed() (doc, sig []byte) { return a.parsed, a.sig }

// VerifySigned checks a's detached signature over the exact bytes a was
// parsed from. An allowlist built in memory, or parsed without a
// signature, is ErrUnsigned.
func (a *Allowlist) VerifySigned(pub ed25519.PublicKey) error {
	name := a.source
	if name == "" {
		name = "allowlist"
	}
	switch {
	case a.parsed == nil:
		return fmt.Errorf("%s: %w: built in memory, not parsed from a signed document", name, ErrUnsigned)
	case len(a.sig) == 0:
		return fmt.Errorf("%s: %w: no signature came with it", name, ErrUnsigned)
	case len(a.sig) > maxSigSize:
		return fmt.Errorf("%s: %w: the signature is %d bytes, not a signature", name, ErrBadSignature, len(a.sig))
	}
	if err := Verify(a.parsed, a.sig, pub); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// LoadVerified reads path, checks path+".sig" against pubKey over the exact
// bytes read, and only then decodes them. It never accepts an unsigned or
// wrongly signed file.
func LoadVerified(path string, pubKey ed25519.PublicKey) (*Allowlist, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	sig, err := verifyBytes(path, data, pubKey)
	if err != nil {
		return nil, err
	}
	a, err := Parse(data, path)
	if err != nil {
		return nil, err
	}
	a.sig = sig
	return a, nil
}

// LoadOptions tells a consumer how much to trust an allowlist file.
type LoadOptions struct {
	// PublicKey, when set, makes a valid signature mandatory.
	PublicKey ed25519.PublicKey
	// RequireSignature refuses to load without a PublicKey, so that a
	// forgotten key is an error rather than a silently unsigned policy.
	RequireSignature bool
	// MinSerial refuses a list whose metadata.serial is below it (the
	// highest serial taken before: ErrRollback).
	MinSerial uint64
	// Now is the clock that metadata.notAfter is checked against
	// (ErrExpired); nil is time.Now.
	Now func() time.Time
}

// LoadWith loads an allowlist under opts: verified when a key is given,
// refused when a signature is required and no key is given.
func LoadWith(path string, opts LoadOptions) (*Allowlist, error) {
	var a *Allowlist
	var err error
	switch {
	case opts.PublicKey != nil:
		a, err = LoadVerified(path, opts.PublicKey)
	case opts.RequireSignature:
		return nil, fmt.Errorf("%s: a signature is required but no public key was given", path)
	default:
		a, err = Load(path)
	}
	if err != nil {
		return nil, err
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	if err := a.CheckFresh(opts.MinSerial, now()); err != nil {
		return nil, err
	}
	return a, nil
}
