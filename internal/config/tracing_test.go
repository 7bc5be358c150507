package config

import (
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTracingDefaultsExportNothingAndSampleEverything(t *testing.T) {
	require.Equal(t, Tracing{SampleRatio: 1, RepeatSampleRatio: 0.1}, Default().Tracing)
}

func TestTracingFromYAML(t *testing.T) {
	cfg, err := Decode(strings.NewReader(`
tracing:
  endpoint: https://otel-collector.monitoring:4317
  protocol: grpc
  sampleRatio: 0.25
  repeatSampleRatio: 0
templates:
  - name: t
    checks:
      - name: up
        kind: value
        query: up
        guards:
          - min: 1
`))
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())
	require.Equal(t, Tracing{Endpoint: "https://otel-collector.monitoring:4317", Protocol: "grpc", SampleRatio: 0.25, RepeatSampleRatio: 0}, cfg.Tracing,
		"an explicit 0 is kept, not taken for unset")

	cfg, err = Decode(strings.NewReader("tracing:\n  sampleRatio: 0.5\n"))
	require.NoError(t, err)
	require.Equal(t, 0.1, cfg.Tracing.RepeatSampleRatio, "unset: the default")

	_, err = Decode(strings.NewReader("tracing:\n  headers: {authorization: secret}\n"))
	require.ErrorContains(t, err, `unknown key "headers" in tracing`, "headers come from OTEL_EXPORTER_OTLP_HEADERS only")
}

func TestTracingRules(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Tracing)
		field  string
	}{
		{"endpoint without a scheme", func(tr *Tracing) { tr.Endpoint = "otel-collector:4317" }, "tracing.endpoint"},
		{"endpoint of another scheme", func(tr *Tracing) { tr.Endpoint = "grpc://otel-collector:4317" }, "tracing.endpoint"},
		{"endpoint with credentials", func(tr *Tracing) { tr.Endpoint = "https://user:secret@otel-collector:4318" }, "tracing.endpoint"},
		{"unknown protocol", func(tr *Tracing) { tr.Protocol = "http/json" }, "tracing.protocol"},
		{"negative sample ratio", func(tr *Tracing) { tr.SampleRatio = -0.1 }, "tracing.sampleRatio"},
		{"sample ratio above 1", func(tr *Tracing) { tr.SampleRatio = 1.5 }, "tracing.sampleRatio"},
		{"sample ratio NaN", func(tr *Tracing) { tr.SampleRatio = math.NaN() }, "tracing.sampleRatio"},
		{"negative repeat sample ratio", func(tr *Tracing) { tr.RepeatSampleRatio = -0.1 }, "tracing.repeatSampleRatio"},
		{"repeat sample ratio above 1", func(tr *Tracing) { tr.RepeatSampleRatio = 1.5 }, "tracing.repeatSampleRatio"},
		{"repeat sample ratio NaN", func(tr *Tracing) { tr.RepeatSampleRatio = math.NaN() }, "tracing.repeatSampleRatio"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(&c.Tracing)
			errs := Errors(c.Validate())
			require.Len(t, errs, 1)
			require.True(t, strings.HasPrefix(errs[0].Error(), tc.field+": "), errs[0].Error())
			require.NotContains(t, errs[0].Error(), "secret", "no credentials in errors")
		})
	}
	for _, ok := range []Tracing{
		{Endpoint: "http://localhost:4318", Protocol: "http/protobuf", SampleRatio: 0},
		{Endpoint: "https://collector:4318/custom/traces", SampleRatio: 1},
		{Protocol: "grpc", SampleRatio: 0.5},
	} {
		c := validConfig()
		c.Tracing = ok
		require.NoError(t, c.Validate(), "%+v", ok)
	}
}
