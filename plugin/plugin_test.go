package plugin

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/falcosecurity/plugin-sdk-go/pkg/sdk"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/event"
)

const (
	dummyDigest = "3b1f5e0c2d4a6b8c9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f"
	otherDigest = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"
)

func initEvent() *event.Event {
	return &event.Event{
		TS: 1764190000123456789, Syscall: event.InitModule, Res: -38,
		Name: "dummy", ThisModuleName: "dummy", SHA256: dummyDigest, ELFSHA256: dummyDigest,
		Size: 37640, Params: "numdummies=3",
		Vermagic: "6.1.0-56-amd64 SMP preempt mod_unload modversions ", Srcversion: "B5E3B7F6F0C26D9C2A6A1C4",
		Signed: true, Signer: "Debian Secure Boot CA",
		Pid: 4242, Tid: 4243, Ppid: 1, Comm: "insmod", Exe: "/usr/bin/kmod", Cmdline: "insmod dummy.ko numdummies=3",
		UID: 0, GID: 0, LoginUID: 1000, Cgroup: "/user.slice/user-1000.slice/session-3.scope",
		PidNS: event.InitPidNS, MntNS: event.InitMntNS, UserNS: event.InitUserNS, HostNS: true, HostMntNS: ptr(true),
		CapEffective: 1<<16 | 1<<21,
	}
}

func finitEvent() *event.Event {
	return &event.Event{
		TS: 1764190001000000000, Syscall: event.FinitModule, Res: 0,
		Name: "veth", ThisModuleName: "veth", SHA256: otherDigest, ELFSHA256: dummyDigest,
		Size: 20000, Path: "/lib/modules/6.1.0-56-amd64/kernel/drivers/net/veth.ko.xz",
		Flags: []string{"MODULE_INIT_COMPRESSED_FILE"}, RawFlags: 4, FileChanged: true,
		Depends: []string{"x-y"}, Verdict: event.VerdictBlocked, GuardSHA256: otherDigest, TOCTOU: true,
		Pid: 77, Tid: 77, Ppid: 70, Comm: "modprobe", UID: 0, LoginUID: 4294967295,
		Cgroup: "/kubepods/besteffort/pod1/0123456789abcdef", ContainerID: "0123456789ab",
		PidNS: 4026532300, MntNS: 4026532301, UserNS: event.InitUserNS, HostMntNS: ptr(false),
		CapEffective: 1 << 16,
	}
}

func deleteEvent() *event.Event {
	return &event.Event{
		TS: 1764190002000000000, Syscall: event.DeleteModule, Res: -2,
		Name: "dummy", Flags: []string{"O_NONBLOCK", "O_TRUNC"}, RawFlags: 0o4000 | 0o1000,
		Pid: 5, Tid: 5, Ppid: 1, Comm: "rmmod", HostNS: true,
	}
}

