package telemetry

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

func TestHeaderCarrierRoundTrip(t *testing.T) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:  trace.SpanID{0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}, TraceFlags: trace.FlagsSampled,
	})
	h := nats.Header{"Traceparent": {"stale"}}
	propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), sc), HeaderCarrier(h))
	require.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", h.Get("traceparent"), "written in lower case")
	require.Empty(t, h.Values("Traceparent"), "other spellings are replaced")

	for _, key := range []string{"traceparent", "Traceparent", "TRACEPARENT"} {
		in := nats.Header{key: {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
		got := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), HeaderCarrier(in)))
		if key == "TRACEPARENT" {
			require.False(t, got.IsValid(), "only the spellings W3C and Go write are looked up")
			continue
		}
		require.Equal(t, sc.TraceID(), got.TraceID(), key)
		require.Equal(t, sc.SpanID(), got.SpanID(), key)
	}
}
