package ui

import (
	"fmt"
	"time"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

var t0 = time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)

func f(v float64) *float64 { return &v }

// demoHistory is a rollout like the demo's: step 0 at 10% that proceeds, then step 1 at 50%,
// where the canary either stays healthy and proceeds, or fails 9% of its requests and is
// rolled back once the e-value reaches 1/alpha (300).
func demoHistory(rollback bool) History {
	ref := rollout.Ref{Namespace: "demo", Name: "checkout"}
	var vs []rollout.Verdict
	at := t0
	seq := uint64(0)
	add := func(step, weight int, d rollout.Decision, reason string, checks ...rollout.CheckResult) {
		seq++
		vs = append(vs, rollout.Verdict{
			Rollout: ref, Revision: "v2", Step: step, Weight: weight, Verdict: d, Reason: reason, Sequence: seq,
			Checks: checks, DecidedAt: at, Cause: fmt.Sprintf("demo-%d", step+1), TraceID: fmt.Sprintf("%032x", seq),
		})
		at = at.Add(2 * time.Second)
	}
	errRate := func(canary, stable, e float64, o rollout.Outcome) rollout.CheckResult {
		return rollout.CheckResult{
			Metric: "error-rate", Outcome: o, Canary: f(canary), Stable: f(stable), Baseline: f(0.0049),
			Delta: f(canary - stable), Threshold: "canary - stable < 0.01; canary rate <= 1.25 x stable (e-value < 300)",
			Samples: rollout.Samples{Canary: 1000, Stable: 9000}, EValue: f(e), EValueThreshold: f(300),
			Limits: []rollout.Limit{{Guard: "canary - stable < 0.01", Max: f(stable + 0.01)}},
		}
	}
	cpu := func(v float64) rollout.CheckResult {
		return rollout.CheckResult{Metric: "cpu", Outcome: rollout.Pass, Canary: f(v), Stable: f(0.4), Threshold: "canary < 0.7",
			Limits: []rollout.Limit{{Guard: "canary < 0.7", Max: f(0.7)}}}
	}
	add(0, 10, rollout.Pause, "error-rate: no canary data: no samples yet",
		rollout.CheckResult{Metric: "error-rate", Outcome: rollout.NoData, Stable: f(0.005), Baseline: f(0.0049), EValue: f(1), EValueThreshold: f(300), Message: "no canary data"},
		cpu(0.41))
	for i := range 6 {
		add(0, 10, rollout.Pause, "error-rate: not yet shown below 1.25 x stable", errRate(0.0045+0.0002*float64(i%3), 0.005, 1+0.1*float64(i), rollout.Inconclusive), cpu(0.42))
	}
	add(0, 10, rollout.Proceed, "all 2 checks pass", errRate(0.0048, 0.005, 1.2, rollout.Pass), cpu(0.43))
	if !rollback {
		for i := range 5 {
			add(1, 50, rollout.Pause, "error-rate: not yet shown below 1.25 x stable", errRate(0.005, 0.0051, 1.3+0.2*float64(i), rollout.Inconclusive), cpu(0.45))
		}
		add(1, 50, rollout.Proceed, "all 2 checks pass", errRate(0.0049, 0.005, 1.8, rollout.Pass), cpu(0.45))
		return NewHistory(ref, vs)
	}
	for _, e := range []float64{2, 9, 40} {
		add(1, 50, rollout.Pause, "error-rate: canary 9.18% vs stable 0.62% (canary - stable < 0.01 failed once, limit 2)", errRate(0.0918, 0.0062, e, rollout.Fail), cpu(0.47))
	}
	add(1, 50, rollout.Rollback, "error-rate: canary 9.68% vs stable 0.48% (e-value 2.68e+10 >= 300)", errRate(0.0968, 0.0048, 2.68e10, rollout.Fail), cpu(0.48))
	return NewHistory(ref, vs)
}
