package allowlist

import (
	"testing"

	"github.com/kmodguard/kmodguard/event"
)

func TestJudge(t *testing.T) {
	a := New("test", ModeEnforce)
	if _, err := a.Add(Entry{Name: "veth"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Add(Entry{Name: "dummy", SHA256: []string{digA}}); err != nil {
		t.Fatal(err)
	}
	yes, no := true, false
	for _, tc := range []struct {
		name    string
		e       event.Event
		allowed *bool
		entry   string
	}{
		{"name-only entry", event.Event{Syscall: event.InitModule, Name: "veth", ThisModuleName: "veth", SHA256: "ab"}, &yes, "veth"},
		{"listed digest", event.Event{Syscall: event.FinitModule, Name: "dummy", ThisModuleName: "dummy", ELFSHA256: digA}, &yes, "dummy"},
		{"digest not listed: no entry named", event.Event{Syscall: event.InitModule, Name: "dummy", ThisModuleName: "dummy", SHA256: "ab"}, &no, ""},
		{"names differ", event.Event{Syscall: event.InitModule, Name: "veth", ThisModuleName: "dummy", NameMismatch: true}, &no, ""},
		{"not read (no names)", event.Event{Syscall: event.FinitModule, SHA256: digA}, &no, ""},
		{"image read at exit", event.Event{Syscall: event.InitModule, Name: "veth", ThisModuleName: "veth", ImageAtExit: true}, &no, ""},
		{"guard event of a load", event.Event{Syscall: event.Guard, Name: "veth", ThisModuleName: "veth"}, &yes, "veth"},
		{"delete_module", event.Event{Syscall: event.DeleteModule, Name: "veth"}, nil, ""},
		{"sensor_loss", event.Event{Syscall: event.SensorLoss}, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.e
			e.AllowlistEntry = "stale"
			if tc.allowed == nil {
				e.AllowlistEntry = ""
			}
			a.Judge(&e)
			if (e.Allowed == nil) != (tc.allowed == nil) || (e.Allowed != nil && *e.Allowed != *tc.allowed) || e.AllowlistEntry != tc.entry {
				t.Errorf("allowed %v entry %q, want %v %q", e.Allowed, e.AllowlistEntry, tc.allowed, tc.entry)
			}
		})
	}
	var none *Allowlist
	e := event.Event{Syscall: event.InitModule, Name: "veth", ThisModuleName: "veth"}
	if none.Judge(&e); e.Allowed != nil {
		t.Error("no allowlist judged an event")
	}
}
