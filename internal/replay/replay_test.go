package replay

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/compare"
	"github.com/analyzerd/analyzerd/internal/config"
	"github.com/analyzerd/analyzerd/internal/decide"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

var t0 = time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)

// fakeMeasurer answers a value check from a function of the evaluation's time and step start,
// and records what it was asked.
type fakeMeasurer struct {
	canary      func(from, at time.Time) rollout.Reading
	next        func(at time.Time) time.Time // the measurement's NextSample (zero: none)
	failCapture int
	captures    []time.Time
	targets     []compare.Target
}

func (f *fakeMeasurer) Measure(_ context.Context, t compare.Target) []rollout.Measurement {
	f.targets = append(f.targets, t)
	m := rollout.Measurement{Check: "v", Canary: f.canary(t.From, t.At), Stable: rollout.Reading{Status: rollout.StatusOK, Value: 1}}
	if f.next != nil {
		m.NextSample = f.next(t.At)
	}
	return []rollout.Measurement{m}
}

func (f *fakeMeasurer) CaptureBaseline(_ context.Context, _ *compare.Template, _, _ map[string]string, at time.Time) (map[string]rollout.Reading, error) {
	f.captures = append(f.captures, at)
	if len(f.captures) <= f.failCapture {
		return nil, errors.New("capture baseline: v: timeout")
	}
	return map[string]rollout.Reading{"v": {Status: rollout.StatusOK, Value: 1}}, nil
}

func valueTemplate(t *testing.T) *compare.Template {
	t.Helper()
	limit, crit := 2.0, 5.0
	rt := rollout.Template{
		Name: "value", Interval: 10 * time.Second, MinStepDuration: 30 * time.Second,
		Args: []string{"service"}, Variables: []string{"version"},
		Checks: []rollout.Check{{
			Name: "v", Kind: rollout.KindValue, Query: `x{service={{ arg "service" }}, version={{ var "version" }}}`,
			Guards: []rollout.Guard{
				{Against: rollout.AgainstStable, Measure: rollout.MeasureRatio, Max: &limit},
				{Against: rollout.AgainstBaseline, Measure: rollout.MeasureRatio, Max: &crit, Critical: true},
			},
		}},
	}
	config.TemplateDefaults(&rt)
	tm, err := compare.CompileTemplate(rt)
	require.NoError(t, err)
	return tm
}

func ok(v float64) rollout.Reading { return rollout.Reading{Status: rollout.StatusOK, Value: v} }

func sides() (map[string]string, map[string]string, map[string]string) {
	return map[string]string{"service": "checkout"}, map[string]string{"version": "v2"}, map[string]string{"version": "v1"}
}

func TestRunFollowsTheDataAndTheSteps(t *testing.T) {
	args, canary, stable := sides()
	m := &fakeMeasurer{
		canary: func(_, _ time.Time) rollout.Reading { return ok(1) },
		// A sample due 7 s after each evaluation: sooner than the interval.
		next: func(at time.Time) time.Time { return at.Add(7 * time.Second) },
	}
	steps := []Step{{10, t0}, {25, t0.Add(50 * time.Second)}, {50, t0.Add(100 * time.Second)}}
	evals, err := Run(context.Background(), m, Rollout{Template: valueTemplate(t), Args: args, Canary: canary, Stable: stable,
		Steps: steps, To: t0.Add(2 * time.Minute)})
	require.NoError(t, err)

	var at []time.Duration
	for _, e := range evals {
		at = append(at, e.Verdict.DecidedAt.Sub(t0))
	}
	s := time.Second
	require.Equal(t, []time.Duration{
		0, 7 * s, 14 * s, 21 * s, 28 * s, 35 * s, 42 * s, 49 * s, // every 7 s, the data's pace
		50 * s, 57 * s, 64 * s, 71 * s, 78 * s, 85 * s, 92 * s, 99 * s, // the step event at 50 s: evaluated at once
		100 * s, 107 * s, 114 * s, // and at 100 s; none after the end (120 s)
	}, at)
	for i, e := range evals {
		require.Equal(t, uint64(i+1), e.Verdict.Sequence)
		wantStep := 0
		switch {
		case e.Verdict.DecidedAt.Sub(t0) >= 100*s:
			wantStep = 2
		case e.Verdict.DecidedAt.Sub(t0) >= 50*s:
			wantStep = 1
		}
		require.Equal(t, wantStep, e.Verdict.Step, "evaluation %d", i)
		require.Equal(t, steps[wantStep].Weight, e.Verdict.Weight)
		require.Equal(t, e.Verdict.DecidedAt.Add(7*s), e.Planned)
		// Each evaluation measures its step so far.
		require.Equal(t, steps[wantStep].At, m.targets[i].From)
		require.Equal(t, e.Verdict.DecidedAt, m.targets[i].At)
	}
	// The step is too young to proceed until minStepDuration (30 s) has passed.
	require.Equal(t, rollout.Pause, evals[0].Verdict.Verdict)
	require.Equal(t, rollout.Proceed, evals[5].Verdict.Verdict, "35 s into step 0: %s", evals[5].Verdict.Reason)
	require.Equal(t, rollout.Pause, evals[8].Verdict.Verdict, "step 1 starts from nothing")
	require.Equal(t, rollout.Proceed, evals[15].Verdict.Verdict, "49 s into step 1")
	require.Equal(t, rollout.Pause, evals[len(evals)-1].Verdict.Verdict, "14 s into step 2")
	require.Equal(t, []time.Time{t0}, m.captures, "the baseline is captured once, at the start")
	require.Equal(t, rollout.Pause, Final(evals), "the last step has not proceeded by the end")
}

