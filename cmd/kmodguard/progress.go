package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// isTerminal reports whether w is a terminal, so that progress bars never
// end up in logs and pipes.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// progress draws a one-line bar on a terminal, redrawn ten times a second.
// A nil *progress does nothing, so callers need no checks.
type progress struct {
	w     io.Writer
	what  string
	total int64
	done  atomic.Int64
	bytes atomic.Int64
	start time.Time
	stop  chan struct{}
	wg    sync.WaitGroup
}

// newProgress starts a bar on w when w is a terminal, and returns nil
// otherwise.
func newProgress(w io.Writer, what string, total int) *progress {
	if !isTerminal(w) || total == 0 {
		return nil
	}
	p := &progress{w: w, what: what, total: int64(total), start: time.Now(), stop: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				p.draw()
				fmt.Fprintln(p.w)
				return
			case <-t.C:
				p.draw()
			}
		}
	}()
	return p
}

// add counts one finished item of n bytes.
func (p *progress) add(n int64) {
	if p == nil {
		return
	}
	p.done.Add(1)
	p.bytes.Add(n)
}

func (p *progress) draw() {
	const width = 30
	done := p.done.Load()
	filled := int(done * width / p.total)
	secs := time.Since(p.start).Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(p.bytes.Load()) / secs / (1 << 20)
	}
	fmt.Fprintf(p.w, "\r[%s%s] %d/%d %s  %.0f MiB/s ", strings.Repeat("=", filled), strings.Repeat(" ", width-filled),
		done, p.total, p.what, rate)
}

// finish draws the final state and ends the line.
func (p *progress) finish() {
	if p == nil {
		return
	}
	close(p.stop)
	p.wg.Wait()
}
