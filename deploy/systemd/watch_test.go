package systemd_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// watchEvent is the part of a `kmodguard watch -o json` line these tests
// read.
type watchEvent struct {
	Syscall     string `json:"syscall"`
	Res         int64  `json:"res"`
	Name        string `json:"name"`
	Comm        string `json:"comm"`
	Pid         uint32 `json:"pid"`
	ContainerID string `json:"container_id"`
	PidNS       uint32 `json:"pidns"`
	MntNS       uint32 `json:"mntns"`
	HostNS      bool   `json:"host_ns"`
	HostMntNS   *bool  `json:"host_mntns"`
	Cgroup      string `json:"cgroup"`
}

func (e watchEvent) String() string {
	mnt := "unknown"
	if e.HostMntNS != nil {
		mnt = fmt.Sprint(*e.HostMntNS)
	}
	return fmt.Sprintf("%s %s res=%d comm=%q host_ns=%v host_mntns=%s container_id=%q pidns=%d cgroup=%s",
		e.Syscall, e.Name, e.Res, e.Comm, e.HostNS, mnt, e.ContainerID, e.PidNS, e.Cgroup)
}

// watcher runs `kmodguard watch -o json`, the packaged sensor, beside the
// guard, and hands over its events.
type watcher struct {
	events chan watchEvent
	stderr strings.Builder
}

func startWatch(t *testing.T) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "kmodguard", "watch", "-o", "json")
	w := &watcher{events: make(chan watchEvent, 1024)}
	cmd.Stderr = &w.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("kmodguard watch: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(w.events)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
		for sc.Scan() {
			var e watchEvent
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				w.events <- e
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		<-done
	})
	// The sensor is attached once a delete_module of a name no module has
	// comes back as an event.
	probe := "kmodguard-ready-" + randHex(4)
	deadline := time.Now().Add(60 * time.Second)
	for {
		unix.DeleteModule(probe, unix.O_NONBLOCK)
		if _, ok := w.next(func(e watchEvent) bool { return e.Syscall == "delete_module" && e.Name == probe }, time.Second); ok {
			return w
		}
		if time.Now().After(deadline) {
			t.Fatalf("kmodguard watch sent no event for delete_module(%s) in 60 s; stderr:\n%s", probe, w.stderr.String())
		}
	}
}

// next returns the first event that match accepts within d, dropping the
// others.
func (w *watcher) next(match func(watchEvent) bool, d time.Duration) (watchEvent, bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case e, ok := <-w.events:
			if !ok {
				return watchEvent{}, false
			}
			if match(e) {
				return e, true
			}
		case <-timer.C:
			return watchEvent{}, false
		}
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// loadEvent waits for the sensor's event of a load of mod.
func (w *watcher) loadEvent(t *testing.T, mod string) watchEvent {
	t.Helper()
	e, ok := w.next(func(e watchEvent) bool {
		return (e.Syscall == "finit_module" || e.Syscall == "init_module") && e.Name == mod
	}, 30*time.Second)
	if !ok {
		t.Fatalf("no load event of %s from kmodguard watch in 30 s", mod)
	}
	return e
}

// boundDevices returns the sysfs paths of the devices bound to a module's
// drivers.
func boundDevices(mod string) []string {
	var devs []string
	drivers, _ := filepath.Glob("/sys/module/" + mod + "/drivers/*")
	for _, d := range drivers {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if e.Type()&os.ModeSymlink == 0 || strings.HasPrefix(e.Name(), "module") {
				continue
			}
			p, err := filepath.EvalSymlinks(filepath.Join(d, e.Name()))
			if err == nil && strings.HasPrefix(p, "/sys/devices/") {
				devs = append(devs, p)
			}
		}
	}
	return devs
}

// udevReload unloads a driver that udev loaded at boot and has udev load
// it again, by an "add" event for the devices it drove, from its workers:
// the real thing, from udev's own mount namespace. It returns the module,
// or "" when no driver of the boot could be taken out and put back.
func udevReload(t *testing.T) string {
	t.Helper()
	var cands []string
	for _, l := range enforcerLog(t) {
		if strings.Contains(l.Comm, "udev") && l.Verdict == "allowed" && !slices.Contains(cands, l.Module) {
			cands = append(cands, l.Module)
		}
	}
	// Drivers of the guest's plain devices first: their removal affects
	// nothing the test needs.
	slices.SortStableFunc(cands, func(a, b string) int {
		rank := func(m string) int {
			for i, p := range []string{"snd", "e1000", "virtio_net", "uhci", "ehci", "xhci", "usb"} {
				if strings.HasPrefix(m, p) {
					return i
				}
			}
			return 100
		}
		return rank(a) - rank(b)
	})
	for _, m := range cands {
		devs := boundDevices(m)
		if len(devs) == 0 {
			continue
		}
		if holders, _ := os.ReadDir("/sys/module/" + m + "/holders"); len(holders) > 0 {
			continue
		}
		if out, err := sh("modprobe", "-r", m); err != nil {
			t.Logf("modprobe -r %s: %v: %s", m, err, out)
			continue
		}
		args := append([]string{"trigger", "--action=add"}, devs...)
		if out, err := sh("udevadm", args...); err != nil {
			t.Fatalf("udevadm %s: %v: %s", strings.Join(args, " "), err, out)
		}
		sh("udevadm", "settle", "--timeout=60")
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if procModules(t)[m] {
				t.Logf("udev loaded %s again for %d device(s): %s", m, len(devs), strings.Join(devs, " "))
				return m
			}
		}
		t.Logf("udev did not load %s again for %v: putting it back by hand", m, devs)
		sh("modprobe", m)
	}
	return ""
}
