package analyzer

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/analyzerd/analyzerd/internal/compare"
	"github.com/analyzerd/analyzerd/internal/decide"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

// analysis is the state of one live rollout's analysis.
type analysis struct {
	key      rollout.Key
	gen      uint64 // distinguishes a revision's analysis from the one that superseded it
	template *compare.Template
	args     map[string]string
	canary   map[string]string
	stable   map[string]string
	// started is the rollout.started event's time: the baseline window ends there.
	started  time.Time
	received time.Time // when the daemon learnt of it, for the time-to-first-verdict metric

	step        int
	weight      int
	stepStarted time.Time
	stepGen     uint64 // grows with every step change
	cause       string // id of the event that started the current step
	traceParent string // the producer's trace context from that event
	traceState  string

	baseline    map[string]rollout.Reading // nil until captured
	baselineErr string                     // the last failure to capture it, for logging changes only
	evidence    decide.Evidence
	sequence    uint64

	next         time.Time
	inFlight     bool
	final        bool // rolled back: no more evaluations
	firstVerdict bool
}

// ended is what is remembered of an analysis after it ended.
type ended struct {
	at       time.Time // the time of the event that ended it
	sequence uint64
	evidence decide.Evidence
}

// endedKey names an analysis among the ended ones. NUL cannot occur in event strings.
func endedKey(k rollout.Key) string { return k.Namespace + "\x00" + k.Name + "\x00" + k.Revision }

// job is one evaluation: a snapshot of what the worker needs.
type job struct {
	key          rollout.Key
	gen          uint64
	stepGen      uint64
	now          time.Time
	started      time.Time
	target       compare.Target
	needBaseline bool
	span         trace.Span
}

type result struct {
	job          job
	measurements []rollout.Measurement
	baseline     map[string]rollout.Reading
	baselineErr  error
}

func (an *analysis) job(now time.Time, tracer trace.Tracer) job {
	// Value checks measure the step so far; ratio and histogram checks count since the
	// analysis started, and decide takes the step's share (see compare.Side).
	window, counted := now.Sub(an.stepStarted), now.Sub(an.started)
	var opts []trace.SpanStartOption
	if an.traceParent != "" {
		producer := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{
			"traceparent": an.traceParent, "tracestate": an.traceState,
		})
		if sc := trace.SpanContextFromContext(producer); sc.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
		}
	}
	opts = append(opts, trace.WithNewRoot(), trace.WithTimestamp(now), trace.WithAttributes(
		attribute.String("rollout.namespace", an.key.Namespace),
		attribute.String("rollout.name", an.key.Name),
		attribute.String("rollout.revision", an.key.Revision),
		attribute.Int("rollout.step", an.step),
		attribute.Int("rollout.weight", an.weight),
		attribute.String("analysis.template", an.template.Name),
	))
	_, span := tracer.Start(context.Background(), "evaluate "+an.key.Ref.String(), opts...)
	return job{
		key:     an.key,
		gen:     an.gen,
		stepGen: an.stepGen,
		now:     now,
		started: an.started,
		target: compare.Target{
			Template: an.template,
			Args:     an.args,
			Canary:   compare.Side{Vars: an.canary, Window: window, CountsWindow: counted, At: now},
			Stable:   compare.Side{Vars: an.stable, Window: window, CountsWindow: counted, At: now},
		},
		needBaseline: an.baseline == nil,
		span:         span,
	}
}

// apply changes the state as one event says. It runs on the loop.
func (a *Analyzer) apply(ev rollout.Event) error {
	if _, dup := a.seen.get(ev.ID); dup {
		a.metrics.applied.WithLabelValues(string(ev.Type), "duplicate").Inc()
		return nil
	}
	outcome, err := a.applyNew(ev)
	if err != nil {
		a.metrics.applied.WithLabelValues(string(ev.Type), "rejected").Inc()
		return err
	}
	a.seen.put(ev.ID, struct{}{})
	a.metrics.applied.WithLabelValues(string(ev.Type), outcome).Inc()
	a.metrics.live.Set(float64(len(a.live)))
	return nil
}

