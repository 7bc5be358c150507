package tracing

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/analyzerd/analyzerd/internal/otlptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clearEnv unsets every OTEL_ variable this package or the exporters read, for the test.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, name := range []string{
		envEndpoint, envTracesEndpoint, envProtocol, envTracesProtocol,
		"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
		"OTEL_EXPORTER_OTLP_INSECURE", "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
		"OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
		"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
	} {
		t.Setenv(name, "")
	}
}

// emit records one root span named name and shuts the provider down, which exports it.
func emit(t *testing.T, opts Options, name string) (trace.SpanContext, Export) {
	t.Helper()
	ctx := context.Background()
	tp, export, err := New(ctx, opts)
	require.NoError(t, err)
	_, span := tp.Tracer("test").Start(ctx, name)
	span.End()
	shutdownCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, tp.Shutdown(shutdownCtx))
	return span.SpanContext(), export
}

func TestExportsOverHTTPWithHeadersFromTheEnvironment(t *testing.T) {
	clearEnv(t)
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer s3cret")
	r := otlptest.StartHTTP(t)

	sc, export := emit(t, Options{Endpoint: r.URL, Protocol: ProtocolHTTP, SampleRatio: 1, ServiceVersion: "v1.2.3"}, "evaluate")
	require.Equal(t, Export{Enabled: true, Protocol: ProtocolHTTP, Endpoint: r.URL, Sampler: "tracing.sampleRatio"}, export)
	require.NotContains(t, export.Endpoint+export.Protocol, "s3cret")

	spans := r.Spans()
	require.Len(t, spans, 1)
	require.Equal(t, "evaluate", spans[0].Name)
	require.Equal(t, sc.TraceID().String(), spans[0].TraceID)
	require.Equal(t, ServiceName, spans[0].Resource["service.name"])
	require.Equal(t, "v1.2.3", spans[0].Resource["service.version"])
	require.Equal(t, []string{"/v1/traces"}, r.Headers("path"), "the traces path is added to an endpoint without one")
	require.Equal(t, []string{"Bearer s3cret"}, r.Headers("authorization"))
}

func TestExportsOverGRPC(t *testing.T) {
	clearEnv(t)
	r := otlptest.StartGRPC(t)
	sc, export := emit(t, Options{Endpoint: r.URL, Protocol: ProtocolGRPC, SampleRatio: 1}, "evaluate")
	require.True(t, export.Enabled)
	require.Equal(t, ProtocolGRPC, export.Protocol)

	spans := r.Spans()
	require.Len(t, spans, 1)
	require.Equal(t, "evaluate", spans[0].Name)
	require.Equal(t, sc.TraceID().String(), spans[0].TraceID)
	require.Equal(t, ServiceName, spans[0].Resource["service.name"])
}

func TestEndpointAndProtocolFromTheEnvironment(t *testing.T) {
	clearEnv(t)
	r := otlptest.StartGRPC(t)
	t.Setenv(envEndpoint, r.URL)
	t.Setenv(envTracesProtocol, "grpc")
	t.Setenv("OTEL_SERVICE_NAME", "analyzerd-eu")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=prod")

	_, export := emit(t, Options{SampleRatio: 1}, "evaluate")
	require.Equal(t, Export{Enabled: true, Protocol: ProtocolGRPC, Endpoint: "$" + envEndpoint, Sampler: "tracing.sampleRatio"}, export, "the variable is named, not its value")
	spans := r.Spans()
	require.Len(t, spans, 1)
	require.Equal(t, "analyzerd-eu", spans[0].Resource["service.name"], "OTEL_SERVICE_NAME wins")
	require.Equal(t, "prod", spans[0].Resource["deployment.environment.name"])
}

func TestTheFileWinsOverTheEnvironment(t *testing.T) {
	clearEnv(t)
	fromFile := otlptest.StartHTTP(t)
	fromEnv := otlptest.StartHTTP(t)
	t.Setenv(envTracesEndpoint, fromEnv.URL+"/v1/traces")
	t.Setenv(envProtocol, "grpc")

	_, export := emit(t, Options{Endpoint: fromFile.URL + "/custom/traces", Protocol: ProtocolHTTP, SampleRatio: 1}, "x")
	require.Equal(t, ProtocolHTTP, export.Protocol)
	require.Len(t, fromFile.Spans(), 1)
	require.Empty(t, fromEnv.Spans())
	require.Equal(t, []string{"/custom/traces"}, fromFile.Headers("path"), "a path in the URL is kept")
}

