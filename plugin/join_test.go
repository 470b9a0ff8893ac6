package plugin

import (
	"slices"
	"testing"
	"time"

	"github.com/kmodguard/kmodguard/event"
)

const (
	digestA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

var t0 = time.Unix(1_800_000_000, 0)

func loadEvent(sc event.Syscall, tid uint32, at time.Time, sha string) *event.Event {
	return &event.Event{Syscall: sc, Tid: tid, Pid: tid, TS: uint64(at.UnixNano()), SHA256: sha, Name: "dummy", ThisModuleName: "dummy"}
}

func decision(op event.Op, tid uint32, at time.Time, verdict event.Verdict, sha string) event.Decision {
	return event.Decision{Op: op, Tid: tid, Pid: tid, Time: at, Verdict: verdict, SHA256: sha, Name: "dummy", ThisModuleName: "dummy"}
}

func TestJoinPairs(t *testing.T) {
	tests := []struct {
		name          string
		ev            *event.Event
		d             event.Decision
		decisionFirst bool
		joined        bool
		verdict       string
		toctou        bool
	}{
		{"event first", loadEvent(event.InitModule, 7, t0, digestA),
			decision(event.OpInitModule, 7, t0.Add(time.Millisecond), event.VerdictBlocked, digestA), false, true, event.VerdictBlocked, false},
		{"decision first", loadEvent(event.FinitModule, 7, t0, digestA),
			decision(event.OpFinitModule, 7, t0.Add(time.Millisecond), event.VerdictAllowed, digestA), true, true, event.VerdictAllowed, false},
		{"audit", loadEvent(event.InitModule, 7, t0, digestA),
			decision(event.OpInitModule, 7, t0, event.VerdictAudit, digestA), false, true, event.VerdictAudit, false},
		{"kernel copy differs: toctou", loadEvent(event.InitModule, 7, t0, digestA),
			decision(event.OpInitModule, 7, t0, event.VerdictBlocked, digestB), false, true, event.VerdictBlocked, true},
		{"other thread", loadEvent(event.InitModule, 7, t0, digestA),
			decision(event.OpInitModule, 8, t0, event.VerdictBlocked, digestA), false, false, "", false},
		{"other op", loadEvent(event.InitModule, 7, t0, digestA),
			decision(event.OpFinitModule, 7, t0, event.VerdictBlocked, digestA), false, false, "", false},
		{"outside the window", loadEvent(event.InitModule, 7, t0, digestA),
			decision(event.OpInitModule, 7, t0.Add(JoinWindow+time.Millisecond), event.VerdictBlocked, digestA), false, false, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := newJoiner(JoinWindow)
			var got []*event.Event
			if tt.decisionFirst {
				got = append(got, j.addDecision(tt.d, t0)...)
				got = append(got, j.addEvent(tt.ev, t0)...)
			} else {
				got = append(got, j.addEvent(tt.ev, t0)...)
				got = append(got, j.addDecision(tt.d, t0)...)
			}
			if !tt.joined {
				if len(got) != 0 || j.pending() != 2 {
					t.Fatalf("joined %d events, %d pending; want no join", len(got), j.pending())
				}
				out := j.expire(t0.Add(JoinWindow))
				if len(out) != 2 {
					t.Fatalf("expire gave %d events, want the load and the guard event", len(out))
				}
				if out[0] != tt.ev || out[0].Verdict != event.VerdictNone || out[0].GuardSHA256 != "" {
					t.Errorf("unjoined load %+v: want verdict none and no guard digest", out[0])
				}
				if g := out[1]; g.Syscall != event.Guard || g.Tid != tt.d.Tid || g.GuardSHA256 != tt.d.SHA256 || g.Verdict != event.VerdictBlocked {
					t.Errorf("guard event %+v", g)
				}
				return
			}
			if len(got) != 1 || got[0] != tt.ev || j.pending() != 0 {
				t.Fatalf("got %d events, %d pending; want the load event joined", len(got), j.pending())
			}
			e := got[0]
			if e.Verdict != tt.verdict || e.TOCTOU != tt.toctou || e.GuardSHA256 != tt.d.SHA256 {
				t.Errorf("joined %+v: want verdict %s, toctou %v", e, tt.verdict, tt.toctou)
			}
		})
	}
}

