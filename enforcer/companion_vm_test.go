//go:build linux

package enforcer_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/companion"
	"github.com/kmodguard/kmodguard/internal/vmtest"
)

// TestGuestCompanionSignedOnly runs the bypass of issue 11 against the real
// companion on its socket: `kmodguard enforcer serve-companion --socket
// --pubkey` loads the guard with a signed list (serial 5, dummy only), and
// a root client on the socket applies a list that admits veth: unsigned,
// signed by another key, with a byte changed after signing, and signed
// under the key but older (serial 3). Each is refused and veth stays
// EPERM. A signed serial 6 is taken, and veth loads.
func TestGuestCompanionSignedOnly(t *testing.T) {
	vmtest.RequireGuest(t)
	kg := vmtest.Binary(t, "kmodguard")
	pins, dir := pinDir(t), t.TempDir()
	dummy, veth := readFixture(t, "dummy"), readFixture(t, "veth")
	pub, priv, err := allowlist.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	_, otherPriv, _ := allowlist.GenerateKey()
	pem, err := allowlist.MarshalPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pubPath := filepath.Join(dir, "signing.pub")
	if err := os.WriteFile(pubPath, pem, 0o644); err != nil {
		t.Fatal(err)
	}
	release := func(serial uint64, names ...string) []byte {
		a := list(t, allowlist.ModeEnforce, entry{"dummy", []string{sum(dummy)}})
		for _, n := range names {
			a.Spec.Modules = append(a.Spec.Modules, allowlist.Entry{Name: n, SHA256: []string{sum(veth)}})
		}
		a.Metadata.Serial = serial
		b, err := allowlist.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	file := filepath.Join(dir, "allow.yaml")
	if err := os.WriteFile(file, release(5), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := allowlist.SignFile(file, priv); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "companion.sock")
	logPath := filepath.Join(dir, "companion.log")
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(kg, "enforcer", "serve-companion", "--socket", sock, "--allowlist", file,
		"--pubkey", pubPath, "--require-signature", "--pin-dir", pins)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(unix.SIGTERM)
		cmd.Wait()
		lf.Close()
		runCmd(kg, "enforcer", "stop", "--pin-dir", pins)
		b, _ := os.ReadFile(logPath)
		t.Logf("companion log:\n%s", b)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var c *companion.Client
	for c == nil {
		if c, err = companion.DialSocket(ctx, sock); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("companion socket: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	defer c.Close()
	for st, err := c.Status(ctx); err != nil || st.Generation == 0; st, err = c.Status(ctx) {
		if ctx.Err() != nil {
			t.Fatalf("companion status: %+v, %v", st, err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	vethRefused := func(after string) {
		t.Helper()
		if err := initModule(veth); !errors.Is(err, unix.EPERM) {
			t.Fatalf("after %s: init_module(veth) = %v, want EPERM (the signed list in force)", after, err)
		}
	}
	vethRefused("start")
	newer := release(6, "veth")
	parse := func(doc, sig []byte) *allowlist.Allowlist {
		a, err := allowlist.ParseSigned(doc, sig, "client.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	for _, tc := range []struct {
		name string
		a    *allowlist.Allowlist
		want error
		text string
	}{
		{"unsigned", parse(newer, nil), companion.ErrUntrusted, "no signature"},
		{"signed by another key", parse(newer, allowlist.Sign(newer, otherPriv)), companion.ErrUntrusted, "signed with another key"},
		{"changed after signing", parse(append([]byte("# changed\n"), newer...), allowlist.Sign(newer, priv)), companion.ErrUntrusted, "changed after signing"},
		{"signed, but older (serial 3)", parse(release(3, "veth"), allowlist.Sign(release(3, "veth"), priv)), companion.ErrInvalidAllowlist, "rolled back"},
	} {
		_, err := c.Apply(ctx, tc.a)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
			t.Fatalf("apply %s over the socket = %v, want %v naming %q", tc.name, err, tc.want, tc.text)
		}
		t.Logf("apply %s over the socket: refused: %v", tc.name, err)
		vethRefused(tc.name)
	}
	res, err := c.Apply(ctx, parse(newer, allowlist.Sign(newer, priv)))
	if err != nil {
		t.Fatalf("apply of signed serial 6 over the socket: %v", err)
	}
	t.Logf("apply of signed serial 6 over the socket: generation %d, %d entries", res.Generation, res.Entries)
	if err := initModule(veth); err != nil {
		t.Fatalf("init_module(veth) under signed serial 6: %v", err)
	}
	unload(t, "veth")
}
