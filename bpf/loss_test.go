package bpf

import (
	"testing"
	"time"

	"github.com/kmodguard/kmodguard/event"
)

func TestLossMeter(t *testing.T) {
	var m LossMeter
	now := time.Unix(1700000000, 0)
	for _, step := range []struct {
		what            string
		st              Stats
		lost, throttled uint64
		wantEvent       bool
	}{
		{"nothing lost yet", Stats{Events: 10, ChunkDrops: 3, ExitDrops: 2}, 0, 0, false},
		{"drops since start", Stats{Events: 20, Drops: 5}, 5, 0, true},
		{"no growth", Stats{Events: 30, Drops: 5, Truncations: 9}, 0, 0, false},
		{"both grew", Stats{Drops: 7, Throttled: 4}, 2, 4, true},
		{"a new sensor: counters went back", Stats{Drops: 3, Throttled: 4}, 3, 0, true},
	} {
		ev := m.Observe(step.st, now)
		if (ev != nil) != step.wantEvent {
			t.Fatalf("%s: event %+v, want one: %v", step.what, ev, step.wantEvent)
		}
		if ev == nil {
			continue
		}
		if ev.Syscall != event.SensorLoss || ev.Lost != step.lost || ev.Throttled != step.throttled || ev.TS != uint64(now.UnixNano()) {
			t.Errorf("%s: %+v, want sensor_loss lost %d throttled %d at %d", step.what, ev, step.lost, step.throttled, now.UnixNano())
		}
	}
}
