package analyzer

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	applied      *prometheus.CounterVec
	evaluations  prometheus.Counter
	verdicts     *prometheus.CounterVec
	live         prometheus.Gauge
	saturated    prometheus.Counter
	firstVerdict prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "analyzerd_events_applied_total",
			Help: "Valid rollout events by type and what became of them (applied, duplicate, stale, ignored, rejected).",
		}, []string{"type", "result"}),
		evaluations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "analyzerd_evaluations_total",
			Help: "Evaluations of live rollouts that produced a verdict.",
		}),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "analyzerd_verdicts_total",
			Help: "Verdicts decided, by verdict.",
		}, []string{"verdict"}),
		live: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "analyzerd_live_rollouts",
			Help: "Rollouts under analysis.",
		}),
		saturated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "analyzerd_evaluations_deferred_total",
			Help: "Due evaluations deferred to the next tick because every worker was busy.",
		}),
		firstVerdict: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "analyzerd_first_verdict_seconds",
			Help:    "Time from receiving rollout.started to deciding its first verdict.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.applied, m.evaluations, m.verdicts, m.live, m.saturated, m.firstVerdict} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register analyzer metrics: %w", err)
			}
		}
	}
	return m, nil
}