func TestJoinTOCTOUNeedsTheSensorsDigest(t *testing.T) {
	tests := []struct {
		name   string
		mod    func(*event.Event)
		toctou bool
	}{
		// The sensor has no digest when its capture is partial.
		{"no sensor digest", func(e *event.Event) { e.SHA256, e.Truncated = "", true }, false},
		// The parameters were unreadable, the image was whole: seen in
		// the guest, where the swap was real.
		{"parameters unreadable", func(e *event.Event) { e.Unreadable = true }, true},
	}
	for _, tt := range tests {
		j := newJoiner(JoinWindow)
		e := loadEvent(event.InitModule, 1, t0, digestA)
		tt.mod(e)
		j.addEvent(e, t0)
		out := j.addDecision(decision(event.OpInitModule, 1, t0, event.VerdictBlocked, digestB), t0)
		if len(out) != 1 || out[0].TOCTOU != tt.toctou {
			t.Errorf("%s: %+v, want toctou %v", tt.name, out, tt.toctou)
		}
	}
	// A compressed finit_module: the guard hashed the file, the sensor has
	// the file digest and the ELF digest; either one matching is no TOCTOU.
	j := newJoiner(JoinWindow)
	e := loadEvent(event.FinitModule, 1, t0, digestA)
	e.ELFSHA256 = digestB
	j.addEvent(e, t0)
	if out := j.addDecision(decision(event.OpFinitModule, 1, t0, event.VerdictAllowed, digestB), t0); len(out) != 1 || out[0].TOCTOU {
		t.Errorf("%+v: toctou although the ELF digest matches", out)
	}
}

func TestJoinNearestWins(t *testing.T) {
	j := newJoiner(JoinWindow)
	first := loadEvent(event.InitModule, 3, t0, digestA)
	second := loadEvent(event.InitModule, 3, t0.Add(time.Second), digestB)
	j.addEvent(first, t0)
	j.addEvent(second, t0)
	out := j.addDecision(decision(event.OpInitModule, 3, t0.Add(time.Second+time.Millisecond), event.VerdictBlocked, digestB), t0)
	if len(out) != 1 || out[0] != second {
		t.Fatalf("decision joined %v, want the second load", out)
	}
	out = j.addDecision(decision(event.OpInitModule, 3, t0.Add(time.Millisecond), event.VerdictAllowed, digestA), t0)
	if len(out) != 1 || out[0] != first || first.Verdict != event.VerdictAllowed {
		t.Fatalf("decision joined %v, want the first load", out)
	}
}

func TestJoinPassThroughAndExpiry(t *testing.T) {
	j := newJoiner(JoinWindow)
	del := &event.Event{Syscall: event.DeleteModule, Tid: 1, Name: "dummy"}
	if out := j.addEvent(del, t0); len(out) != 1 || out[0] != del {
		t.Fatal("delete_module did not pass straight through")
	}
	seal := event.Decision{Op: "bpf", Tid: 9, Time: t0, Verdict: event.VerdictBlocked, Sealed: true, Comm: "bpftool"}
	if out := j.addDecision(seal, t0); len(out) != 0 {
		t.Fatal("a seal refusal joined a load")
	}
	j.addEvent(loadEvent(event.InitModule, 2, t0, digestA), t0)
	if out := j.expire(t0.Add(JoinWindow - time.Millisecond)); len(out) != 0 {
		t.Fatalf("expired %d items before the window ended", len(out))
	}
	out := j.expire(t0.Add(JoinWindow))
	if len(out) != 2 || j.pending() != 0 {
		t.Fatalf("expired %d items, %d pending", len(out), j.pending())
	}
	var g *event.Event
	for _, e := range out {
		if e.Syscall == event.Guard {
			g = e
		}
	}
	if g == nil || g.Comm != "bpftool" || g.Verdict != event.VerdictBlocked || g.Allowed != nil {
		t.Errorf("seal refusal event %+v", g)
	}
}