func TestRunRollbackIsFinal(t *testing.T) {
	args, canary, stable := sides()
	m := &fakeMeasurer{canary: func(from, at time.Time) rollout.Reading {
		if !from.Before(t0.Add(time.Minute)) && at.Sub(from) >= 20*time.Second {
			return ok(9) // bad from 20 s into the second step: 9 x baseline, critical
		}
		return ok(1)
	}}
	evals, err := Run(context.Background(), m, Rollout{Template: valueTemplate(t), Args: args, Canary: canary, Stable: stable,
		Steps: []Step{{10, t0}, {25, t0.Add(time.Minute)}, {50, t0.Add(2 * time.Minute)}}, To: t0.Add(3 * time.Minute)})
	require.NoError(t, err)
	last := evals[len(evals)-1]
	require.Equal(t, rollout.Rollback, last.Verdict.Verdict)
	require.Equal(t, 1, last.Verdict.Step)
	require.Equal(t, t0.Add(80*time.Second), last.Verdict.DecidedAt, "the first evaluation at least 20 s into step 1 (every 10 s: the interval)")
	require.True(t, last.Planned.IsZero(), "nothing is planned after a rollback")
	for _, e := range evals[:len(evals)-1] {
		require.NotEqual(t, rollout.Rollback, e.Verdict.Verdict)
	}
	require.Equal(t, rollout.Rollback, Final(evals))
}

func TestRunRetriesTheBaseline(t *testing.T) {
	args, canary, stable := sides()
	m := &fakeMeasurer{canary: func(_, _ time.Time) rollout.Reading { return ok(1) }, failCapture: 2}
	evals, err := Run(context.Background(), m, Rollout{Template: valueTemplate(t), Args: args, Canary: canary, Stable: stable,
		Steps: []Step{{10, t0}}, To: t0.Add(time.Minute)})
	require.NoError(t, err)
	require.Equal(t, []time.Time{t0, t0, t0}, m.captures, "tried at each evaluation until captured, always ending at the start")
	require.Contains(t, evals[0].Verdict.Reason, "baseline not captured yet")
	require.NotContains(t, evals[2].Verdict.Reason, "baseline")
}

func TestRunStopsWhenTheSourceIsUnreachable(t *testing.T) {
	args, canary, stable := sides()
	down := rollout.Reading{Status: rollout.StatusError, Message: compare.ErrUnavailable.Error() + ": connection refused"}
	m := &fakeMeasurer{canary: func(_, _ time.Time) rollout.Reading { return down }}
	tm := valueTemplate(t)
	_, err := Run(context.Background(), stableDown{m, down}, Rollout{Template: tm, Args: args, Canary: canary, Stable: stable,
		Steps: []Step{{10, t0}}, To: t0.Add(time.Minute)})
	require.ErrorIs(t, err, ErrUnavailable)
	require.ErrorContains(t, err, "connection refused")
}

// stableDown answers the stable side with down too.
type stableDown struct {
	*fakeMeasurer
	down rollout.Reading
}

