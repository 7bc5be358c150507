package publish

import (
	"bytes"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func ptr(f float64) *float64 { return &f }

// rollbackVerdict is the verdict of CONTRACT.md section 4, with a check whose numbers could
// not all be computed.
func rollbackVerdict() rollout.Verdict {
	return rollout.Verdict{
		Rollout:  rollout.Ref{Namespace: "prod", Name: "checkout"},
		Revision: "v2.3.0",
		Step:     1,
		Weight:   10,
		Verdict:  rollout.Rollback,
		Reason:   "error-rate: canary 5.2% vs stable 0.4% (e-value 412 >= 100)",
		Sequence: 7,
		Checks: []rollout.CheckResult{
			{
				Metric: "error-rate", Outcome: rollout.Fail,
				Canary: ptr(0.052), Stable: ptr(0.004), Baseline: ptr(0.003),
				Delta: ptr(0.048), RelativeDelta: ptr(12.0),
				BaselineDelta: ptr(0.049), BaselineRelativeDelta: ptr(16.0),
				Threshold: "canary - stable < 0.01",
				Samples:   rollout.Samples{Canary: 1830, Stable: 16470},
				EValue:    ptr(412), EValueThreshold: ptr(100),
				Limits: []rollout.Limit{{Guard: "canary - stable < 0.01", Max: ptr(0.014)}},
			},
			{
				Metric: "latency-p95", Outcome: rollout.NoData,
				Canary: nil, Stable: ptr(0.21), Baseline: nil,
				Delta: nil, RelativeDelta: ptr(math.Inf(1)), // not finite: null, like the rest
				Threshold: "canary / stable < 1.1",
				Samples:   rollout.Samples{Canary: 0, Stable: 16470},
				Message:   "no canary series for http_request_duration_seconds_bucket",
				// Not finite: left out, like every optional number.
				Limits: []rollout.Limit{{Guard: "canary / stable < 1.1", Max: ptr(math.Inf(1))}},
			},
		},
		// Nanoseconds and a zone: the wire has UTC and milliseconds.
		DecidedAt: time.Date(2026, 11, 25, 15, 3, 10, 120_456_789, time.FixedZone("CET", 3600)),
		Cause:     "ev-1",
		TraceID:   "4bf92f3577b34da6a3ce929d0e0e4736",
	}
}

func TestEncodeGolden(t *testing.T) {
	got, err := Encode(rollbackVerdict(), "analyzerd")
	require.NoError(t, err)

	path := filepath.Join("testdata", "verdict.golden.json")
	if *update {
		var pretty bytes.Buffer
		require.NoError(t, json.Indent(&pretty, got, "", "  "))
		pretty.WriteByte('\n')
		require.NoError(t, os.WriteFile(path, pretty.Bytes(), 0o644))
	}
	golden, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create it")
	// The golden file is indented for people; the wire is the same JSON, compact, byte for
	// byte.
	var want bytes.Buffer
	require.NoError(t, json.Compact(&want, golden))
	require.Equal(t, want.String(), string(got))
}

func TestMarshalLeavesTheVerdictAlone(t *testing.T) {
	v := rollbackVerdict()
	_, err := MarshalVerdict(v)
	require.NoError(t, err)
	require.True(t, math.IsInf(*v.Checks[1].Limits[0].Max, 1), "the caller's limits are not rewritten")
}

func TestEncodeEnvelope(t *testing.T) {
	v := rollbackVerdict()
	got, err := Encode(v, "analyzerd-test")
	require.NoError(t, err)

	var env map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(got, &env))
	attr := func(k string) string {
		var s string
		require.NoError(t, json.Unmarshal(env[k], &s), k)
		return s
	}
	require.Equal(t, "1.0", attr("specversion"))
	require.Equal(t, "verdict/prod/checkout/v2.3.0/7", attr("id"))
	require.Equal(t, MsgID(v), attr("id"))
	require.Equal(t, "analyzerd-test", attr("source"))
	require.Equal(t, "rollout.verdict", attr("type"))
	require.Equal(t, "2026-11-25T14:03:10.120Z", attr("time"))
	require.Equal(t, "application/json", attr("datacontenttype"))
	require.Equal(t, "prod/checkout", attr("subject"))

	data, err := MarshalVerdict(v)
	require.NoError(t, err)
	require.JSONEq(t, string(data), string(env["data"]))
	require.NotContains(t, string(got), `\u003e`, "no HTML escaping")

	// The data reads back as the verdict, but for the numbers that are not finite.
	var back rollout.Verdict
	require.NoError(t, json.Unmarshal(data, &back))
	want := rollbackVerdict()
	want.DecidedAt = time.Date(2026, 11, 25, 14, 3, 10, 120_000_000, time.UTC)
	want.Checks[1].RelativeDelta = nil
	want.Checks[1].Limits[0].Max = nil
	require.Equal(t, want, back)
}

func TestEncodeEmptyChecksIsAnArray(t *testing.T) {
	v := rollbackVerdict()
	v.Checks = nil
	data, err := MarshalVerdict(v)
	require.NoError(t, err)
	require.Contains(t, string(data), `"checks":[]`)
}

func TestEncodeRejectsInvalidVerdicts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*rollout.Verdict)
		source string
		want   string
	}{
		{"no namespace", func(v *rollout.Verdict) { v.Rollout.Namespace = "" }, "a", "rollout.namespace"},
		{"no name", func(v *rollout.Verdict) { v.Rollout.Name = "" }, "a", "rollout.name"},
		{"no revision", func(v *rollout.Verdict) { v.Revision = "" }, "a", "revision"},
		{"no sequence", func(v *rollout.Verdict) { v.Sequence = 0 }, "a", "sequence"},
		{"unknown verdict", func(v *rollout.Verdict) { v.Verdict = "maybe" }, "a", `got "maybe"`},
		{"no source", func(*rollout.Verdict) {}, "", "source"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := rollbackVerdict()
			tc.change(&v)
			_, err := Encode(v, tc.source)
			require.ErrorIs(t, err, rollout.ErrInvalid)
			require.ErrorContains(t, err, tc.want)
		})
	}
}
