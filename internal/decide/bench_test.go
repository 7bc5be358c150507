package decide

import (
	"math"
	"testing"
	"time"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// BenchmarkDecide is one evaluation of a rollout with the shipped template's shape: a ratio
// check and two histogram checks, each with its sequential test, guards and baseline. It is
// the per-rollout cost the daemon pays every interval (10,000 rollouts at a 10 s interval
// leave 2 ms per decision on one core).
func BenchmarkDecide(b *testing.B) {
	on := true
	seq := func() *rollout.Sequential { return &rollout.Sequential{Enabled: &on} }
	ratio := ratioCheck("error-rate", 2, vsStable(rollout.MeasureDelta, 0.01), critical(vsBaseline(rollout.MeasureDelta, 0.05)))
	ratio.Sequential = seq()
	p95 := histCheck("latency-p95", 2, vsStable(rollout.MeasureRatio, 1.1), critical(vsBaseline(rollout.MeasureRatio, 1.25)))
	p95.Sequential = seq()
	p99 := histCheck("latency-p99", 2, fromWeight(vsStable(rollout.MeasureRatio, 1.15), 50), critical(vsBaseline(rollout.MeasureRatio, 2)))
	p99.Quantile, p99.Sequential = 0.99, seq()
	template := tmpl(ratio, p95, p99)
	inf := math.Inf(1)
	hist := func(n float64) rollout.Reading { // its buckets counted, as compare measures them
		return withCounts(rollout.Reading{Status: rollout.StatusOK, Value: 0.09, Samples: int64(n), Buckets: []rollout.Bucket{
			{UpperBound: 0.025, Count: n * 0.01}, {UpperBound: 0.05, Count: n * 0.5}, {UpperBound: 0.1, Count: n * 0.97},
			{UpperBound: 0.25, Count: n * 0.995}, {UpperBound: 0.5, Count: n * 0.999}, {UpperBound: 1, Count: n}, {UpperBound: inf, Count: n}}})
	}
	base := counted(3000, 600000)
	baseHist := hist(600000)
	in := Input{Template: template, Weight: 10, StepStarted: t0, Now: t0}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		n := float64(i + 1)
		in.Now = in.Now.Add(10 * time.Second)
		in.Measurements = []rollout.Measurement{
			{Check: "error-rate", Canary: counted(5*n, 1000*n), Stable: counted(45*n, 9000*n), Baseline: &base},
			{Check: "latency-p95", Canary: hist(1000 * n), Stable: hist(9000 * n), Baseline: &baseHist},
			{Check: "latency-p99", Canary: hist(1000 * n), Stable: hist(9000 * n), Baseline: &baseHist},
		}
		res := Decide(in)
		in.Evidence = res.Evidence
	}
}
