package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/analyzerd/analyzerd/internal/config"
	"github.com/analyzerd/analyzerd/internal/otlptest"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/rolloutclient"
)

// noLeaks fails the test when, once it and its cleanups are done, goroutines it started are
// still running.
func noLeaks(t *testing.T) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		http.DefaultClient.CloseIdleConnections()
		goleak.VerifyNone(t, before)
	})
}

// clearOTelEnv unsets, for the test, the OTEL_ variables that would change what it exports.
func clearOTelEnv(t *testing.T) {
	t.Helper()
	for _, name := range []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
		"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
		"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
	} {
		t.Setenv(name, "")
	}
}

// observedDaemon runs the daemon with the shipped configuration, Prometheus unreachable, and
// a logger that both prints to the test and records every entry.
func observedDaemon(t *testing.T, ctx context.Context, mutate func(*config.Config), version string) (Info, *observer.ObservedLogs, func()) {
	t.Helper()
	cfg, err := config.Load("../../configs/analyzerd.yaml")
	require.NoError(t, err)
	cfg.NATS.Embedded.Port = -1
	cfg.NATS.Embedded.StoreDir = t.TempDir()
	cfg.Prometheus.URL = unreachable(t)
	cfg.Prometheus.Timeout = 2 * time.Second
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Templates[0].Interval = 100 * time.Millisecond
	mutate(&cfg)
	require.NoError(t, cfg.Validate())

	core, logs := observer.New(zap.DebugLevel)
	logger := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
	ready := make(chan Info, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, Options{Logger: logger, Version: version, Resolution: 20 * time.Millisecond, OnReady: func(i Info) { ready <- i }})
	}()
	select {
	case info := <-ready:
		return info, logs, func() {
			t.Helper()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(cfg.ShutdownTimeout + 5*time.Second):
				t.Fatal("daemon did not stop within its shutdown timeout")
			}
		}
	case err := <-done:
		t.Fatalf("daemon stopped before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("daemon not ready within 30s")
	}
	return Info{}, nil, nil
}

func httpGet(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, body
}

// TestDaemonIsObservable runs the daemon with an OTLP/HTTP receiver as its tracing endpoint
// and checks, from the outside, everything issue #5 asks of it: the spans of its evaluations
// reach the receiver (linked to the producer's span, with the headers of the environment and
// without them in any log), /metrics exports the listed metrics with bounded labels, /readyz
// names each condition, Flagger's gate answers from the verdict, and one log line tells a
// verdict change.
func TestDaemonIsObservable(t *testing.T) {
	noLeaks(t)
	clearOTelEnv(t)
	const secret = "s3cret-token"
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer "+secret)
	receiver := otlptest.StartHTTP(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	info, logs, stop := observedDaemon(t, ctx, func(c *config.Config) {
		c.Tracing.Endpoint = receiver.URL
		c.Tracing.Protocol = "http/protobuf"
	}, "v9.9.9-test")
	base := "http://" + info.HTTPAddr

	// A controller starts a rollout, with the trace context of its own span.
	nc, err := nats.Connect(info.NATSURL)
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ref := rollout.Ref{Namespace: "prod", Name: "checkout"}
	body, err := rolloutclient.Event("evt-1", rollout.EventStarted, time.Now(), rolloutclient.Started{
		Rollout: ref, Revision: "v2", Analysis: "http-golden-signals",
		Args: map[string]string{"service": "checkout"}, Canary: map[string]string{"version": "v2"},
		Stable: map[string]string{"version": "v1"}, Weight: 10,
	})
	require.NoError(t, err)
	const producerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	msg := nats.NewMsg(rollout.EventsSubject("rollouts", ref))
	msg.Data = body
	msg.Header.Set("Content-Type", "application/cloudevents+json")
	msg.Header.Set(nats.MsgIdHdr, "evt-1")
	msg.Header.Set("traceparent", "00-"+producerTrace+"-00f067aa0ba902b7-01")
	_, err = js.PublishMsg(ctx, msg)
	require.NoError(t, err)

	// Wait for a few verdicts (pause: Prometheus is unreachable).
	var v rollout.Verdict
	require.Eventually(t, func() bool {
		code, body := httpGet(t, base+"/v1/rollouts/prod/checkout")
		return code == http.StatusOK && json.Unmarshal(body, &v) == nil && v.Sequence >= 3
	}, 30*time.Second, 20*time.Millisecond)
	require.Equal(t, rollout.Pause, v.Verdict)

	t.Run("metrics", func(t *testing.T) { checkMetrics(t, base) })

	t.Run("readiness names each condition", func(t *testing.T) {
		code, body := httpGet(t, base+"/readyz")
		require.Equal(t, http.StatusServiceUnavailable, code)
		var r struct {
			Status   string
			Checks   map[string]string
			Problems map[string]string
		}
		require.NoError(t, json.Unmarshal(body, &r), string(body))
		require.Equal(t, "not ready", r.Status)
		require.Equal(t, "ok", r.Checks["nats"])
		require.Equal(t, "ok", r.Checks["streams"])
		require.Contains(t, r.Checks["prometheus"], "metrics source unavailable")
		require.Equal(t, []string{"prometheus"}, keys(r.Problems))
		code, body = httpGet(t, base+"/healthz")
		require.Equal(t, http.StatusOK, code)
		require.JSONEq(t, `{"status":"ok"}`, string(body))
	})

	t.Run("flagger gate stays closed while the verdict is pause", func(t *testing.T) {
		resp, err := http.Post(base+"/v1/flagger/gate", "application/json",
			bytes.NewReader([]byte(`{"name":"checkout","namespace":"prod","phase":"Progressing","checksum":"85d557f47b"}`)))
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusTooEarly, resp.StatusCode)
	})

	cancel()
	stop()

	// The spans of the evaluations were exported at the latest when the daemon stopped: the
	// first verdict's trace among them (later pauses repeat it: tracing.repeatSampleRatio
	// keeps a tenth of those).
	spans := receiver.Spans()
	var root otlptest.Span
	for _, s := range spans {
		if s.ParentSpanID == "" && s.Name == "evaluate" && s.Attributes["analyzerd.verdict.sequence"] == "1" {
			root = s
		}
	}
	require.Equal(t, "evaluate", root.Name, "the first verdict's trace, among %d spans; its root's name is the same for every rollout", len(spans))
	require.Equal(t, "prod", root.Attributes["rollout.namespace"])
	require.Equal(t, "checkout", root.Attributes["rollout.name"])
	require.Equal(t, "evt-1", root.Attributes["analyzerd.event.id"])
	require.Equal(t, "first", root.Attributes["analyzerd.sampling"])
	require.Contains(t, root.Links, producerTrace, "linked to the producer's span")
	require.Equal(t, "analyzerd", root.Resource["service.name"])
	require.Equal(t, "v9.9.9-test", root.Resource["service.version"])
	require.NotEmpty(t, receiver.Headers("authorization"))
	require.Equal(t, "Bearer "+secret, receiver.Headers("authorization")[0], "headers come from OTEL_EXPORTER_OTLP_HEADERS")

	// Logs: where spans go, one line per verdict change with what an SRE needs, no secret.
	exporting := logs.FilterMessage("exporting spans").All()
	require.Len(t, exporting, 1)
	require.Equal(t, receiver.URL, exporting[0].ContextMap()["endpoint"])
	changes := logs.FilterMessage("verdict").FilterField(zap.String("rollout", "prod/checkout")).All()
	require.Len(t, changes, 1, "one info line per verdict change, none per evaluation")
	require.Equal(t, zapcore.InfoLevel, changes[0].Level)
	fields := changes[0].ContextMap()
	for _, k := range []string{"rollout", "revision", "verdict", "reason", "traceId"} {
		require.Contains(t, fields, k)
	}
	require.Equal(t, "v2", fields["revision"])
	require.Equal(t, "pause", fields["verdict"])
	for _, e := range logs.All() {
		require.NotContains(t, fmt.Sprint(e.Message, e.ContextMap()), secret, "a secret reached the log: %q", e.Message)
	}
	for _, s := range spans {
		require.NotContains(t, fmt.Sprint(s.Attributes, s.Resource), secret)
	}
}

