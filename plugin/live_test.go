package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/falcosecurity/plugin-sdk-go/pkg/sdk"
	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/bpf"
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/internal/debkernel"
)

// liveEvent is one event read through the plugin: its payload and fields.
type liveEvent struct {
	payload []byte
	e       event.Event
	fields  map[string]any
}

// TestLive opens the plugin's live source on this host, issues real module
// syscalls with Debian's dummy.ko, reads them back through NextBatch and
// Extract, then replays a recording of them and expects every field to be
// the same.
func TestLive(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the live source loads the BPF sensor")
	}
	if err := bpf.CheckSystem(); err != nil {
		t.Skipf("needs the BPF sensor's kernel features: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	k, err := debkernel.Get(ctx, debkernel.Series61)
	if err != nil {
		t.Skipf("needs a Debian 6.1 kernel package: %v", err)
	}
	path, err := k.Module("dummy")
	if err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(img)
	digest := hex.EncodeToString(sum[:])

	list := filepath.Join(t.TempDir(), "allow.yaml")
	writeAllowlist(t, list, allowlist.Entry{Name: "dummy", SHA256: []string{digest}})
	p := newPlugin(t, `{"allowlist": "`+list+`", "image_cap": 1048576}`)
	in, err := p.Open("")
	if err != nil {
		t.Fatalf("Open live: %v", err)
	}
	defer in.(sdk.Closer).Close()

	// The syscalls, from one locked thread so that tid is known. Other
	// tests on this machine may flood every sensor with module syscalls at
	// the same time (bpf's load test does), so a round whose events were
	// dropped by the ring buffer is tried again, at most three times.
	var (
		got                          []*liveEvent
		tid, pid                     int
		comm                         []byte
		initErr, finitErr, deleteErr error
	)
	evts := newMemEvents(batchSize)
	for round := 1; round <= 3 && len(got) < 3; round++ {
		got = nil
		start := uint64(time.Now().UnixNano())
		runtime.LockOSThread()
		tid, pid = unix.Gettid(), os.Getpid()
		if comm, err = os.ReadFile("/proc/thread-self/comm"); err != nil {
			t.Fatal(err)
		}
		initErr = unix.InitModule(img, "numdummies=3")
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		finitErr = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		deleteErr = unix.DeleteModule("dummy", unix.O_NONBLOCK|unix.O_TRUNC)
		runtime.UnlockOSThread()

		// Read until the three events of this round are in.
		deadline := time.Now().Add(15 * time.Second)
		for len(got) < 3 && time.Now().Before(deadline) {
			n, err := in.NextBatch(p, evts)
			if err != nil && err != sdk.ErrTimeout {
				t.Fatalf("NextBatch: %v", err)
			}
			for i := 0; i < n; i++ {
				le := &liveEvent{payload: evts.evts[i].payload()}
				if err := le.e.UnmarshalBinary(le.payload); err != nil {
					t.Fatal(err)
				}
				if int(le.e.Tid) == tid && le.e.TS >= start {
					le.fields = extractAll(t, p, uint64(100*round+len(got)), le.payload)
					t.Logf("%s: %v", le.e.Syscall, le.fields)
					got = append(got, le)
				}
			}
		}
		if len(got) < 3 {
			t.Logf("round %d: saw %d of the 3 syscalls of thread %d; trying again", round, len(got), tid)
		}
	}
	if len(got) != 3 {
		t.Fatalf("saw %d of the 3 syscalls of thread %d in three rounds", len(got), tid)
	}

	errName := func(err error) string {
		if err == nil {
			return "SUCCESS"
		}
		return unix.ErrnoName(err.(unix.Errno))
	}
	common := map[string]any{
		"kmod.pid": uint64(pid), "kmod.tid": uint64(tid), "kmod.comm": strings.TrimSpace(string(comm)),
		"kmod.ppid": uint64(os.Getppid()), "kmod.uid": uint64(0), "kmod.host_ns": true,
		"kmod.pidns": nsInode(t, "pid"), "kmod.mntns": nsInode(t, "mnt"), "kmod.userns": nsInode(t, "user"),
	}
	want := []map[string]any{{
		"kmod.syscall": "init_module", "kmod.res": errName(initErr), "kmod.ok": initErr == nil,
		"kmod.name": "dummy", "kmod.this_module_name": "dummy", "kmod.name_mismatch": false,
		"kmod.sha256": digest, "kmod.elf_sha256": digest, "kmod.size": uint64(len(img)), "kmod.params": "numdummies=3",
		"kmod.allowed": true, "kmod.allowlist_entry": "dummy", "kmod.truncated": false, "kmod.verdict": "none",
	}, {
		"kmod.syscall": "finit_module", "kmod.res": errName(finitErr), "kmod.name": "dummy",
		"kmod.sha256": digest, "kmod.path": path, "kmod.flags": []string{}, "kmod.allowed": true,
	}, {
		"kmod.syscall": "delete_module", "kmod.res": errName(deleteErr), "kmod.name": "dummy",
		"kmod.flags": []string{"O_NONBLOCK", "O_TRUNC"},
	}}
	for i, w := range want {
		for k, v := range common {
			w[k] = v
		}
		for k, v := range w {
			if !reflect.DeepEqual(got[i].fields[k], v) {
				t.Errorf("%s: %s = %#v, want %#v", w["kmod.syscall"], k, got[i].fields[k], v)
			}
		}
		if _, ok := got[i].fields["kmod.cap_effective"]; !ok || !strings.Contains(got[i].fields["kmod.cap_effective"].(string), "CAP_SYS_MODULE") {
			t.Errorf("%s: kmod.cap_effective = %v, want root's capabilities", w["kmod.syscall"], got[i].fields["kmod.cap_effective"])
		}
	}

	// Record what the plugin saw, replay it, and compare every field.
	rec := filepath.Join(t.TempDir(), "live.kmg")
	rf, err := os.Create(rec)
	if err != nil {
		t.Fatal(err)
	}
	w := event.NewRecordWriter(rf)
	for _, le := range got {
		e := le.e
		e.Allowed, e.AllowlistEntry = nil, "" // as recorded without an allowlist
		if err := w.Write(&e); err != nil {
			t.Fatal(err)
		}
	}
	if err := rf.Close(); err != nil {
		t.Fatal(err)
	}
	rin, err := p.Open(ReplayPrefix + rec)
	if err != nil {
		t.Fatal(err)
	}
	defer rin.(sdk.Closer).Close()
	replayed := batches(t, p, rin, 10)
	if len(replayed) != len(got) {
		t.Fatalf("replayed %d events, want %d", len(replayed), len(got))
	}
	for i, b := range replayed {
		f := extractAll(t, p, uint64(200+i), b)
		if !reflect.DeepEqual(f, got[i].fields) {
			t.Errorf("replayed %s differs from live\nlive:   %v\nreplay: %v", got[i].e.Syscall, got[i].fields, f)
		}
	}
}

// nsInode is the inode number of this process's namespace of a kind.
func nsInode(t *testing.T, kind string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/"+kind, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
