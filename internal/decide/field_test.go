package decide

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// The field conditions of counter checks: shared degradation, guards judged with their
// uncertainty, a canary that stops serving, no new samples.

// fieldCheck is the shipped error-rate check's shape: a sequential test against stable, a
// guard against stable and a critical guard against the baseline.
func fieldCheck() rollout.Check {
	c := seqRatio("error-rate", 0.25)
	c.Guards = []rollout.Guard{vsStable(rollout.MeasureDelta, 0.01), critical(vsBaseline(rollout.MeasureDelta, 0.05))}
	return c
}

// side is one side's step counts and recent counts, known exactly.
func side(stepErrors, stepTotal, recentErrors, recentTotal float64) rollout.Reading {
	r := counted(stepErrors, stepTotal)
	r.Recent = &rollout.Counts{Events: rollout.Exact(recentErrors), Total: rollout.Exact(recentTotal)}
	return r
}

func TestSharedDegradationPausesAndPassesAfter(t *testing.T) {
	base := counted(300, 60000) // 0.5% before the canary
	tm := tmpl(fieldCheck())
	input := func(now time.Time, canary, stable rollout.Reading, ev Evidence) Input {
		return Input{Template: tm, Step: 0, Weight: 50, StepStarted: t0, Now: now, Evidence: ev,
			Measurements: []rollout.Measurement{{Check: "error-rate", Canary: canary, Stable: stable, Baseline: &base,
				Through: now, ScrapeInterval: 15 * time.Second}}}
	}
	// Both sides at 50% errors over the last minute: a downstream outage.
	res := Decide(input(t0.Add(2*time.Minute), side(3030, 12000, 3000, 6000), side(3030, 12000, 3000, 6000), Evidence{}))
	require.Equal(t, rollout.Pause, res.Decision, res.Reason)
	require.Equal(t, rollout.Inconclusive, res.Checks[0].Outcome)
	require.Contains(t, res.Reason, "shared degradation: canary 50% and stable 50% against the baseline's 0.5%")
	require.Zero(t, res.Evidence.Checks["error-rate"].Failures, "a shared degradation is no failure")
	require.False(t, res.Evidence.RolledBack)

	// The canary alone at 50%: it carries the degradation, and the critical guard rolls back.
	res = Decide(input(t0.Add(2*time.Minute), side(3030, 12000, 3000, 6000), side(60, 12000, 30, 6000), Evidence{}))
	require.Equal(t, rollout.Rollback, res.Decision, res.Reason)

	// At weight 100 there is no stable traffic to share it with: rollback.
	res = Decide(input(t0.Add(2*time.Minute), side(3030, 12000, 3000, 6000), side(0, 0, 0, 0), Evidence{}))
	require.Equal(t, rollout.Rollback, res.Decision, res.Reason)

	// Escalation: a shared degradation longer than sharedDegradation.escalateAfter rolls back
	// when the policy says so.
	tm.SharedDegradation = rollout.SharedDegradation{EscalateAfter: 5 * time.Minute, Then: rollout.EscalateRollback}
	ev := Evidence{}
	var last Result
	for i := 0; i <= 8; i++ {
		now := t0.Add(time.Duration(i+1) * time.Minute)
		n := float64(6000 * (i + 1))
		last = Decide(input(now, side(n/2, n, 3000, 6000), side(n/2, n, 3000, 6000), ev))
		ev = last.Evidence
		if last.Decision == rollout.Rollback {
			require.GreaterOrEqual(t, i, 5, "not before escalateAfter")
			break
		}
		require.Equal(t, rollout.Pause, last.Decision, "minute %d: %s", i, last.Reason)
	}
	require.Equal(t, rollout.Rollback, last.Decision)
	require.Contains(t, last.Reason, "over sharedDegradation.escalateAfter (5m0s)")
}

