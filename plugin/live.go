package plugin

import (
	"context"
	"fmt"

	"github.com/kmodguard/kmodguard/bpf"
	"github.com/kmodguard/kmodguard/inventory"
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
	l := newLiveInstance(p, p.withCompanion(&sensorSource{Sensor: s, cancel: cancel}))
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
}

func (s *sensorSource) Close() error {
	s.cancel()
	return s.Sensor.Close()
}
