// Package tracing builds the OpenTelemetry TracerProvider of the daemon: the evaluations'
// spans, exported with OTLP over gRPC or HTTP when an endpoint is configured (in the file or
// in the standard OTEL_EXPORTER_OTLP_* variables), and kept in process otherwise, so that
// verdicts still carry trace ids.
//
// Sampling is decided twice: when a trace starts, by OTEL_TRACES_SAMPLER (and
// OTEL_TRACES_SAMPLER_ARG) when set, else by Options.SampleRatio (sampler.go); and when an
// evaluation's root span ends, by the repeat filter in front of the exporter, which thins the
// traces of evaluations that repeat the verdict before them to Options.RepeatSampleRatio and
// keeps every other (repeat.go).
//
// Headers, which may hold credentials, only ever come from OTEL_EXPORTER_OTLP_HEADERS or
// OTEL_EXPORTER_OTLP_TRACES_HEADERS, read by the exporter itself: this package neither reads
// nor logs them.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.uber.org/zap"
)

// The protocols of Options.Protocol.
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http/protobuf"
	// protocolHTTPJSON is accepted from the environment only; the HTTP exporter reads it.
	protocolHTTPJSON = "http/json"
)

// ServiceName is the service.name of the daemon's resource unless OTEL_SERVICE_NAME (or
// service.name in OTEL_RESOURCE_ATTRIBUTES) says otherwise.
const ServiceName = "analyzerd"

// The environment variables this package reads itself (the exporters read the rest).
const (
	envEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	envProtocol       = "OTEL_EXPORTER_OTLP_PROTOCOL"
	envTracesProtocol = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
)

// Options configure the provider; config.Tracing carries them from the file.
type Options struct {
	// Endpoint is the OTLP receiver's URL (http:// plaintext, https:// TLS). For
	// http/protobuf a URL without a path gets /v1/traces. Empty: the OTEL_* variables.
	Endpoint string
	// Protocol is grpc or http/protobuf. Empty: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or
	// OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf.
	Protocol string
	// SampleRatio is the share of traces sampled when they start, in [0, 1]
	// (parentbased_traceidratio). OTEL_TRACES_SAMPLER, when set, takes its place.
	SampleRatio float64
	// RepeatSampleRatio is the share of the traces of repeated evaluations (SampleRepeat)
	// exported, in [0, 1], among those the head sampler kept; the other evaluations' traces
	// are all exported. config.Tracing's default is 0.1.
	RepeatSampleRatio float64
	// ServiceVersion is the resource's service.version, when known.
	ServiceVersion string
}

// Export describes where spans go, for the daemon's startup log line: never headers.
type Export struct {
	// Enabled is false when no endpoint is configured: spans stay in process.
	Enabled bool
	// Protocol is grpc or http/protobuf (or http/json from the environment).
	Protocol string
	// Endpoint is the configured URL without its query, or the variable it came from.
	Endpoint string
	// Sampler says where the head sampler came from: tracing.sampleRatio or
	// OTEL_TRACES_SAMPLER=<value>.
	Sampler string
}

// Provider is the daemon's TracerProvider. Its Shutdown exports the spans not yet exported
// and stops the exporter, bounded by its context.
type Provider struct {
	*sdktrace.TracerProvider
	exp *abortableExporter // nil when nothing is exported
}

// abortWait bounds how long Shutdown waits, once its context has ended, for the exports it
// abandoned to return and the exporter to close its connection.
const abortWait = time.Second

// Shutdown exports what is left and stops the exporter. When ctx ends first, the exports in
// flight are abandoned (their spans are lost) and the exporter stops at once, rather than
// retrying on its own timeouts after the daemon has stopped.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p.exp == nil {
		return p.TracerProvider.Shutdown(ctx)
	}
	done := make(chan error, 1)
	// Not ctx itself: the SDK skips shutting its processors down when ctx has already ended,
	// which would leave them running. Ending ctx aborts the exports instead.
	go func() { done <- p.TracerProvider.Shutdown(context.WithoutCancel(ctx)) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	p.exp.abort()
	timer := time.NewTimer(abortWait)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
	}
	return fmt.Errorf("tracing: spans left unexported: %w", ctx.Err())
}

