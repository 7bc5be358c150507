package simulate

import (
	"bytes"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/config"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

func shipped(t *testing.T) rollout.Template {
	t.Helper()
	cfg, err := config.Load("../../configs/analyzerd.yaml")
	require.NoError(t, err)
	return cfg.Templates[0]
}

func options(t *testing.T, runs int) Options {
	return Options{Template: shipped(t), Runs: runs, Seed: 7, Scrape: 5 * time.Second, Weight: 10,
		Argo: DefaultArgo, Flagger: DefaultFlagger, ArgoFast: ArgoPolicy{Interval: 10 * time.Second, FailureLimit: 1, Count: 5}}
}

// TestRunIsDeterministic: the same seed gives the same figures whatever the parallelism; a
// different seed gives different traffic.
func TestRunIsDeterministic(t *testing.T) {
	var scenarios []Scenario // the 10x and 2x regressions: quick, and noisy enough
	for _, sc := range Benchmark() {
		if strings.Contains(sc.Name, "(10x)") || strings.Contains(sc.Name, "(2x)") {
			scenarios = append(scenarios, sc)
		}
	}
	require.Len(t, scenarios, 2)
	opts := options(t, 40)
	opts.Workers = 1
	one, err := Run(opts, scenarios)
	require.NoError(t, err)
	opts.Workers = 4
	four, err := Run(opts, scenarios)
	require.NoError(t, err)
	require.Equal(t, one, four)
	opts.Seed++
	other, err := Run(opts, scenarios)
	require.NoError(t, err)
	require.NotEqual(t, one[1].Times[Analyzerd], other[1].Times[Analyzerd])
}

// TestShippedTemplateMeetsItsTargets runs the benchmark at a tenth of its size and holds the
// shipped template to the targets, with room for the smaller sample: false rollbacks
// at most alpha, the 10x regression rolled back in a median of 15 s and 10 times faster than
// both threshold policies, the 2x one within 120 s.
func TestShippedTemplateMeetsItsTargets(t *testing.T) {
	if testing.Short() {
		t.Skip("simulates 100 runs of an hour per row")
	}
	results, err := Run(options(t, 100), Benchmark())
	require.NoError(t, err)
	byName := map[string]Result{}
	for _, r := range results {
		byName[r.Scenario.Name] = r
	}
	healthy := byName["healthy A/A, 0.5% errors: false rollbacks in 1 h"]
	require.LessOrEqual(t, healthy.Hits(Analyzerd), 3, "false rollbacks in 100 healthy runs")
	edge := byName["the same with margin 0 (the null's edge)"]
	require.LessOrEqual(t, edge.Hits(Analyzerd), 5, "at the null's edge, rollbacks stay near alpha")
	for _, name := range []string{"healthy, both sides down 10 s at 5 min: false rollbacks", "healthy, both sides at 20% errors 30 s: false rollbacks"} {
		require.LessOrEqual(t, byName[name].Hits(Analyzerd), 3, "%s: an outage both sides share is no evidence against the canary", name)
	}

	tenfold := byName["errors 0.5% -> 5% (10x): s to rollback"]
	require.Equal(t, 100, tenfold.Hits(Analyzerd))
	require.LessOrEqual(t, tenfold.Quantile(Analyzerd, 0.5), 15.0)
	require.GreaterOrEqual(t, tenfold.Quantile(Argo, 0.5), 10*tenfold.Quantile(Analyzerd, 0.5))
	require.GreaterOrEqual(t, tenfold.Quantile(Flagger, 0.5), 10*tenfold.Quantile(Analyzerd, 0.5))

	twofold := byName["errors 0.5% -> 1% (2x): s to rollback"]
	require.LessOrEqual(t, twofold.Quantile(Analyzerd, 0.5), 120.0)

	latency := byName["latency +30%: s to rollback"]
	require.Less(t, latency.Quantile(Analyzerd, 0.5), math.Inf(1))

	proceed := byName["healthy: s to first proceed"]
	require.Equal(t, 100, proceed.Hits(Analyzerd), "every healthy canary proceeds within the hour")
	require.GreaterOrEqual(t, proceed.Quantile(Analyzerd, 0), shipped(t).MinStepDuration.Seconds(), "never before minStepDuration")

	var out bytes.Buffer
	Write(&out, options(t, 100), results, nil)
	require.Contains(t, out.String(), "errors 0.5% -> 5% (10x): s to rollback, median")
	require.Contains(t, out.String(), "x)", "threshold policies carry their ratio to analyzerd's time")
}

func TestSimulatedLeavesValueChecksOut(t *testing.T) {
	tm := shipped(t)
	tm.Checks = append(tm.Checks, rollout.Check{Name: "cpu", Kind: rollout.KindValue, Query: "q"})
	got, left := Simulated(tm)
	require.Equal(t, []string{"cpu"}, left)
	require.Len(t, got.Checks, 3)
	tm.Checks = tm.Checks[3:]
	_, err := Run(Options{Template: tm, Runs: 1, Scrape: time.Second}, Benchmark())
	require.ErrorContains(t, err, "no ratio or histogram check")
}

// TestPoissonSampler: mean and variance of the samplers match their distributions.
func TestPoissonSampler(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, mean := range []float64{0.5, 3, 9.9, 10, 45, 500, 4500} {
		const n = 20000
		sum, sq := 0.0, 0.0
		for i := 0; i < n; i++ {
			x := poisson(r, mean)
			require.GreaterOrEqual(t, x, 0.0)
			require.Equal(t, math.Floor(x), x)
			sum += x
			sq += x * x
		}
		m := sum / n
		v := sq/n - m*m
		require.InDelta(t, mean, m, 5*math.Sqrt(mean/n), "mean %g", mean)
		require.InEpsilon(t, mean, v, 0.06, "variance %g", mean)
	}
	for _, tc := range []struct{ n, p float64 }{{30, 0.3}, {1000, 0.005}, {1000, 0.5}, {1000, 0.99}} {
		const draws = 20000
		sum := 0.0
		for i := 0; i < draws; i++ {
			k := binomial(r, tc.n, tc.p)
			require.True(t, k >= 0 && k <= tc.n)
			sum += k
		}
		require.InDelta(t, tc.n*tc.p, sum/draws, 5*math.Sqrt(tc.n*tc.p*(1-tc.p)/draws)+1e-9, "n=%g p=%g", tc.n, tc.p)
	}
}

// TestTrafficShares: the latency buckets' shares are a distribution, and scaling the median
// moves mass to slower buckets.
func TestTrafficShares(t *testing.T) {
	base := Traffic{LatencyMedian: DefaultLatencyMedian, LatencySpread: DefaultLatencySpread}
	slow := base
	slow.LatencyMedian *= 1.3
	sum := 0.0
	for _, p := range base.shares() {
		require.GreaterOrEqual(t, p, 0.0)
		sum += p
	}
	require.InDelta(t, 1, sum, 1e-12)
	above := func(tr Traffic, le float64) float64 {
		s := 0.0
		for i, p := range tr.shares() {
			if histogramBounds[i] > le {
				s += p
			}
		}
		return s
	}
	require.Greater(t, above(slow, 0.05), above(base, 0.05))
	require.InDelta(t, 0.5, above(base, 0.05), 1e-9, "the median is at 50 ms")
}
