package decide

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

var t0 = time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)

func num(f float64) *float64 { return &f }

func okR(v float64, samples int64) rollout.Reading {
	return rollout.Reading{Status: rollout.StatusOK, Value: v, Samples: samples}
}

func noDataR(msg string) rollout.Reading {
	return rollout.Reading{Status: rollout.StatusNoData, Message: msg}
}

func errR(msg string) rollout.Reading {
	return rollout.Reading{Status: rollout.StatusError, Message: msg}
}

func baseline(r rollout.Reading) *rollout.Reading { return &r }

// failures is evidence of the given failed evaluations by check.
func failures(byCheck map[string]int) map[string]CheckEvidence {
	out := make(map[string]CheckEvidence, len(byCheck))
	for name, n := range byCheck {
		out[name] = CheckEvidence{Failures: n}
	}
	return out
}

// Guards used by the tables.
func vsStable(m rollout.Measure, max float64) rollout.Guard {
	return rollout.Guard{Against: rollout.AgainstStable, Measure: m, Max: num(max)}
}

func vsBaseline(m rollout.Measure, max float64) rollout.Guard {
	return rollout.Guard{Against: rollout.AgainstBaseline, Measure: m, Max: num(max)}
}

func critical(g rollout.Guard) rollout.Guard { g.Critical = true; return g }

func fromWeight(g rollout.Guard, w int) rollout.Guard { g.FromWeight = w; return g }

func fromStep(g rollout.Guard, s int) rollout.Guard { g.FromStep = s; return g }

func valueGuard(min, max *float64) rollout.Guard {
	return rollout.Guard{Measure: rollout.MeasureValue, Min: min, Max: max}
}

func ratioCheck(name string, limit int, guards ...rollout.Guard) rollout.Check {
	return rollout.Check{Name: name, Kind: rollout.KindRatio, Errors: "e", Total: "t",
		MinSamples: 100, FailureLimit: limit, Guards: guards}
}

func histCheck(name string, limit int, guards ...rollout.Guard) rollout.Check {
	return rollout.Check{Name: name, Kind: rollout.KindHistogram, Buckets: "b", Quantile: 0.95,
		MinSamples: 100, FailureLimit: limit, Guards: guards}
}

func valueCheck(name string, limit int, guards ...rollout.Guard) rollout.Check {
	return rollout.Check{Name: name, Kind: rollout.KindValue, Query: "q", FailureLimit: limit, Guards: guards}
}

func tmpl(checks ...rollout.Check) rollout.Template {
	return rollout.Template{Name: "t", Interval: 10 * time.Second, BaselineWindow: 10 * time.Minute,
		MinStepDuration: time.Minute, Checks: checks}
}

// in is an input at step 1, weight 10, two minutes into the step (past minStepDuration).
func in(t rollout.Template, ms ...rollout.Measurement) Input {
	return Input{Template: t, Step: 1, Weight: 10, StepStarted: t0, Now: t0.Add(2 * time.Minute), Measurements: ms}
}

func meas(check string, canary, stable rollout.Reading, base *rollout.Reading) rollout.Measurement {
	return rollout.Measurement{Check: check, Canary: canary, Stable: stable, Baseline: base}
}

