package app

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/rolloutclient"
	"github.com/analyzerd/analyzerd/internal/telemetry"
)

// TestSpanTreeOfARollback pins the trace of the evaluation that rolls a bad canary back:
// against a real Prometheus scraping a real instrumented workload, the root span "evaluate"
// (one name for every rollout: the rollout and the event that caused the evaluation are
// attributes) is linked to the producer's span from the event's traceparent; its children are
// one "query" span per PromQL query (the rendered query, the rows), one "decide" span with an
// event per check (outcome, values, e-value), and the PRODUCER span of the verdict message's
// creation (messaging attributes, message id, sequence), whose context the verdict carries;
// every child ends before the root. The publication, which ends when JetStream acknowledges,
// is a CLIENT span of its own trace linked to the creation. No span name carries the rollout.
func TestSpanTreeOfARollback(t *testing.T) {
	if testing.Short() {
		t.Skip("starts prometheus and a workload")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prom := startPrometheus(t, ctx, 0.2) // the canary at 20% errors
	cfg := fastConfig(t, prom.URL())

	recorder := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	_, js := startConnected(t, ctx, cfg, Options{TracerProvider: tp})

	// The controller's span, whose context travels in the event's traceparent.
	controllerTP := sdktrace.NewTracerProvider()
	_, producer := controllerTP.Tracer("controller").Start(ctx, "set canary weight")
	ref := rollout.Ref{Namespace: "prod", Name: "checkout"}
	body, err := rolloutclient.Event("start-1", rollout.EventStarted, time.Now(), rolloutclient.Started{
		Rollout: ref, Revision: "v2", Analysis: "fast", Args: map[string]string{"service": "checkout"},
		Canary: map[string]string{"version": "v2"}, Stable: map[string]string{"version": "v1"}, Weight: 50,
	})
	require.NoError(t, err)
	msg := nats.NewMsg(rollout.EventsSubject("rollouts", ref))
	msg.Data = body
	msg.Header.Set("Content-Type", "application/cloudevents+json")
	propagation.TraceContext{}.Inject(trace.ContextWithSpan(ctx, producer), telemetry.HeaderCarrier(msg.Header))
	_, err = js.PublishMsg(ctx, msg)
	require.NoError(t, err)
	producer.End()

	var rolledBack rolloutclient.Received
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	found := make(chan rolloutclient.Received, 1)
	go func() {
		_ = rolloutclient.WatchVerdicts(watchCtx, js, "rollouts", func(r rolloutclient.Received) {
			if r.Verdict.Verdict == rollout.Rollback {
				select {
				case found <- r:
				default:
				}
			}
		})
	}()
	select {
	case rolledBack = <-found:
	case <-time.After(60 * time.Second):
		t.Fatal("no rollback within 60s")
	}
	stopWatch()

	traceID := rolledBack.Verdict.TraceID
	const (
		createName  = "create rollouts.verdicts.{namespace}.{name}"
		publishName = "publish rollouts.verdicts.{namespace}.{name}"
	)
	var (
		spans []sdktrace.ReadOnlySpan
		send  sdktrace.ReadOnlySpan
	)
	require.Eventually(t, func() bool {
		spans = spansOf(recorder, traceID)
		names := map[string]bool{}
		for _, s := range spans {
			names[s.Name()] = true
		}
		send = nil
		for _, s := range recorder.Ended() {
			if s.Name() == publishName && attr(s, "analyzerd.verdict.sequence") == fmt.Sprint(rolledBack.Verdict.Sequence) {
				send = s
			}
		}
		return names["evaluate"] && names["decide"] && names[createName] && send != nil
	}, 10*time.Second, 20*time.Millisecond, "the rollback's spans ended")
	t.Logf("the trace of the rollback (verdict %d):\n%s\nits publication:\n%s", rolledBack.Verdict.Sequence,
		describeTree(spans), describeTree([]sdktrace.ReadOnlySpan{send}))
	for _, s := range recorder.Ended() {
		require.NotContains(t, s.Name(), "prod", "no span name carries the rollout")
		require.NotContains(t, s.Name(), "checkout", "no span name carries the rollout")
	}

	var root sdktrace.ReadOnlySpan
	for _, s := range spans {
		if !s.Parent().IsValid() {
			require.Nil(t, root, "one root")
			root = s
		}
	}
	require.NotNil(t, root)
	require.Equal(t, "evaluate", root.Name())
	require.Len(t, root.Links(), 1)
	require.Equal(t, producer.SpanContext().SpanID(), root.Links()[0].SpanContext.SpanID(), "linked to the producer's span")
	requireAttr(t, root, "analyzerd.verdict", "rollback")
	requireAttr(t, root, "analyzerd.sampling", "rollback")
	requireAttr(t, root, "analyzerd.event.id", "start-1")
	requireAttr(t, root, "rollout.namespace", "prod")
	requireAttr(t, root, "rollout.name", "checkout")
	requireAttr(t, root, "rollout.revision", "v2")

	queries, decides, creates := 0, 0, 0
	var create sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s == root {
			continue
		}
		require.Equal(t, root.SpanContext().SpanID(), s.Parent().SpanID(), "%s is a child of the evaluation", s.Name())
		require.False(t, s.EndTime().After(root.EndTime()), "%s ends before its root", s.Name())
		switch s.Name() {
		case "query":
			queries++
			// A side's own query (its first evaluation's), or the grouped refresh that serves
			// both sides (and every other rollout of the selector) at once.
			text := attr(s, "db.query.text")
			if strings.Contains(text, "=~") {
				require.Contains(t, text, `service=~"checkout"`)
				require.Contains(t, text, `version=~"v1|v2"`)
			} else {
				require.Contains(t, text, `service="checkout"`)
				require.True(t, strings.Contains(text, `version="v2"`) || strings.Contains(text, `version="v1"`), text)
			}
			requireAttr(t, s, "db.system.name", "prometheus")
			require.NotEmpty(t, attr(s, "db.response.returned_rows"))
			require.Equal(t, trace.SpanKindClient, s.SpanKind())
		case "decide":
			decides++
			requireAttr(t, s, "analyzerd.verdict", "rollback")
			require.NotEmpty(t, s.Events())
			ev := s.Events()[0]
			require.Equal(t, "check", ev.Name)
			evAttrs := map[attribute.Key]attribute.Value{}
			for _, a := range ev.Attributes {
				evAttrs[a.Key] = a.Value
			}
			require.Equal(t, "error-rate", evAttrs["analyzerd.check"].AsString())
			require.Equal(t, "fail", evAttrs["analyzerd.check.outcome"].AsString())
			require.GreaterOrEqual(t, evAttrs["analyzerd.check.e_value"].AsFloat64(), 100.0)
			require.Greater(t, evAttrs["analyzerd.check.canary"].AsFloat64(), evAttrs["analyzerd.check.stable"].AsFloat64())
		case createName:
			creates++
			create = s
			require.Equal(t, trace.SpanKindProducer, s.SpanKind())
			requireAttr(t, s, "messaging.system", "nats")
			requireAttr(t, s, "messaging.operation.type", "create")
			requireAttr(t, s, "messaging.destination.name", "rollouts.verdicts.prod.checkout")
			requireAttr(t, s, "messaging.message.id", rolledBack.MsgID)
			requireAttr(t, s, "analyzerd.verdict.sequence", fmt.Sprint(rolledBack.Verdict.Sequence))
			requireAttr(t, s, "analyzerd.event.id", "start-1")
			require.Equal(t, fmt.Sprintf("00-%s-%s-01", traceID, s.SpanContext().SpanID()), rolledBack.TraceParent,
				"the verdict carries the context of its creation")
		default:
			t.Fatalf("unexpected span %q", s.Name())
		}
	}
	// The rollback's evaluation queried only if the errors' and the requests' feeds were more
	// than a second old: a refresh serves every evaluation after it for that long.
	if rolledBack.Verdict.Sequence > 1 { // the first evaluation reads each side by its own queries
		require.LessOrEqual(t, queries, 2, "at most one grouped refresh of each selector, for both sides")
	}
	require.Equal(t, 1, decides)
	require.Equal(t, 1, creates)

	// The publication: a trace of its own, linked to the creation context.
	require.False(t, send.Parent().IsValid())
	require.NotEqual(t, traceID, send.SpanContext().TraceID().String())
	require.Equal(t, trace.SpanKindClient, send.SpanKind())
	require.Len(t, send.Links(), 1)
	require.Equal(t, create.SpanContext(), send.Links()[0].SpanContext.WithRemote(false), "linked to the creation")
	requireAttr(t, send, "messaging.operation.type", "send")
	requireAttr(t, send, "messaging.destination.name", "rollouts.verdicts.prod.checkout")
	requireAttr(t, send, "messaging.message.id", rolledBack.MsgID)
	requireAttr(t, send, "analyzerd.verdict", "rollback")
}