// TestGuardsDoNotFailByNoise: a canary identical to its stable side, judged at every one of
// many evaluations over several steps by guards that the estimate alone would fail often
// (a 5% relative p95 guard, a 0.2 point delta guard), fails a guard in at most alpha of
// rollouts.
func TestGuardsDoNotFailByNoise(t *testing.T) {
	if testing.Short() {
		t.Skip("simulates 400 rollouts")
	}
	c := seqRatio("error-rate", 0.25)
	c.MinSamples, c.FailureLimit = 0, 0
	c.Guards = []rollout.Guard{vsStable(rollout.MeasureDelta, 0.002)}
	tm := tmpl(c)
	tm.Alpha = 0.05
	r := rand.New(rand.NewPCG(1, 2))
	const runs, steps, evals = 400, 4, 30
	failedRuns, estimateWouldFail := 0, 0
	for run := 0; run < runs; run++ {
		var ev Evidence
		failed := false
		for step := 0; step < steps && !failed; step++ {
			started := t0.Add(time.Duration(step) * time.Hour)
			var ce, se, cn, sn float64
			for e := 1; e <= evals; e++ {
				// 10 s at 50 req/s a side, 0.5% errors on both.
				cn, sn = cn+500, sn+500
				ce += poissonDraw(r, 2.5)
				se += poissonDraw(r, 2.5)
				now := started.Add(time.Duration(e) * 10 * time.Second)
				res := Decide(Input{Template: tm, Step: step, Weight: 50, StepStarted: started, Now: now, Evidence: ev,
					Measurements: []rollout.Measurement{{Check: "error-rate", Canary: counted(ce, cn), Stable: counted(se, sn), Through: now}}})
				ev = res.Evidence
				if ce/cn-se/sn >= 0.002 {
					estimateWouldFail++
				}
				if res.Checks[0].Outcome == rollout.Fail {
					failed = true
					break
				}
			}
		}
		if failed {
			failedRuns++
		}
	}
	t.Logf("identical canaries: a guard failed in %d of %d rollouts (alpha 0.05); the estimate alone was past the guard at %d of %d evaluations",
		failedRuns, runs, estimateWouldFail, runs*steps*evals)
	require.Positive(t, estimateWouldFail, "the guard is tight enough for noise to cross it")
	require.LessOrEqual(t, float64(failedRuns)/runs, 0.05)
}

func TestStoppedCanaryPausesAndNoNewSamplesCountsNothing(t *testing.T) {
	c := seqRatio("error-rate", 0.25)
	c.MinSamples = 0
	c.Sequential.Tolerance = num(0.01)
	tm := tmpl(c)
	tm.MinStepDuration = 0
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	decide := func(now, through time.Time, canary, stable rollout.Reading, ev Evidence) Result {
		return Decide(Input{Template: tm, Weight: 10, StepStarted: t0, Now: now, Evidence: ev,
			Measurements: []rollout.Measurement{{Check: "error-rate", Canary: canary, Stable: stable, Through: through, ScrapeInterval: 15 * time.Second}}})
	}
	res := decide(at(120), at(120), counted(10, 12000), counted(90, 108000), Evidence{})
	require.Equal(t, rollout.Proceed, res.Decision, res.Reason)

	// The same samples again: nothing new is judged, nothing counted; the pass stands while
	// the samples are fresh.
	again := decide(at(125), at(120), counted(10, 12000), counted(90, 108000), res.Evidence)
	require.Equal(t, rollout.Proceed, again.Decision)
	require.Equal(t, res.Evidence.Checks["error-rate"].StepLogLR, again.Evidence.Checks["error-rate"].StepLogLR)
	// Too old: no data, no proceed.
	stale := decide(at(160), at(120), counted(10, 12000), counted(90, 108000), res.Evidence)
	require.Equal(t, rollout.Pause, stale.Decision)
	require.Contains(t, stale.Reason, "no new samples for 40s")

	// The canary serves nothing while stable goes on: pause, saying so.
	stopped := decide(at(135), at(135), counted(10, 12000), counted(92, 121500), res.Evidence)
	require.Equal(t, rollout.Pause, stopped.Decision)
	require.True(t, strings.Contains(stopped.Reason, "the canary served no requests from"), stopped.Reason)
	// It serves again: it may proceed again.
	back := decide(at(150), at(150), counted(12, 13500), counted(100, 135000), stopped.Evidence)
	require.Equal(t, rollout.Proceed, back.Decision, back.Reason)
}

