package plugin

import (
	"context"
	"fmt"
	"os"

	"github.com/kmodguard/kmodguard/bpf"
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/inventory"
	"github.com/kmodguard/kmodguard/scan"
)

// openLive loads and starts the BPF sensor on this host.
func (p *Plugin) openLive() (*liveInstance, error) {
	s, err := bpf.NewSensor(bpf.Config{
		RingBufferSize: p.cfg.RingbufSize,
		ImageCap:       p.cfg.ImageCap,
		// The plugin judges every event itself (judge), also on replay, so
		// the sensor needs no allowlist of its own.
		Logger: p.logger(),
	})
	if err != nil {
		return nil, fmt.Errorf("start the live sensor: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		cancel()
		s.Close()
		return nil, fmt.Errorf("start the live sensor: %w", err)
	}
	p.logger().WithField("hook", s.Hook()).WithField("results", s.ExitSide()).Info("live sensor attached")
	src := &sensorSource{Sensor: s, cancel: cancel}
	// Hidden modules, looked for now and then beside the sensor; a kernel
	// without module support has none to hide.
	if every, _ := p.cfg.hiddenScanInterval(); every > 0 {
		if _, err := os.Stat("/proc/modules"); err == nil {
			log := p.logger()
			src.merge(ctx, scan.Monitor(ctx, scan.Options{}, every, func(err error) {
				log.WithError(err).Warn("hidden module scan")
			}))
			log.WithField("every", every).Info("hidden module scan started")
		}
	}
	l := newLiveInstance(p, p.withCompanion(src))
	// Taken once the sensor is attached, so that a module loaded in
	// between is seen at least once (a load event, a present event, or
	// both).
	if inv, err := inventory.Take(inventory.HostRoot()); err != nil {
		p.logger().WithError(err).Warn("no inventory of the modules already loaded")
	} else {
		l.pending = inv
		p.logger().WithField("modules", len(inv)).Info("inventory of the modules already loaded: sent as present events")
	}
	return l, nil
}

// sensorSource adapts a *bpf.Sensor to eventSource.
type sensorSource struct {
	*bpf.Sensor
	cancel context.CancelFunc
	// merged, when set, carries the sensor's events and the hidden
	// module scan's; it closes when the sensor's channel does.
	merged chan *event.Event
}

// merge sends the events of more along with the sensor's.
func (s *sensorSource) merge(ctx context.Context, more <-chan *event.Event) {
	s.merged = mergeEvents(ctx, s.Sensor.Events(), more)
}

// mergeEvents forwards the events of in and of more on one channel, which
// closes when in closes. Once ctx ends (the source is closing) the rest of
// in is drained and dropped.
func mergeEvents(ctx context.Context, in, more <-chan *event.Event) chan *event.Event {
	out := make(chan *event.Event, cap(in))
	go func() {
		defer close(out)
		for {
			var e *event.Event
			var ok bool
			select {
			case e, ok = <-in:
				if !ok {
					return
				}
			case e, ok = <-more:
				if !ok {
					more = nil
					continue
				}
			}
			select {
			case out <- e:
			case <-ctx.Done():
				for range in {
				}
				return
			}
		}
	}()
	return out
}

// Events is the sensor's events, with the hidden module scan's when merged.
func (s *sensorSource) Events() <-chan *event.Event {
	if s.merged != nil {
		return s.merged
	}
	return s.Sensor.Events()
}

func (s *sensorSource) Close() error {
	s.cancel()
	return s.Sensor.Close()
}