func TestOffWithoutAnEndpoint(t *testing.T) {
	clearEnv(t)
	sc, export := emit(t, Options{SampleRatio: 1}, "evaluate")
	require.Equal(t, Export{Protocol: ProtocolHTTP, Sampler: "tracing.sampleRatio"}, export)
	require.True(t, sc.TraceID().IsValid(), "verdicts still get a trace id")
	require.True(t, sc.IsSampled())
}

func TestSampleRatio(t *testing.T) {
	clearEnv(t)
	r := otlptest.StartHTTP(t)
	sc, _ := emit(t, Options{Endpoint: r.URL, SampleRatio: 0}, "evaluate")
	require.True(t, sc.TraceID().IsValid(), "an unsampled evaluation still has a trace id")
	require.False(t, sc.IsSampled())
	require.Empty(t, r.Spans())
}

func TestBadOptions(t *testing.T) {
	clearEnv(t)
	for _, opts := range []Options{
		{SampleRatio: 2},
		{SampleRatio: 1, Protocol: "http/json"},
		{SampleRatio: 1, Endpoint: "collector:4317"},
		{SampleRatio: 1, Endpoint: "https://user:s3cret@collector:4318"},
		{SampleRatio: 1, RepeatSampleRatio: -0.5},
		{SampleRatio: 1, RepeatSampleRatio: 1.5},
	} {
		_, _, err := New(context.Background(), opts)
		require.Error(t, err, "%+v", opts)
		require.NotContains(t, err.Error(), "s3cret")
	}
	t.Setenv(envProtocol, "carrier-pigeon")
	_, _, err := New(context.Background(), Options{SampleRatio: 1})
	require.ErrorContains(t, err, "carrier-pigeon")
}

func TestErrorHandlerLogsWhenTheErrorChanges(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	now := time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)
	h := ErrorHandler(zap.New(core), time.Minute, func() time.Time { return now })

	refused := errors.New("traces export: connection refused")
	h.Handle(refused)
	h.Handle(refused)
	h.Handle(refused)
	require.Equal(t, 1, logs.Len(), "a repeated error is logged once")
	h.Handle(errors.New("traces export: 401 Unauthorized"))
	require.Equal(t, 2, logs.Len(), "a new error is logged at once")
	now = now.Add(time.Minute)
	h.Handle(errors.New("traces export: 401 Unauthorized"))
	require.Equal(t, 3, logs.Len(), "a lasting error is logged again after the interval")
	require.Equal(t, int64(0), logs.All()[2].ContextMap()["repeatsSinceLastLogged"])
	for _, e := range logs.All() {
		require.False(t, strings.Contains(e.Message, "s3cret"))
	}
}

// TestAnUnreachableCollectorHoldsNothingUp: building the provider does not connect, and a
// shutdown gives up on the spans it cannot export when its context ends.
func TestAnUnreachableCollectorHoldsNothingUp(t *testing.T) {
	clearEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	endpoint := "http://" + ln.Addr().String()
	require.NoError(t, ln.Close())
	for _, protocol := range []string{ProtocolGRPC, ProtocolHTTP} {
		tp, export, err := New(context.Background(), Options{Endpoint: endpoint, Protocol: protocol, SampleRatio: 1})
		require.NoError(t, err, protocol)
		require.True(t, export.Enabled)
		_, span := tp.Tracer("test").Start(context.Background(), "evaluate")
		span.End()
		// It returns (with or without an error, the span lost) once its context ends.
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_ = tp.Shutdown(ctx)
		cancel()
	}
}

// TestShutdownAbandonsAHangingExport: a collector that accepts the request and never answers
// holds the shutdown only until its context ends; the export is then cancelled, and nothing
// is left running (goleak, in TestMain).
func TestShutdownAbandonsAHangingExport(t *testing.T) {
	clearEnv(t)
	arrived := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case arrived <- struct{}{}:
		default:
		}
		<-r.Context().Done() // until the client gives up
	}))
	defer srv.Close()

	tp, _, err := New(context.Background(), Options{Endpoint: srv.URL, Protocol: ProtocolHTTP, SampleRatio: 1})
	require.NoError(t, err)
	_, span := tp.Tracer("test").Start(context.Background(), "evaluate")
	span.End()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tp.Shutdown(ctx) }()
	<-arrived // the export is in flight, and hangs
	cancel()
	select {
	case err := <-done:
		require.ErrorContains(t, err, "spans left unexported")
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return once its context ended")
	}
}
