package app

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/config"
	"github.com/analyzerd/analyzerd/internal/otlptest"
	"github.com/analyzerd/analyzerd/internal/promproc"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/rolloutclient"
)

// exportedEvaluations runs the daemon against a real Prometheus that scrapes nothing (no
// data: every verdict is pause, at the template's interval) exporting to an OTLP/HTTP receiver with tracing.repeatSampleRatio ratio, starts a rollout,
// moves it to a new step after its fourth verdict, lets it decide at least four verdicts more,
// stops the daemon and returns what the receiver got, with the number of verdicts seen and
// the first sequence of the new step.
func exportedEvaluations(t *testing.T, ratio float64) (spans []otlptest.Span, seen, stepFirst uint64) {
	t.Helper()
	noLeaks(t)
	clearOTelEnv(t)
	t.Setenv("OTEL_TRACES_SAMPLER", "")
	t.Setenv("OTEL_TRACES_SAMPLER_ARG", "")
	receiver := otlptest.StartHTTP(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	binary, err := promproc.Find()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("prometheus is required in CI: %v", err)
		}
		t.Skipf("prometheus not installed: %v", err)
	}
	prom, err := promproc.Start(ctx, promproc.Options{Binary: binary, Dir: t.TempDir(), ScrapeInterval: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = prom.Close() })
	info, _, stop := observedDaemon(t, ctx, func(c *config.Config) {
		c.Prometheus.URL = prom.URL()
		c.Tracing.Endpoint = receiver.URL
		c.Tracing.RepeatSampleRatio = ratio
	}, "v9.9.9-test")

	nc, err := nats.Connect(info.NATSURL)
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ref := rollout.Ref{Namespace: "prod", Name: "checkout"}
	publish := func(id string, typ rollout.EventType, data any) {
		body, err := rolloutclient.Event(id, typ, time.Now(), data)
		require.NoError(t, err)
		msg := nats.NewMsg(rollout.EventsSubject("rollouts", ref))
		msg.Data = body
		msg.Header.Set("Content-Type", "application/cloudevents+json")
		msg.Header.Set(nats.MsgIdHdr, id)
		_, err = js.PublishMsg(ctx, msg)
		require.NoError(t, err)
	}
	latest := func() rollout.Verdict {
		var v rollout.Verdict
		code, body := httpGet(t, "http://"+info.HTTPAddr+"/v1/rollouts/prod/checkout")
		if code != http.StatusOK || json.Unmarshal(body, &v) != nil {
			return rollout.Verdict{}
		}
		return v
	}
	publish("evt-1", rollout.EventStarted, rolloutclient.Started{
		Rollout: ref, Revision: "v2", Analysis: "http-golden-signals",
		Args: map[string]string{"service": "checkout"}, Canary: map[string]string{"version": "v2"},
		Stable: map[string]string{"version": "v1"}, Weight: 10,
	})
	require.Eventually(t, func() bool { return latest().Sequence >= 4 }, 30*time.Second, 10*time.Millisecond)
	publish("evt-2", rollout.EventStep, rolloutclient.Step{Rollout: ref, Revision: "v2", Step: 1, Weight: 20})
	var v rollout.Verdict
	require.Eventually(t, func() bool {
		v = latest()
		if v.Weight == 20 && stepFirst == 0 {
			stepFirst = v.Sequence // at most this: the first of the step may have been passed
		}
		return stepFirst > 0 && v.Sequence >= stepFirst+4
	}, 30*time.Second, 10*time.Millisecond)
	require.Equal(t, rollout.Pause, v.Verdict)
	cancel()
	stop()
	return receiver.Spans(), v.Sequence, stepFirst
}

