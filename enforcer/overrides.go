//go:build linux

package enforcer

import (
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/lsm"
)

// report delivers r on the Decisions channel, unless the enforcer is
// closing.
func (e *Enforcer) report(r Report) {
	select {
	case e.decisions <- r:
	case <-e.done:
	}
}

// overridesEvery is how often the enforcer looks for programs attached to
// decide the guard's hooks before it (lsm.Overrides).
const overridesEvery = 10 * time.Second

// watchOverrides logs, at start and then every overridesEvery, each
// program that can decide a load before the guard does: an error, since
// the guard can be bypassed while it is attached. Each is logged once (and
// its removal), and reported on Decisions (event.ReportOverride) at every check
// while it is attached.
func (e *Enforcer) watchOverrides() {
	defer e.wg.Done()
	// Keyed by link, program and cgroup: an lsm_cgroup program attached
	// without a link has link id 0.
	key := func(o lsm.Override) string { return fmt.Sprintf("%d/%d/%s", o.LinkID, o.ProgID, o.Cgroup) }
	seen := map[string]lsm.Override{}
	var skipped skipWatch
	check := func() {
		e.checkSkipped(&skipped)
		found, err := e.guard.Overrides()
		if err != nil {
			e.log.WithError(err).Warn("cannot look for programs that override the guard")
			return
		}
		now := map[string]lsm.Override{}
		for _, o := range found {
			now[key(o)] = o
			if _, ok := seen[key(o)]; !ok {
				fields := logrus.Fields{
					"kind": o.Kind, "target": o.Target, "link_id": o.LinkID, "prog_id": o.ProgID, "prog_name": o.ProgName,
				}
				if o.Cgroup != "" {
					fields["cgroup"] = o.Cgroup
				}
				e.log.WithFields(fields).Error("a BPF program can decide module loads before the guard: while it is attached, its return value wins over the guard's refusal (detach it: bpftool link detach id LINK_ID, or for an lsm_cgroup program without a link bpftool cgroup detach CGROUP lsm_cgroup id PROG_ID)")
			}
			// Reported at every check, not once: a consumer that comes
			// later (the Falco plugin's companion stream connects after
			// the guard loads) must still hear of it.
			e.report(Report{
				Time: time.Now(), Kind: event.ReportOverride, LinkID: o.LinkID,
				Reason: fmt.Sprintf("override: %s can decide module loads before the guard and admit what it refuses", o),
			})
		}
		for id, o := range seen {
			if _, ok := now[id]; !ok {
				e.log.WithFields(logrus.Fields{"target": o.Target, "link_id": o.LinkID, "prog_id": o.ProgID}).
					Info("the program that overrode the guard is gone")
			}
		}
		seen = now
	}
	check()
	t := time.NewTicker(overridesEvery)
	defer t.Stop()
	for {
		select {
		case <-e.done:
			return
		case <-t.C:
			check()
		}
	}
}
