package rollout

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func num(f float64) *float64 { return &f }

func TestGuardExpression(t *testing.T) {
	for _, tc := range []struct {
		g    Guard
		want string
	}{
		{Guard{Against: AgainstStable, Measure: MeasureDelta, Max: num(0.01)}, "canary - stable < 0.01"},
		{Guard{Against: AgainstBaseline, Measure: MeasureRatio, Min: num(0.9), Max: num(1.1)}, "0.9 < canary / baseline < 1.1"},
		{Guard{Against: AgainstBaseline, Measure: MeasureRatio, Max: num(2)}, "canary / baseline < 2"},
		{Guard{Measure: MeasureValue, Max: num(0.7)}, "canary < 0.7"},
		{Guard{Max: num(5)}, "canary < 5"},
		{Guard{Measure: MeasureValue, Min: num(-1.5)}, "canary > -1.5"},
		{Guard{Against: AgainstStable, Measure: MeasureDelta, Min: num(-0.01)}, "canary - stable > -0.01"},
		{Guard{Measure: MeasureValue, Max: num(1e-05)}, "canary < 1e-05"},
		{Guard{Measure: MeasureValue, Max: num(1234567)}, "canary < 1.234567e+06"},
		{Guard{Measure: MeasureValue}, "canary"},
	} {
		require.Equal(t, tc.want, tc.g.Expression())
	}
}

func TestGuardActive(t *testing.T) {
	g := Guard{FromStep: 2, FromWeight: 50}
	require.False(t, g.Active(1, 100))
	require.False(t, g.Active(5, 49))
	require.True(t, g.Active(2, 50))
	require.True(t, Guard{}.Active(0, 0))
}

func TestTemplateValidateZero(t *testing.T) {
	var fields []string
	for _, err := range (Template{}).Validate() {
		fields = append(fields, strings.SplitN(err.Error(), ":", 2)[0])
	}
	require.Equal(t, []string{"name", "interval", "baselineWindow", "alpha", "checks"}, fields)
}

func TestGuardValidateNaN(t *testing.T) {
	tm := Template{Name: "t", Interval: time.Second, BaselineWindow: time.Minute, Alpha: 0.01, Checks: []Check{{
		Name: "c", Kind: KindValue, Query: "up",
		Guards: []Guard{{Measure: MeasureValue, Min: num(math.NaN()), Max: num(math.NaN())}},
	}}}
	var msgs []string
	for _, err := range tm.Validate() {
		msgs = append(msgs, err.Error())
	}
	require.Equal(t, []string{
		"checks[0] (c).guards[0].min: must be a number, got NaN",
		"checks[0] (c).guards[0].max: must be a number, got NaN",
	}, msgs)

	// Infinite bounds are numbers: +Inf as max bounds nothing.
	tm.Checks[0].Guards[0] = Guard{Measure: MeasureValue, Min: num(math.Inf(-1)), Max: num(math.Inf(1))}
	require.Empty(t, tm.Validate())
}

func TestIsIdentifier(t *testing.T) {
	for s, want := range map[string]bool{
		"service": true, "_x": true, "a1": true, "Version_2": true,
		"": false, "1a": false, "a-b": false, "a.b": false, "ü": false, "a b": false,
	} {
		require.Equal(t, want, IsIdentifier(s), s)
	}
}

func TestSubjects(t *testing.T) {
	require.Equal(t, "_", SubjectToken(""))
	require.Equal(t, "prod-eu_1", SubjectToken("prod-eu_1"))
	require.Equal(t, "a_b_c___", SubjectToken("a.b*c>ü "))
	ref := Ref{Namespace: "prod", Name: "check.out"}
	require.Equal(t, "rollouts.events.prod.check_out", EventsSubject("rollouts", ref))
	require.Equal(t, "rollouts.verdicts.prod.check_out", VerdictsSubject("rollouts", ref))
	require.Equal(t, "rollouts.deadletter.events", DeadLetterSubject("rollouts"))
	require.Equal(t, "prod/check.out", ref.String())
	require.Equal(t, "prod/check.out/v2", Key{Ref: ref, Revision: "v2"}.String())
}