// fastTemplate is the error-rate check at a one-second interval.
// fastTemplate decides in seconds on the test workloads: a canary shown below a 1% error rate
// passes (the shipped 0.1% tolerance would have it shown within 1.25 x stable's rate, which
// takes minutes at their traffic).
func fastTemplate() rollout.Template {
	max, tolerance := 0.01, 0.01
	sel := `service={{ arg "service" }}, version={{ var "version" }}`
	return rollout.Template{
		Name: "fast", Interval: time.Second, BaselineWindow: 10 * time.Second, MinStepDuration: 5 * time.Second,
		Args: []string{"service"}, Variables: []string{"version"},
		Checks: []rollout.Check{{
			Name: "error-rate", Kind: rollout.KindRatio, MinSamples: 50,
			Errors:     `http_requests_total{` + sel + `, code=~"5.."}`,
			Total:      `http_requests_total{` + sel + `}`,
			Sequential: &rollout.Sequential{Tolerance: &tolerance},
			Guards:     []rollout.Guard{{Against: rollout.AgainstStable, Measure: rollout.MeasureDelta, Max: &max}},
		}},
	}
}

func spansOf(r *tracetest.SpanRecorder, traceID string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range r.Ended() {
		if s.SpanContext().TraceID().String() == traceID {
			out = append(out, s)
		}
	}
	return out
}

