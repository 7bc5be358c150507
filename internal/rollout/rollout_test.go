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
	require.Equal(t, []string{"name", "interval", "baselineWindow", "checks"}, fields)
}

func TestGuardValidateNaN(t *testing.T) {
	tm := Template{Name: "t", Interval: time.Second, BaselineWindow: time.Minute, Checks: []Check{{
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