func TestEventTypes(t *testing.T) {
	for _, e := range []EventType{EventStarted, EventStep, EventCompleted, EventAborted} {
		require.True(t, e.Known(), e)
	}
	require.False(t, EventVerdict.Known(), "analyzerd does not consume its own verdicts")
	require.False(t, EventType("rollout.paused").Known())
}

func TestInvalidf(t *testing.T) {
	err := Invalidf("template %q is unknown", "x")
	require.True(t, errors.Is(err, ErrInvalid))
	require.EqualError(t, err, `invalid: template "x" is unknown`)
}

// TestCheckPolicyValidate pins the rules of the limits, the sequential test and the
// Mann-Whitney judge: each problem names its field.
func TestCheckPolicyValidate(t *testing.T) {
	neg, on, off := -1, true, false
	f := func(v float64) *float64 { return &v }
	ratio := func(mod func(*Check)) Check {
		c := Check{Name: "c", Kind: KindRatio, Errors: "e", Total: "t", Guards: []Guard{{Measure: MeasureValue, Max: f(1)}}}
		mod(&c)
		return c
	}
	for _, tc := range []struct {
		name  string
		check Check
		want  []string // field paths with a problem; nil: valid
	}{
		{"defaults are valid", ratio(func(c *Check) {}), nil},
		{"limits", ratio(func(c *Check) {
			c.ConsecutiveErrorLimit, c.InconclusiveLimit = &neg, -2
			c.OnErrorLimit, c.OnInconclusiveLimit, c.NoData = "abort", "skip", "pass"
		}), []string{"consecutiveErrorLimit", "inconclusiveLimit", "onErrorLimit", "onInconclusiveLimit", "noData"}},
		{"sequential fields", ratio(func(c *Check) {
			c.Sequential = &Sequential{Against: []Reference{"stable", "stable", "prod"}, Margin: f(-1), Tolerance: f(2), PriorScale: 50}
		}), []string{"sequential.against[1]", "sequential.against[2]", "sequential.margin", "sequential.tolerance", "sequential.priorScale"}},
		{"tolerance is for ratio checks", Check{Name: "c", Kind: KindHistogram, Buckets: "b", Quantile: 0.9,
			Sequential: &Sequential{Tolerance: f(0.01)}}, []string{"sequential.tolerance"}},
		{"no sequential test on a value check", Check{Name: "c", Kind: KindValue, Query: "q", Sequential: &Sequential{Enabled: &on},
			Guards: []Guard{{Measure: MeasureValue, Max: f(1)}}}, []string{"sequential"}},
		{"a disabled one is fine there", Check{Name: "c", Kind: KindValue, Query: "q", Sequential: &Sequential{Enabled: &off},
			Guards: []Guard{{Measure: MeasureValue, Max: f(1)}}}, nil},
		{"a sequential test alone is enough", Check{Name: "c", Kind: KindRatio, Errors: "e", Total: "t", Sequential: &Sequential{}}, nil},
		{"a disabled test is not", Check{Name: "c", Kind: KindRatio, Errors: "e", Total: "t", Sequential: &Sequential{Enabled: &off}},
			[]string{"guards"}},
		{"Mann-Whitney fields", ratio(func(c *Check) {
			c.MannWhitney = &MannWhitney{Direction: "up", Confidence: 1, AllowedIncrease: 0.5, AllowedDecrease: 2,
				CriticalIncrease: math.Inf(1), CriticalDecrease: 3, MinPoints: 2}
		}), []string{"mannWhitney.direction", "mannWhitney.confidence", "mannWhitney.allowedIncrease", "mannWhitney.allowedDecrease",
			"mannWhitney.criticalIncrease", "mannWhitney.criticalDecrease", "mannWhitney.minPoints"}},
		{"critical below allowed", ratio(func(c *Check) {
			c.MannWhitney = &MannWhitney{AllowedIncrease: 1.5, CriticalIncrease: 1.2}
		}), []string{"mannWhitney.criticalIncrease"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, err := range tc.check.validate() {
				got = append(got, strings.SplitN(err.Error(), ":", 2)[0])
			}
			require.Equal(t, tc.want, got)
		})
	}
}