// TestCheckOutcomes pins every rule that decides one check's outcome.
func TestCheckOutcomes(t *testing.T) {
	const name = "c"
	for _, tc := range []struct {
		name          string
		check         rollout.Check
		m             rollout.Measurement
		step, weight  int
		want          rollout.Outcome
		wantMessage   string // exact, when not empty
		wantThreshold string
		wantDecision  rollout.Decision
		wantReason    string // substring
	}{
		{
			name:          "pass: delta vs stable within max",
			check:         ratioCheck(name, 10, vsStable(rollout.MeasureDelta, 0.01)),
			m:             meas(name, okR(0.01, 200), okR(0.005, 2000), nil),
			want:          rollout.Pass,
			wantThreshold: "canary - stable < 0.01",
			wantDecision:  rollout.Proceed,
		},
		{
			name:          "fail: delta vs stable above max",
			check:         ratioCheck(name, 10, vsStable(rollout.MeasureDelta, 0.01)),
			m:             meas(name, okR(0.03, 200), okR(0.005, 2000), nil),
			want:          rollout.Fail,
			wantThreshold: "canary - stable < 0.01",
			wantDecision:  rollout.Pause,
			wantReason:    "c: canary 3% vs stable 0.5% (canary - stable < 0.01 failed once, limit 10)",
		},
		{
			name:         "error: canary reading failed",
			check:        ratioCheck(name, 0, vsStable(rollout.MeasureDelta, 0.01)),
			m:            meas(name, errR("metrics source unavailable: boom"), okR(0.005, 2000), nil),
			want:         rollout.Error,
			wantMessage:  "canary: metrics source unavailable: boom",
			wantDecision: rollout.Pause,
			wantReason:   "c: canary: metrics source unavailable: boom",
		},
		{
			name:         "error: canary error wins over canary nodata rules and over stable error",
			check:        ratioCheck(name, 0, vsStable(rollout.MeasureDelta, 0.01)),
			m:            meas(name, errR("a"), errR("b"), nil),
			want:         rollout.Error,
			wantMessage:  "canary: a",
			wantDecision: rollout.Pause,
		},
		{
			name:         "error: stable reading failed and a stable guard is active",
			check:        ratioCheck(name, 0, vsStable(rollout.MeasureDelta, 0.01)),
			m:            meas(name, okR(0.01, 200), errR("timeout"), nil),
			want:         rollout.Error,
			wantMessage:  "stable: timeout",
			wantDecision: rollout.Pause,
			wantReason:   "c: stable: timeout",
		},
		{
			name:         "error: stable error beats canary nodata when a stable guard is active",
			check:        ratioCheck(name, 0, vsStable(rollout.MeasureDelta, 0.01)),
			m:            meas(name, noDataR("no requests"), errR("timeout"), nil),
			want:         rollout.Error,
			wantMessage:  "stable: timeout",
			wantDecision: rollout.Pause,
		},
		{
			name:          "pass: stable error does not matter when no stable guard is active",
			check:         ratioCheck(name, 0, vsBaseline(rollout.MeasureDelta, 0.05)),
			m:             meas(name, okR(0.01, 200), errR("timeout"), baseline(okR(0.005, 5000))),
			want:          rollout.Pass,
			wantThreshold: "canary - baseline < 0.05",
			wantDecision:  rollout.Proceed,
		},
		{
			name:          "pass: stable error does not matter when the stable guard is not active yet",
			check:         ratioCheck(name, 0, fromWeight(vsStable(rollout.MeasureDelta, 0.01), 50), vsBaseline(rollout.MeasureDelta, 0.05)),
			m:             meas(name, okR(0.01, 200), errR("timeout"), baseline(okR(0.005, 5000))),
			weight:        49,
			want:          rollout.Pass,
			wantThreshold: "canary - baseline < 0.05",
			wantDecision:  rollout.Proceed,
		},
		{
			name:         "nodata: canary has no data",
			check:        ratioCheck(name, 0, vsStable(rollout.MeasureDelta, 0.01)),
			m:            meas(name, noDataR("no requests in the window"), okR(0.005, 2000), nil),
			want:         rollout.NoData,
			wantMessage:  "no canary data: no requests in the window",
			wantDecision: rollout.Pause,
			wantReason:   "c: no canary data: no requests in the window",
		},
		{
			name:         "nodata: canary nodata even when no guard is active",
			check:        ratioCheck(name, 0, fromStep(vsStable(rollout.MeasureDelta, 0.01), 5)),
			m:            meas(name, noDataR("no requests"), okR(0.005, 2000), nil),
			want:         rollout.NoData,
			wantDecision: rollout.Pause,
		},
		{
			name:         "inconclusive: fewer canary samples than minSamples",
			check:        ratioCheck(name, 0, vsStable(rollout.MeasureDelta, 0.01)),
			m:            meas(name, okR(0.5, 99), okR(0.005, 2000), nil),
			want:         rollout.Inconclusive,
			wantMessage:  "99 of the 100 canary samples it needs",
			wantDecision: rollout.Pause,
			wantReason:   "c: 99 of the 100 canary samples it needs",
		},
		{
			name:         "inconclusive: thin evidence is judged before the guards (a failing value waits)",
			check:        histCheck(name, 0, critical(vsStable(rollout.MeasureRatio, 1.1))),
			m:            meas(name, okR(9, 10), okR(0.2, 2000), nil),
			want:         rollout.Inconclusive,
			wantDecision: rollout.Pause,
		},
		{
			name:          "fail: exactly minSamples is enough to judge",
			check:         ratioCheck(name, 10, vsStable(rollout.MeasureDelta, 0.01)),
			m:             meas(name, okR(0.5, 100), okR(0.005, 2000), nil),
			want:          rollout.Fail,
			wantThreshold: "canary - stable < 0.01",
			wantDecision:  rollout.Pause,
		},
		{
			name:          "pass: value checks ignore minSamples",
			check:         rollout.Check{Name: name, Kind: rollout.KindValue, Query: "q", MinSamples: 100, Guards: []rollout.Guard{valueGuard(nil, num(0.7))}},
			m:             meas(name, okR(0.5, 0), okR(0.4, 0), nil),
			want:          rollout.Pass,
			wantThreshold: "canary < 0.7",
			wantDecision:  rollout.Proceed,
		},
		{
			name:          "pass: no guard active below fromWeight",
			check:         ratioCheck(name, 0, fromWeight(vsStable(rollout.MeasureDelta, 0.01), 50)),
			m:             meas(name, okR(0.5, 200), okR(0.005, 2000), nil),
			weight:        49,
			want:          rollout.Pass,
			wantMessage:   "no guard applies at this step",
			wantThreshold: "",
			wantDecision:  rollout.Proceed,
		},
		{
			name:          "fail: guard active at exactly fromWeight",
			check:         ratioCheck(name, 10, fromWeight(vsStable(rollout.MeasureDelta, 0.01), 50)),
			m:             meas(name, okR(0.5, 200), okR(0.005, 2000), nil),
			weight:        50,
			want:          rollout.Fail,
			wantThreshold: "canary - stable < 0.01",
			wantDecision:  rollout.Pause,
		},
		{
			name:          "pass: no guard active below fromStep",
			check:         ratioCheck(name, 0, fromStep(vsStable(rollout.MeasureDelta, 0.01), 2)),
			m:             meas(name, okR(0.5, 200), okR(0.005, 2000), nil),
			step:          1,
			want:          rollout.Pass,
			wantMessage:   "no guard applies at this step",
			wantDecision:  rollout.Proceed,
			wantThreshold: "",
		},
		{
			name:          "fail: guard active at exactly fromStep",
			check:         ratioCheck(name, 10, fromStep(vsStable(rollout.MeasureDelta, 0.01), 2)),
			m:             meas(name, okR(0.5, 200), okR(0.005, 2000), nil),
			step:          2,
			want:          rollout.Fail,
			wantThreshold: "canary - stable < 0.01",
			wantDecision:  rollout.Pause,
		},
		{
			name:          "inconclusive: stable has no data for a stable guard",
			check:         ratioCheck(name, 0, vsStable(rollout.MeasureDelta, 0.01)),
			m:             meas(name, okR(0.01, 200), noDataR("no requests in the window"), nil),
			want:          rollout.Inconclusive,
			wantMessage:   "no stable data: no requests in the window",
			wantThreshold: "canary - stable < 0.01",
			wantDecision:  rollout.Pause,
		},
		{
			name:         "inconclusive: baseline not captured (nil)",
			check:        ratioCheck(name, 0, vsBaseline(rollout.MeasureDelta, 0.05)),
			m:            meas(name, okR(0.01, 200), okR(0.01, 2000), nil),
			want:         rollout.Inconclusive,
			wantMessage:  "baseline not captured yet",
			wantDecision: rollout.Pause,
		},
		{
			// A baseline captured without data (no history before the canary) cannot be
			// compared with: its guards are skipped. When nothing else is compared, the
			// check cannot pass: a canary at 50% errors must not proceed on nothing.
			name:          "inconclusive: baseline without data and no other guard compares nothing",
			check:         ratioCheck(name, 0, vsBaseline(rollout.MeasureDelta, 0.05)),
			m:             meas(name, okR(0.5, 200), okR(0.01, 2000), baseline(noDataR("no requests in the window"))),
			want:          rollout.Inconclusive,
			wantMessage:   "nothing to compare with: the baseline has no data and no other guard applies at this step",
			wantThreshold: "",
			wantDecision:  rollout.Pause,
		},
		{
			// The shipped latency-p99 below 50%: only its critical baseline guard applies. A
			// brake that cannot run is said, but does not hold a healthy rollout for ever.
			name:          "pass: only a critical (rollback-only) guard was skipped",
			check:         ratioCheck(name, 0, critical(vsBaseline(rollout.MeasureDelta, 0.05)), fromWeight(vsStable(rollout.MeasureDelta, 0.01), 50)),
			m:             meas(name, okR(0.01, 200), okR(0.01, 2000), baseline(noDataR("no requests in the window"))),
			want:          rollout.Pass,
			wantMessage:   "no guard applies at this step; the baseline has no data, so its guards were skipped",
			wantThreshold: "",
			wantDecision:  rollout.Proceed,
		},
		{
			name:          "pass: a baseline with too few samples is skipped like an empty one",
			check:         ratioCheck(name, 100, vsStable(rollout.MeasureDelta, 0.01), critical(vsBaseline(rollout.MeasureDelta, 0.05))),
			m:             meas(name, okR(0.01, 200), okR(0.01, 2000), baseline(okR(0.5, 7))),
			want:          rollout.Pass,
			wantMessage:   "the baseline has 7 of the 100 samples it needs, so its guards were skipped",
			wantThreshold: "canary - stable < 0.01",
			wantDecision:  rollout.Proceed,
		},
		{
			// A stable side of a few requests is no reference: one failed request of one is
			// 100% errors, and "canary - stable < 0.01" would pass any canary.
			name:          "inconclusive: a stable side with too few samples",
			check:         ratioCheck(name, 100, vsStable(rollout.MeasureDelta, 0.01)),
			m:             meas(name, okR(0.5, 2000), okR(1, 1), nil),
			want:          rollout.Inconclusive,
			wantMessage:   "1 of the 100 stable samples it needs",
			wantThreshold: "canary - stable < 0.01",
			wantDecision:  rollout.Pause,
		},
		{
			name:          "pass: baseline without data, the stable guard is still judged",
			check:         ratioCheck(name, 0, vsStable(rollout.MeasureDelta, 0.01), vsBaseline(rollout.MeasureDelta, 0.05)),
			m:             meas(name, okR(0.01, 200), okR(0.01, 2000), baseline(noDataR("none"))),
			want:          rollout.Pass,
			wantMessage:   "the baseline has no data, so its guards were skipped",
			wantThreshold: "canary - stable < 0.01",
			wantDecision:  rollout.Proceed,
		},
		{
			name:          "fail: baseline without data does not excuse a failing stable guard",
			check:         ratioCheck(name, 10, vsStable(rollout.MeasureDelta, 0.01), vsBaseline(rollout.MeasureDelta, 0.05)),
			m:             meas(name, okR(0.5, 200), okR(0.01, 2000), baseline(noDataR("none"))),
			want:          rollout.Fail,
			wantMessage:   "",
			wantThreshold: "canary - stable < 0.01",
			wantDecision:  rollout.Pause,
		},
		{
			name:          "inconclusive: baseline without data does not excuse missing stable data",
			check:         ratioCheck(name, 0, vsStable(rollout.MeasureDelta, 0.01), vsBaseline(rollout.MeasureDelta, 0.05)),
			m:             meas(name, okR(0.01, 200), noDataR("none"), baseline(noDataR("none"))),
			want:          rollout.Inconclusive,
			wantMessage:   "no stable data: none",
			wantThreshold: "canary - stable < 0.01",
			wantDecision:  rollout.Pause,
		},
		{
			name:         "inconclusive: a baseline reading that failed is not usable",
			check:        ratioCheck(name, 0, vsBaseline(rollout.MeasureDelta, 0.05)),
			m:            meas(name, okR(0.01, 200), okR(0.01, 2000), baseline(errR("timeout"))),
			want:         rollout.Inconclusive,
			wantMessage:  "baseline not usable: timeout",
			wantDecision: rollout.Pause,
		},
		{
			name:          "inconclusive: a NaN baseline is a baseline without data",
			check:         ratioCheck(name, 0, vsBaseline(rollout.MeasureDelta, 0.05)),
			m:             meas(name, okR(0.5, 200), okR(0.01, 2000), baseline(okR(math.NaN(), 10))),
			want:          rollout.Inconclusive,
			wantMessage:   "nothing to compare with: the baseline has no data and no other guard applies at this step",
			wantThreshold: "",
			wantDecision:  rollout.Pause,
		},
		{
			name:  "inconclusive: both references missing lists both reasons",
			check: ratioCheck(name, 0, vsStable(rollout.MeasureDelta, 0.01), vsBaseline(rollout.MeasureDelta, 0.05)),
			m:     meas(name, okR(0.01, 200), noDataR("none"), nil),
			want:  rollout.Inconclusive, wantMessage: "no stable data: none; baseline not captured yet",
			wantDecision: rollout.Pause,
		},
		{
			name:          "fail: a failing guard wins over a missing reference",
			check:         ratioCheck(name, 10, vsBaseline(rollout.MeasureDelta, 0.05), vsStable(rollout.MeasureDelta, 0.01)),
			m:             meas(name, okR(0.2, 200), okR(0.005, 2000), nil),
			want:          rollout.Fail,
			wantThreshold: "canary - stable < 0.01",
			wantDecision:  rollout.Pause,
		},
		{
			name:          "fail: value equal to max (bounds are exclusive)",
			check:         valueCheck(name, 10, valueGuard(nil, num(0.7))),
			m:             meas(name, okR(0.7, 0), okR(0.1, 0), nil),
			want:          rollout.Fail,
			wantThreshold: "canary < 0.7",
			wantDecision:  rollout.Pause,
		},
		{
			name:          "pass: value just below max",
			check:         valueCheck(name, 10, valueGuard(nil, num(0.7))),
			m:             meas(name, okR(math.Nextafter(0.7, 0), 0), okR(0.1, 0), nil),
			want:          rollout.Pass,
			wantThreshold: "canary < 0.7",
			wantDecision:  rollout.Proceed,
		},
		{
			name:          "fail: value equal to min (bounds are exclusive)",
			check:         valueCheck(name, 10, valueGuard(num(0.2), nil)),
			m:             meas(name, okR(0.2, 0), okR(0.1, 0), nil),
			want:          rollout.Fail,
			wantThreshold: "canary > 0.2",
			wantDecision:  rollout.Pause,
		},
		{
			name:          "pass: value strictly between min and max",
			check:         valueCheck(name, 10, valueGuard(num(0.2), num(0.8))),
			m:             meas(name, okR(0.5, 0), okR(0.1, 0), nil),
			want:          rollout.Pass,
			wantThreshold: "0.2 < canary < 0.8",
			wantDecision:  rollout.Proceed,
		},
		{
			name:          "fail: value below min of a min-max guard",
			check:         valueCheck(name, 10, valueGuard(num(0.2), num(0.8))),
			m:             meas(name, okR(0.1, 0), okR(0.1, 0), nil),
			want:          rollout.Fail,
			wantThreshold: "0.2 < canary < 0.8",
			wantDecision:  rollout.Pause,
		},
		{
			name:          "fail: delta vs baseline",
			check:         ratioCheck(name, 10, vsBaseline(rollout.MeasureDelta, 0.05)),
			m:             meas(name, okR(0.06, 200), okR(0.06, 2000), baseline(okR(0.005, 5000))),
			want:          rollout.Fail,
			wantThreshold: "canary - baseline < 0.05",
			wantDecision:  rollout.Pause,
			wantReason:    "c: canary 6% vs baseline 0.5% (canary - baseline < 0.05 failed once, limit 10)",
		},
		{
			name:          "pass: delta vs baseline within max",
			check:         ratioCheck(name, 10, vsBaseline(rollout.MeasureDelta, 0.05)),
			m:             meas(name, okR(0.05, 200), okR(0.06, 2000), baseline(okR(0.005, 5000))),
			want:          rollout.Pass,
			wantThreshold: "canary - baseline < 0.05",
			wantDecision:  rollout.Proceed,
		},
		{
			name:          "fail: ratio vs stable above max",
			check:         histCheck(name, 10, vsStable(rollout.MeasureRatio, 1.1)),
			m:             meas(name, okR(0.3, 200), okR(0.25, 2000), nil),
			want:          rollout.Fail,
			wantThreshold: "canary / stable < 1.1",
			wantDecision:  rollout.Pause,
			wantReason:    "c: canary 0.3s vs stable 0.25s (canary / stable < 1.1 failed once, limit 10)",
		},
		{
			name:          "pass: ratio vs stable within max",
			check:         histCheck(name, 10, vsStable(rollout.MeasureRatio, 1.1)),
			m:             meas(name, okR(0.26, 200), okR(0.25, 2000), nil),
			want:          rollout.Pass,
			wantThreshold: "canary / stable < 1.1",
			wantDecision:  rollout.Proceed,
		},
		{
			name:          "pass: ratio with min and max vs baseline",
			check:         valueCheck(name, 10, rollout.Guard{Against: rollout.AgainstBaseline, Measure: rollout.MeasureRatio, Min: num(0.9), Max: num(1.1)}),
			m:             meas(name, okR(1.05, 0), okR(1, 0), baseline(okR(1, 0))),
			want:          rollout.Pass,
			wantThreshold: "0.9 < canary / baseline < 1.1",
			wantDecision:  rollout.Proceed,
		},
		{
			name:          "pass: ratio 0/0 counts as 1",
			check:         histCheck(name, 10, vsStable(rollout.MeasureRatio, 1.1)),
			m:             meas(name, okR(0, 200), okR(0, 2000), nil),
			want:          rollout.Pass,
			wantThreshold: "canary / stable < 1.1",
			wantDecision:  rollout.Proceed,
		},
		{
			name:          "fail: ratio x/0 counts as +Inf",
			check:         histCheck(name, 10, vsStable(rollout.MeasureRatio, 1.1)),
			m:             meas(name, okR(0.1, 200), okR(0, 2000), nil),
			want:          rollout.Fail,
			wantThreshold: "canary / stable < 1.1",
			wantDecision:  rollout.Pause,
		},
		{
			name:          "pass: ratio x/0 is above any min",
			check:         valueCheck(name, 10, rollout.Guard{Against: rollout.AgainstBaseline, Measure: rollout.MeasureRatio, Min: num(0.5)}),
			m:             meas(name, okR(0.1, 0), okR(0, 0), baseline(okR(0, 0))),
			want:          rollout.Pass,
			wantThreshold: "canary / baseline > 0.5",
			wantDecision:  rollout.Proceed,
		},
		{
			name:         "error: a check without a measurement",
			check:        ratioCheck(name, 0, vsStable(rollout.MeasureDelta, 0.01)),
			m:            meas("some-other-check", okR(0.01, 200), okR(0.01, 2000), nil),
			want:         rollout.Error,
			wantMessage:  "canary: not measured",
			wantDecision: rollout.Pause,
		},
		{
			name:         "nodata: a NaN canary value is no data, not a failure",
			check:        valueCheck(name, 0, valueGuard(nil, num(0.7))),
			m:            meas(name, okR(math.NaN(), 0), okR(0.1, 0), nil),
			want:         rollout.NoData,
			wantDecision: rollout.Pause,
		},
		{
			name:         "inconclusive: a NaN stable value is no stable data",
			check:        valueCheck(name, 0, vsStable(rollout.MeasureDelta, 0.7)),
			m:            meas(name, okR(0.1, 0), okR(math.NaN(), 0), nil),
			want:         rollout.Inconclusive,
			wantDecision: rollout.Pause,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			input := in(tmpl(tc.check), tc.m)
			if tc.step != 0 {
				input.Step = tc.step
			}
			if tc.weight != 0 {
				input.Weight = tc.weight
			}
			res := Decide(input)
			require.Len(t, res.Checks, 1)
			got := res.Checks[0]
			require.Equal(t, name, got.Metric)
			require.Equal(t, tc.want, got.Outcome, "message: %s", got.Message)
			if tc.wantMessage != "" {
				require.Equal(t, tc.wantMessage, got.Message)
			}
			if tc.want == rollout.Pass || tc.want == rollout.Fail || tc.wantThreshold != "" {
				require.Equal(t, tc.wantThreshold, got.Threshold)
			}
			require.Equal(t, tc.wantDecision, res.Decision, "reason: %s", res.Reason)
			if tc.wantReason != "" {
				require.Equal(t, tc.wantReason, res.Reason)
			}
			if res.Decision != rollout.Proceed {
				require.Contains(t, res.Reason, name+": ")
			}
			wantFailures := 0
			if tc.want == rollout.Fail {
				wantFailures = 1
			}
			require.Equal(t, wantFailures, res.Evidence.Checks[name].Failures)
		})
	}
}