func payload(t testing.TB, e *event.Event) []byte {
	t.Helper()
	b, err := e.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConfig(t *testing.T) {
	good := map[string]func(c *Config) bool{
		``:   func(c *Config) bool { return c.RingbufSize == DefaultRingbufSize && c.LogLevel == "info" },
		`{}`: func(c *Config) bool { return c.ImageCap == DefaultImageCap },
		`{"ringbuf_size": 65536, "image_cap": 8192, "log_level": "debug", "allowlist_check_interval": "500ms"}`: func(c *Config) bool {
			return c.RingbufSize == 65536 && c.ImageCap == 8192 && c.LogLevel == "debug" && c.AllowlistCheck == "500ms"
		},
		`{"enforcer": {"enabled": false, "socket": "/run/kmodguard.sock"}}`: func(c *Config) bool { return c.Enforcer.Socket != "" },
	}
	for in, check := range good {
		c, err := ParseConfig(in)
		if err != nil {
			t.Errorf("ParseConfig(%q): %v", in, err)
			continue
		}
		if !check(&c) {
			t.Errorf("ParseConfig(%q) = %+v", in, c)
		}
	}
	bad := map[string]string{
		`{"ringbuf_size": 1000}`:                       "init_config.ringbuf_size: must be a power of two >= 4096 and <= 1073741824, got 1000",
		`{"ringbuf_size": 12288}`:                      "init_config.ringbuf_size: must be a power of two",
		`{"ringbuf_size": "big"}`:                      "init_config.ringbuf_size: want a int, got a JSON string",
		`{"image_cap": 1}`:                             "init_config.image_cap: must be between 4096 and 268435456 bytes, got 1",
		`{"log_level": "loud"}`:                        `init_config.log_level: must be one of panic, fatal, error, warn, info, debug, trace, got "loud"`,
		`{"allowlist_check_interval": "1h"}`:           `init_config.allowlist_check_interval: must be a duration between 100ms and 10m, got "1h"`,
		`{"require_signature": true}`:                  "init_config.public_key: is required when require_signature is true",
		`{"public_key": "/k.pub"}`:                     "init_config.allowlist: is required when public_key is set",
		`{"enforcer": {"enabled": true}}`:              "init_config.enforcer.path: or enforcer.socket is required",
		`{"enforcer": {"path": "/k", "socket": "/s"}}`: "init_config.enforcer.socket: and enforcer.path exclude each other",
		`{"allowlsit": "/etc/x.yaml"}`:                 `init_config: unknown key "allowlsit"`,
		`{"enforcer": {"sockt": "x"}}`:                 `init_config: unknown key "sockt"`,
		`{"log_level": "info"} {}`:                     "init_config: trailing data",
		`[1]`:                                          "init_config: json: cannot unmarshal array",
		`{"allowlist": "/nonexistent/a.yaml"}`:         "init_config.allowlist: ",
	}
	for in, want := range bad {
		err := New().Init(in)
		if err == nil {
			t.Errorf("Init(%s) accepted", in)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Init(%s):\n got %q\nwant %q", in, err, want)
		}
	}
}

func TestSchema(t *testing.T) {
	s := New().InitSchema()
	if s == nil {
		t.Fatal("no init schema")
	}
	var doc struct {
		Type                 string                     `json:"type"`
		AdditionalProperties *bool                      `json:"additionalProperties"`
		Properties           map[string]json.RawMessage `json:"properties"`
		Required             []string                   `json:"required"`
	}
	if err := json.Unmarshal([]byte(s.Schema), &doc); err != nil {
		t.Fatalf("schema is not JSON: %v", err)
	}
	if doc.Type != "object" || doc.AdditionalProperties == nil || *doc.AdditionalProperties {
		t.Errorf("schema must be a closed object: %s", s.Schema)
	}
	if len(doc.Required) != 0 {
		t.Errorf("every key must be optional, schema requires %v", doc.Required)
	}
	for _, k := range []string{"allowlist", "require_signature", "public_key", "ringbuf_size", "image_cap", "log_level", "enforcer", "allowlist_check_interval"} {
		if _, ok := doc.Properties[k]; !ok {
			t.Errorf("schema has no key %q", k)
		}
	}
}

func TestFieldList(t *testing.T) {
	want := []string{"syscall", "res", "ok", "name", "this_module_name", "name_mismatch", "sha256", "elf_sha256", "size",
		"params", "path", "flags", "vermagic", "srcversion", "depends", "signed", "signer", "truncated", "unreadable", "image_at_exit",
		"params_at_exit", "file_changed", "allowed", "allowlist_entry", "verdict", "toctou", "pid", "tid", "ppid", "comm", "exe", "cmdline",
		"uid", "gid", "loginuid", "cgroup", "container_id", "host_ns", "host_mntns", "pidns", "mntns", "userns", "cap_effective"}
	have := map[string]sdk.FieldEntry{}
	for _, f := range New().Fields() {
		if _, dup := have[f.Name]; dup {
			t.Errorf("duplicate field %s", f.Name)
		}
		have[f.Name] = f
		if f.Display == "" || len(f.Desc) < 10 {
			t.Errorf("field %s needs a display name and a description", f.Name)
		}
		if f.Type != typeString && f.Type != typeUint64 && f.Type != typeBool {
			t.Errorf("field %s has type %q", f.Name, f.Type)
		}
	}
	for _, w := range want {
		if _, ok := have["kmod."+w]; !ok {
			t.Errorf("field kmod.%s is missing", w)
		}
	}
	for _, l := range []string{"kmod.flags", "kmod.depends"} {
		if !have[l].IsList {
			t.Errorf("%s must be a list", l)
		}
	}
}

func TestExtract(t *testing.T) {
	p := newPlugin(t, "")
	tests := []struct {
		name   string
		e      *event.Event
		want   map[string]any
		absent []string
	}{
		{"init_module", initEvent(), map[string]any{
			"kmod.syscall": "init_module", "kmod.res": "ENOSYS", "kmod.ok": false,
			"kmod.name": "dummy", "kmod.this_module_name": "dummy", "kmod.name_mismatch": false,
			"kmod.sha256": dummyDigest, "kmod.size": uint64(37640), "kmod.params": "numdummies=3",
			"kmod.signed": true, "kmod.signer": "Debian Secure Boot CA", "kmod.depends": []string{},
			"kmod.truncated": false, "kmod.image_at_exit": false, "kmod.params_at_exit": false, "kmod.verdict": "none", "kmod.toctou": false,
			"kmod.pid": uint64(4242), "kmod.tid": uint64(4243), "kmod.ppid": uint64(1), "kmod.comm": "insmod",
			"kmod.exe": "/usr/bin/kmod", "kmod.uid": uint64(0), "kmod.loginuid": uint64(1000), "kmod.host_ns": true,
			"kmod.host_mntns": true, "kmod.pidns": uint64(event.InitPidNS), "kmod.mntns": uint64(event.InitMntNS),
			"kmod.userns": uint64(event.InitUserNS), "kmod.cap_effective": "CAP_SYS_MODULE CAP_SYS_ADMIN",
		}, []string{"kmod.flags", "kmod.path", "kmod.file_changed", "kmod.allowed", "kmod.allowlist_entry", "kmod.container_id", "kmod.guard_sha256"}},
		{"finit_module", finitEvent(), map[string]any{
			"kmod.syscall": "finit_module", "kmod.res": "SUCCESS", "kmod.ok": true,
			"kmod.flags": []string{"MODULE_INIT_COMPRESSED_FILE"}, "kmod.path": "/lib/modules/6.1.0-56-amd64/kernel/drivers/net/veth.ko.xz",
			"kmod.file_changed": true, "kmod.verdict": "blocked", "kmod.toctou": true, "kmod.depends": []string{"x-y"},
			"kmod.container_id": "0123456789ab", "kmod.host_ns": false, "kmod.loginuid": uint64(4294967295),
			"kmod.host_mntns": false, "kmod.pidns": uint64(4026532300), "kmod.mntns": uint64(4026532301),
			"kmod.cap_effective": "CAP_SYS_MODULE", "kmod.elf_sha256": dummyDigest, "kmod.signed": false, "kmod.params_at_exit": false,
		}, []string{"kmod.params", "kmod.signer", "kmod.exe", "kmod.image_at_exit"}},
		{"init_module read at exit", func() *event.Event { e := initEvent(); e.ImageAtExit = true; return e }(), map[string]any{
			"kmod.syscall": "init_module", "kmod.image_at_exit": true, "kmod.unreadable": false, "kmod.sha256": dummyDigest,
		}, nil},
		{"finit_module params read at exit", func() *event.Event {
			e := finitEvent()
			e.Params, e.ParamsAtExit = "numdummies=2", true
			return e
		}(), map[string]any{
			"kmod.syscall": "finit_module", "kmod.params_at_exit": true, "kmod.params": "numdummies=2",
		}, []string{"kmod.image_at_exit"}},
		// A udev worker: the host's PID and user namespaces, a private
		// mount namespace (PrivateMounts=yes).
		{"udev worker", func() *event.Event {
			e := initEvent()
			e.Comm, e.Cgroup, e.MntNS, e.HostMntNS = "(udev-worker)", "/system.slice/systemd-udevd.service", 4026532174, ptr(false)
			return e
		}(), map[string]any{
			"kmod.host_ns": true, "kmod.host_mntns": false, "kmod.mntns": uint64(4026532174), "kmod.pidns": uint64(event.InitPidNS),
		}, []string{"kmod.container_id"}},
		{"initial mount namespace unknown", func() *event.Event { e := initEvent(); e.HostMntNS = nil; return e }(), map[string]any{
			"kmod.host_ns": true,
		}, []string{"kmod.host_mntns"}},
		{"delete_module", deleteEvent(), map[string]any{
			"kmod.syscall": "delete_module", "kmod.res": "ENOENT", "kmod.name": "dummy",
			"kmod.flags": []string{"O_NONBLOCK", "O_TRUNC"},
		}, []string{"kmod.size", "kmod.signed", "kmod.verdict", "kmod.toctou", "kmod.this_module_name", "kmod.name_mismatch", "kmod.file_changed", "kmod.allowed", "kmod.params_at_exit",
			"kmod.host_mntns", "kmod.pidns", "kmod.mntns", "kmod.userns"}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := extractAll(t, p, uint64(i+1), payload(t, tc.e))
			for k, v := range tc.want {
				if !reflect.DeepEqual(got[k], v) {
					t.Errorf("%s = %#v, want %#v", k, got[k], v)
				}
			}
			for _, k := range tc.absent {
				if v, ok := got[k]; ok {
					t.Errorf("%s = %#v, want no value", k, v)
				}
			}
		})
	}
}

