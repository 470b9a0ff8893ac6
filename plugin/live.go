package plugin

import (
	"context"
	"fmt"

	"github.com/kmodguard/kmodguard/bpf"
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
	return newLiveInstance(p, p.withCompanion(&sensorSource{Sensor: s, cancel: cancel})), nil
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
