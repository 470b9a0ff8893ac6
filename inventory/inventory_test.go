package inventory

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/internal/elftest"
)

const release = "6.1.0-99-amd64"

// host lays out what Take reads under a root of its own: /proc/modules,
// the kernel release, /sys/module and the release's module tree.
type host struct {
	t    *testing.T
	root string
	dep  strings.Builder
}

func newHost(t *testing.T, procModules string) *host {
	h := &host{t: t, root: t.TempDir()}
	h.write("proc/modules", procModules)
	h.write("proc/sys/kernel/osrelease", release+"\n")
	return h
}

func (h *host) write(rel, content string) {
	h.t.Helper()
	p := filepath.Join(h.root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// file installs a module file in the release's tree and modules.dep.
func (h *host) file(rel string, img []byte) string {
	h.write(filepath.Join("lib/modules", release, rel), string(img))
	h.dep.WriteString(rel + ":\n")
	h.write(filepath.Join("lib/modules", release, "modules.dep"), h.dep.String())
	return filepath.Join(h.root, "lib/modules", release, rel)
}

func digest(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestTake(t *testing.T) {
	h := newHost(t, strings.Join([]string{
		"veth 36864 0 - Live 0xffffffffc0a3b000",
		"dummy 16384 0 - Live 0xffffffffc0a2b000",
		"rootkit 16384 0 - Live 0xffffffffc0a1b000 (OE)",
		"nosrc 16384 0 - Live 0xffffffffc0a0b000",
		"bid 16384 0 - Live 0xffffffffc0a0c000",
		"rebuilt 16384 0 - Live 0xffffffffc0a0d000",
		"",
	}, "\n"))
	dummy := elftest.Module("license=GPL\x00srcversion=AAA111\x00name=dummy\x00", "dummy")
	veth := elftest.Module("license=GPL\x00srcversion=BBB222\x00name=veth\x00", "veth")
	nosrc := elftest.Module("license=GPL\x00name=nosrc\x00", "nosrc")
	dummyPath := h.file("kernel/drivers/net/dummy.ko", dummy)
	h.file("kernel/drivers/net/veth.ko", veth)
	h.file("extra/nosrc.ko", nosrc)
	// Build IDs decide where both sides have one, whatever srcversion says.
	note := func(id string) []byte {
		n := []byte{4, 0, 0, 0, byte(len(id)), 0, 0, 0, 3, 0, 0, 0, 'G', 'N', 'U', 0}
		return append(n, id...)
	}
	bidSec := func(id string) elftest.Section {
		return elftest.Section{Name: ".note.gnu.build-id", Type: 7, Flags: elftest.SHFAlloc, Data: note(id)}
	}
	bid := elftest.Module("license=GPL\x00srcversion=SAME\x00name=bid\x00", "bid", bidSec("\x01\x02\x03\x04"))
	rebuilt := elftest.Module("license=GPL\x00srcversion=SAME\x00name=rebuilt\x00", "rebuilt", bidSec("\x01\x02\x03\x04"))
	h.file("extra/bid.ko", bid)
	h.file("extra/rebuilt.ko", rebuilt)
	h.write("sys/module/bid/srcversion", "SAME\n")
	h.write("sys/module/bid/notes/.note.gnu.build-id", string(note("\x01\x02\x03\x04")))
	h.write("sys/module/rebuilt/srcversion", "SAME\n")
	h.write("sys/module/rebuilt/notes/.note.gnu.build-id", string(note("\x09\x09\x09\x09")))
	h.write("sys/module/dummy/srcversion", "AAA111\n")
	h.write("sys/module/dummy/taint", "\n")
	h.write("sys/module/veth/srcversion", "CCC333\n") // another build is loaded
	h.write("sys/module/rootkit/taint", "OE\n")

	evts, err := Take(h.root)
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]event.Event{}
	var names []string
	for _, e := range evts {
		if e.Syscall != event.Present || e.TS == 0 || !e.HostNS || e.Pid != 0 {
			t.Errorf("%s: syscall %s ts %d host_ns %v pid %d", e.Name, e.Syscall, e.TS, e.HostNS, e.Pid)
		}
		by[e.Name] = e
		names = append(names, e.Name)
	}
	if got := strings.Join(names, " "); got != "bid dummy nosrc rebuilt rootkit veth" {
		t.Fatalf("present modules %q, want them all, sorted", got)
	}
	if e := by["dummy"]; e.Inventory != TiedBySrcversion || e.Path != dummyPath || e.SHA256 != digest(dummy) || e.ThisModuleName != "dummy" || e.Srcversion != "AAA111" {
		t.Errorf("dummy: %+v; want tied by srcversion to %s", e, dummyPath)
	}
	if e := by["nosrc"]; e.Inventory != TiedByName || e.SHA256 != digest(nosrc) {
		t.Errorf("nosrc: %+v; want tied by name", e)
	}
	if e := by["bid"]; e.Inventory != TiedByBuildID || e.SHA256 != digest(bid) {
		t.Errorf("bid: %+v; want tied by build ID", e)
	}
	if e := by["rebuilt"]; !strings.Contains(e.Inventory, "has build ID 01020304, the loaded module 09090909") || e.SHA256 != "" {
		t.Errorf("rebuilt: %+v; want not tied: the same srcversion, another build", e)
	}
	if e := by["veth"]; !strings.HasPrefix(e.Inventory, NotTied) || !strings.Contains(e.Inventory, `"BBB222"`) || e.SHA256 != "" || e.Path != "" {
		t.Errorf("veth: %+v; want not tied: another srcversion is loaded", e)
	}
	if e := by["rootkit"]; !strings.Contains(e.Inventory, "no rootkit.ko* in modules.dep") || e.Taint != "OE" {
		t.Errorf("rootkit: %+v; want no file, taint OE", e)
	}

	// Judged as the plugin judges them: only a module tied to a listed
	// file is allowed.
	a := allowlist.New("t", allowlist.ModeEnforce)
	for _, en := range []allowlist.Entry{{Name: "dummy", SHA256: []string{digest(dummy)}}, {Name: "veth"}, {Name: "rootkit"}, {Name: "nosrc"}} {
		if _, err := a.Add(en); err != nil {
			t.Fatal(err)
		}
	}
	for name, want := range map[string]bool{"dummy": true, "nosrc": true, "veth": false, "rootkit": false} {
		e := by[name]
		a.Judge(&e)
		if e.Allowed == nil || *e.Allowed != want {
			t.Errorf("%s judged allowed=%v, want %v (%s)", name, e.Allowed, want, e.Inventory)
		}
	}
}

func TestTakeErrors(t *testing.T) {
	if _, err := Take(t.TempDir()); err == nil || !os.IsNotExist(err) && !strings.Contains(err.Error(), "no such file") {
		t.Errorf("no /proc/modules: %v, want a not-exist error", err)
	}
	// No module tree: every module is listed, none tied, and each says why.
	h := newHost(t, "dummy 16384 0 - Live 0x0\n")
	evts, err := Take(h.root)
	if err != nil || len(evts) != 1 || !strings.Contains(evts[0].Inventory, "the module tree of "+release) {
		t.Errorf("no module tree: %+v, %v", evts, err)
	}
	// A hostile /proc/modules: one line of 1 MiB.
	h = newHost(t, strings.Repeat("x", 1<<20)+"\n")
	if _, err := Take(h.root); err == nil {
		t.Error("a 1 MiB line was taken")
	}
}