// roots returns the evaluations' roots by sequence, and the publications' spans by
// sequence, checking that every exported span of an evaluation's trace ends before its root.
func evaluationTraces(t *testing.T, spans []otlptest.Span) (roots, publications map[uint64]otlptest.Span) {
	t.Helper()
	roots, publications = map[uint64]otlptest.Span{}, map[uint64]otlptest.Span{}
	byTrace := map[string]otlptest.Span{}
	for _, s := range spans {
		seq, _ := strconv.ParseUint(s.Attributes["analyzerd.verdict.sequence"], 10, 64)
		switch {
		case s.ParentSpanID == "" && s.Name == "evaluate":
			require.NotContains(t, roots, seq, "one trace per verdict")
			roots[seq] = s
			byTrace[s.TraceID] = s
		case s.ParentSpanID == "" && s.Name == "publish rollouts.verdicts.{namespace}.{name}":
			publications[seq] = s
		}
	}
	for _, s := range spans {
		root, ok := byTrace[s.TraceID]
		if !ok || s.SpanID == root.SpanID {
			continue
		}
		require.LessOrEqual(t, s.EndUnixNano, root.EndUnixNano, "%s ends before its root", s.Name)
		require.NotEqual(t, "publish rollouts.verdicts.{namespace}.{name}", s.Name, "the publication is not in the evaluation's trace")
	}
	return roots, publications
}

func sequences[V any](m map[uint64]V) []uint64 {
	var out []uint64
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// TestTraceSamplingKeepsFirstsAndChangesOnly runs the daemon with tracing.repeatSampleRatio 0
// through repeated pauses and a new step: exactly two evaluations are exported whole, the
// analysis's first and the step's first, each with its publication linked to it; every other
// verdict repeats the one before and leaves no span.
func TestTraceSamplingKeepsFirstsAndChangesOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon")
	}
	spans, seen, stepFirst := exportedEvaluations(t, 0)
	roots, publications := evaluationTraces(t, spans)
	require.GreaterOrEqual(t, seen, uint64(8))

	require.Len(t, roots, 2, "exported roots of sequences %v of %d verdicts", sequences(roots), seen)
	first, ok := roots[1]
	require.True(t, ok, "the first verdict's trace: %v", sequences(roots))
	require.Equal(t, "first", first.Attributes["analyzerd.sampling"])
	require.Equal(t, "evt-1", first.Attributes["analyzerd.event.id"])
	require.Equal(t, "v9.9.9-test", first.Resource["service.version"])
	var step otlptest.Span
	for seq, r := range roots {
		if seq != 1 {
			step = r
			require.LessOrEqual(t, seq, stepFirst, "the step's first verdict")
		}
	}
	require.Equal(t, "step", step.Attributes["analyzerd.sampling"])
	require.Equal(t, "evt-2", step.Attributes["analyzerd.event.id"])
	require.Equal(t, "20", step.Attributes["rollout.weight"])

	require.Equal(t, sequences(roots), sequences(publications), "a publication for each evaluation kept, none for the others")
	for seq, p := range publications {
		require.Equal(t, "SPAN_KIND_CLIENT", p.Kind)
		require.Equal(t, []string{roots[seq].TraceID}, p.Links, "linked to its evaluation's trace")
	}
	for _, s := range spans {
		require.NotContains(t, s.Name, "checkout", "no span name carries the rollout")
	}
}

// TestTraceSamplingAtRatioOneKeepsEverything: with tracing.repeatSampleRatio 1 every
// evaluation is exported, the repeats marked as such.
func TestTraceSamplingAtRatioOneKeepsEverything(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon")
	}
	spans, seen, _ := exportedEvaluations(t, 1)
	roots, publications := evaluationTraces(t, spans)
	got := sequences(roots)
	require.GreaterOrEqual(t, uint64(len(got)), seen, "every verdict seen, and any decided before the daemon stopped")
	for i, seq := range got {
		require.Equal(t, uint64(i+1), seq, "no sequence missing")
	}
	require.Equal(t, "repeat", roots[2].Attributes["analyzerd.sampling"])
	require.Equal(t, "repeat", roots[3].Attributes["analyzerd.sampling"])
	require.Subset(t, sequences(publications), got[:seen], "the publication of every verdict seen")
}
