package tracing

import (
	"fmt"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// The standard sampler variables. The SDK reads them only when no sampler is given to
// NewTracerProvider, and falls back silently on a bad value; the daemon always gives one, so
// it reads them here and refuses a bad value.
const (
	envSampler    = "OTEL_TRACES_SAMPLER"
	envSamplerArg = "OTEL_TRACES_SAMPLER_ARG"
)

// Sampling says which sampler decides at a trace's start and where it came from, for the
// startup log line.
type Sampling struct {
	// Sampler is the head sampler: it decides when a span starts.
	Sampler sdktrace.Sampler
	// From is "tracing.sampleRatio" or the value of OTEL_TRACES_SAMPLER (with its argument).
	From string
}

// headSampler is the sampler of OTEL_TRACES_SAMPLER (and OTEL_TRACES_SAMPLER_ARG) when it is
// set, which takes precedence over ratio (tracing.sampleRatio); otherwise
// parentbased_traceidratio with ratio. getenv is os.Getenv outside tests.
func headSampler(ratio float64, getenv func(string) string) (Sampling, error) {
	name := strings.ToLower(strings.TrimSpace(getenv(envSampler)))
	if name == "" {
		return Sampling{Sampler: sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio)), From: "tracing.sampleRatio"}, nil
	}
	arg := strings.TrimSpace(getenv(envSamplerArg))
	from := name
	ratioArg := func() (float64, error) {
		if arg == "" {
			return 1, nil // the specification's default
		}
		from += " " + arg
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || !(r >= 0 && r <= 1) {
			return 0, fmt.Errorf("tracing: %s=%q must be a ratio within 0..1", envSamplerArg, arg)
		}
		return r, nil
	}
	var s sdktrace.Sampler
	switch name {
	case "always_on":
		s = sdktrace.AlwaysSample()
	case "always_off":
		s = sdktrace.NeverSample()
	case "traceidratio":
		r, err := ratioArg()
		if err != nil {
			return Sampling{}, err
		}
		s = sdktrace.TraceIDRatioBased(r)
	case "parentbased_always_on":
		s = sdktrace.ParentBased(sdktrace.AlwaysSample())
	case "parentbased_always_off":
		s = sdktrace.ParentBased(sdktrace.NeverSample())
	case "parentbased_traceidratio":
		r, err := ratioArg()
		if err != nil {
			return Sampling{}, err
		}
		s = sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r))
	default:
		return Sampling{}, fmt.Errorf("tracing: %s=%q is not supported: use always_on, always_off, traceidratio, "+
			"parentbased_always_on, parentbased_always_off or parentbased_traceidratio", envSampler, name)
	}
	return Sampling{Sampler: s, From: envSampler + "=" + from}, nil
}

// followCreation is the head sampler of the daemon: base, except for the root span of a
// message's sending (messaging.operation.type=send) that links to the message's creation
// context, which is sampled when that context was. The publication of a verdict is such a
// span (publish.Publisher): it follows the evaluation whose verdict it sends, rather than
// being sampled again on its own trace id.
type followCreation struct{ base sdktrace.Sampler }

func (s followCreation) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if trace.SpanContextFromContext(p.ParentContext).IsValid() || len(p.Links) == 0 || !sending(p.Attributes) {
		return s.base.ShouldSample(p)
	}
	decision := sdktrace.Drop
	for _, l := range p.Links {
		if l.SpanContext.IsSampled() {
			decision = sdktrace.RecordAndSample
		}
	}
	return sdktrace.SamplingResult{Decision: decision}
}

func (s followCreation) Description() string {
	return "FollowCreation{" + s.base.Description() + "}"
}

func sending(attrs []attribute.KeyValue) bool {
	for _, a := range attrs {
		if a.Key == semconv.MessagingOperationTypeKey {
			return a.Value.AsString() == "send"
		}
	}
	return false
}
