package plugin

import (
	"context"
	"testing"
	"time"

	"github.com/kmodguard/kmodguard/event"
)

// TestMergeEvents: the hidden module scan's events reach the live source
// along with the sensor's, the merged channel closes with the sensor's
// (even after the scan's closed first), and a closing source does not
// leave the forwarder stuck on an unread event.
func TestMergeEvents(t *testing.T) {
	in := make(chan *event.Event, 4)
	more := make(chan *event.Event, 4)
	out := mergeEvents(context.Background(), in, more)
	in <- &event.Event{Syscall: event.InitModule}
	more <- &event.Event{Syscall: event.Hidden, Name: "hideme"}
	close(more)
	got := map[event.Syscall]bool{}
	for i := 0; i < 2; i++ {
		select {
		case e := <-out:
			got[e.Syscall] = true
		case <-time.After(5 * time.Second):
			t.Fatal("no merged event")
		}
	}
	if !got[event.InitModule] || !got[event.Hidden] {
		t.Errorf("merged %v, want init_module and hidden", got)
	}
	in <- &event.Event{Syscall: event.DeleteModule}
	if e := <-out; e.Syscall != event.DeleteModule {
		t.Errorf("after the scan's channel closed: %v", e.Syscall)
	}
	close(in)
	if _, ok := <-out; ok {
		t.Error("merged channel still open after the sensor's closed")
	}

	ctx, cancel := context.WithCancel(context.Background())
	in2 := make(chan *event.Event, 4)
	out2 := mergeEvents(ctx, in2, nil)
	in2 <- &event.Event{}
	in2 <- &event.Event{}
	time.Sleep(10 * time.Millisecond) // the first forwarded, the second waits on an unread channel
	cancel()
	close(in2)
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-out2:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("the forwarder did not stop once its source closed")
		}
	}
}