// TestCheckResultNumbers pins the numbers a verdict's check carries and when they are null.
func TestCheckResultNumbers(t *testing.T) {
	check := ratioCheck("error-rate", 5, vsStable(rollout.MeasureDelta, 0.01), critical(vsBaseline(rollout.MeasureDelta, 0.05)))
	for _, tc := range []struct {
		name          string
		m             rollout.Measurement
		canary        *float64
		stable        *float64
		baseline      *float64
		delta         *float64
		relativeDelta *float64
		samples       rollout.Samples
		threshold     string
	}{
		{
			name:          "contract example",
			m:             meas("error-rate", okR(0.052, 1830), okR(0.004, 16470), baseline(okR(0.003, 90000))),
			canary:        num(0.052),
			stable:        num(0.004),
			baseline:      num(0.003),
			delta:         num(0.048),
			relativeDelta: num(12),
			samples:       rollout.Samples{Canary: 1830, Stable: 16470},
			threshold:     "canary - stable < 0.01",
		},
		{
			name:      "all passing: the threshold lists every active guard",
			m:         meas("error-rate", okR(0.004, 1830), okR(0.004, 16470), baseline(okR(0.003, 90000))),
			canary:    num(0.004),
			stable:    num(0.004),
			baseline:  num(0.003),
			delta:     num(0),
			samples:   rollout.Samples{Canary: 1830, Stable: 16470},
			threshold: "canary - stable < 0.01; canary - baseline < 0.05",
			// relativeDelta = 0/0.004 = 0
			relativeDelta: num(0),
		},
		{
			name:      "stable zero: relativeDelta is null, delta is not",
			m:         meas("error-rate", okR(0.002, 1830), okR(0, 16470), baseline(okR(0, 90000))),
			canary:    num(0.002),
			stable:    num(0),
			baseline:  num(0),
			delta:     num(0.002),
			samples:   rollout.Samples{Canary: 1830, Stable: 16470},
			threshold: "canary - stable < 0.01; canary - baseline < 0.05",
		},
		{
			name:      "canary nodata: canary, delta and relativeDelta are null",
			m:         meas("error-rate", noDataR("no requests"), okR(0.004, 16470), baseline(okR(0.003, 90000))),
			stable:    num(0.004),
			baseline:  num(0.003),
			samples:   rollout.Samples{Stable: 16470},
			threshold: "canary - stable < 0.01; canary - baseline < 0.05",
		},
		{
			name:      "stable error: stable, delta and relativeDelta are null",
			m:         meas("error-rate", okR(0.004, 1830), errR("timeout"), baseline(okR(0.003, 90000))),
			canary:    num(0.004),
			baseline:  num(0.003),
			samples:   rollout.Samples{Canary: 1830},
			threshold: "canary - stable < 0.01; canary - baseline < 0.05",
		},
		{
			name:          "baseline not captured: baseline is null",
			m:             meas("error-rate", okR(0.004, 1830), okR(0.004, 16470), nil),
			canary:        num(0.004),
			stable:        num(0.004),
			delta:         num(0),
			relativeDelta: num(0),
			samples:       rollout.Samples{Canary: 1830, Stable: 16470},
			threshold:     "canary - stable < 0.01; canary - baseline < 0.05",
		},
		{
			name:          "baseline nodata: baseline is null, its guard skipped",
			m:             meas("error-rate", okR(0.004, 1830), okR(0.002, 16470), baseline(noDataR("none"))),
			canary:        num(0.004),
			stable:        num(0.002),
			delta:         num(0.002),
			relativeDelta: num(1),
			samples:       rollout.Samples{Canary: 1830, Stable: 16470},
			threshold:     "canary - stable < 0.01",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := Decide(in(tmpl(check), tc.m))
			require.Len(t, res.Checks, 1)
			got := res.Checks[0]
			requireNum(t, "canary", tc.canary, got.Canary)
			requireNum(t, "stable", tc.stable, got.Stable)
			requireNum(t, "baseline", tc.baseline, got.Baseline)
			requireNum(t, "delta", tc.delta, got.Delta)
			requireNum(t, "relativeDelta", tc.relativeDelta, got.RelativeDelta)
			require.Equal(t, tc.samples, got.Samples)
			require.Equal(t, tc.threshold, got.Threshold)
		})
	}
}

