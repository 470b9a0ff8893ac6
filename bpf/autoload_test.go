package bpf

import (
	"testing"
	"time"

	"github.com/kmodguard/kmodguard/event"
)

// TestRequestsJoin: a load by the kernel's modprobe (started by a kernel thread,
// "-q -- ALIAS") within the window of a request for ALIAS names the
// requester; a load by anything else, for another alias, or too late does
// not.
func TestRequestsJoin(t *testing.T) {
	now := time.Unix(1000, 0)
	r := newRequests()
	r.observe(&event.Event{Syscall: event.ModuleRequest, Name: "net-pf-38", Pid: 4242, Comm: "exploit"}, now)
	load := func(kernelParent bool, cmdline string, at time.Time) *event.Event {
		ev := &event.Event{Syscall: event.FinitModule, Name: "af_alg", ParentKthread: kernelParent, Cmdline: cmdline}
		r.observe(ev, at)
		return ev
	}
	if ev := load(true, "/sbin/modprobe -q -- net-pf-38", now.Add(time.Second)); ev.RequestName != "net-pf-38" || ev.RequestPid != 4242 || ev.RequestComm != "exploit" {
		t.Errorf("the helper's load: %+v, want joined to the request of pid 4242", ev)
	}
	for name, ev := range map[string]*event.Event{
		"a process of user space": load(false, "/sbin/modprobe -q -- net-pf-38", now.Add(time.Second)),
		"another alias":           load(true, "/sbin/modprobe -q -- net-pf-10", now.Add(time.Second)),
		"no alias":                load(true, "/sbin/modprobe", now.Add(time.Second)),
		"after the window":        load(true, "/sbin/modprobe -q -- net-pf-38", now.Add(requestWindow+time.Second)),
		"an unload":               observed(r, &event.Event{Syscall: event.DeleteModule, ParentKthread: true, Cmdline: "x -- net-pf-38"}, now),
	} {
		if ev.RequestName != "" || ev.RequestPid != 0 {
			t.Errorf("%s: joined %+v", name, ev)
		}
	}
	// A flood of distinct aliases stays bounded.
	for i := range 3 * maxRequests {
		r.observe(&event.Event{Syscall: event.ModuleRequest, Name: "fs-" + string(rune('a'+i%26)) + time.Duration(i).String(), Pid: 1}, now)
	}
	if len(r.byAlias) > maxRequests {
		t.Errorf("%d requests remembered, more than %d", len(r.byAlias), maxRequests)
	}
}

func observed(r *requests, ev *event.Event, now time.Time) *event.Event {
	r.observe(ev, now)
	return ev
}