// TestBurstOnOnePodIsNoRollback: a canary whose counts hold a burst on one pod (compare's
// Bursts, with its steady counts without it) is not rolled back by the sequential test nor
// failed by its guard while its steady counts are like the stable side's; the verdict names
// the burst. A canary whose steady counts are as bad is rolled back.
func TestBurstOnOnePodIsNoRollback(t *testing.T) {
	tm := tmpl(fieldCheck())
	base := counted(300, 60000)
	withBurst := func(steadyErrors float64) rollout.Reading {
		r := side(steadyErrors+375, 24000, 40, 6000)
		r.Counts.Bursts = []rollout.Burst{{Target: "canary-0", From: t0.Add(time.Minute), Through: t0.Add(time.Minute + 15*time.Second),
			Events: 380, Total: 3750, Rate: 0.005}}
		r.Counts.Steady = &rollout.Counts{Events: rollout.Exact(steadyErrors), Total: rollout.Exact(24000 - 3750)}
		return r
	}
	input := func(canary rollout.Reading) Input {
		now := t0.Add(4 * time.Minute)
		return Input{Template: tm, Step: 0, Weight: 50, StepStarted: t0, Now: now,
			Measurements: []rollout.Measurement{{Check: "error-rate", Canary: canary, Stable: side(120, 24000, 30, 6000), Baseline: &base,
				Through: now, ScrapeInterval: 15 * time.Second}}}
	}
	// 495 errors of 24,000 (2.1%) against stable's 0.5%: rolled back on all the counts alone.
	full := side(495, 24000, 40, 6000)
	require.Equal(t, rollout.Rollback, Decide(input(full)).Decision)

	res := Decide(input(withBurst(100)))
	require.Equal(t, rollout.Pause, res.Decision, res.Reason)
	require.Contains(t, res.Reason, "judged without the canary's bursts on single targets too: canary-0 14:01:00 to 14:01:15 (380 of 3750, where 0.5% were expected)")
	require.Zero(t, res.Evidence.Checks["error-rate"].Failures, "the guard does not fail on a burst alone")

	// Steady counts as bad as all of them (1.8% without the burst): rollback.
	res = Decide(input(withBurst(370)))
	require.Equal(t, rollout.Rollback, res.Decision, res.Reason)

	// A canary shown below the tolerance on all its counts proceeds, bursts or not: what is
	// judged without them only holds rollbacks back.
	low := func(bursts bool) rollout.Reading {
		r := side(50, 100000, 10, 20000)
		if bursts {
			r.Counts.Bursts = []rollout.Burst{{Target: "canary-0", Events: 38, Total: 2000, Rate: 0.0005}}
			r.Counts.Steady = &rollout.Counts{Events: rollout.Exact(12), Total: rollout.Exact(98000)}
		}
		return r
	}
	lowInput := func(canary rollout.Reading) Input {
		in := input(canary)
		in.Measurements[0].Stable = side(100, 1000000, 20, 200000)
		return in
	}
	require.Equal(t, rollout.Proceed, Decide(lowInput(low(false))).Decision)
	res = Decide(lowInput(low(true)))
	require.Equal(t, rollout.Proceed, res.Decision, res.Reason)
}