func requireNum(t *testing.T, field string, want, got *float64) {
	t.Helper()
	if want == nil {
		require.Nil(t, got, "%s should be null", field)
		return
	}
	require.NotNil(t, got, "%s should not be null", field)
	require.InDelta(t, *want, *got, 1e-9, field)
}

// TestCheckResultNumbersAreFinite: a verdict must encode as JSON, which has no NaN or Inf.
// TestBaselineDeltas: the canary is compared with the baseline as with stable, each number
// null where it cannot be computed.
func TestBaselineDeltas(t *testing.T) {
	check := ratioCheck("error-rate", 5, vsStable(rollout.MeasureDelta, 0.01), critical(vsBaseline(rollout.MeasureDelta, 0.05)))
	got := Decide(in(tmpl(check), meas("error-rate", okR(0.052, 1830), okR(0.004, 16470), baseline(okR(0.004, 90000))))).Checks[0]
	require.InDelta(t, 0.048, *got.BaselineDelta, 1e-12)
	require.InDelta(t, 12, *got.BaselineRelativeDelta, 1e-9)

	got = Decide(in(tmpl(check), meas("error-rate", okR(0.002, 1830), okR(0.004, 16470), baseline(okR(0, 90000))))).Checks[0]
	require.InDelta(t, 0.002, *got.BaselineDelta, 1e-12)
	require.Nil(t, got.BaselineRelativeDelta, "relative to a zero baseline")

	got = Decide(in(tmpl(check), meas("error-rate", okR(0.002, 1830), okR(0.004, 16470), nil))).Checks[0]
	require.Nil(t, got.BaselineDelta, "baseline not captured")
	require.Nil(t, got.BaselineRelativeDelta)

	got = Decide(in(tmpl(check), meas("error-rate", noDataR("none"), okR(0.004, 16470), baseline(okR(0.004, 90000))))).Checks[0]
	require.Nil(t, got.BaselineDelta, "no canary")
}

