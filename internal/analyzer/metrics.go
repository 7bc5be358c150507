package analyzer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/telemetry"
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
	var err error
	if m.applied, err = telemetry.Register(reg, m.applied); err != nil {
		return nil, err
	}
	if m.evaluations, err = telemetry.Register(reg, m.evaluations); err != nil {
		return nil, err
	}
	if m.verdicts, err = telemetry.Register(reg, m.verdicts); err != nil {
		return nil, err
	}
	if m.live, err = telemetry.Register(reg, m.live); err != nil {
		return nil, err
	}
	if m.saturated, err = telemetry.Register(reg, m.saturated); err != nil {
		return nil, err
	}
	if m.firstVerdict, err = telemetry.Register(reg, m.firstVerdict); err != nil {
		return nil, err
	}
	// Every label value exists from the start, so that alerts see zeros, not absent series.
	for _, d := range []rollout.Decision{rollout.Proceed, rollout.Pause, rollout.Rollback} {
		m.verdicts.WithLabelValues(string(d))
	}
	for _, t := range []rollout.EventType{rollout.EventStarted, rollout.EventStep, rollout.EventCompleted, rollout.EventAborted} {
		for _, r := range []string{"applied", "duplicate", "stale", "ignored", "rejected"} {
			m.applied.WithLabelValues(string(t), r)
		}
	}
	return m, nil
}
