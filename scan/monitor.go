package scan

import (
	"context"
	"fmt"
	"time"

	"github.com/kmodguard/kmodguard/event"
)

// Events turns a report's hidden modules into hidden events at now.
func (r *Report) Events(now time.Time) []event.Event {
	out := make([]event.Event, 0, len(r.Hidden))
	for _, h := range r.Hidden {
		out = append(out, event.Event{
			TS: uint64(now.UnixNano()), Syscall: event.Hidden, Name: h.Name,
			ModuleAddr: h.ModuleAddr, Hidden: h.Describe(), Verdict: event.VerdictNone,
		})
	}
	return out
}

// Monitor scans every interval, from its start, and sends each hidden
// module once (by name and address) as a hidden event, until ctx ends; it
// then closes the channel. A scan that fails is passed to onErr (once per
// distinct error) and tried again at the next tick. watch and the Falco
// plugin run it beside the sensor.
func Monitor(ctx context.Context, o Options, every time.Duration, onErr func(error)) <-chan *event.Event {
	out := make(chan *event.Event, 16)
	go func() {
		defer close(out)
		reported := map[string]bool{}
		lastErr := ""
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			r, err := Scan(o)
			if err != nil {
				if err.Error() != lastErr && onErr != nil {
					onErr(err)
				}
				lastErr = err.Error()
			} else {
				lastErr = ""
				for _, s := range r.Sources {
					if key := "source " + s.Name + ": " + s.Error; s.Error != "" && onErr != nil && !reported[key] {
						reported[key] = true
						onErr(&SourceError{Source: s})
					}
				}
				evs := r.Events(time.Now())
				for i, h := range r.Hidden {
					key := fmt.Sprintf("module %s@%#x", h.Name, h.ModuleAddr)
					if reported[key] {
						continue
					}
					reported[key] = true
					select {
					case out <- &evs[i]:
					case <-ctx.Done():
						return
					}
				}
			}
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// SourceError says that a view of the modules was not available to a scan.
type SourceError struct{ Source Source }

func (e *SourceError) Error() string {
	return "scan: " + e.Source.Name + " not available: " + e.Source.Error
}