func TestCheckResultNumbersAreFinite(t *testing.T) {
	check := valueCheck("v", 10, vsStable(rollout.MeasureDelta, 1))
	res := Decide(in(tmpl(check), meas("v", okR(math.MaxFloat64, 0), okR(-math.MaxFloat64, 0), baseline(okR(math.Inf(1), 0)))))
	got := res.Checks[0]
	require.NotNil(t, got.Canary)
	require.NotNil(t, got.Stable)
	require.Nil(t, got.Baseline, "an infinite baseline is not a number JSON can carry")
	require.Nil(t, got.Delta, "an overflowing delta is not a number JSON can carry")
	require.Equal(t, rollout.Fail, got.Outcome)
}

// TestCriticalRollsBackAtOnce: a critical guard that fails rolls back on the first failure
// whatever the failure limit; a non-critical guard of the same size does not.
func TestCriticalRollsBackAtOnce(t *testing.T) {
	m := meas("error-rate", okR(0.075, 2000), okR(0.07, 20000), baseline(okR(0.003, 90000)))

	res := Decide(in(tmpl(ratioCheck("error-rate", 100, vsStable(rollout.MeasureDelta, 0.01), critical(vsBaseline(rollout.MeasureDelta, 0.05)))), m))
	require.Equal(t, rollout.Rollback, res.Decision)
	require.Equal(t, "error-rate: canary 7.5% vs baseline 0.3% (critical: canary - baseline < 0.05 failed)", res.Reason)
	require.True(t, res.Evidence.RolledBack)
	require.Equal(t, res.Reason, res.Evidence.RollbackReason)
	require.Equal(t, 1, res.Evidence.Checks["error-rate"].Failures)

	res = Decide(in(tmpl(ratioCheck("error-rate", 100, vsStable(rollout.MeasureDelta, 0.01), vsBaseline(rollout.MeasureDelta, 0.05))), m))
	require.Equal(t, rollout.Pause, res.Decision)
	require.False(t, res.Evidence.RolledBack)
}

// TestFailureLimit: failures are counted across evaluations, carry over in the evidence (also
// across steps and through passing evaluations), and roll back only once they exceed the limit.
func TestFailureLimit(t *testing.T) {
	template := tmpl(histCheck("latency-p95", 2, vsStable(rollout.MeasureRatio, 1.1)))
	failing := meas("latency-p95", okR(0.33, 2000), okR(0.25, 20000), nil)
	passing := meas("latency-p95", okR(0.25, 2000), okR(0.25, 20000), nil)

	type eval struct {
		m        rollout.Measurement
		step     int
		decision rollout.Decision
		failures int
		reason   string
	}
	evals := []eval{
		{failing, 1, rollout.Pause, 1, "latency-p95: canary 0.33s vs stable 0.25s (canary / stable < 1.1 failed once, limit 2)"},
		{passing, 1, rollout.Proceed, 1, "all 1 checks pass after 2m0s at step 1 (weight 10%)"},
		{failing, 2, rollout.Pause, 2, "latency-p95: canary 0.33s vs stable 0.25s (canary / stable < 1.1 failed 2 times, limit 2)"},
		{passing, 3, rollout.Proceed, 2, "all 1 checks pass after 2m0s at step 3 (weight 10%)"},
		{failing, 3, rollout.Rollback, 3, "latency-p95: canary 0.33s vs stable 0.25s (canary / stable < 1.1 failed 3 times, limit 2)"},
		// Rollback is final: passing evidence later does not undo it, and the reason stays.
		{passing, 4, rollout.Rollback, 3, "latency-p95: canary 0.33s vs stable 0.25s (canary / stable < 1.1 failed 3 times, limit 2)"},
		{failing, 4, rollout.Rollback, 4, "latency-p95: canary 0.33s vs stable 0.25s (canary / stable < 1.1 failed 3 times, limit 2)"},
	}
	var ev Evidence
	for i, e := range evals {
		input := in(template, e.m)
		input.Step, input.Evidence = e.step, ev
		res := Decide(input)
		require.Equal(t, e.decision, res.Decision, "evaluation %d: %s", i, res.Reason)
		require.Equal(t, e.failures, res.Evidence.Checks["latency-p95"].Failures, "evaluation %d", i)
		require.Equal(t, e.reason, res.Reason, "evaluation %d", i)
		ev = res.Evidence
	}
}

// TestFailureLimitZero: the default limit rolls back on the first failure.
func TestFailureLimitZero(t *testing.T) {
	res := Decide(in(tmpl(valueCheck("cpu", 0, valueGuard(nil, num(0.7)))), meas("cpu", okR(0.85, 0), okR(0.5, 0), nil)))
	require.Equal(t, rollout.Rollback, res.Decision)
	require.Equal(t, "cpu: canary 0.85 (canary < 0.7 failed once, limit 0)", res.Reason)
}