func TestExtractCachesPerEventNumber(t *testing.T) {
	p := newPlugin(t, "")
	a, b := payload(t, initEvent()), payload(t, deleteEvent())
	if got := extractAll(t, p, 1, a)["kmod.syscall"]; got != "init_module" {
		t.Fatalf("event 1: %v", got)
	}
	// Same number, other bytes: the cached decode answers.
	if got := extractAll(t, p, 1, b)["kmod.syscall"]; got != "init_module" {
		t.Errorf("same event number decoded again: %v", got)
	}
	if got := extractAll(t, p, 2, b)["kmod.syscall"]; got != "delete_module" {
		t.Errorf("event 2: %v", got)
	}
}

func TestExtractCorruptPayload(t *testing.T) {
	p := newPlugin(t, "")
	req := &memRequest{id: fieldName, field: fieldList[fieldName]}
	err := p.Extract(req, &memReader{num: 9, data: []byte{1, 0xff}})
	if !errors.Is(err, event.ErrCorrupt) || !strings.Contains(err.Error(), "event 9") {
		t.Errorf("Extract of a corrupt payload: %v", err)
	}
	if err := p.Extract(req, &memReader{num: 9, data: payload(t, initEvent())}); err == nil {
		t.Error("the cached error of event 9 was not returned again")
	}
	if err := p.Extract(req, &memReader{num: 10, data: payload(t, initEvent())}); err != nil || req.value != "dummy" {
		t.Errorf("next event after a corrupt one: %v %v", err, req.value)
	}
}

