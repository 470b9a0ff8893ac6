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
	// The requirements, before the list: the caller's namespaces
	// (host_ns) and the image's signature (signed).
	req := New("test", ModeEnforce)
	if _, err := req.Add(Entry{Name: "veth"}); err != nil {
		t.Fatal(err)
	}
	req.Spec.RequireHostNamespaces, req.Spec.RequireModuleSignature = true, true
	veth := event.Event{Syscall: event.InitModule, Name: "veth", ThisModuleName: "veth", HostNS: true, Signed: true}
	for _, tc := range []struct {
		name    string
		edit    func(*event.Event)
		allowed bool
	}{
		{"host caller, signed", func(*event.Event) {}, true},
		{"caller in a container's namespaces", func(e *event.Event) { e.HostNS = false }, false},
		{"no signature", func(e *event.Event) { e.Signed = false }, false},
		{"guard event: the guard's verdict stands", func(e *event.Event) { e.Syscall, e.HostNS, e.Signed = event.Guard, false, false }, true},
	} {
		e := veth
		tc.edit(&e)
		if req.Judge(&e); e.Allowed == nil || *e.Allowed != tc.allowed {
			t.Errorf("requirements, %s: allowed %v, want %v", tc.name, e.Allowed, tc.allowed)
		}
	}

	var none *Allowlist
	e := event.Event{Syscall: event.InitModule, Name: "veth", ThisModuleName: "veth"}
	if none.Judge(&e); e.Allowed != nil {
		t.Error("no allowlist judged an event")
	}
}
