package compare

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// TestBurstsOnOnePod: 75 errors in one scrape interval of one canary pod (10% of its
// requests for 15 s, against 0.5% elsewhere) are a burst; the canary's steady counts are its
// counts without that stretch, and the stable side is not searched.
func TestBurstsOnOnePod(t *testing.T) {
	a, aErr := pod("a", 3, 15, 50, 0.25)
	b, bErr := pod("b", 9, 15, 50, 0.25)
	aErr.bursts = [][2]float64{{40, 75}} // scraped by a at 33 and 48
	c, cErr := pod("c", 5, 15, 50, 0.25)
	d, dErr := pod("d", 12, 15, 50, 0.25)
	dErr.bursts = [][2]float64{{100, 75}} // stable's own, at another time
	canary := side{[]proc{a, b}, []proc{aErr, bErr}}
	stable := side{[]proc{c, d}, []proc{cErr, dErr}}

	m := measureRatio(canary, stable, 0, 120)
	counts := m.Canary.Counts
	require.Len(t, counts.Bursts, 1, "%+v", counts.Bursts)
	burst := counts.Bursts[0]
	require.Equal(t, "a", burst.Target)
	require.Equal(t, sec(33), burst.From)
	require.Equal(t, sec(48), burst.Through)
	require.InDelta(t, 75+15*0.25, burst.Events, 1e-9)
	require.InDelta(t, 0.011, burst.Rate, 0.003, "twice the other pods' 0.5% at the time")
	require.NotNil(t, counts.Steady)
	require.InDelta(t, counts.Events.Est-burst.Events, counts.Steady.Events.Est, 1e-9)
	require.InDelta(t, counts.Total.Est-burst.Total, counts.Steady.Total.Est, 1e-9)
	require.Nil(t, m.Stable.Counts.Bursts, "only the canary's counts are searched")
	require.Nil(t, m.Stable.Counts.Steady)

	// The same errors on every pod of both sides at once: an incident both share, not a
	// burst of one target.
	for _, p := range []*proc{&bErr, &cErr, &dErr} {
		p.bursts = [][2]float64{{40, 75}}
	}
	canary = side{[]proc{a, b}, []proc{aErr, bErr}}
	stable = side{[]proc{c, d}, []proc{cErr, dErr}}
	m = measureRatio(canary, stable, 0, 120)
	require.Nil(t, m.Canary.Counts.Bursts, "a shared incident: %+v", m.Canary.Counts.Bursts)
}

// TestNoBurstInARegression: a canary at 5% errors on every pod (a regression, ten times the
// stable side's rate) has no burst: no stretch stands out from the canary's own rate.
func TestNoBurstInARegression(t *testing.T) {
	a, aErr := pod("a", 3, 15, 50, 2.5)
	b, bErr := pod("b", 9, 15, 50, 2.5)
	c, cErr := pod("c", 5, 15, 50, 0.25)
	canary, stable := side{[]proc{a, b}, []proc{aErr, bErr}}, side{[]proc{c}, []proc{cErr}}
	for at := 20.0; at <= 300; at += 7 {
		m := measureRatio(canary, stable, 0, at)
		require.Nil(t, m.Canary.Counts.Bursts, "at %g", at)
		require.Nil(t, m.Canary.Counts.Steady, "at %g", at)
	}
}

// TestNoBurstInARegressionMidStep: both canary pods go from 0.5% to 5% errors a minute into
// the step: a regression of the whole canary, out of line with the canary's rate before but
// not with its other pod's at the same time, is no burst.
func TestNoBurstInARegressionMidStep(t *testing.T) {
	a, aErr := pod("a", 3, 15, 50, 0.25)
	b, bErr := pod("b", 9, 15, 50, 0.25)
	for at := 60.0; at < 300; at++ {
		aErr.bursts = append(aErr.bursts, [2]float64{at, 2.25})
		bErr.bursts = append(bErr.bursts, [2]float64{at, 2.25})
	}
	c, cErr := pod("c", 5, 15, 50, 0.25)
	canary, stable := side{[]proc{a, b}, []proc{aErr, bErr}}, side{[]proc{c}, []proc{cErr}}
	for at := 80.0; at <= 300; at += 7 {
		m := measureRatio(canary, stable, 0, at)
		require.Nil(t, m.Canary.Counts.Bursts, "at %g", at)
	}
}