func (s stableDown) Measure(ctx context.Context, t compare.Target) []rollout.Measurement {
	ms := s.fakeMeasurer.Measure(ctx, t)
	for i := range ms {
		ms[i].Stable = s.down
	}
	return ms
}

func TestRolloutValidate(t *testing.T) {
	args, canary, stable := sides()
	tm := valueTemplate(t)
	good := Rollout{Template: tm, Args: args, Canary: canary, Stable: stable, Steps: []Step{{10, t0}, {50, t0.Add(time.Minute)}}, To: t0.Add(2 * time.Minute)}
	require.NoError(t, good.Validate())
	for name, tc := range map[string]struct {
		change func(*Rollout)
		want   string
	}{
		"no steps":         {func(r *Rollout) { r.Steps = nil }, "no steps"},
		"weight":           {func(r *Rollout) { r.Steps[1].Weight = 101 }, "step 1: weight must be within 0..100"},
		"order":            {func(r *Rollout) { r.Steps[1].At = t0 }, "step 1 (2026-11-25T14:00:00Z) does not come after step 0"},
		"after the end":    {func(r *Rollout) { r.To = t0.Add(30 * time.Second) }, "step 1 (2026-11-25T14:01:00Z) begins after the end"},
		"end before":       {func(r *Rollout) { r.Steps = r.Steps[:1]; r.To = t0 }, "must come after the start"},
		"missing arg":      {func(r *Rollout) { r.Args = nil }, `data.args.service: required by analysis template "value"`},
		"missing variable": {func(r *Rollout) { r.Stable = map[string]string{} }, `data.stable.version: required`},
	} {
		t.Run(name, func(t *testing.T) {
			r := good
			r.Steps = append([]Step(nil), good.Steps...)
			tc.change(&r)
			require.ErrorContains(t, r.Validate(), tc.want)
		})
	}
}

func TestFinal(t *testing.T) {
	v := func(weight int, d rollout.Decision) Evaluation {
		return Evaluation{Verdict: rollout.Verdict{Weight: weight, Verdict: d}}
	}
	P, S, R := rollout.Proceed, rollout.Pause, rollout.Rollback
	for _, tc := range []struct {
		name  string
		evals []Evaluation
		want  rollout.Decision
	}{
		{"nothing evaluated", nil, S},
		{"last proceeds", []Evaluation{v(10, S), v(10, P)}, P},
		{"last pauses", []Evaluation{v(10, P), v(25, S)}, S},
		{"rolled back", []Evaluation{v(10, P), v(25, R)}, R},
		{"rolled back at 100", []Evaluation{v(50, P), v(100, R)}, R},
		{"promotion after a proceed", []Evaluation{v(50, S), v(50, P), v(100, S), v(100, S)}, P},
		{"promotion after a pause", []Evaluation{v(50, P), v(50, S), v(100, S)}, S},
		{"only at 100", []Evaluation{v(100, S), v(100, P)}, P},
	} {
		require.Equal(t, tc.want, Final(tc.evals), tc.name)
	}
}

// TestDecideIsTheDecisionWithTheBaseline: Decide attaches the baseline without changing the
// caller's measurements, and decides what decide.Decide does on them.
func TestDecideIsTheDecisionWithTheBaseline(t *testing.T) {
	tm := valueTemplate(t)
	ms := []rollout.Measurement{{Check: "v", Canary: ok(9), Stable: ok(1)}}
	pos := Position{Step: 1, Weight: 25, StepStarted: t0}
	got := Decide(tm, pos, map[string]rollout.Reading{"v": ok(1)}, decide.Evidence{}, t0.Add(time.Minute), ms)
	require.Nil(t, ms[0].Baseline, "the caller's measurements are not changed")
	b := ok(1)
	want := decide.Decide(decide.Input{Template: tm.Template, Step: 1, Weight: 25, StepStarted: t0, Now: t0.Add(time.Minute),
		Measurements: []rollout.Measurement{{Check: "v", Canary: ok(9), Stable: ok(1), Baseline: &b}}})
	require.Equal(t, want, got)
	require.Equal(t, rollout.Rollback, got.Decision, "9 x the baseline: the critical guard")

	shared := []rollout.Measurement{{Check: "v", Canary: ok(9), Stable: ok(9)}}
	noBaseline := Decide(tm, pos, nil, decide.Evidence{}, t0.Add(time.Minute), shared)
	require.NotEqual(t, rollout.Rollback, noBaseline.Decision, "the critical guard waits for the baseline")
}
