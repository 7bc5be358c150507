package publish

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

func attrsOf(s sdktrace.ReadOnlySpan) map[attribute.Key]string {
	out := map[attribute.Key]string{}
	for _, a := range s.Attributes() {
		out[a.Key] = a.Value.Emit()
	}
	return out
}

// TestVerdictSpans: the verdict's creation is a PRODUCER span of the evaluation's trace, ended
// before the evaluation's root, and its context is what the message carries; the publication
// is a CLIENT span of its own trace, linked to it, ended before OnPublished is called; no span
// name carries the rollout. A creation context not sampled gets no publication span.
func TestVerdictSpans(t *testing.T) {
	e := newEnv(t, true)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	var (
		mu         sync.Mutex
		endedAtAck []string // the names of the spans ended when each verdict was acknowledged
	)
	p := New(e.js, Options{TracerProvider: tp, OnPublished: func(rollout.Verdict) {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range rec.Ended() {
			endedAtAck = append(endedAtAck, s.Name())
		}
	}})

	ctx, root := tp.Tracer("test").Start(context.Background(), "evaluate")
	v := verdict("checkout", 1, rollout.Pause)
	v.Cause = "evt-1"
	traceParent, traceState := p.Create(ctx, v)
	root.End()
	p.Enqueue(v, traceParent, traceState)
	require.NoError(t, p.Flush(e.ctx))

	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		require.NotContains(t, s.Name(), "checkout", "no span name carries the rollout")
		byName[s.Name()] = s
	}
	create := byName["create rollouts.verdicts.{namespace}.{name}"]
	require.NotNil(t, create, "spans: %v", byName)
	send := byName["publish rollouts.verdicts.{namespace}.{name}"]
	require.NotNil(t, send, "spans: %v", byName)

	require.Equal(t, trace.SpanKindProducer, create.SpanKind())
	require.Equal(t, root.SpanContext().SpanID(), create.Parent().SpanID(), "the creation is a child of the evaluation")
	require.False(t, create.EndTime().After(byName["evaluate"].EndTime()), "and ends before it")
	require.Equal(t, "00-"+root.SpanContext().TraceID().String()+"-"+create.SpanContext().SpanID().String()+"-01", traceParent)

	require.Equal(t, trace.SpanKindClient, send.SpanKind(), "not the creation context: CLIENT, as the conventions say")
	require.False(t, send.Parent().IsValid(), "a trace of its own: it ends after the evaluation")
	require.Len(t, send.Links(), 1)
	require.Equal(t, create.SpanContext().SpanID(), send.Links()[0].SpanContext.SpanID(), "linked to the creation context")
	for _, s := range []sdktrace.ReadOnlySpan{create, send} {
		a := attrsOf(s)
		require.Equal(t, "nats", a["messaging.system"])
		require.Equal(t, "rollouts.verdicts.prod.checkout", a["messaging.destination.name"])
		require.Equal(t, "rollouts.verdicts.{namespace}.{name}", a["messaging.destination.template"])
		require.Equal(t, MsgID(v), a["messaging.message.id"])
		require.Equal(t, "evt-1", a["analyzerd.event.id"])
		require.Equal(t, "prod", a["rollout.namespace"])
		require.Equal(t, "checkout", a["rollout.name"])
		require.Equal(t, "1", a["analyzerd.verdict.sequence"])
	}
	require.Equal(t, "create", attrsOf(create)["messaging.operation.type"])
	require.Equal(t, "send", attrsOf(send)["messaging.operation.type"])
	require.Equal(t, "1", attrsOf(send)["analyzerd.publish.attempts"])
	mu.Lock()
	require.Contains(t, endedAtAck, send.Name(), "the publication's span ended before OnPublished")
	mu.Unlock()

	msgs := e.stored(t)
	require.Len(t, msgs, 1)
	require.Equal(t, traceParent, msgs[0].Header.Get("traceparent"), "the message carries the creation context")

	// A creation context that was not sampled: no publication span, the context passed on.
	n := len(rec.Ended())
	unsampled := "00-" + strings.Repeat("ab", 16) + "-" + strings.Repeat("cd", 8) + "-00"
	p.Enqueue(verdict("checkout", 2, rollout.Pause), unsampled, "")
	require.NoError(t, p.Flush(e.ctx))
	require.Len(t, rec.Ended(), n)
	msgs = e.stored(t)
	require.Len(t, msgs, 2)
	require.Equal(t, unsampled, msgs[1].Header.Get("traceparent"))
}