// TestBurstsPoissonRarelyFound: Poisson traffic with no burst at all (two canary pods at 50
// req/s and 0.5% errors, scraped every 15 s, measured every 15 s over ten minutes) is found
// to hold a burst in few runs: a stretch is a burst at the 0.1% level.
func TestBurstsPoissonRarelyFound(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const runs = 200
	found := 0
	for range runs {
		var series []Series
		var errs []Series
		for p, offset := range []float64{3, 9} {
			name := []string{"a", "b"}[p]
			okS := Series{Labels: map[string]string{"pod": name, "code": "200"}}
			errS := Series{Labels: map[string]string{"pod": name, "code": "500"}}
			var ok, bad float64
			for t := offset - 300; t <= 600; t += 15 {
				n := poisson(r, 15*50)
				e := binomial(r, n, 0.005)
				ok, bad = ok+n-e, bad+e
				okS.Samples = append(okS.Samples, SampleAt(sec(t), ok))
				errS.Samples = append(errS.Samples, SampleAt(sec(t), bad))
			}
			series = append(series, okS, errS)
			errs = append(errs, errS)
		}
		any := false
		for at := 15.0; at <= 600; at += 15 {
			spans := Spans{From: sec(0), At: sec(at), Recent: time.Minute}
			canary := []Response{{Series: errs}, {Series: series}}
			m := MeasureCounters(ratioCheck, canary, canary, spans)
			if m.Canary.Counts != nil && len(m.Canary.Counts.Bursts) > 0 {
				any = true
			}
		}
		if any {
			found++
		}
	}
	t.Logf("runs with a burst found: %d of %d", found, runs)
	require.LessOrEqual(t, found, runs*3/100, "runs with a burst found in Poisson traffic: %d of %d", found, runs)
}

func poisson(r *rand.Rand, mean float64) float64 {
	// Normal approximation, enough for a mean of hundreds.
	return max(0, float64(int(mean+r.NormFloat64()*math.Sqrt(mean)+0.5)))
}

func binomial(r *rand.Rand, n, p float64) float64 {
	k := 0.0
	for i := 0; i < int(n); i++ {
		if r.Float64() < p {
			k++
		}
	}
	return k
}

// BenchmarkMeasureHistogramLongStep measures a p99 check's counting at the end of a 30-minute
// step: 2 canary pods and 4 stable pods, 12 buckets each, scraped every 15 s (the canary's
// counts cut into its pods' 240 stretches, searched for bursts).
func BenchmarkMeasureHistogramLongStep(b *testing.B) {
	les := []string{"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"}
	shares := []float64{0, 0, 0.01, 0.5, 0.9, 0.99, 0.999, 1, 1, 1, 1, 1}
	sideOf := func(names []string) []proc {
		var out []proc
		for i, name := range names {
			for j, le := range les {
				out = append(out, proc{labels: map[string]string{"pod": name, "le": le}, rate: 50 * shares[j], born: -3600,
					offset: float64(2*i + 1), every: 15})
			}
		}
		return out
	}
	canary, stable := sideOf([]string{"c0", "c1"}), sideOf([]string{"s0", "s1", "s2", "s3"})
	check := rollout.Check{Name: "latency-p99", Kind: rollout.KindHistogram, Quantile: 0.99, Buckets: "b"}
	spans := Spans{From: sec(0), At: sec(1800), Recent: time.Minute}
	rng := spans.rangeFor().Seconds()
	cr, sr := []Response{answer(canary, 1800, rng)}, []Response{answer(stable, 1800, rng)}
	b.ResetTimer()
	for range b.N {
		MeasureCounters(check, cr, sr, spans)
	}
}
