//go:build linux

package main

import (
	"context"

	"github.com/sirupsen/logrus"

	"github.com/kmodguard/kmodguard/enforcer"
)

// startMetrics serves the enforcer's Prometheus metrics on addr until ctx
// ends; it returns nil metrics when addr is empty (metrics are off by
// default).
func startMetrics(ctx context.Context, log logrus.FieldLogger, addr string, enf *enforcer.Enforcer) (*enforcer.Metrics, error) {
	if addr == "" {
		return nil, nil
	}
	m := enforcer.NewMetrics(enforcer.MetricsSource{Status: enf.Status, Allowlist: enf.Allowlist})
	bound, errc, err := enforcer.ServeMetrics(ctx, addr, m.Handler())
	if err != nil {
		return nil, err
	}
	log.WithField("addr", bound.String()).Info("serving Prometheus metrics on /metrics")
	go func() {
		if err := <-errc; err != nil {
			log.WithError(err).Error("metrics server stopped")
		}
	}()
	return m, nil
}
