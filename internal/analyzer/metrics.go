package analyzer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/telemetry"
)

type metrics struct {
	applied      *prometheus.CounterVec
	evaluations  prometheus.Counter
	idle         prometheus.Counter
	verdicts     *prometheus.CounterVec
	live         prometheus.Gauge
	saturated    prometheus.Counter
	firstVerdict prometheus.Histogram
	// eventOverhead is the daemon's own share of the time from an event to its verdict.
	eventOverhead prometheus.Histogram
	overdue       prometheus.Gauge
	overdueFor    prometheus.Gauge
	startDelay    prometheus.Histogram
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
			Help: "Times a due evaluation found every worker busy (it starts when one is free; analyzerd_evaluations_overdue is the backlog).",
		}),
		overdue: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "analyzerd_evaluations_overdue",
			Help: "Live rollouts whose interval is up without their next evaluation started, at the last tick: the backlog (evaluations due early, for new samples, are not counted).",
		}),
		overdueFor: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "analyzerd_evaluations_overdue_seconds",
			Help: "How long past its interval the oldest overdue evaluation is, at the last tick (0: none).",
		}),
		startDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "analyzerd_evaluation_start_delay_seconds",
			Help:    "Time from when an evaluation was due (new samples can have come, or its interval is up) to when a worker started it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
		firstVerdict: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "analyzerd_first_verdict_seconds",
			Help:    "Time from receiving rollout.started to deciding its first verdict.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
		idle: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "analyzerd_evaluations_without_new_samples_total",
			Help: "Evaluations whose counter checks found no sample newer than the previous evaluation's (a scrape later than its grace, or not read yet): the next backs off.",
		}),
		eventOverhead: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "analyzerd_event_verdict_overhead_seconds",
			Help:    "For each event that starts an analysis or changes its step: the time from receiving it to JetStream acknowledging the first verdict decided after it, less the evaluation that decided it (measuring, baseline capture, decide): the daemon's own overhead (applying and storing the event, waiting for a worker, storing and publishing the verdict). Observed on the replica that applied the event when it owns the rollout; an event applied by another replica (or a start placed on another) is not observed.",
			Buckets: []float64{0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30},
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
	if m.overdue, err = telemetry.Register(reg, m.overdue); err != nil {
		return nil, err
	}
	if m.overdueFor, err = telemetry.Register(reg, m.overdueFor); err != nil {
		return nil, err
	}
	if m.startDelay, err = telemetry.Register(reg, m.startDelay); err != nil {
		return nil, err
	}
	if m.idle, err = telemetry.Register(reg, m.idle); err != nil {
		return nil, err
	}
	if m.eventOverhead, err = telemetry.Register(reg, m.eventOverhead); err != nil {
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