// TestRolledBackIsFinal: evidence that says rolled back gives rollback with the original reason
// whatever the measurements, and the checks are still explained.
func TestRolledBackIsFinal(t *testing.T) {
	template := tmpl(ratioCheck("error-rate", 0, vsStable(rollout.MeasureDelta, 0.01)))
	input := in(template, meas("error-rate", okR(0.001, 5000), okR(0.001, 50000), nil))
	input.Now = input.StepStarted.Add(time.Hour)
	input.Evidence = Evidence{RolledBack: true, RollbackReason: "the original reason", Checks: failures(map[string]int{"error-rate": 1})}
	res := Decide(input)
	require.Equal(t, rollout.Rollback, res.Decision)
	require.Equal(t, "the original reason", res.Reason)
	require.Equal(t, rollout.Pass, res.Checks[0].Outcome)
	require.Equal(t, input.Evidence.RollbackReason, res.Evidence.RollbackReason)
	require.True(t, res.Evidence.RolledBack)
}

// TestMinStepDuration: proceed needs every check passing and the step at least minStepDuration old.
func TestMinStepDuration(t *testing.T) {
	template := tmpl(ratioCheck("error-rate", 0, vsStable(rollout.MeasureDelta, 0.01)))
	m := meas("error-rate", okR(0.001, 5000), okR(0.001, 50000), nil)
	for _, tc := range []struct {
		age      time.Duration
		decision rollout.Decision
		reason   string
	}{
		{-time.Second, rollout.Pause, "step 1 has lasted -1s of the 1m0s it needs"},
		{0, rollout.Pause, "step 1 has lasted 0s of the 1m0s it needs"},
		{59*time.Second + 999*time.Millisecond, rollout.Pause, "step 1 has lasted 59s of the 1m0s it needs"},
		{time.Minute, rollout.Proceed, "all 1 checks pass after 1m0s at step 1 (weight 10%)"},
		{time.Hour, rollout.Proceed, "all 1 checks pass after 1h0m0s at step 1 (weight 10%)"},
	} {
		t.Run(tc.age.String(), func(t *testing.T) {
			input := in(template, m)
			input.Now = input.StepStarted.Add(tc.age)
			res := Decide(input)
			require.Equal(t, tc.decision, res.Decision)
			require.Equal(t, tc.reason, res.Reason)
		})
	}
}

// TestPauseReasonPriority: with several reasons to wait, the most pressing one is given: an
// error, then no data, then a failure within its limit, then thin evidence; among checks with
// the same outcome, the first in template order.
func TestPauseReasonPriority(t *testing.T) {
	guard := vsStable(rollout.MeasureDelta, 0.01)
	checks := map[rollout.Outcome]rollout.Check{
		rollout.Error:        ratioCheck("erroring", 5, guard),
		rollout.NoData:       ratioCheck("empty", 5, guard),
		rollout.Fail:         ratioCheck("failing", 5, guard),
		rollout.Inconclusive: ratioCheck("thin", 5, guard),
		rollout.Pass:         ratioCheck("fine", 5, guard),
	}
	measurements := map[rollout.Outcome]rollout.Measurement{
		rollout.Error:        meas("erroring", errR("unreachable"), okR(0, 5000), nil),
		rollout.NoData:       meas("empty", noDataR("no requests"), okR(0, 5000), nil),
		rollout.Fail:         meas("failing", okR(0.5, 5000), okR(0, 5000), nil),
		rollout.Inconclusive: meas("thin", okR(0, 10), okR(0, 5000), nil),
		rollout.Pass:         meas("fine", okR(0, 5000), okR(0, 5000), nil),
	}
	for _, tc := range []struct {
		order  []rollout.Outcome
		reason string
	}{
		{[]rollout.Outcome{rollout.Pass, rollout.Inconclusive, rollout.Fail, rollout.NoData, rollout.Error}, "erroring: canary: unreachable"},
		{[]rollout.Outcome{rollout.Inconclusive, rollout.Fail, rollout.NoData, rollout.Pass}, "empty: no canary data: no requests"},
		{[]rollout.Outcome{rollout.Inconclusive, rollout.Pass, rollout.Fail}, "failing: canary 50% vs stable 0% (canary - stable < 0.01 failed once, limit 5)"},
		{[]rollout.Outcome{rollout.Pass, rollout.Inconclusive}, "thin: 10 of the 100 canary samples it needs"},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			template := tmpl()
			var ms []rollout.Measurement
			for _, o := range tc.order {
				template.Checks = append(template.Checks, checks[o])
				ms = append(ms, measurements[o])
			}
			res := Decide(in(template, ms...))
			require.Equal(t, rollout.Pause, res.Decision)
			require.Equal(t, tc.reason, res.Reason)
			for i, o := range tc.order {
				require.Equal(t, o, res.Checks[i].Outcome, res.Checks[i].Metric)
			}
		})
	}

	// Within one outcome, the first check in template order gives the reason.
	template := tmpl(ratioCheck("b", 0, guard), ratioCheck("a", 0, guard))
	res := Decide(in(template, meas("a", errR("x"), okR(0, 1), nil), meas("b", errR("y"), okR(0, 1), nil)))
	require.Equal(t, "b: canary: y", res.Reason)
}

// TestRollbackReasons is the golden list of rollback reasons, as controllers and SREs read them.
func TestRollbackReasons(t *testing.T) {
	for _, tc := range []struct {
		name     string
		check    rollout.Check
		m        rollout.Measurement
		failures int
		want     string
	}{
		{
			name:  "ratio, critical vs baseline, also failing vs stable",
			check: ratioCheck("error-rate", 2, vsStable(rollout.MeasureDelta, 0.01), critical(vsBaseline(rollout.MeasureDelta, 0.05))),
			m:     meas("error-rate", okR(0.075, 2000), okR(0.004, 20000), baseline(okR(0.003, 90000))),
			want:  "error-rate: canary 7.5% vs baseline 0.3% (critical: canary - baseline < 0.05 failed)",
		},
		{
			name:     "ratio, failure limit exceeded vs stable",
			check:    ratioCheck("error-rate", 2, vsStable(rollout.MeasureDelta, 0.01), critical(vsBaseline(rollout.MeasureDelta, 0.05))),
			m:        meas("error-rate", okR(0.052, 1830), okR(0.004, 16470), baseline(okR(0.003, 90000))),
			failures: 2,
			want:     "error-rate: canary 5.2% vs stable 0.4% (canary - stable < 0.01 failed 3 times, limit 2)",
		},
		{
			name:  "histogram, critical ratio vs baseline",
			check: histCheck("latency-p99", 2, fromWeight(vsStable(rollout.MeasureRatio, 1.15), 50), critical(vsBaseline(rollout.MeasureRatio, 2))),
			m:     meas("latency-p99", okR(1.2, 2000), okR(0.5, 20000), baseline(okR(0.45, 90000))),
			want:  "latency-p99: canary 1.2s vs baseline 0.45s (critical: canary / baseline < 2 failed)",
		},
		{
			name:  "value, bounds on the value itself",
			check: valueCheck("restarts", 0, critical(valueGuard(nil, num(5)))),
			m:     meas("restarts", okR(6, 0), okR(0, 0), nil),
			want:  "restarts: canary 6 (critical: canary < 5 failed)",
		},
		{
			name:  "value, min and max vs baseline",
			check: valueCheck("memory", 0, rollout.Guard{Against: rollout.AgainstBaseline, Measure: rollout.MeasureRatio, Min: num(0.9), Max: num(1.1)}),
			m:     meas("memory", okR(1.3333333, 0), okR(1, 0), baseline(okR(1, 0))),
			want:  "memory: canary 1.3333 vs baseline 1 (0.9 < canary / baseline < 1.1 failed once, limit 0)",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			input := in(tmpl(tc.check), tc.m)
			if tc.failures > 0 {
				input.Evidence.Checks = failures(map[string]int{tc.check.Name: tc.failures})
			}
			res := Decide(input)
			require.Equal(t, rollout.Rollback, res.Decision)
			require.Equal(t, tc.want, res.Reason)
			require.Equal(t, tc.want, res.Evidence.RollbackReason)
		})
	}
}

