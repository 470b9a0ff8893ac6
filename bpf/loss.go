package bpf

import (
	"time"

	"github.com/kmodguard/kmodguard/event"
)

// LossMeter turns the growth of a sensor's loss counters into sensor_loss
// events, so that what the sensor could not deliver reaches the same
// stream as what it did: the Falco plugin and `kmodguard watch --record`
// both write them. It counts only what no other event carries: syscalls
// whose record the ring buffer refused (Stats.Drops) and unprivileged calls
// over the rate limit (Stats.Throttled). Lost image chunks and lost results
// arrive on their own events, flagged truncated or with ResUnknown.
//
// The zero LossMeter reports losses counted since the sensor started.
type LossMeter struct {
	drops, throttled uint64
}

// Observe takes the sensor's counters at now and returns a sensor_loss
// event when they grew since the previous call, else nil. A counter that
// went back (a new sensor) starts over.
func (m *LossMeter) Observe(st Stats, now time.Time) *event.Event {
	lost, throttled := growth(st.Drops, m.drops), growth(st.Throttled, m.throttled)
	m.drops, m.throttled = st.Drops, st.Throttled
	if lost == 0 && throttled == 0 {
		return nil
	}
	return &event.Event{
		TS:        uint64(now.UnixNano()),
		Syscall:   event.SensorLoss,
		Lost:      lost,
		Throttled: throttled,
	}
}

// growth is cur-last, or cur when the counter went back.
func growth(cur, last uint64) uint64 {
	if cur < last {
		return cur
	}
	return cur - last
}