func (a *Analyzer) applyNew(ev rollout.Event) (outcome string, err error) {
	log := a.opts.Logger.With(zap.String("rollout", ev.Rollout.String()), zap.String("revision", ev.Revision),
		zap.String("event", string(ev.Type)), zap.String("eventId", ev.ID))
	an := a.live[ev.Rollout]
	sameRevision := an != nil && an.key.Revision == ev.Revision
	previous, wasEnded := a.ended.get(endedKey(ev.Key()))

	switch ev.Type {
	case rollout.EventStarted:
		if sameRevision {
			return "duplicate", nil // the same (rollout, revision) again (CONTRACT.md section 3)
		}
		if wasEnded && !ev.Time.After(previous.at) {
			return "duplicate", nil // a start from before that analysis ended, delivered again
		}
		t, ok := a.opts.Templates[ev.Analysis]
		if !ok {
			return "", rollout.Invalidf("data.analysis: no analysis template named %q", ev.Analysis)
		}
		for _, name := range t.Args {
			if _, ok := ev.Args[name]; !ok {
				return "", rollout.Invalidf("data.args.%s: required by analysis template %q", name, t.Name)
			}
		}
		for _, name := range t.Variables {
			if _, ok := ev.Canary[name]; !ok {
				return "", rollout.Invalidf("data.canary.%s: required by analysis template %q", name, t.Name)
			}
			if _, ok := ev.Stable[name]; !ok {
				return "", rollout.Invalidf("data.stable.%s: required by analysis template %q", name, t.Name)
			}
		}
		if an != nil {
			if ev.Time.Before(an.started) {
				return "stale", nil // an older revision's start, delivered late
			}
			log.Info("new revision supersedes the analysis of the previous one", zap.String("previous", an.key.Revision))
			a.retire(an, ev.Time)
		}
		a.gen++
		now := a.opts.Now()
		a.live[ev.Rollout] = &analysis{
			key:          ev.Key(),
			gen:          a.gen,
			template:     t,
			args:         ev.Args,
			canary:       ev.Canary,
			stable:       ev.Stable,
			started:      ev.Time,
			received:     now,
			step:         ev.Step,
			weight:       ev.Weight,
			stepStarted:  ev.Time,
			cause:        ev.ID,
			traceParent:  ev.TraceParent,
			traceState:   ev.TraceState,
			next:         now,
			firstVerdict: true,
		}
		if wasEnded {
			// The revision started again after its analysis ended (a retry, a revert): its
			// sequence goes on, so that no number is published twice, and its evidence
			// carries over. A rolled-back revision is answered rollback again at once.
			a.live[ev.Rollout].sequence, a.live[ev.Rollout].evidence = previous.sequence, previous.evidence
			log.Info("revision started again after its analysis ended", zap.Uint64("sequence", previous.sequence),
				zap.Bool("rolledBack", previous.evidence.RolledBack))
		}
		log.Info("analysis started", zap.String("template", t.Name), zap.Int("step", ev.Step), zap.Int("weight", ev.Weight))
		return "applied", nil

	case rollout.EventStep:
		if !sameRevision && wasEnded {
			return "ignored", nil // the analysis of that revision has ended
		}
		if !sameRevision {
			return "", rollout.Invalidf("no live analysis of rollout %s revision %q", ev.Rollout, ev.Revision)
		}
		if ev.Time.Before(an.stepStarted) {
			return "stale", nil
		}
		if ev.Step == an.step && ev.Weight == an.weight {
			return "duplicate", nil
		}
		an.step, an.weight = ev.Step, ev.Weight
		an.stepStarted, an.stepGen, an.cause = ev.Time, an.stepGen+1, ev.ID
		an.traceParent, an.traceState = ev.TraceParent, ev.TraceState
		an.next = a.opts.Now()
		log.Info("step changed", zap.Int("step", ev.Step), zap.Int("weight", ev.Weight))
		return "applied", nil

	case rollout.EventCompleted, rollout.EventAborted:
		if !sameRevision {
			return "ignored", nil // already retired, or about a revision no longer analysed
		}
		a.retire(an, ev.Time)
		log.Info("analysis ended", zap.String("reason", ev.Reason))
		return "applied", nil
	}
	return "", rollout.Invalidf("type: unknown event type %q", ev.Type)
}

// recent remembers the most recent entries put into it, up to a capacity, forgetting the
// oldest: the ids of applied events, so that a redelivered or republished event (with or
// without Nats-Msg-Id) is applied once; and what is left of analyses that ended.
type recent[V any] struct {
	entries map[string]V
	order   []string
	next    int
}

func newRecent[V any](capacity int) *recent[V] {
	return &recent[V]{entries: make(map[string]V, capacity), order: make([]string, capacity)}
}

func (r *recent[V]) get(key string) (V, bool) { v, ok := r.entries[key]; return v, ok }

func (r *recent[V]) put(key string, v V) {
	if _, ok := r.entries[key]; !ok {
		if old := r.order[r.next]; old != "" {
			delete(r.entries, old)
		}
		r.order[r.next] = key
		r.next = (r.next + 1) % len(r.order)
	}
	r.entries[key] = v
}