func TestCapNames(t *testing.T) {
	for mask, want := range map[uint64]string{
		0:                 "",
		1:                 "CAP_CHOWN",
		1<<16 | 1<<39:     "CAP_SYS_MODULE CAP_BPF",
		1<<40 | 1<<63:     "CAP_CHECKPOINT_RESTORE CAP_63",
		1<<41 - 1 - 1<<40: strings.Join(capNames[:40], " "),
	} {
		if got := CapNames(mask); got != want {
			t.Errorf("CapNames(%#x) = %q, want %q", mask, got, want)
		}
	}
}

func TestOpenParams(t *testing.T) {
	p := newPlugin(t, "")
	notRecord := filepath.Join(t.TempDir(), "events.json")
	if err := os.WriteFile(notRecord, []byte(`{"name":"dummy"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for params, want := range map[string]string{
		"replay:" + notRecord:         "replay file " + notRecord + ": not a kmodguard record file: bad magic",
		"file:/x":                     `open_params "file:/x": want empty (the live sensor) or "replay:FILE"`,
		"replay:":                     "no file after",
		"replay:/nonexistent/rec.kmg": "open replay file: open /nonexistent/rec.kmg: no such file or directory",
	} {
		if _, err := p.Open(params); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%q): %v, want %q", params, err, want)
		}
	}
}

func TestReplay(t *testing.T) {
	events := []*event.Event{initEvent(), finitEvent(), deleteEvent()}
	var many []*event.Event
	for i := 0; i < 150; i++ { // more than two batches
		e := events[i%3]
		c := *e
		c.Pid = uint32(i + 1)
		many = append(many, &c)
	}
	path := writeRecording(t, many...)
	p := newPlugin(t, "")
	in, err := p.Open(ReplayPrefix + path)
	if err != nil {
		t.Fatal(err)
	}
	defer in.(sdk.Closer).Close()
	got := batches(t, p, in, 1000)
	if len(got) != len(many) {
		t.Fatalf("replayed %d events, want %d", len(got), len(many))
	}
	for i, b := range got {
		var e event.Event
		if err := e.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(&e, many[i]) {
			t.Fatalf("event %d\n got %+v\nwant %+v", i, e, many[i])
		}
	}
	if pct, s := in.(sdk.Progresser).Progress(p); pct != 1 || s != "100.00%" {
		t.Errorf("progress at the end: %v %q", pct, s)
	}
	if n, err := in.NextBatch(p, newMemEvents(4)); n != 0 || err != sdk.ErrEOF {
		t.Errorf("NextBatch after the end: %d %v, want sdk.ErrEOF", n, err)
	}
}

func TestReplayDamagedFile(t *testing.T) {
	path := writeRecording(t, initEvent(), finitEvent(), deleteEvent())
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b[:len(b)-5], 0o600); err != nil {
		t.Fatal(err)
	}
	p := newPlugin(t, "")
	in, err := p.Open(ReplayPrefix + path)
	if err != nil {
		t.Fatal(err)
	}
	evts := newMemEvents(batchSize)
	n, err := in.NextBatch(p, evts)
	if n != 2 || err != nil {
		t.Fatalf("first batch: %d events, %v; want the 2 good events", n, err)
	}
	if _, err := in.NextBatch(p, evts); err == nil || !strings.Contains(err.Error(), "record 3") {
		t.Errorf("second batch: %v, want the error about record 3", err)
	}
}

// writeAllowlist saves an allowlist admitting dummy by digest and veth by name.
func writeAllowlist(t testing.TB, path string, entries ...allowlist.Entry) {
	t.Helper()
	a := allowlist.New("test", allowlist.ModeEnforce)
	for _, e := range entries {
		if _, err := a.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := allowlist.Save(path, a); err != nil {
		t.Fatal(err)
	}
}

func TestReplayJudgesWithTheAllowlist(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "allow.yaml")
	writeAllowlist(t, list, allowlist.Entry{Name: "dummy", SHA256: []string{dummyDigest}})
	forged := initEvent()
	forged.ThisModuleName = "dumbo"
	forged.NameMismatch = true
	wrongDigest := initEvent()
	wrongDigest.SHA256, wrongDigest.ELFSHA256 = otherDigest, otherDigest
	// A recording made without an allowlist: Allowed is unset in the file.
	path := writeRecording(t, initEvent(), forged, wrongDigest, finitEvent(), deleteEvent())
	p := newPlugin(t, `{"allowlist": "`+list+`"}`)
	in, err := p.Open(ReplayPrefix + path)
	if err != nil {
		t.Fatal(err)
	}
	got := batches(t, p, in, 10)
	want := []struct {
		allowed any
		entry   any
	}{{true, "dummy"}, {false, nil}, {false, nil}, {false, nil}, {nil, nil}}
	for i, w := range want {
		f := extractAll(t, p, uint64(i+1), got[i])
		if f["kmod.allowed"] != w.allowed || f["kmod.allowlist_entry"] != w.entry {
			t.Errorf("event %d (%s %s): allowed=%v entry=%v, want %v %v", i, f["kmod.syscall"], f["kmod.name"],
				f["kmod.allowed"], f["kmod.allowlist_entry"], w.allowed, w.entry)
		}
	}
}

func TestAllowlistReload(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "allow.yaml")
	writeAllowlist(t, list, allowlist.Entry{Name: "veth"})
	p := newPlugin(t, `{"allowlist": "`+list+`", "allowlist_check_interval": "100ms"}`)
	clock := time.Now()
	p.policy.now = func() time.Time { return clock }
	allowed := func() any {
		e := initEvent()
		p.policy.Current().Judge(e)
		if e.Allowed == nil {
			return nil
		}
		return *e.Allowed
	}
	if allowed() != false {
		t.Fatal("dummy allowed by a list of veth")
	}
	writeAllowlist(t, list, allowlist.Entry{Name: "veth"}, allowlist.Entry{Name: "dummy"})
	if allowed() != false {
		t.Error("reloaded before the check interval passed")
	}
	clock = clock.Add(time.Second)
	if allowed() != true {
		t.Fatal("the changed allowlist was not reloaded")
	}
	// A broken new file is refused and the old list stays in force.
	if err := os.WriteFile(list, []byte("apiVersion: kmodguard.io/v1\nkind: Nonsense\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(time.Second)
	if allowed() != true {
		t.Error("a broken allowlist replaced the good one")
	}
	if m := metricValues(p); m["allowlist_reload_failures"] != 1 || m["allowlist_entries"] != 2 {
		t.Errorf("after a broken file: allowlist_reload_failures=%d allowlist_entries=%d, want 1 and 2",
			m["allowlist_reload_failures"], m["allowlist_entries"])
	}
	// Removing the file keeps the old list too.
	if err := os.Remove(list); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(time.Second)
	if allowed() != true {
		t.Error("a missing allowlist replaced the good one")
	}
}

func TestSignedAllowlist(t *testing.T) {
	dir := t.TempDir()
	list, keyFile := filepath.Join(dir, "allow.yaml"), filepath.Join(dir, "key.pub")
	pub, priv, err := allowlist.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pem, err := allowlist.MarshalPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	writeAllowlist(t, list, allowlist.Entry{Name: "veth"})
	cfg := `{"allowlist": "` + list + `", "require_signature": true, "public_key": "` + keyFile + `", "allowlist_check_interval": "100ms"}`
	if err := New().Init(cfg); err == nil || !strings.Contains(err.Error(), "init_config.allowlist: ") {
		t.Fatalf("Init with an unsigned allowlist: %v", err)
	}
	// A configured key means a valid signature is required, with or
	// without require_signature (the rule of allowlist.Source).
	lenient := `{"allowlist": "` + list + `", "public_key": "` + keyFile + `"}`
	if err := New().Init(lenient); err == nil || !strings.Contains(err.Error(), "init_config.allowlist: ") {
		t.Fatalf("Init with a public key and an unsigned allowlist: %v", err)
	}
	if err := allowlist.SignFile(list, priv); err != nil {
		t.Fatal(err)
	}
	p := newPlugin(t, cfg)
	clock := time.Now()
	p.policy.now = func() time.Time { return clock }
	// An edit without a new signature is refused; the signed list stays.
	writeAllowlist(t, list, allowlist.Entry{Name: "veth"}, allowlist.Entry{Name: "dummy"})
	clock = clock.Add(time.Second)
	e := initEvent()
	p.policy.Current().Judge(e)
	if e.Allowed == nil || *e.Allowed {
		t.Fatalf("an allowlist with a stale signature took effect: %v", e.Allowed)
	}
	if m := metricValues(p); m["allowlist_reload_failures"] != 1 || m["allowlist_entries"] != 1 {
		t.Errorf("after a stale signature: allowlist_reload_failures=%d allowlist_entries=%d, want 1 and 1",
			m["allowlist_reload_failures"], m["allowlist_entries"])
	}
	if err := allowlist.SignFile(list, priv); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(time.Second)
	p.policy.Current().Judge(e)
	if e.Allowed == nil || !*e.Allowed {
		t.Fatal("the re-signed allowlist was not loaded")
	}
	if m := metricValues(p); m["allowlist_reload_failures"] != 1 || m["allowlist_entries"] != 2 {
		t.Errorf("after re-signing: allowlist_reload_failures=%d allowlist_entries=%d, want 1 and 2",
			m["allowlist_reload_failures"], m["allowlist_entries"])
	}
}

// TestSignatureDeletedKeepsList is the attack of issue 11 on the plugin:
// with public_key set and require_signature false, whoever can write the
// allowlist rewrites it to admit dummy and deletes its .sig, so that
// kmod.allowed goes quiet. A configured key means a valid signature is
// required (allowlist.LoadOptions): the rewrite is refused and the signed
// list stays in force.
func TestSignatureDeletedKeepsList(t *testing.T) {
	dir := t.TempDir()
	list, keyFile := filepath.Join(dir, "allow.yaml"), filepath.Join(dir, "key.pub")
	pub, priv, err := allowlist.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pem, err := allowlist.MarshalPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	writeAllowlist(t, list, allowlist.Entry{Name: "veth"})
	if err := allowlist.SignFile(list, priv); err != nil {
		t.Fatal(err)
	}
	p := newPlugin(t, `{"allowlist": "`+list+`", "require_signature": false, "public_key": "`+keyFile+`", "allowlist_check_interval": "100ms"}`)
	clock := time.Now()
	p.policy.now = func() time.Time { return clock }
	judge := func() *bool {
		e := initEvent() // dummy
		p.policy.Current().Judge(e)
		return e.Allowed
	}
	if a := judge(); a == nil || *a {
		t.Fatalf("dummy under the signed list: allowed %v, want false", a)
	}
	writeAllowlist(t, list, allowlist.Entry{Name: "veth"}, allowlist.Entry{Name: "dummy"})
	if err := os.Remove(list + allowlist.SigSuffix); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(time.Second)
	if a := judge(); a == nil || *a {
		t.Fatalf("after the list was rewritten and its .sig deleted: dummy allowed %v, want false (the signed list)", a)
	}
	if m := metricValues(p); m["allowlist_reload_failures"] != 1 || m["allowlist_entries"] != 1 {
		t.Errorf("after the .sig was deleted: allowlist_reload_failures=%d allowlist_entries=%d, want 1 and 1",
			m["allowlist_reload_failures"], m["allowlist_entries"])
	}
}

// chanSource is an eventSource fed by the test.
type chanSource struct {
	ch     chan *event.Event
	closed bool
}

func (c *chanSource) Events() <-chan *event.Event { return c.ch }
func (c *chanSource) Close() error                { c.closed = true; return nil }

func TestLiveInstanceBatching(t *testing.T) {
	p := newPlugin(t, "")
	src := &chanSource{ch: make(chan *event.Event, 200)}
	in := newLiveInstance(p, src)
	evts := newMemEvents(batchSize)

	start := time.Now()
	n, err := in.NextBatch(p, evts)
	if n != 0 || err != sdk.ErrTimeout {
		t.Fatalf("idle NextBatch: %d %v, want sdk.ErrTimeout", n, err)
	}
	if d := time.Since(start); d < idleTimeout/2 || d > 10*idleTimeout {
		t.Errorf("idle NextBatch took %v, want about %v", d, idleTimeout)
	}

	for i := 0; i < batchSize+3; i++ {
		e := initEvent()
		e.Pid = uint32(i + 1)
		src.ch <- e
	}
	if n, err := in.NextBatch(p, evts); n != batchSize || err != nil {
		t.Fatalf("full NextBatch: %d %v", n, err)
	}
	if n, err := in.NextBatch(p, evts); n != 3 || err != nil {
		t.Fatalf("rest: %d %v", n, err)
	}
	if f := extractAll(t, p, 1, evts.evts[2].payload()); f["kmod.pid"] != uint64(batchSize+3) {
		t.Errorf("last event pid %v", f["kmod.pid"])
	}

	// An event that arrives while NextBatch waits is returned at once.
	go func() { time.Sleep(20 * time.Millisecond); src.ch <- deleteEvent() }()
	if n, err := in.NextBatch(p, evts); n != 1 || err != nil {
		t.Fatalf("NextBatch with a late event: %d %v", n, err)
	}

	close(src.ch)
	if _, err := in.NextBatch(p, evts); !errors.Is(err, errSensorStopped) {
		t.Errorf("after the sensor stopped: %v", err)
	}
	in.Close()
	if !src.closed {
		t.Error("Close did not close the sensor")
	}
}

func TestHostileEventIsShrunk(t *testing.T) {
	e := initEvent()
	big := strings.Repeat("p", 20000)
	e.Path, e.Exe, e.Cgroup, e.Vermagic, e.Signer = big, big, big, big, big
	e.Depends = make([]string, event.MaxListLen)
	for i := range e.Depends {
		e.Depends[i] = strings.Repeat("d", 300)
	}
	var w writer
	evts := newMemEvents(1)
	if err := w.put(evts, 0, e); err != nil {
		t.Fatal(err)
	}
	var got event.Event
	if err := got.UnmarshalBinary(evts.evts[0].payload()); err != nil {
		t.Fatal(err)
	}
	if got.Name != "dummy" || len(got.Path) != trimLen || len(got.Depends) != trimList || len(got.Depends[0]) != trimElem {
		t.Errorf("name %q, path %d bytes, %d depends of %d bytes", got.Name, len(got.Path), len(got.Depends), len(got.Depends[0]))
	}
	if len(e.Depends) != event.MaxListLen || len(e.Path) != 20000 {
		t.Error("put changed the caller's event")
	}
}

func TestOversizedEventIsTrimmed(t *testing.T) {
	e := initEvent()
	e.Cmdline = strings.Repeat("c", maxEventSize)
	var w writer
	evts := newMemEvents(1)
	if err := w.put(evts, 0, e); err != nil {
		t.Fatal(err)
	}
	var got event.Event
	if err := got.UnmarshalBinary(evts.evts[0].payload()); err != nil {
		t.Fatal(err)
	}
	if len(got.Cmdline) != trimLen || got.Name != "dummy" {
		t.Errorf("cmdline %d bytes, name %q", len(got.Cmdline), got.Name)
	}
	if evts.evts[0].ts != e.TS {
		t.Errorf("timestamp %d, want %d", evts.evts[0].ts, e.TS)
	}
}

func TestExtractRefusesMismatchedRequests(t *testing.T) {
	p := newPlugin(t, "")
	evt := &memReader{num: 1, data: payload(t, initEvent())}
	for _, req := range []sdk.ExtractRequest{
		&memRequest{id: numFields, field: sdk.FieldEntry{Name: "kmod.nope", Type: typeString}},
		&memRequest{id: fieldRes, field: sdk.FieldEntry{Name: "kmod.res", Type: typeString, IsList: true}},
		&memRequest{id: fieldPid, field: sdk.FieldEntry{Name: "kmod.pid", Type: typeString}},
	} {
		if err := p.Extract(req, evt); err == nil || !strings.Contains(err.Error(), "does not match the plugin's field list") {
			t.Errorf("Extract(%s): %v", req.Field(), err)
		}
		if req.(*memRequest).set {
			t.Errorf("Extract(%s) set a value", req.Field())
		}
	}
}

// TestImageAtExitNeverAllowed: an image the sensor read only at sys_exit may
// have been rewritten by the loaded module's own init, so even bytes that
// match the allowlist do not make the load allowed.
func TestImageAtExitNeverAllowed(t *testing.T) {
	list := filepath.Join(t.TempDir(), "allow.yaml")
	e := initEvent()
	writeAllowlist(t, list, allowlist.Entry{Name: "dummy", SHA256: []string{e.SHA256}})
	p := newPlugin(t, `{"allowlist": "`+list+`"}`)
	p.policy.Current().Judge(e)
	if e.Allowed == nil || !*e.Allowed || e.AllowlistEntry != "dummy" {
		t.Fatalf("control: the listed image read at entry: allowed=%v entry=%q", e.Allowed, e.AllowlistEntry)
	}
	e = initEvent()
	e.ImageAtExit = true
	p.policy.Current().Judge(e)
	if e.Allowed == nil || *e.Allowed || e.AllowlistEntry != "" {
		t.Fatalf("the same image read at exit: allowed=%v entry=%q, want false and no entry", e.Allowed, e.AllowlistEntry)
	}
}
