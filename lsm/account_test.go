package lsm

import (
	"testing"
	"time"
)

// ringSim plays the guard, its ring buffer, the reader and a thief against
// accounting, one step at a time.
type ringSim struct {
	t        *testing.T
	now      time.Time
	a        accounting
	counted  uint64 // decisions counted (allowed + blocked + audit)
	lost     uint64 // writes that found the ring buffer full
	inFlight uint64 // counted, not yet in the ring buffer
	ring     uint64 // records in the ring buffer
	received uint64
	stolen   uint64
	last     uint64 // the last figure observe returned
}

func newRingSim(t *testing.T) *ringSim {
	s := &ringSim{t: t, now: time.Unix(1000, 0), a: accounting{settle: 2 * time.Second}}
	s.check() // the reader's start
	return s
}

// decide counts n decisions and writes their records.
func (s *ringSim) decide(n uint64) { s.counted += n; s.ring += n }

// count counts n decisions whose records are not written yet.
func (s *ringSim) count(n uint64) { s.counted += n; s.inFlight += n }

// land writes the records counted by count.
func (s *ringSim) land() { s.ring += s.inFlight; s.inFlight = 0 }

// drop counts n decisions whose records found the ring buffer full.
func (s *ringSim) drop(n uint64) { s.counted += n; s.lost += n }

func (s *ringSim) read(n uint64) {
	n = min(n, s.ring)
	s.ring -= n
	s.received += n
}

func (s *ringSim) steal(n uint64) {
	n = min(n, s.ring)
	s.ring -= n
	s.stolen += n
}

func (s *ringSim) check() uint64 {
	s.t.Helper()
	got := s.a.observe(s.now, written(s.counted, 0, 0, s.lost), s.received, s.ring == 0)
	if got < s.last {
		s.t.Fatalf("missing went down from %d to %d", s.last, got)
	}
	if got > s.stolen {
		s.t.Fatalf("missing %d, but only %d records were stolen (a false alarm)", got, s.stolen)
	}
	s.last = got
	return got
}

// tick advances one second and checks.
func (s *ringSim) tick() uint64 {
	s.t.Helper()
	s.now = s.now.Add(time.Second)
	return s.check()
}

// ticks checks n times, a second apart, and returns the last figure.
func (s *ringSim) ticks(n int) uint64 {
	s.t.Helper()
	var got uint64
	for range n {
		got = s.tick()
	}
	return got
}

func TestAccountingTheftWhileQuiet(t *testing.T) {
	s := newRingSim(t)
	s.decide(2)
	s.read(2)
	s.decide(3)
	s.steal(3) // another consumer takes them before the reader wakes
	if got := s.ticks(4); got != 3 {
		t.Fatalf("missing %d after a quiet spell, want the 3 stolen", got)
	}
	// Later thefts add up.
	s.decide(4)
	s.steal(1)
	s.read(3)
	if got := s.ticks(4); got != 4 {
		t.Fatalf("missing %d, want 4 in all", got)
	}
}

func TestAccountingNoThief(t *testing.T) {
	s := newRingSim(t)
	for range 20 {
		s.decide(5)
		if s.tick() != 0 { // not read yet: the ring buffer is not empty
			t.Fatal("missing records with none stolen")
		}
		s.read(3)
		s.tick()
		s.read(100)
		s.tick()
	}
	if got := s.ticks(4); got != 0 {
		t.Fatalf("missing %d with no thief", got)
	}
}

func TestAccountingDropsAreNotMissing(t *testing.T) {
	s := newRingSim(t)
	s.decide(10)
	s.drop(7) // the reader stalled and the ring buffer filled
	s.tick()
	s.read(10)
	if got := s.ticks(4); got != 0 {
		t.Fatalf("records the kernel dropped counted as missing: %d", got)
	}
	// Drops and a theft together: only the theft is missing.
	s.decide(5)
	s.drop(2)
	s.steal(2)
	s.read(3)
	if got := s.ticks(4); got != 2 {
		t.Fatalf("missing %d, want the 2 stolen and not the 2 dropped", got)
	}
}

func TestAccountingInFlight(t *testing.T) {
	s := newRingSim(t)
	s.ticks(3)
	// Counted, not yet written: the ring buffer reads empty meanwhile.
	s.count(4)
	s.tick()
	s.now = s.now.Add(1500 * time.Millisecond)
	s.check()
	s.land()
	s.read(4)
	if got := s.ticks(4); got != 0 {
		t.Fatalf("records in flight counted as missing: %d", got)
	}
}

func TestAccountingBacklogAtStart(t *testing.T) {
	s := &ringSim{t: t, now: time.Unix(1000, 0), a: accounting{settle: 2 * time.Second}}
	s.decide(50) // written while no reader ran
	s.check()    // the reader starts
	s.read(20)
	s.tick()
	s.read(30)
	if got := s.ticks(4); got != 0 {
		t.Fatalf("a backlog from before the start counted as missing: %d", got)
	}
	s.decide(3)
	s.steal(3)
	if got := s.ticks(4); got != 3 {
		t.Fatalf("missing %d, want 3", got)
	}
}

func TestAccountingTheftInAStream(t *testing.T) {
	s := newRingSim(t)
	// Decisions every second, read at once; the thief takes 2 on the way.
	for i := range 10 {
		s.decide(5)
		if i == 4 {
			s.steal(2)
		}
		s.read(100)
		s.tick()
	}
	// A lower bound while the stream runs, exact once it pauses.
	if got := s.ticks(4); got != 2 {
		t.Fatalf("missing %d after the stream, want the 2 stolen", got)
	}
}

func TestAccountingCountersGoBack(t *testing.T) {
	s := newRingSim(t)
	s.decide(3)
	s.steal(3)
	s.ticks(4)
	// Counters below the base (never expected): start over, keep the figure.
	got := s.a.observe(s.now.Add(time.Second), 0, s.received, true)
	if got != 3 {
		t.Fatalf("missing %d after counters went back, want the 3 found before", got)
	}
}

func TestWritten(t *testing.T) {
	for _, tc := range []struct{ a, b, c, lost, want uint64 }{
		{1, 2, 3, 0, 6},
		{1, 2, 3, 6, 0},
		{1, 0, 0, 9, 0}, // never negative
	} {
		if got := written(tc.a, tc.b, tc.c, tc.lost); got != tc.want {
			t.Errorf("written(%d, %d, %d, lost %d) = %d, want %d", tc.a, tc.b, tc.c, tc.lost, got, tc.want)
		}
	}
}