// TestAGuardShownToHoldStaysShownInItsStep: a guard against stable shown to hold on the step's
// counts stays shown when a later look's counts are known only within wider bounds (an edge
// not calm, a restart's first read), since the intersection of its intervals is a
// confidence sequence too; a failure still shows at once, and a new step starts afresh.
func TestAGuardShownToHoldStaysShownInItsStep(t *testing.T) {
	c := ratioCheck("error-rate", 1, vsStable(rollout.MeasureDelta, 0.01))
	c.Sequential = nil
	tm := tmpl(c)
	look := func(now time.Time, stepStarted time.Time, canary rollout.Reading, ev Evidence) Result {
		return Decide(Input{Template: tm, Step: 1, Weight: 10, StepStarted: stepStarted, Now: now, Evidence: ev,
			Measurements: []rollout.Measurement{{Check: "error-rate", Canary: canary, Stable: counted(50, 20000),
				Through: now, ScrapeInterval: 15 * time.Second}}})
	}
	// The same rate, counted exactly, then known only within bounds: alone, the second
	// look's interval reaches past 0.01.
	exact := counted(50, 20000)
	loose := countedWithin(rollout.Bounds{Low: 40, Est: 60, High: 330}, rollout.Exact(22000))
	alone := look(t0.Add(3*time.Minute), t0, loose, Evidence{})
	require.NotEqual(t, rollout.Pass, alone.Checks[0].Outcome, "the loose look alone shows nothing: %s", alone.Checks[0].Message)

	first := look(t0.Add(2*time.Minute), t0, exact, Evidence{})
	require.Equal(t, rollout.Pass, first.Checks[0].Outcome, first.Checks[0].Message)
	second := look(t0.Add(3*time.Minute), t0, loose, first.Evidence)
	require.Equal(t, rollout.Pass, second.Checks[0].Outcome, "still shown: %s", second.Checks[0].Message)

	// A canary whose estimate is now past the bound gets no pass from what was held, even
	// while its interval still straddles it.
	straddling := countedWithin(rollout.Bounds{Low: 120, Est: 300, High: 330}, rollout.Exact(22000))
	drift := look(t0.Add(3*time.Minute), t0, straddling, first.Evidence)
	require.NotEqual(t, rollout.Pass, drift.Checks[0].Outcome, drift.Checks[0].Message)

	// A canary failing now fails at once: its interval leaves what was held.
	bad := counted(600, 24000)
	failed := look(t0.Add(4*time.Minute), t0, bad, second.Evidence)
	require.Equal(t, rollout.Fail, failed.Checks[0].Outcome, failed.Checks[0].Message)

	// A new step holds nothing of the step before.
	next := look(t0.Add(5*time.Minute), t0.Add(5*time.Minute), loose, second.Evidence)
	require.NotEqual(t, rollout.Pass, next.Checks[0].Outcome, next.Checks[0].Message)
}

// TestUncertainBaselineIsThin: a baseline counted from series first scraped within its window
// (Prometheus, or the stable pods, newer than it) is sure of none of its requests: each
// series may have counted everything before the window. Its rate's interval then spans
// about 0..1, so that no guard against it can be shown outside, and a shared incident
// would pass for calm without a word. The baseline is thin instead, and the check says that
// its guards were skipped; with its samples certain, the same incident pauses.
func TestUncertainBaselineIsThin(t *testing.T) {
	tm := tmpl(fieldCheck())
	decide := func(base rollout.Reading) Result {
		now := t0.Add(2 * time.Minute)
		return Decide(Input{Template: tm, Step: 0, Weight: 10, StepStarted: t0, Now: now,
			Measurements: []rollout.Measurement{{Check: "error-rate", Canary: side(30300, 120000, 30000, 60000),
				Stable: side(30300, 120000, 30000, 60000), Baseline: &base, Through: now, ScrapeInterval: 15 * time.Second}}})
	}

	// One sample per series in the window: 30 errors of 6,000 requests, all of which may
	// predate it.
	uncertain := countedWithin(rollout.Bounds{Low: 0, Est: 30, High: 30}, rollout.Bounds{Low: 0, Est: 6000, High: 6000})
	res := decide(uncertain)
	require.NotEqual(t, rollout.Rollback, res.Decision, res.Reason)
	c := res.Checks[0]
	require.NotContains(t, c.Threshold, "baseline", "no guard against an uncertain baseline")
	require.Contains(t, c.Message, "the baseline has 0 samples for certain of the 1000 it needs (6000 estimated")
	require.Contains(t, c.Message, "so its guards were skipped")

	// Two samples a series: 5,000 of the 6,000 requests certain. The incident pauses.
	certain := countedWithin(rollout.Bounds{Low: 25, Est: 30, High: 30}, rollout.Bounds{Low: 5000, Est: 6000, High: 6000})
	res = decide(certain)
	require.Equal(t, rollout.Pause, res.Decision, res.Reason)
	require.Contains(t, res.Reason, "shared degradation")
}
