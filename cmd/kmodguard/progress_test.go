package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

func TestProgressOnlyOnTerminals(t *testing.T) {
	var buf bytes.Buffer
	if p := newProgress(&buf, "modules", 10); p != nil {
		t.Fatal("a progress bar on a buffer")
	}
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if p := newProgress(f, "modules", 10); p != nil {
		t.Fatal("a progress bar on a regular file")
	}
	var p *progress // what callers get off a terminal: every method is a no-op
	p.add(1)
	p.finish()
}

func TestProgressDraw(t *testing.T) {
	var buf bytes.Buffer
	p := &progress{w: &buf, what: "modules", total: 4, start: time.Now().Add(-10 * time.Second)}
	p.add(10 << 20)
	p.add(10 << 20)
	p.draw()
	got := buf.String()
	if !strings.HasPrefix(got, "\r[===============               ] 2/4 modules") || !strings.Contains(got, "2 MiB/s") {
		t.Errorf("draw = %q", got)
	}
}