// TestNoChecksEmptyEvidence: the zero Evidence is a valid first input.
func TestZeroEvidence(t *testing.T) {
	res := Decide(in(tmpl(valueCheck("v", 0, valueGuard(nil, num(1)))), meas("v", okR(0.5, 0), okR(0.5, 0), nil)))
	require.Equal(t, rollout.Proceed, res.Decision)
	require.Zero(t, res.Evidence.Checks["v"].Failures)
	require.False(t, res.Evidence.RolledBack)
}

// --- property tests ---

// randomInput builds an input with 1..4 checks of every kind, random guards, readings of
// every status, and random evidence.
func randomInput(r *rand.Rand) Input {
	kinds := []rollout.CheckKind{rollout.KindRatio, rollout.KindHistogram, rollout.KindValue}
	reading := func() rollout.Reading {
		switch r.IntN(7) {
		case 0:
			return errR("boom")
		case 1:
			return noDataR("nothing")
		case 2:
			return okR(0, r.Int64N(300))
		case 3:
			return okR(math.NaN(), r.Int64N(300))
		default:
			return okR(r.Float64()*2-0.5, r.Int64N(300))
		}
	}
	bound := func() *float64 {
		if r.IntN(3) == 0 {
			return nil
		}
		return num(r.Float64()*2 - 0.5)
	}
	var tm rollout.Template
	tm.MinStepDuration = time.Duration(r.IntN(120)) * time.Second
	in := Input{Step: r.IntN(4), Weight: r.IntN(101), StepStarted: t0}
	in.Now = t0.Add(time.Duration(r.IntN(180)-10) * time.Second)
	n := 1 + r.IntN(4)
	for i := 0; i < n; i++ {
		c := rollout.Check{Name: fmt.Sprintf("c%d", i), Kind: kinds[r.IntN(len(kinds))], MinSamples: r.Int64N(200), FailureLimit: r.IntN(3)}
		for g := 0; g < 1+r.IntN(3); g++ {
			guard := rollout.Guard{Max: bound(), Min: bound(), Critical: r.IntN(4) == 0, FromStep: r.IntN(3), FromWeight: r.IntN(60)}
			switch r.IntN(3) {
			case 0:
				guard.Measure = rollout.MeasureValue
			case 1:
				guard.Against, guard.Measure = rollout.AgainstStable, []rollout.Measure{rollout.MeasureDelta, rollout.MeasureRatio}[r.IntN(2)]
			default:
				guard.Against, guard.Measure = rollout.AgainstBaseline, []rollout.Measure{rollout.MeasureDelta, rollout.MeasureRatio}[r.IntN(2)]
			}
			if guard.Max == nil && guard.Min == nil {
				guard.Max = num(1)
			}
			c.Guards = append(c.Guards, guard)
		}
		tm.Checks = append(tm.Checks, c)
		if r.IntN(10) == 0 {
			continue // not measured
		}
		m := rollout.Measurement{Check: c.Name, Canary: reading(), Stable: reading()}
		if r.IntN(3) > 0 {
			b := reading()
			m.Baseline = &b
		}
		in.Measurements = append(in.Measurements, m)
	}
	if r.IntN(2) == 0 {
		in.Evidence.Checks = map[string]CheckEvidence{}
		for _, c := range tm.Checks {
			if r.IntN(2) == 0 {
				in.Evidence.Checks[c.Name] = CheckEvidence{Failures: r.IntN(4), ConsecutiveErrors: r.IntN(6)}
			}
		}
	}
	if r.IntN(10) == 0 {
		in.Evidence.RolledBack, in.Evidence.RollbackReason = true, "earlier"
	}
	in.Template = tm
	return in
}

func copyInput(in Input) Input {
	out := in
	out.Measurements = nil
	for _, m := range in.Measurements {
		if m.Baseline != nil {
			b := *m.Baseline
			m.Baseline = &b
		}
		out.Measurements = append(out.Measurements, m)
	}
	out.Evidence = in.Evidence.clone()
	return out
}

// snapshot prints everything an input holds, following pointers (NaN != NaN defeats
// reflect.DeepEqual, so inputs are compared as text).
func snapshot(in Input) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%+v step=%d weight=%d %s %s evidence=%+v\n", in.Template, in.Step, in.Weight, in.StepStarted, in.Now, in.Evidence)
	for _, c := range in.Template.Checks {
		for _, g := range c.Guards {
			if g.Min != nil {
				fmt.Fprintf(&b, "min=%v ", *g.Min)
			}
			if g.Max != nil {
				fmt.Fprintf(&b, "max=%v ", *g.Max)
			}
		}
	}
	for _, m := range in.Measurements {
		fmt.Fprintf(&b, "\n%s canary=%+v stable=%+v", m.Check, m.Canary, m.Stable)
		if m.Baseline != nil {
			fmt.Fprintf(&b, " baseline=%+v", *m.Baseline)
		}
	}
	return b.String()
}

// missingData reports whether a reading the check's outcome rests on is an error or has no
// data: the canary side always; the stable side when an active guard compares with it; the
// baseline when an active guard compares with it and it is not captured or failed. (A baseline
// captured without data skips its guards: there is no history to compare with.)
func missingData(in Input, c rollout.Check) bool {
	var m *rollout.Measurement
	for i := range in.Measurements {
		if in.Measurements[i].Check == c.Name {
			m = &in.Measurements[i]
		}
	}
	has := func(r rollout.Reading) bool { return r.OK() && !math.IsNaN(r.Value) }
	enough := func(r rollout.Reading) bool { return c.Kind == rollout.KindValue || r.Samples >= c.MinSamples }
	if m == nil || !has(m.Canary) {
		return true
	}
	// Stated independently of how Decide skips guards: a check whose active conditions for
	// proceeding (non-critical guards) include one against a baseline has data only when at
	// least one guard compares the canary with a reference that has data and enough
	// samples; a stable reference that lacks either, or a baseline not (yet) captured, is
	// missing data outright. Critical guards are brakes, not conditions: a thin baseline
	// only mutes them.
	active, compared := 0, 0
	for _, g := range c.Guards {
		if !g.Active(in.Step, in.Weight) {
			continue
		}
		active++
		switch g.Against {
		case rollout.AgainstStable:
			if !has(m.Stable) || !enough(m.Stable) {
				return true
			}
			compared++
		case rollout.AgainstBaseline:
			if m.Baseline == nil || m.Baseline.Status == rollout.StatusError {
				return true
			}
			if has(*m.Baseline) && enough(*m.Baseline) {
				compared++
			} else if g.Critical {
				active-- // a muted brake is no condition
			}
		default:
			compared++
		}
	}
	return active > 0 && compared == 0
}

