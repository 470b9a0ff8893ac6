package plugin

import (
	"time"

	"github.com/kmodguard/kmodguard/event"
)

// The join of the two views of a module load.
//
// The sensor sees the syscall (sys_enter and sys_exit: the user's arguments,
// the result, the process); the guard sees the kernel's own copy of the
// image in the LSM hook, which runs between the two. Each reports through a
// ring buffer of its own, so their reports reach the plugin in either order.
//
// A load event and a decision belong together when they come from the same
// thread, for the same operation (init_module or finit_module), and the
// decision's time is within JoinWindow of the event's enter time. A thread
// makes one syscall at a time, so within a window that is far shorter than
// the time between two loads of one thread, the pair is unambiguous; when a
// thread did load twice within the window, the decision whose digest matches
// the sensor's wins, and else the nearest in time.
//
// Whichever side comes first waits up to JoinWindow for the other:
//
//   - a load event that gets no decision goes to Falco with kmod.verdict
//     "none" (the syscall failed before the hook, for example without
//     CAP_SYS_MODULE, or the guard was not running);
//   - a decision that gets no load event goes to Falco as an event of its
//     own, with kmod.syscall "guard": a load the sensor missed (ring buffer
//     full, sensor not running yet) is itself a finding. Seal refusals
//     (the guard refusing to be removed) take that way too.
//
// Events other than loads (delete_module) pass straight through, and so
// does everything while no decision stream is connected.
const JoinWindow = 2 * time.Second

// joiner pairs sensor load events with guard decisions. It is not safe for
// concurrent use; its owner serializes calls.
type joiner struct {
	window    time.Duration
	events    []*event.Event   // load events waiting for a decision
	decisions []event.Decision // decisions waiting for a load event
	// arrived records when each waiting item came in, by position.
	eventAt    []time.Time
	decisionAt []time.Time
}

func newJoiner(window time.Duration) *joiner { return &joiner{window: window} }

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// matches reports whether d is the guard's decision on e's load, and how far
// apart they are in time.
func (j *joiner) matches(e *event.Event, d *event.Decision) (time.Duration, bool) {
	if d.Tid != e.Tid || !d.IsLoad() || d.Syscall() != e.Syscall {
		return 0, false
	}
	dist := absDur(d.Time.Sub(time.Unix(0, int64(e.TS))))
	return dist, dist <= j.window
}

// sameImage reports whether the guard hashed the bytes the sensor saw.
func sameImage(e *event.Event, d *event.Decision) bool {
	return d.SHA256 != "" && (d.SHA256 == e.SHA256 || d.SHA256 == e.ELFSHA256)
}

// candidate is a possible partner while pairing: a pair whose digests agree
// beats one that is merely nearer in time. The clocks of the two sides are
// converted separately and drift under emulation, while the digests of one
// load agree unless the image was swapped (TOCTOU), and then time decides.
type candidate struct {
	i    int
	same bool
	dist time.Duration
}

func (c candidate) beats(o candidate) bool {
	if o.i < 0 || c.same != o.same {
		return o.i < 0 || c.same
	}
	return c.dist < o.dist
}

// addEvent takes a sensor event. It returns the events ready for Falco: e
// itself when it is not a load or its decision was waiting, else nothing
// (e waits).
func (j *joiner) addEvent(e *event.Event, now time.Time) []*event.Event {
	if !isLoad(e) {
		return []*event.Event{e}
	}
	best := candidate{i: -1}
	for i := range j.decisions {
		if dist, ok := j.matches(e, &j.decisions[i]); ok {
			if c := (candidate{i, sameImage(e, &j.decisions[i]), dist}); c.beats(best) {
				best = c
			}
		}
	}
	if best := best.i; best >= 0 {
		j.decisions[best].Join(e)
		j.decisions = append(j.decisions[:best], j.decisions[best+1:]...)
		j.decisionAt = append(j.decisionAt[:best], j.decisionAt[best+1:]...)
		return []*event.Event{e}
	}
	j.events = append(j.events, e)
	j.eventAt = append(j.eventAt, now)
	return nil
}

// addDecision takes a guard decision. It returns the event it completed, or
// nothing (the decision waits).
func (j *joiner) addDecision(d event.Decision, now time.Time) []*event.Event {
	if d.IsLoad() {
		best := candidate{i: -1}
		for i, e := range j.events {
			if dist, ok := j.matches(e, &d); ok {
				if c := (candidate{i, sameImage(e, &d), dist}); c.beats(best) {
					best = c
				}
			}
		}
		if best := best.i; best >= 0 {
			e := j.events[best]
			d.Join(e)
			j.events = append(j.events[:best], j.events[best+1:]...)
			j.eventAt = append(j.eventAt[:best], j.eventAt[best+1:]...)
			return []*event.Event{e}
		}
	}
	j.decisions = append(j.decisions, d)
	j.decisionAt = append(j.decisionAt, now)
	return nil
}

// expire returns what waited longer than the window: load events without a
// verdict, and decisions as guard events.
func (j *joiner) expire(now time.Time) []*event.Event {
	var out []*event.Event
	keep := 0
	for i, e := range j.events {
		if now.Sub(j.eventAt[i]) >= j.window {
			e.Verdict = event.VerdictNone
			out = append(out, e)
			continue
		}
		j.events[keep], j.eventAt[keep] = e, j.eventAt[i]
		keep++
	}
	clear(j.events[keep:])
	j.events, j.eventAt = j.events[:keep], j.eventAt[:keep]

	keep = 0
	for i, d := range j.decisions {
		if now.Sub(j.decisionAt[i]) >= j.window {
			out = append(out, d.Event())
			continue
		}
		j.decisions[keep], j.decisionAt[keep] = d, j.decisionAt[i]
		keep++
	}
	j.decisions, j.decisionAt = j.decisions[:keep], j.decisionAt[:keep]
	return out
}

// flush returns everything waiting, as expire does when the window is over.
func (j *joiner) flush() []*event.Event {
	var last time.Time
	for _, at := range append(j.eventAt, j.decisionAt...) {
		if at.After(last) {
			last = at
		}
	}
	return j.expire(last.Add(j.window))
}

// pending counts the waiting items.
func (j *joiner) pending() int { return len(j.events) + len(j.decisions) }
