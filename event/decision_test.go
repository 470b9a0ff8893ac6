package event

import (
	"testing"
	"time"
)

func TestDecisionEvent(t *testing.T) {
	now := time.Unix(1_800_000_000, 42)
	for _, tc := range []struct {
		name    string
		d       Decision
		verdict string
		allowed *bool // nil: no kmod.allowed
	}{
		{"blocked load", Decision{Time: now, Op: OpFinitModule, Verdict: VerdictBlocked, Ret: -1, SHA256: "ab",
			Name: "dumbo", ThisModuleName: "dummy", NameMismatch: true, Size: 9, Pid: 3, Tid: 4, UID: 5, Comm: "insmod"},
			VerdictBlocked, new(false)},
		{"allowed load", Decision{Op: OpInitModule, Verdict: VerdictAllowed, Entry: "dummy"}, VerdictAllowed, new(true)},
		{"audit load", Decision{Op: OpInitModule, Verdict: VerdictAudit}, VerdictAudit, new(false)},
		{"seal refusal", Decision{Op: OpUnlink, Verdict: VerdictBlocked, Sealed: true, Comm: "rm"}, VerdictBlocked, nil},
		{"unknown verdict", Decision{Op: OpInitModule, Verdict: "bogus"}, VerdictNone, new(false)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.d.Event()
			if e.Syscall != Guard || e.Verdict != tc.verdict || e.GuardSHA256 != tc.d.SHA256 || e.SHA256 != tc.d.SHA256 ||
				e.Name != tc.d.Name || e.ThisModuleName != tc.d.ThisModuleName || e.NameMismatch != tc.d.NameMismatch ||
				e.Res != int64(tc.d.Ret) || e.Tid != tc.d.Tid || e.Comm != tc.d.Comm || e.AllowlistEntry != tc.d.Entry {
				t.Errorf("Event(%+v) = %+v", tc.d, e)
			}
			if (e.Allowed == nil) != (tc.allowed == nil) || (e.Allowed != nil && *e.Allowed != *tc.allowed) {
				t.Errorf("allowed = %v, want %v", e.Allowed, tc.allowed)
			}
			if tc.d.Time.IsZero() != (e.TS == 0) || (!tc.d.Time.IsZero() && e.TS != uint64(tc.d.Time.UnixNano())) {
				t.Errorf("TS = %d for time %v", e.TS, tc.d.Time)
			}
		})
	}
}

func TestDecisionJoin(t *testing.T) {
	for _, tc := range []struct {
		name        string
		sensor, elf string // the sensor's digests
		guard       string
		verdict     Verdict
		toctou      bool
	}{
		{"same file", "aa", "", "aa", VerdictAllowed, false},
		{"same ELF (decompressed)", "aa", "bb", "bb", VerdictBlocked, false},
		{"kernel copy differs", "aa", "bb", "cc", VerdictBlocked, true},
		{"sensor has no digest", "", "", "cc", VerdictAudit, false},
		{"guard has no digest", "aa", "", "", VerdictBlocked, false},
		{"unknown verdict", "aa", "", "aa", "bogus", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &Event{Syscall: InitModule, SHA256: tc.sensor, ELFSHA256: tc.elf}
			d := Decision{Op: OpInitModule, Verdict: tc.verdict, SHA256: tc.guard, Reason: "why"}
			d.Join(e)
			if e.TOCTOU != tc.toctou || e.GuardSHA256 != tc.guard || e.GuardReason != "why" || e.Verdict != verdictOf(tc.verdict) {
				t.Errorf("joined %+v", e)
			}
		})
	}
}

func TestReportEvent(t *testing.T) {
	at := time.Unix(1_800_000_000, 0)
	for _, r := range []Report{
		{Time: at, Kind: ReportMissing, Reason: "2 guard decisions never reached the enforcer", Count: 2, Pid: 10, Comm: "kmodguard"},
		{Kind: ReportOverride, Reason: "override: lsm on kernel_read_file", LinkID: 4},
	} {
		e := r.Event()
		if e.Syscall != Guard || e.Verdict != VerdictNone || e.GuardReason != r.Reason || e.Allowed != nil ||
			e.Pid != r.Pid || e.Tid != r.Pid || e.Comm != r.Comm || (e.TS != 0) != !r.Time.IsZero() {
			t.Errorf("Event(%+v) = %+v", r, e)
		}
	}
}
