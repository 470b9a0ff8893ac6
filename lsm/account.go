package lsm

import "time"

// accounting finds decision records that another consumer of the ring
// buffer took: the guard counts every decision before it writes its record
// (kg_counters: allowed, blocked, audit, and lost for the writes that found
// the ring buffer full), so the records written are
// allowed + blocked + audit - lost, and every one of them reaches the
// daemon unless someone else consumes it.
//
// The reader calls observe at most about once per interval, from the
// goroutine that reads records, right after a read: received is then exact,
// and empty says whether the ring buffer held nothing more at that moment.
// written is read after that. Two things blur the comparison:
//
//   - In flight: a decision is counted a moment before its record is in the
//     ring buffer. Only a count sampled at least settle before an empty
//     moment (L) is taken as fully written and consumed by then.
//   - Records of the counts after L may or may not have been read yet.
//
// So each check gives a lower bound: the records counted between the tile's
// base and L, less those the reader received since the base. A check with
// no count since L (quiet) is exact; it closes the tile and starts the next
// one, so that the bounds of successive tiles add up. A bound never counts
// a record that was not taken (no false alarm as long as no record stays in
// flight for longer than settle), and the ring buffer's own drops (lost)
// are never counted as missing: they are not in written.
type accounting struct {
	settle time.Duration

	samples []countSample // written, oldest first
	base    struct {
		ok                bool
		written, received uint64
	}
	committed uint64 // missing records of closed tiles
	tileMax   uint64 // the largest bound of the open tile
}

type countSample struct {
	at      time.Time
	written uint64
}

// written is the number of records the guard wrote, from its counters.
func written(allowed, blocked, audit, lost uint64) uint64 {
	n := allowed + blocked + audit
	if lost > n {
		return 0
	}
	return n - lost
}

// observe takes one check and returns the records found missing so far,
// a figure that never decreases.
func (a *accounting) observe(now time.Time, written, received uint64, empty bool) uint64 {
	if !a.base.ok || written < a.base.written || received < a.base.received {
		// The first sample (the reader's start), or counters that went
		// back (never expected): the tile starts here. Records counted
		// before the start and read after it (a backlog from when no
		// reader ran) only lower the bounds of the first tile.
		a.committed += a.tileMax
		a.tileMax = 0
		a.base.ok, a.base.written, a.base.received = true, written, received
		a.samples = append(a.samples[:0], countSample{at: now, written: written})
		return a.missing()
	}
	// L: the newest sample at least settle old.
	settled := -1
	for i, s := range a.samples {
		if now.Sub(s.at) >= a.settle {
			settled = i
		}
	}
	var l uint64
	if settled >= 0 {
		l = a.samples[settled].written
		a.samples = a.samples[settled:] // older ones are no longer needed
	}
	a.samples = append(a.samples, countSample{at: now, written: written})
	if len(a.samples) > 64 {
		// Checks come about once per interval, so this only trims when
		// settle is many intervals long.
		a.samples = a.samples[len(a.samples)-64:]
	}
	if !empty || settled < 0 || l < a.base.written {
		return a.missing()
	}
	want, got := l-a.base.written, received-a.base.received
	if want > got && want-got > a.tileMax {
		a.tileMax = want - got
	}
	if l == written {
		// Quiet: nothing was counted since L, so everything counted is
		// consumed. The tile's bound is final, and the next tile starts
		// with no record of its base still to read.
		a.committed += a.tileMax
		a.tileMax = 0
		a.base.written, a.base.received = written, received
	}
	return a.missing()
}

func (a *accounting) missing() uint64 { return a.committed + a.tileMax }
