package bpf

import (
	"strings"
	"time"

	"github.com/kmodguard/kmodguard/event"
)

// requestWindow is how long after an autoload request a load by the
// kernel's modprobe is joined to it.
const requestWindow = 30 * time.Second

// maxRequests bounds the requests remembered: a flood of distinct aliases
// cannot grow the map.
const maxRequests = 1024

// requests joins the loads the kernel's modprobe makes to the autoload
// request that caused them. request_module() runs modprobe as
// `MODPROBE -q -- ALIAS`, started by a kernel thread (a kworker, or
// kthreadd), so the load carries neither the requester nor a link to it;
// the request event (module_request, in the requester's context) names the
// alias. A load whose caller's parent is a kernel thread (the sensor's
// KG_F_PARENT_KTHREAD) and whose command line ends in " -- ALIAS" for an
// alias requested within requestWindow gets the requester's pid, comm and
// the alias (Event.Request*). No process of user space has a kernel thread
// for a parent, so none can borrow another's request. It is not safe for
// concurrent use.
type requests struct {
	byAlias map[string]request
}

type request struct {
	at   time.Time
	pid  uint32
	comm string
}

func newRequests() *requests { return &requests{byAlias: map[string]request{}} }

// observe remembers a request, or joins a load to one.
func (r *requests) observe(ev *event.Event, now time.Time) {
	switch ev.Syscall {
	case event.ModuleRequest:
		if ev.Name == "" {
			return
		}
		if len(r.byAlias) >= maxRequests {
			r.expire(now)
			if len(r.byAlias) >= maxRequests {
				clear(r.byAlias)
			}
		}
		r.byAlias[ev.Name] = request{at: now, pid: ev.Pid, comm: ev.Comm}
	case event.InitModule, event.FinitModule:
		if !ev.ParentKthread {
			return
		}
		i := strings.LastIndex(ev.Cmdline, " -- ")
		if i < 0 {
			return
		}
		alias := ev.Cmdline[i+len(" -- "):]
		q, ok := r.byAlias[alias]
		if !ok || now.Sub(q.at) > requestWindow {
			return
		}
		ev.RequestName, ev.RequestPid, ev.RequestComm = alias, q.pid, q.comm
	}
}

// expire forgets the requests older than requestWindow.
func (r *requests) expire(now time.Time) {
	for k, q := range r.byAlias {
		if now.Sub(q.at) > requestWindow {
			delete(r.byAlias, k)
		}
	}
}