func attr(s sdktrace.ReadOnlySpan, key string) string {
	for _, a := range s.Attributes() {
		if string(a.Key) == key {
			return a.Value.Emit()
		}
	}
	return ""
}

func requireAttr(t *testing.T, s sdktrace.ReadOnlySpan, key, want string) {
	t.Helper()
	require.Equal(t, want, attr(s, key), "%s: attribute %s", s.Name(), key)
}

// describeTree prints the spans, children under their parent, with their key attributes.
func describeTree(spans []sdktrace.ReadOnlySpan) string {
	sort.Slice(spans, func(i, j int) bool { return spans[i].StartTime().Before(spans[j].StartTime()) })
	var b strings.Builder
	for _, s := range spans {
		indent := "  "
		if !s.Parent().IsValid() {
			indent = ""
		}
		fmt.Fprintf(&b, "%s%s (%s)", indent, s.Name(), s.EndTime().Sub(s.StartTime()).Round(time.Microsecond))
		for _, a := range s.Attributes() {
			fmt.Fprintf(&b, " %s=%s", a.Key, a.Value.Emit())
		}
		b.WriteString("\n")
		for _, e := range s.Events() {
			fmt.Fprintf(&b, "%s    event %s:", indent, e.Name)
			for _, a := range e.Attributes {
				fmt.Fprintf(&b, " %s=%s", a.Key, a.Value.Emit())
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}
