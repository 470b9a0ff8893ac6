package plugin

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/falcosecurity/plugin-sdk-go/pkg/sdk"

	"github.com/kmodguard/kmodguard/event"
)

// The SDK's own batch and request types live in C memory and are only
// readable from C; these in-memory twins let the tests read what NextBatch
// wrote and call Extract the way Falco does.

type memEvent struct {
	buf bytes.Buffer
	ts  uint64
}

func (m *memEvent) Writer() io.Writer          { m.buf.Reset(); return &m.buf }
func (m *memEvent) SetTimestamp(ts uint64)     { m.ts = ts }
func (m *memEvent) payload() []byte            { return bytes.Clone(m.buf.Bytes()) }
func (m *memEvents) Get(i int) sdk.EventWriter { return m.evts[i] }
func (m *memEvents) Len() int                  { return len(m.evts) }
func (m *memEvents) ArrayPtr() unsafe.Pointer  { return nil }
func (m *memEvents) Free()                     {}

type memEvents struct{ evts []*memEvent }

func newMemEvents(n int) *memEvents {
	m := &memEvents{}
	for i := 0; i < n; i++ {
		m.evts = append(m.evts, &memEvent{})
	}
	return m
}

type memReader struct {
	num, ts uint64
	data    []byte
}

func (r *memReader) EventNum() uint64      { return r.num }
func (r *memReader) Timestamp() uint64     { return r.ts }
func (r *memReader) Reader() io.ReadSeeker { return bytes.NewReader(r.data) }

type memRequest struct {
	id    uint64
	field sdk.FieldEntry
	value any
	set   bool
}

func (r *memRequest) FieldID() uint64 { return r.id }
func (r *memRequest) FieldType() uint32 {
	switch r.field.Type {
	case typeUint64:
		return sdk.FieldTypeUint64
	case typeBool:
		return sdk.FieldTypeBool
	}
	return sdk.FieldTypeCharBuf
}
func (r *memRequest) Field() string                           { return r.field.Name }
func (r *memRequest) ArgKey() string                          { return "" }
func (r *memRequest) ArgIndex() uint64                        { return 0 }
func (r *memRequest) ArgPresent() bool                        { return false }
func (r *memRequest) IsList() bool                            { return r.field.IsList }
func (r *memRequest) SetValue(v any)                          { r.value, r.set = v, true }
func (r *memRequest) SetValueOffset(start, length uint32)     {}
func (r *memRequest) SetPtr(unsafe.Pointer)                   {}
func (r *memRequest) SetOffsetPtrs(start, len unsafe.Pointer) {}
func (r *memRequest) WantOffset() bool                        { return false }

// extractAll extracts every field of one payload through Extract, checking
// each value's Go type against the field's declared type. Absent fields are
// missing from the map.
func extractAll(t testing.TB, p *Plugin, num uint64, payload []byte) map[string]any {
	t.Helper()
	evt := &memReader{num: num, data: payload}
	out := map[string]any{}
	for id, f := range p.Fields() {
		req := &memRequest{id: uint64(id), field: f}
		if err := p.Extract(req, evt); err != nil {
			t.Fatalf("Extract %s: %v", f.Name, err)
		}
		if !req.set {
			continue
		}
		ok := false
		switch f.Type {
		case typeString:
			if f.IsList {
				_, ok = req.value.([]string)
			} else {
				_, ok = req.value.(string)
			}
		case typeUint64:
			_, ok = req.value.(uint64)
		case typeBool:
			_, ok = req.value.(bool)
		}
		if !ok {
			t.Fatalf("field %s (%s, list %v) extracted as %T", f.Name, f.Type, f.IsList, req.value)
		}
		out[f.Name] = req.value
	}
	return out
}

// batches drains an instance, returning the payloads it produced.
func batches(t testing.TB, p *Plugin, in interface {
	NextBatch(sdk.PluginState, sdk.EventWriters) (int, error)
}, max int) [][]byte {
	t.Helper()
	var out [][]byte
	evts := newMemEvents(batchSize)
	for len(out) < max {
		n, err := in.NextBatch(p, evts)
		for i := 0; i < n; i++ {
			out = append(out, evts.evts[i].payload())
		}
		if err == sdk.ErrEOF {
			return out
		}
		if err != nil {
			t.Fatalf("NextBatch: %v", err)
		}
	}
	return out
}

func writeRecording(t testing.TB, events ...*event.Event) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rec.kmg")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := event.NewRecordWriter(f)
	if err := w.WriteHeader(); err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if err := w.Write(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func newPlugin(t testing.TB, config string) *Plugin {
	t.Helper()
	p := New()
	if err := p.Init(config); err != nil {
		t.Fatalf("Init(%s): %v", config, err)
	}
	return p
}

func ptr[T any](v T) *T { return &v }