// abortableExporter passes spans to the OTLP exporter until abort is called; then every
// export in flight is cancelled and every later one fails at once.
type abortableExporter struct {
	sdktrace.SpanExporter
	aborted context.Context
	abort   context.CancelFunc
}

func newAbortable(e sdktrace.SpanExporter) *abortableExporter {
	ctx, cancel := context.WithCancel(context.Background())
	return &abortableExporter{SpanExporter: e, aborted: ctx, abort: cancel}
}

var errAborted = errors.New("tracing: export abandoned at shutdown")

func (e *abortableExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if e.aborted.Err() != nil {
		return errAborted
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(e.aborted, cancel)()
	return e.SpanExporter.ExportSpans(ctx, spans)
}

func (e *abortableExporter) Shutdown(ctx context.Context) error {
	if e.aborted.Err() != nil {
		// Nothing is left to wait for: close the connection now.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		cancel()
	}
	return e.SpanExporter.Shutdown(ctx)
}

// New builds the provider. With no endpoint in opts nor in the environment it exports
// nothing but still gives every span a trace id. The caller shuts it down (Shutdown flushes
// the spans not yet exported).
func New(ctx context.Context, opts Options) (*Provider, Export, error) {
	return newProvider(ctx, opts, os.Getenv)
}

func newProvider(ctx context.Context, opts Options, getenv func(string) string) (*Provider, Export, error) {
	if !(opts.SampleRatio >= 0 && opts.SampleRatio <= 1) {
		return nil, Export{}, fmt.Errorf("tracing: sample ratio must be within 0..1, got %v", opts.SampleRatio)
	}
	if !(opts.RepeatSampleRatio >= 0 && opts.RepeatSampleRatio <= 1) {
		return nil, Export{}, fmt.Errorf("tracing: repeat sample ratio must be within 0..1, got %v", opts.RepeatSampleRatio)
	}
	sampling, err := headSampler(opts.SampleRatio, getenv)
	if err != nil {
		return nil, Export{}, err
	}
	export, err := resolve(opts)
	if err != nil {
		return nil, Export{}, err
	}
	export.Sampler = sampling.From

	attrs := []resource.Option{
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithTelemetrySDK(),
		resource.WithAttributes(semconv.ServiceName(ServiceName)),
	}
	if opts.ServiceVersion != "" {
		attrs = append(attrs, resource.WithAttributes(semconv.ServiceVersion(opts.ServiceVersion)))
	}
	// Last, so that OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win.
	attrs = append(attrs, resource.WithFromEnv())
	res, err := resource.New(ctx, attrs...)
	if err != nil {
		return nil, Export{}, fmt.Errorf("tracing: resource: %w", err)
	}
	if !export.Enabled {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(followCreation{sampling.Sampler}), sdktrace.WithResource(res))
		return &Provider{TracerProvider: tp}, export, nil
	}

	exporter, err := newExporter(ctx, opts, export.Protocol)
	if err != nil {
		return nil, Export{}, err
	}
	exp := newAbortable(exporter)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(followCreation{sampling.Sampler}),
		sdktrace.WithResource(res),
		sdktrace.WithSpanProcessor(newRepeatFilter(sdktrace.NewBatchSpanProcessor(exp), opts.RepeatSampleRatio)),
	)
	return &Provider{TracerProvider: tp, exp: exp}, export, nil
}

