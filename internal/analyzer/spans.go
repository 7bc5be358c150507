package analyzer

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/tracing"
)

// creator is a Sink that records the creation of a verdict's message in the evaluation's
// trace (publish.Publisher.Create) and gives its context for the message to carry.
type creator interface {
	Create(ctx context.Context, v rollout.Verdict) (traceParent, traceState string)
}

// verdictContext marks the evaluation's root span with what its verdict is to the one before
// (tracing.SamplingKey, which decides whether the trace is exported), and returns the trace
// context the verdict's message is to carry: the context of the span of the message's
// creation when the sink records one, the root's otherwise. It runs on the loop, before v
// joins the analysis's unstored verdicts.
func (a *Analyzer) verdictContext(an *analysis, root trace.Span, v rollout.Verdict) (traceParent, traceState string) {
	prev, had := a.previousVerdict(an)
	root.SetAttributes(tracing.SamplingKey.String(sampling(prev, had, v)))
	ctx := trace.ContextWithSpan(context.Background(), root)
	if c, ok := a.opts.Sink.(creator); ok {
		return c.Create(ctx, v)
	}
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	return carrier.Get("traceparent"), carrier.Get("tracestate")
}

// previousVerdict is the verdict decided last for the rollout: the latest not stored yet, or
// the latest stored (none after a restart that found every verdict published).
func (a *Analyzer) previousVerdict(an *analysis) (rollout.Verdict, bool) {
	if n := len(an.unstored); n > 0 {
		return an.unstored[n-1].Verdict, true
	}
	return a.Latest(an.rec.Rollout)
}

// sampling says what v is to the verdict before it, prev (had is false when there is none),
// as tracing.SamplingKey's values: every value but tracing.SampleRepeat keeps the trace.
func sampling(prev rollout.Verdict, had bool, v rollout.Verdict) string {
	switch {
	case v.Verdict == rollout.Rollback:
		return tracing.SampleRollback
	case !had || prev.Rollout != v.Rollout || prev.Revision != v.Revision:
		return tracing.SampleFirst
	case prev.Step != v.Step || prev.Weight != v.Weight:
		return tracing.SampleStep
	case prev.Verdict != v.Verdict:
		return tracing.SampleChange
	default:
		return tracing.SampleRepeat
	}
}