// FuzzJoin feeds the joiner arbitrary interleavings of load events and
// decisions (as a hostile or confused companion could send): it never
// panics, every event comes out exactly once, every decision comes out
// joined or as a guard event, and a joined event carries its decision's
// verdict.
func FuzzJoin(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte{0x80, 0x01, 0x81, 0x01, 0x02, 0x82, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, ops []byte) {
		j := newJoiner(JoinWindow)
		now := t0
		var in, out []*event.Event
		decisions := 0
		verdicts := []event.Verdict{event.VerdictAllowed, event.VerdictBlocked, event.VerdictAudit, "bogus"}
		ops = ops[:min(len(ops), 512)]
		for i, op := range ops {
			tid := uint32(op & 0x03)
			at := now.Add(time.Duration(op&0x0c) * 200 * time.Millisecond)
			switch op >> 6 {
			case 0, 1:
				sc := []event.Syscall{event.InitModule, event.FinitModule, event.DeleteModule, event.Guard}[op>>4&0x03]
				e := loadEvent(sc, tid, at, digestA)
				in = append(in, e)
				out = append(out, j.addEvent(e, now)...)
			case 2:
				dop := []event.Op{event.OpInitModule, event.OpFinitModule, "bpf", ""}[i%4]
				decisions++
				out = append(out, j.addDecision(decision(dop, tid, at, verdicts[int(op>>4)%4], digestB), now)...)
			case 3:
				now = now.Add(time.Duration(op&0x3f) * 100 * time.Millisecond)
				out = append(out, j.expire(now)...)
			}
		}
		out = append(out, j.flush()...)
		if j.pending() != 0 {
			t.Fatalf("%d items left after flush", j.pending())
		}
		seen := map[*event.Event]int{}
		guards := 0
		for _, e := range out {
			if e == nil {
				t.Fatal("nil event")
			}
			seen[e]++
			if e.Syscall == event.Guard && !slices.Contains(in, e) {
				guards++
			}
		}
		joined := 0
		for _, e := range in {
			if seen[e] != 1 {
				t.Fatalf("event %+v came out %d times", e, seen[e])
			}
			if e.GuardSHA256 != "" {
				joined++
				if e.Verdict == "" {
					t.Fatalf("joined event without a verdict: %+v", e)
				}
			}
		}
		if joined+guards != decisions {
			t.Fatalf("%d decisions in, %d joined and %d guard events out", decisions, joined, guards)
		}
	})
}

// TestJoinDigestBeatsTime: two loads of one thread within the window (an
// unlisted module refused, then a listed one), with the guard's clock skewed
// so that each decision lies nearer in time to the other load. The digests
// decide, whichever order the four reports arrive in.
func TestJoinDigestBeatsTime(t *testing.T) {
	e1 := func() *event.Event { return loadEvent(event.InitModule, 7, t0, digestA) }
	e2 := func() *event.Event { return loadEvent(event.InitModule, 7, t0.Add(100*time.Millisecond), digestB) }
	d1 := decision(event.OpInitModule, 7, t0.Add(90*time.Millisecond), event.VerdictBlocked, digestA)
	d2 := decision(event.OpInitModule, 7, t0.Add(190*time.Millisecond), event.VerdictAllowed, digestB)
	for _, order := range []string{"EEDD", "EDED", "DDEE", "DEDE", "EDDE", "DEED"} {
		j := newJoiner(JoinWindow)
		evs := []*event.Event{e1(), e2()}
		ds := []event.Decision{d1, d2}
		var out []*event.Event
		for _, c := range order {
			if c == 'E' {
				out = append(out, j.addEvent(evs[0], t0)...)
				evs = evs[1:]
			} else {
				out = append(out, j.addDecision(ds[0], t0)...)
				ds = ds[1:]
			}
		}
		if len(out) != 2 || j.pending() != 0 {
			t.Fatalf("%s: %d joined, %d pending", order, len(out), j.pending())
		}
		for _, e := range out {
			want := event.VerdictBlocked
			if e.SHA256 == digestB {
				want = event.VerdictAllowed
			}
			if e.Verdict != want || e.TOCTOU {
				t.Errorf("%s: load of %.8s got verdict %s toctou %v, want %s", order, e.SHA256, e.Verdict, e.TOCTOU, want)
			}
		}
	}
}