// resolve decides whether spans are exported, how and where.
func resolve(opts Options) (Export, error) {
	e := Export{Protocol: opts.Protocol, Endpoint: opts.Endpoint}
	if e.Protocol == "" {
		e.Protocol = firstEnv(envTracesProtocol, envProtocol)
	}
	if e.Protocol == "" {
		e.Protocol = ProtocolHTTP
	}
	switch e.Protocol {
	case ProtocolGRPC, ProtocolHTTP:
	case protocolHTTPJSON:
		if opts.Protocol != "" {
			return Export{}, fmt.Errorf("tracing: protocol must be %s or %s, got %q", ProtocolGRPC, ProtocolHTTP, opts.Protocol)
		}
	default:
		return Export{}, fmt.Errorf("tracing: protocol %q (from the environment) is not %s, %s or %s",
			e.Protocol, ProtocolGRPC, ProtocolHTTP, protocolHTTPJSON)
	}
	if opts.Endpoint != "" {
		u, err := url.Parse(opts.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return Export{}, errors.New("tracing: endpoint must be an http(s) URL such as http://otel-collector:4318")
		}
		if u.User != nil {
			return Export{}, errors.New("tracing: credentials in the endpoint URL are not allowed; set OTEL_EXPORTER_OTLP_HEADERS")
		}
		u.RawQuery, u.Fragment = "", ""
		e.Endpoint = u.String()
		e.Enabled = true
		return e, nil
	}
	for _, name := range []string{envTracesEndpoint, envEndpoint} {
		if os.Getenv(name) != "" {
			e.Enabled, e.Endpoint = true, "$"+name
			return e, nil
		}
	}
	return Export{Protocol: e.Protocol}, nil
}

// newExporter builds the OTLP exporter. Options given here override the environment; what
// they leave out (headers, certificates, compression, timeout) the exporter reads from it.
func newExporter(ctx context.Context, opts Options, protocol string) (*otlptrace.Exporter, error) {
	var (
		exp *otlptrace.Exporter
		err error
	)
	if protocol == ProtocolGRPC {
		var o []otlptracegrpc.Option
		if opts.Endpoint != "" {
			o = append(o, otlptracegrpc.WithEndpointURL(opts.Endpoint))
		}
		exp, err = otlptracegrpc.New(ctx, o...)
	} else {
		var o []otlptracehttp.Option
		if opts.Endpoint != "" {
			o = append(o, otlptracehttp.WithEndpointURL(httpTracesURL(opts.Endpoint)))
		}
		if opts.Protocol == ProtocolHTTP {
			o = append(o, otlptracehttp.WithEncoding(otlptracehttp.EncodingProtobuf))
		}
		exp, err = otlptracehttp.New(ctx, o...)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: %s exporter: %w", protocol, err)
	}
	return exp, nil
}

// httpTracesURL adds the traces path to a URL that has none, as OTEL_EXPORTER_OTLP_ENDPOINT
// does; a URL with a path is used as it is.
func httpTracesURL(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil || strings.Trim(u.Path, "/") != "" {
		return endpoint
	}
	u.Path = "/v1/traces"
	return u.String()
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := strings.TrimSpace(os.Getenv(n)); v != "" {
			return v
		}
	}
	return ""
}

// ErrorHandler logs the errors OpenTelemetry reports (a failed export, a dropped batch) with
// log, once per distinct message and then at most once every interval while it repeats, so
// that an unreachable collector does not flood the log. main installs it with
// otel.SetErrorHandler.
func ErrorHandler(log *zap.Logger, interval time.Duration, now func() time.Time) otel.ErrorHandler {
	if now == nil {
		now = time.Now
	}
	h := &errorHandler{log: log, interval: interval, now: now}
	return otel.ErrorHandlerFunc(h.handle)
}

type errorHandler struct {
	log      *zap.Logger
	interval time.Duration
	now      func() time.Time

	mu         sync.Mutex
	last       string
	lastLogged time.Time
	suppressed int
}

func (h *errorHandler) handle(err error) {
	if err == nil {
		return
	}
	msg := err.Error()
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.now()
	if msg == h.last && t.Sub(h.lastLogged) < h.interval {
		h.suppressed++
		return
	}
	h.log.Warn("opentelemetry error (exporting spans)", zap.Error(err), zap.Int("repeatsSinceLastLogged", h.suppressed))
	h.last, h.lastLogged, h.suppressed = msg, t, 0
}
