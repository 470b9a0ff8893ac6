package allowlist

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func writeSigned(t *testing.T) (path string, pubPath string, dir string) {
	t.Helper()
	dir = t.TempDir()
	pub, priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	privPEM, err := MarshalPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, err := MarshalPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pubPath = filepath.Join(dir, "k.pub")
	for name, data := range map[string][]byte{"k.key": privPEM, "k.pub": pubPEM, "allow.yaml": []byte(validDoc)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path = filepath.Join(dir, "allow.yaml")
	k, err := LoadPrivateKey(filepath.Join(dir, "k.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := SignFile(path, k); err != nil {
		t.Fatal(err)
	}
	return path, pubPath, dir
}

func TestSignVerify(t *testing.T) {
	path, pubPath, dir := writeSigned(t)
	pub, err := LoadPublicKey(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	a, err := LoadVerified(path, pub)
	if err != nil {
		t.Fatalf("round trip: %v", err)
	}
	if len(a.Spec.Modules) != 3 {
		t.Errorf("loaded %d entries", len(a.Spec.Modules))
	}
	if _, err := LoadWith(path, LoadOptions{PublicKey: pub, RequireSignature: true}); err != nil {
		t.Errorf("LoadWith: %v", err)
	}

	otherPub, _, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadVerified(path, otherPub); !errors.Is(err, ErrBadSignature) {
		t.Errorf("wrong key: %v, want ErrBadSignature", err)
	}

	// One byte changed after signing.
	data, _ := os.ReadFile(path)
	data[len(data)-2] ^= 1
	tampered := filepath.Join(dir, "tampered.yaml")
	os.WriteFile(tampered, data, 0o600)
	sig, _ := os.ReadFile(path + SigSuffix)
	os.WriteFile(tampered+SigSuffix, sig, 0o600)
	if _, err := LoadVerified(tampered, pub); !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered file: %v, want ErrBadSignature", err)
	}

	// Unsigned, and signature garbage.
	os.Remove(tampered + SigSuffix)
	if _, err := LoadVerified(tampered, pub); !errors.Is(err, ErrUnsigned) {
		t.Errorf("unsigned file: %v, want ErrUnsigned", err)
	}
	for _, garbage := range []string{"", "not base64!\n", "AAAA\n", string(sig[:len(sig)-5]) + "\n"} {
		os.WriteFile(tampered+SigSuffix, []byte(garbage), 0o600)
		if _, err := LoadVerified(tampered, pub); !errors.Is(err, ErrBadSignature) {
			t.Errorf("signature %q: %v, want ErrBadSignature", garbage, err)
		}
	}

	if _, err := LoadWith(path, LoadOptions{RequireSignature: true}); err == nil {
		t.Error("RequireSignature without a key loaded the file")
	}
	if _, err := LoadWith(path, LoadOptions{}); err != nil {
		t.Errorf("plain LoadWith: %v", err)
	}
}

func TestSignFileRefusesInvalid(t *testing.T) {
	_, priv, _ := GenerateKey()
	p := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(p, []byte("apiVersion: kmodguard.io/v1\nkind: ModuleAllowlist\n"), 0o600)
	if err := SignFile(p, priv); err == nil {
		t.Fatal("signed an invalid allowlist")
	}
	if _, err := os.Stat(p + SigSuffix); !os.IsNotExist(err) {
		t.Errorf("a signature was written for an invalid allowlist")
	}
}

func TestParseKeys(t *testing.T) {
	pub, priv, _ := GenerateKey()
	pubPEM, _ := MarshalPublicKey(pub)
	privPEM, _ := MarshalPrivateKey(priv)
	if _, err := ParsePublicKey(privPEM); err == nil {
		t.Error("a private key parsed as a public key")
	}
	if _, err := ParsePrivateKey(pubPEM); err == nil {
		t.Error("a public key parsed as a private key")
	}
	if _, err := ParsePublicKey([]byte("junk")); err == nil {
		t.Error("junk parsed as a key")
	}
	if _, err := ParsePublicKey(append(pubPEM, pubPEM...)); err == nil {
		t.Error("two PEM blocks accepted")
	}
	got, err := ParsePublicKey(pubPEM)
	if err != nil || !got.Equal(pub) {
		t.Errorf("public key round trip: %v", err)
	}
}

// TestVerifySigned: an allowlist carries the exact bytes it was parsed from
// and the signature that came with them, so that a consumer handed both
// (the enforcer companion) verifies what it applies.
func TestVerifySigned(t *testing.T) {
	path, pubPath, _ := writeSigned(t)
	pub, err := LoadPublicKey(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	a, err := LoadVerified(path, pub)
	if err != nil {
		t.Fatal(err)
	}
	doc, sig := a.Signed()
	if file, _ := os.ReadFile(path); string(doc) != string(file) || len(sig) == 0 {
		t.Fatalf("Signed() = %d bytes, %q; want the file's bytes and its signature", len(doc), sig)
	}
	if err := a.VerifySigned(pub); err != nil {
		t.Fatalf("VerifySigned of a verified file: %v", err)
	}
	// The same document and signature handed over, as over the wire.
	b, err := ParseSigned(doc, sig, "wire")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.VerifySigned(pub); err != nil {
		t.Fatalf("VerifySigned of the document handed over: %v", err)
	}
	otherPub, _, _ := GenerateKey()
	changed := append([]byte("# one more line\n"), doc...)
	c, err := ParseSigned(changed, sig, "wire")
	if err != nil {
		t.Fatal(err)
	}
	unsigned, _ := Parse(doc, "wire")
	loaded, _ := Load(path)
	for name, tc := range map[string]struct {
		a    *Allowlist
		key  []byte
		want error
	}{
		"other key":          {b, otherPub, ErrBadSignature},
		"document changed":   {c, pub, ErrBadSignature},
		"no signature":       {unsigned, pub, ErrUnsigned},
		"loaded without key": {loaded, pub, ErrUnsigned},
		"built in memory":    {New("mem", ModeEnforce), pub, ErrUnsigned},
	} {
		if err := tc.a.VerifySigned(tc.key); !errors.Is(err, tc.want) {
			t.Errorf("%s: VerifySigned = %v, want %v", name, err, tc.want)
		}
	}
}
