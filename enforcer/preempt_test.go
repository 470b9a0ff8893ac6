//go:build linux

package enforcer

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/lsm"
)

// TestCheckSkipped: the first check reports every miss since the guard
// loaded, later ones what is new, per hook; an error is logged once; a
// kernel switched to an exposed model at run time is logged.
func TestCheckSkipped(t *testing.T) {
	var logs bytes.Buffer
	log := logrus.New()
	log.SetOutput(&logs)
	e := &Enforcer{log: log, decisions: make(chan Message, 16), done: make(chan struct{})}
	var (
		misses []lsm.ProgramMisses
		err    error
		model  = "voluntary"
	)
	w := &skipWatch{
		read:   func() ([]lsm.ProgramMisses, error) { return misses, err },
		detect: func() lsm.Preemption { return lsm.Preemption{SkipsBusy: true, Model: model, Dynamic: true} },
	}
	reports := func() (out []Report) {
		for {
			select {
			case m := <-e.decisions:
				out = append(out, m.(Report))
			default:
				return out
			}
		}
	}

	misses = []lsm.ProgramMisses{{Hook: "kg_post_load_data", ProgID: 7, Misses: 2}, {Hook: "kg_bpf", ProgID: 9}}
	e.checkSkipped(w)
	if r := reports(); len(r) != 1 || r[0].Kind != event.ReportSkipped || r[0].Count != 2 || !strings.Contains(r[0].Reason, "kg_post_load_data") {
		t.Fatalf("first check: %+v; want one report of kg_post_load_data's 2 misses", r)
	}
	e.checkSkipped(w)
	if r := reports(); len(r) != 0 {
		t.Fatalf("nothing new: %+v", r)
	}
	misses[0].Misses, misses[1].Misses = 5, 1
	e.checkSkipped(w)
	r := reports()
	if len(r) != 2 || r[0].Count != 3 || r[1].Count != 1 {
		t.Fatalf("3 more on kg_post_load_data, 1 on kg_bpf: %+v", r)
	}
	if n := strings.Count(logs.String(), "the kernel skipped a guard program"); n != 3 {
		t.Errorf("%d skip errors logged, want 3:\n%s", n, logs.String())
	}

	err = lsm.ErrSealed
	e.checkSkipped(w)
	e.checkSkipped(w)
	if n := strings.Count(logs.String(), "cannot read the guard programs' recursion misses"); n != 1 {
		t.Errorf("unreadable misses logged %d times, want once", n)
	}

	model = "full"
	e.checkSkipped(w)
	if !strings.Contains(logs.String(), "preemption model changed") {
		t.Errorf("a switch to preempt=full was not logged:\n%s", logs.String())
	}
}
