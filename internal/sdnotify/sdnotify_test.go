package sdnotify

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listen opens a datagram socket as the service manager does and returns
// a function that reads one message.
func listen(t *testing.T, name string) func() string {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return func() string {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read notification: %v", err)
		}
		return string(buf[:n])
	}
}

func TestNotifyPath(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	read := listen(t, sock)
	t.Setenv(EnvSocket, sock)
	const msg = "READY=1\nSTATUS=enforcing"
	sent, err := Notify(msg)
	if !sent || err != nil {
		t.Fatalf("Notify = %v, %v", sent, err)
	}
	if got := read(); got != msg {
		t.Fatalf("the manager read %q, want %q", got, msg)
	}
}

func TestNotifyAbstract(t *testing.T) {
	name := "@kmodguard-sdnotify-test-" + strings.ReplaceAll(t.Name(), "/", "-")
	read := listen(t, name)
	t.Setenv(EnvSocket, name)
	if sent, err := Notify("STOPPING=1"); !sent || err != nil {
		t.Fatalf("Notify = %v, %v", sent, err)
	}
	if got := read(); got != "STOPPING=1" {
		t.Fatalf("the manager read %q", got)
	}
}

func TestNotifyUnset(t *testing.T) {
	t.Setenv(EnvSocket, "")
	if sent, err := Notify("READY=1"); sent || err != nil {
		t.Fatalf("Notify without %s = %v, %v; want false, nil", EnvSocket, sent, err)
	}
}

func TestNotifyBadSocket(t *testing.T) {
	for _, addr := range []string{"relative/path", filepath.Join(t.TempDir(), "nobody-listens")} {
		t.Setenv(EnvSocket, addr)
		sent, err := Notify("READY=1")
		if sent || err == nil || !strings.Contains(err.Error(), addr) {
			t.Errorf("Notify to %q = %v, %v; want an error naming the socket", addr, sent, err)
		}
	}
}
