package analyzer

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/tracing"
)

func TestSamplingClasses(t *testing.T) {
	pause := rollout.Verdict{Rollout: ref, Revision: "v2", Step: 0, Weight: 10, Verdict: rollout.Pause}
	with := func(v rollout.Verdict, f func(*rollout.Verdict)) rollout.Verdict { f(&v); return v }
	for _, tc := range []struct {
		name string
		prev rollout.Verdict
		had  bool
		v    rollout.Verdict
		want string
	}{
		{"no verdict before", rollout.Verdict{}, false, pause, tracing.SampleFirst},
		{"the same pause again", pause, true, pause, tracing.SampleRepeat},
		{"pause then proceed", pause, true, with(pause, func(v *rollout.Verdict) { v.Verdict = rollout.Proceed }), tracing.SampleChange},
		{"proceed then pause", with(pause, func(v *rollout.Verdict) { v.Verdict = rollout.Proceed }), true, pause, tracing.SampleChange},
		{"a new step", pause, true, with(pause, func(v *rollout.Verdict) { v.Step, v.Weight = 1, 50 }), tracing.SampleStep},
		{"a new weight at the same step", pause, true, with(pause, func(v *rollout.Verdict) { v.Weight = 20 }), tracing.SampleStep},
		{"a new step that changes the verdict too", pause, true, with(pause, func(v *rollout.Verdict) { v.Step, v.Verdict = 1, rollout.Proceed }), tracing.SampleStep},
		{"a new revision", pause, true, with(pause, func(v *rollout.Verdict) { v.Revision = "v3" }), tracing.SampleFirst},
		{"a rollback", pause, true, with(pause, func(v *rollout.Verdict) { v.Verdict = rollout.Rollback }), tracing.SampleRollback},
		{"a first verdict that rolls back", rollout.Verdict{}, false, with(pause, func(v *rollout.Verdict) { v.Verdict = rollout.Rollback }), tracing.SampleRollback},
	} {
		require.Equal(t, tc.want, sampling(tc.prev, tc.had, tc.v), tc.name)
	}
}

// TestEvaluationSpans drives one analysis through repeated pauses, a change to proceed, a new
// step and a rollback, with a real SDK recording its spans, and checks each evaluation's root:
// one fixed name, the rollout and the causing event in attributes, what the verdict is to the
// one before (analyzerd.sampling), and the trace context handed to the sink.
func TestEvaluationSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	h := &harness{
		m:     &fakeMeasurer{canary: map[string]rollout.Reading{}, stable: ok(0.004, 10000), baseline: ok(0.003, 50000)},
		clock: &clock{now: t0},
	}
	h.store = openStore(t)
	h.replica = h.run(t, Options{Logger: zap.NewNop(), Store: h.store, ReplicaID: "test-replica", Tracer: tp.Tracer("test")})

	h.m.set("v2", ok(0.004, 5000))
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")))
	h.waitVerdicts(t, 1) // pause: the step is younger than minStepDuration
	for i := 2; i <= 3; i++ {
		h.clock.Advance(10 * time.Second)
		h.waitVerdicts(t, i) // pause again
	}
	h.clock.Advance(10 * time.Second)
	h.waitVerdicts(t, 4) // proceed: 30s into the step
	h.clock.Advance(10 * time.Second)
	h.waitVerdicts(t, 5) // proceed again
	step := rollout.Event{ID: "e2", Type: rollout.EventStep, Time: h.clock.Now(), Rollout: ref, Revision: "v2", Step: 1, Weight: 50,
		TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	require.NoError(t, h.a.Handle(context.Background(), step))
	h.waitVerdicts(t, 6) // pause: a young step
	h.m.set("v2", ok(0.10, 5000))
	h.clock.Advance(10 * time.Second)
	vs := h.waitVerdicts(t, 7) // rollback

	want := []struct {
		verdict  rollout.Decision
		sampling string
		event    string
		producer string // the trace of the event's traceparent
	}{
		{rollout.Pause, tracing.SampleFirst, "e1", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{rollout.Pause, tracing.SampleRepeat, "e1", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{rollout.Pause, tracing.SampleRepeat, "e1", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{rollout.Proceed, tracing.SampleChange, "e1", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{rollout.Proceed, tracing.SampleRepeat, "e1", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{rollout.Pause, tracing.SampleStep, "e2", "0af7651916cd43dd8448eb211c80319c"},
		{rollout.Rollback, tracing.SampleRollback, "e2", "0af7651916cd43dd8448eb211c80319c"},
	}
	require.Len(t, vs, len(want))
	roots := map[string]sdktrace.ReadOnlySpan{} // by trace id
	require.Eventually(t, func() bool {
		clear(roots)
		for _, s := range rec.Ended() {
			if !s.Parent().IsValid() {
				roots[s.SpanContext().TraceID().String()] = s
			}
		}
		return len(roots) == len(want)
	}, 5*time.Second, time.Millisecond, "every evaluation's root ended")
	for _, s := range rec.Ended() {
		require.NotContains(t, s.Name(), "prod", "span names never carry the rollout")
		require.NotContains(t, s.Name(), "checkout", "span names never carry the rollout")
	}
	for i, w := range want {
		v := vs[i]
		require.Equal(t, w.verdict, v.Verdict, "verdict %d", v.Sequence)
		root := roots[v.TraceID]
		require.NotNil(t, root, "the root of verdict %d's trace", v.Sequence)
		require.Equal(t, "evaluate", root.Name())
		attrs := map[string]string{}
		for _, a := range root.Attributes() {
			attrs[string(a.Key)] = a.Value.Emit()
		}
		require.Equal(t, w.sampling, attrs[string(tracing.SamplingKey)], "verdict %d", v.Sequence)
		require.Equal(t, w.event, attrs["analyzerd.event.id"], "verdict %d", v.Sequence)
		require.Equal(t, "prod", attrs["rollout.namespace"])
		require.Equal(t, "checkout", attrs["rollout.name"])
		require.Equal(t, fmt.Sprint(v.Sequence), attrs["analyzerd.verdict.sequence"])
		require.Len(t, root.Links(), 1, "linked to the controller's span")
		require.Equal(t, w.producer, root.Links()[0].SpanContext.TraceID().String(), "linked to the span of the event that caused it")

		// The sink is no creator of spans: the verdict carries the root's own context.
		parent := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(),
			propagation.MapCarrier{"traceparent": h.sink.parents[i]}))
		require.Equal(t, root.SpanContext().SpanID(), parent.SpanID())
		require.True(t, strings.HasPrefix(h.sink.parents[i], "00-"+v.TraceID+"-"))
	}
}