const propertyRuns = 20000

func TestPropertyNeverProceedOnMissingData(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < propertyRuns; i++ {
		input := randomInput(r)
		res := Decide(input)
		for j, c := range input.Template.Checks {
			if missingData(input, c) {
				require.NotEqual(t, rollout.Proceed, res.Decision, "run %d: check %s lacks data: %+v", i, c.Name, input)
				require.NotEqual(t, rollout.Pass, res.Checks[j].Outcome, "run %d: check %s lacks data", i, c.Name)
			}
			if res.Checks[j].Outcome == rollout.Error || res.Checks[j].Outcome == rollout.NoData {
				require.NotEqual(t, rollout.Proceed, res.Decision, "run %d", i)
			}
		}
		if res.Decision == rollout.Proceed {
			require.False(t, input.Evidence.RolledBack)
			require.GreaterOrEqual(t, input.Now.Sub(input.StepStarted), input.Template.MinStepDuration)
			for _, cr := range res.Checks {
				require.Equal(t, rollout.Pass, cr.Outcome)
			}
		}
	}
}

func TestPropertyDeterministic(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < propertyRuns; i++ {
		input := randomInput(r)
		require.Equal(t, Decide(copyInput(input)), Decide(copyInput(input)), "run %d", i)
	}
}

func TestPropertyDoesNotMutateInput(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < propertyRuns; i++ {
		input := randomInput(r)
		before := snapshot(input)
		res := Decide(input)
		require.Equal(t, before, snapshot(input), "run %d", i)
		// The returned evidence is a fresh map: changing it does not reach the input.
		for k, ce := range res.Evidence.Checks {
			ce.Failures += 100
			res.Evidence.Checks[k] = ce
		}
		res.Evidence.Checks["new"] = CheckEvidence{Failures: 1}
		require.Equal(t, before, snapshot(input), "run %d", i)
	}
}

func TestPropertyFailuresCountFailedChecks(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < propertyRuns; i++ {
		input := randomInput(r)
		res := Decide(input)
		require.Len(t, res.Checks, len(input.Template.Checks))
		for j, c := range input.Template.Checks {
			require.Equal(t, c.Name, res.Checks[j].Metric)
			want := input.Evidence.Checks[c.Name].Failures
			if res.Checks[j].Outcome == rollout.Fail {
				want++
			}
			require.Equal(t, want, res.Evidence.Checks[c.Name].Failures, "run %d", i)
		}
		if input.Evidence.RolledBack {
			require.Equal(t, rollout.Rollback, res.Decision)
			require.Equal(t, input.Evidence.RollbackReason, res.Reason)
		}
		require.Equal(t, res.Decision == rollout.Rollback, res.Evidence.RolledBack, "run %d", i)
		require.NotEmpty(t, res.Reason)
	}
}

func TestPropertyCriticalFailureRollsBack(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for i := 0; i < propertyRuns; i++ {
		input := randomInput(r)
		// Make one check measurable and give it an active critical guard its canary breaks.
		k := r.IntN(len(input.Template.Checks))
		c := &input.Template.Checks[k]
		canary := r.Float64()
		m := rollout.Measurement{Check: c.Name, Canary: okR(canary, c.MinSamples+r.Int64N(10)), Stable: okR(r.Float64(), 1000)}
		b := okR(r.Float64(), 1000)
		m.Baseline = &b
		replaced := false
		for j := range input.Measurements {
			if input.Measurements[j].Check == c.Name {
				input.Measurements[j], replaced = m, true
			}
		}
		if !replaced {
			input.Measurements = append(input.Measurements, m)
		}
		guards := append([]rollout.Guard(nil), c.Guards...)
		c.Guards = append(guards, rollout.Guard{Measure: rollout.MeasureValue, Max: num(canary - r.Float64()), Critical: true})
		res := Decide(input)
		require.Equal(t, rollout.Fail, res.Checks[k].Outcome, "run %d", i)
		require.Equal(t, rollout.Rollback, res.Decision, "run %d", i)
		if !input.Evidence.RolledBack {
			require.Contains(t, res.Reason, ": canary ", "run %d", i)
			require.Equal(t, res.Reason, res.Evidence.RollbackReason, "run %d", i)
		}
	}
}

func TestLimitsTranslateGuardsToTheCanarysValue(t *testing.T) {
	r := rollout.CheckResult{Stable: num(0.004), Baseline: num(0.2)}
	got := limitsOf([]rollout.Guard{
		{Against: rollout.AgainstStable, Measure: rollout.MeasureDelta, Max: num(0.01)},
		{Against: rollout.AgainstBaseline, Measure: rollout.MeasureRatio, Min: num(0.9), Max: num(1.1)},
		{Max: num(0.7)},
	}, r)
	require.Len(t, got, 3)
	require.Equal(t, "canary - stable < 0.01", got[0].Guard)
	require.Nil(t, got[0].Min)
	require.InDelta(t, 0.014, *got[0].Max, 1e-12)
	require.InDelta(t, 0.18, *got[1].Min, 1e-12)
	require.InDelta(t, 0.22, *got[1].Max, 1e-12)
	require.InDelta(t, 0.7, *got[2].Max, 1e-12)

	// No stable value yet: the guard is listed without a bound.
	got = limitsOf([]rollout.Guard{{Against: rollout.AgainstStable, Measure: rollout.MeasureDelta, Max: num(0.01)}}, rollout.CheckResult{})
	require.Len(t, got, 1)
	require.Nil(t, got[0].Max)
	require.Nil(t, limitsOf(nil, r))
}

// TestVerdictsCarryTheGuardsLimits: each check of a verdict carries its active guards as
// bounds on the canary's value, for a value check and for a counter check alike.
func TestVerdictsCarryTheGuardsLimits(t *testing.T) {
	cpu := rollout.Check{Name: "cpu", Kind: rollout.KindValue, Query: "q",
		Guards: []rollout.Guard{vsStable(rollout.MeasureRatio, 1.5), {Max: num(0.7)}}}
	errs := seqRatio("error-rate", 0.25)
	errs.Guards = []rollout.Guard{vsStable(rollout.MeasureDelta, 0.01)}
	base := counted(5, 1000)
	res := Decide(in(tmpl(cpu, errs),
		rollout.Measurement{Check: "cpu", Canary: okR(0.5, 10), Stable: okR(0.4, 10)},
		rollout.Measurement{Check: "error-rate", Canary: counted(4, 2000), Stable: counted(36, 18000), Baseline: &base,
			Through: t0.Add(2 * time.Minute), ScrapeInterval: time.Second},
	))
	require.Len(t, res.Checks, 2)
	byName := map[string]rollout.CheckResult{}
	for _, c := range res.Checks {
		byName[c.Metric] = c
	}
	l := byName["cpu"].Limits
	require.Len(t, l, 2)
	require.InDelta(t, 0.6, *l[0].Max, 1e-12, "1.5 x stable's 0.4")
	require.InDelta(t, 0.7, *l[1].Max, 1e-12)
	l = byName["error-rate"].Limits
	require.Len(t, l, 1)
	require.Equal(t, "canary - stable < 0.01", l[0].Guard)
	require.InDelta(t, 0.002+0.01, *l[0].Max, 1e-12, "stable's 0.2% plus a point")
}
