package plugin

import (
	"errors"
	"strings"
	"testing"

	"github.com/kmodguard/kmodguard/event"
)

// FuzzParseConfig: any init_config is accepted with valid values or refused
// with an error that names init_config; it never panics.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"ringbuf_size": 1000}`, `{"allowlist": "/x", "public_key": "/k"}`,
		`{"enforcer": {"enabled": true}}`, `{"log_level": "debug", "image_cap": 4096}`, `[`, `{"a":1}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseConfig(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "init_config") {
				t.Fatalf("error %q does not name init_config", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted a config that does not validate: %v", err)
		}
	})
}

// FuzzExtract: every field of a hostile payload extracts without a panic,
// or the payload is refused as corrupt.
func FuzzExtract(f *testing.F) {
	atExit := initEvent()
	atExit.ImageAtExit, atExit.ParamsAtExit = true, true
	for _, e := range []*event.Event{initEvent(), finitEvent(), deleteEvent(), {}, {Syscall: event.Guard}, atExit} {
		b, err := e.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	p := New()
	if err := p.Init(`{"log_level": "error"}`); err != nil {
		f.Fatal(err)
	}
	num := uint64(0)
	f.Fuzz(func(t *testing.T, data []byte) {
		num++
		evt := &memReader{num: num, data: data}
		for id, fe := range p.Fields() {
			req := &memRequest{id: uint64(id), field: fe}
			if err := p.Extract(req, evt); err != nil {
				if !errors.Is(err, event.ErrCorrupt) {
					t.Fatalf("Extract %s: %v", fe.Name, err)
				}
				return
			}
		}
		if _, err := p.String(evt); err != nil {
			t.Fatalf("String: %v", err)
		}
	})
}

func TestString(t *testing.T) {
	p := newPlugin(t, "")
	e := initEvent()
	e.ThisModuleName = "dumbo"
	s, err := p.String(&memReader{num: 1, data: payload(t, e)})
	if err != nil {
		t.Fatal(err)
	}
	if want := "init_module dummy (registers as dumbo) res=ENOSYS pid=4242 comm=insmod"; s != want {
		t.Errorf("String = %q, want %q", s, want)
	}
}