// checkMetrics scrapes /metrics and checks every metric issue #5 lists, its type and its
// labels, and that no label value names a rollout.
func checkMetrics(t *testing.T, base string) {
	t.Helper()
	code, body := httpGet(t, base+"/metrics")
	require.Equal(t, http.StatusOK, code)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	require.NoError(t, err)

	for name, want := range map[string]struct {
		typ    dto.MetricType
		labels []string
	}{
		"analyzerd_events_received_total":       {dto.MetricType_COUNTER, []string{"outcome", "type"}},
		"analyzerd_dead_letters_total":          {dto.MetricType_COUNTER, []string{"reason"}},
		"analyzerd_evaluations_total":           {dto.MetricType_COUNTER, nil},
		"analyzerd_verdicts_total":              {dto.MetricType_COUNTER, []string{"verdict"}},
		"analyzerd_query_duration_seconds":      {dto.MetricType_HISTOGRAM, []string{"outcome"}},
		"analyzerd_query_errors_total":          {dto.MetricType_COUNTER, []string{"reason"}},
		"analyzerd_live_rollouts":               {dto.MetricType_GAUGE, nil},
		"analyzerd_consumer_pending_events":     {dto.MetricType_GAUGE, nil},
		"analyzerd_consumer_ack_pending_events": {dto.MetricType_GAUGE, nil},
		"analyzerd_first_verdict_seconds":       {dto.MetricType_HISTOGRAM, nil},
		"analyzerd_verdicts_published_total":    {dto.MetricType_COUNTER, []string{"verdict"}},
		"go_goroutines":                         {dto.MetricType_GAUGE, nil},
		"process_cpu_seconds_total":             {dto.MetricType_COUNTER, nil},
	} {
		f, ok := families[name]
		require.True(t, ok, "no metric %s on /metrics", name)
		require.Equal(t, want.typ, f.GetType(), name)
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName())
			}
			slices.Sort(labels)
			require.Equal(t, want.labels, labels, name)
		}
	}
	require.Equal(t, float64(1), families["analyzerd_live_rollouts"].GetMetric()[0].GetGauge().GetValue())

	// Bounded labels: no rollout, revision or namespace anywhere.
	for name, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				for _, v := range []string{"checkout", "prod", "v2", "prod/checkout"} {
					require.NotEqual(t, v, l.GetValue(), "%s{%s} carries a rollout's name", name, l.GetName())
				}
			}
		}
	}
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestDaemonWithoutTracingEndpointExportsNothing: no endpoint in the file nor in the
// environment, and the daemon says it does not export.
func TestDaemonWithoutTracingEndpointExportsNothing(t *testing.T) {
	noLeaks(t)
	clearOTelEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, logs, stop := observedDaemon(t, ctx, func(*config.Config) {}, "")
	cancel()
	stop()
	require.Empty(t, logs.FilterMessage("exporting spans").All())
	require.Len(t, logs.FilterMessageSnippet("not exporting spans").All(), 1)
	require.True(t, strings.HasPrefix(logs.FilterMessageSnippet("not exporting spans").All()[0].Message, "not exporting spans"))
}
