package decide

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// mwtSorted returns a sorted copy.
func mwtSorted(v []float64) []float64 {
	out := slices.Clone(v)
	slices.Sort(out)
	return out
}

// mwtBruteU counts the pairs with canary > stable, ties counting a half: U by its definition.
func mwtBruteU(x, y []float64) float64 {
	u := 0.0
	for _, a := range x {
		for _, b := range y {
			switch {
			case a > b:
				u++
			case a == b:
				u += 0.5
			}
		}
	}
	return u
}

// mwtBruteDiffs returns all pairwise differences canary - stable, sorted.
func mwtBruteDiffs(x, y []float64) []float64 {
	d := make([]float64, 0, len(x)*len(y))
	for _, a := range x {
		for _, b := range y {
			d = append(d, a-b)
		}
	}
	slices.Sort(d)
	return d
}

// mwtMedian is the median of a sorted slice.
func mwtMedian(d []float64) float64 {
	if len(d)%2 == 1 {
		return d[len(d)/2]
	}
	return d[len(d)/2-1]/2 + d[len(d)/2]/2
}

// mwtRanks returns the midranks of v (1-based) and the sizes of its tie groups.
func mwtRanks(v []float64) (ranks []float64, ties []float64) {
	idx := make([]int, len(v))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch {
		case v[a] < v[b]:
			return -1
		case v[a] > v[b]:
			return 1
		}
		return 0
	})
	ranks = make([]float64, len(v))
	for s := 0; s < len(idx); {
		e := s
		for e < len(idx) && v[idx[e]] == v[idx[s]] {
			e++
		}
		for k := s; k < e; k++ {
			ranks[idx[k]] = float64(s+e+1) / 2 // mean of ranks s+1..e
		}
		ties = append(ties, float64(e-s))
		s = e
	}
	return ranks, ties
}

// mwtRWdiff is R's wdiff from wilcox.test (two-sided, correct = TRUE), transcribed
// independently of the order-statistic shortcut: rank (x - d, y) with midranks, standardise
// the rank sum with its tie-corrected sigma and continuity correction, subtract zq.
func mwtRWdiff(x, y []float64, d, zq float64) float64 {
	pooled := make([]float64, 0, len(x)+len(y))
	for _, a := range x {
		pooled = append(pooled, a-d)
	}
	pooled = append(pooled, y...)
	ranks, ties := mwtRanks(pooled)
	nx, ny := float64(len(x)), float64(len(y))
	dz := -nx*(nx+1)/2 - nx*ny/2
	for i := range x {
		dz += ranks[i]
	}
	correction := 0.0
	switch {
	case dz > 0:
		correction = 0.5
	case dz < 0:
		correction = -0.5
	}
	t3 := 0.0
	for _, t := range ties {
		t3 += t*t*t - t
	}
	sigma := math.Sqrt(nx * ny / 12 * ((nx + ny + 1) - t3/((nx+ny)*(nx+ny-1))))
	return (dz-correction)/sigma - zq
}

// mwtRRoot is R's root(): the interval's end for zq, with R's endpoint rules, found by
// bisection to 1e-10 (R's uniroot stops at 1e-4).
func mwtRRoot(x, y []float64, zq float64) float64 {
	a := slices.Min(x) - slices.Max(y)
	b := slices.Max(x) - slices.Min(y)
	if mwtRWdiff(x, y, a, zq) <= 0 {
		return a
	}
	if mwtRWdiff(x, y, b, zq) >= 0 {
		return b
	}
	for b-a > 1e-10 {
		mid := a + (b-a)/2
		if mwtRWdiff(x, y, mid, zq) > 0 {
			a = mid
		} else {
			b = mid
		}
	}
	return a + (b-a)/2
}

// mwtExactPGreater is the exact one-sided p-value P(U >= u) of the rank-sum test without
// ties, by enumerating every assignment of the pooled points to the canary (N <= 20).
func mwtExactPGreater(x, y []float64) float64 {
	pooled := append(slices.Clone(x), y...)
	n, total := len(x), len(pooled)
	u := mwtBruteU(x, y)
	var hits, all float64
	for mask := 0; mask < 1<<total; mask++ {
		if mwtPopcount(mask) != n {
			continue
		}
		var cx, cy []float64
		for i, v := range pooled {
			if mask&(1<<i) != 0 {
				cx = append(cx, v)
			} else {
				cy = append(cy, v)
			}
		}
		all++
		if mwtBruteU(cx, cy) >= u {
			hits++
		}
	}
	return hits / all
}

func mwtPopcount(v int) int {
	c := 0
	for ; v != 0; v &= v - 1 {
		c++
	}
	return c
}

// mwtNormal draws n points of a normal distribution.
func mwtNormal(r *rand.Rand, n int, mean, sd float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = mean + sd*r.NormFloat64()
	}
	return v
}

// mwtLatency draws n log-normal points, shaped like latencies in milliseconds.
func mwtLatency(r *rand.Rand, n int, scale float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = scale * math.Exp(0.3*r.NormFloat64())
	}
	return v
}

// mwtBernoulli draws n points that are 1 with probability p, else 0.
func mwtBernoulli(r *rand.Rand, n int, p float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		if r.Float64() < p {
			v[i] = 1
		}
	}
	return v
}

func mwtScaled(v []float64, f float64) []float64 {
	out := slices.Clone(v)
	for i := range out {
		out[i] *= f
	}
	return out
}

func mwtShifted(v []float64, d float64) []float64 {
	out := slices.Clone(v)
	for i := range out {
		out[i] += d
	}
	return out
}

// TestMannWhitneyKayentaExample is the example of Kayenta's own MannWhitneySuite (which
// ties out with R's wilcox.test): canary 10, 20, 30, 40 against stable 1, 2, 3, 4 at
// confidence 0.95 gives the interval [6, 39] and the estimate 22.5. By hand: every canary
// point beats every stable point, so U = 16 of n·m = 16. The 16 differences are 6..9,
// 16..19, 26..29, 36..39; their median is (19+26)/2 = 22.5. σ² = 4·4/12·(4+4+1) = 12 (no
// ties); zσ = 1.95996·3.46410 = 6.7895, so kL = floor(8 - 0.5 - 6.7895) + 1 = 1 → D(1) = 6
// and kU = floor(8 + 0.5 + 6.7895) + 1 = 16 → D(16) = 39. p (normal, continuity-corrected)
// = 2·(1 - Φ((16 - 8 - 0.5)/√12)) = erfc(2.16506/√2) ≈ 0.03038 (R's exact p would be
// 2/70 = 0.02857). Kayenta's band is 0.25·22.5 = 5.625 < 6, and the effect size is
// 25/2.5 = 10: high.
func TestMannWhitneyKayentaExample(t *testing.T) {
	canary := []float64{10, 20, 30, 40}
	stable := []float64{1, 2, 3, 4}
	s := mwTest(canary, stable, 0.95)
	require.Equal(t, 16.0, s.u)

	r := JudgeMannWhitney(MannWhitneyConfig{Confidence: 0.95, MinPoints: 4}, canary, stable)
	require.Equal(t, MWHigh, r.Class)
	require.False(t, r.Critical)
	require.Equal(t, 6.0, r.Lower)
	require.Equal(t, 39.0, r.Upper)
	require.Equal(t, 22.5, r.Estimate)
	require.InDelta(t, 10.0, r.EffectSize, 1e-12)
	require.InDelta(t, math.Erfc(7.5/math.Sqrt(12)/math.Sqrt2), r.PValue, 1e-15)
	require.InDelta(t, 0.03038, r.PValue, 1e-5)
	require.Equal(t, 4, r.CanaryPoints)
	require.Equal(t, 4, r.StablePoints)

	// The other way round it is low, and neither for the direction that cannot fail.
	require.Equal(t, MWLow, JudgeMannWhitney(MannWhitneyConfig{Confidence: 0.95, MinPoints: 4}, stable, canary).Class)
	require.Equal(t, MWPass, JudgeMannWhitney(MannWhitneyConfig{Direction: "decrease", Confidence: 0.95, MinPoints: 4}, canary, stable).Class)
	require.Equal(t, MWPass, JudgeMannWhitney(MannWhitneyConfig{Direction: "increase", Confidence: 0.95, MinPoints: 4}, stable, canary).Class)
}

// TestMannWhitneyHollanderWolfe uses the data of R's ?wilcox.test example (Hollander &
// Wolfe, permeability constants of the human chorioamnion): R reports W = 35 and, with
// alternative "greater", the exact p-value 0.1272. Our U is R's W. The normal-approximation
// p-value (two-sided): σ² = 10·5·16/12 = 200/3, z = (35 - 25 - 0.5)/√(200/3) = 1.16351, p =
// erfc(z/√2) ≈ 0.2446, close to the exact two-sided 2·0.1272. Interval at 0.95: zσ =
// 1.95996·8.16497 = 16.0029, kL = floor(25 - 0.5 - 16.0029) + 1 = 9, kU = floor(25 + 0.5 +
// 16.0029) + 1 = 42, of the 50 sorted differences: [-0.15, 0.76] (the brute-force list
// below). The estimate is the mean of the 25th and 26th differences, (0.30 + 0.31)/2 = 0.305.
func TestMannWhitneyHollanderWolfe(t *testing.T) {
	canary := []float64{0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46}
	stable := []float64{1.15, 0.88, 0.90, 0.74, 1.21}

	s := mwTest(mwtSorted(canary), mwtSorted(stable), 0.95)
	require.Equal(t, 35.0, s.u)
	require.Equal(t, 35.0, mwtBruteU(canary, stable))
	require.InDelta(t, 0.1272, mwtExactPGreater(canary, stable), 5e-5)
	require.InDelta(t, math.Erfc(9.5/math.Sqrt(200.0/3)/math.Sqrt2), s.pValue, 1e-15)
	require.InDelta(t, 2*mwtExactPGreater(canary, stable), s.pValue, 0.015)

	d := mwtBruteDiffs(canary, stable)
	require.Len(t, d, 50)
	require.Equal(t, d[9-1], s.lower)
	require.Equal(t, d[42-1], s.upper)
	require.InDelta(t, -0.15, s.lower, 1e-12)
	require.InDelta(t, 0.76, s.upper, 1e-12)
	require.InDelta(t, 0.305, s.estimate, 1e-12)

	r := JudgeMannWhitney(MannWhitneyConfig{Confidence: 0.95, MinPoints: 5}, canary, stable)
	require.Equal(t, MWPass, r.Class) // the interval holds 0
	require.Equal(t, 10, r.CanaryPoints)
	require.Equal(t, 5, r.StablePoints)
}

// TestMannWhitneyTiesByHand checks midranks and the tie correction on a small example.
// Canary 2, 3, 3, 5 and stable 1, 2, 3, 4 pool to 1 2 2 3 3 3 4 5 with midranks 1, 2.5,
// 2.5, 5, 5, 5, 7, 8. The canary's rank sum is 2.5 + 5 + 5 + 8 = 20.5, so U = 20.5 - 4·5/2
// = 10.5 (pairs: 2 beats 1 and ties 2: 1.5; each 3 beats 1, 2 and ties 3: 2.5 twice; 5
// beats all 4: total 10.5). Tie groups 2 and 3 give Σ(t³-t) = 6 + 24 = 30, so σ² =
// 16/12·(9 - 30/56) = 79/7, and z = (10.5 - 8 - 0.5)/√(79/7).
func TestMannWhitneyTiesByHand(t *testing.T) {
	canary := []float64{2, 3, 3, 5}
	stable := []float64{1, 2, 3, 4}
	s := mwTest(canary, stable, 0.95)
	require.Equal(t, 10.5, s.u)
	require.Equal(t, 10.5, mwtBruteU(canary, stable))
	require.InDelta(t, math.Erfc(2/math.Sqrt(79.0/7)/math.Sqrt2), s.pValue, 1e-15)

	// The interval: within-sample ties are the two 3s of the canary only, Σ(t³-t) = 6, so
	// σ² = 16/12·(9 - 6/56) = 83/7; kL = floor(8 - 0.5 - 1.95996·√(83/7)) + 1 = 1 and kU =
	// 16: the whole range of differences, -2 .. 4. The median of the 16 differences
	// (-2 -1 -1 0 0 1 1 1 1 2 2 2 2 3 3 4) is 1.
	require.Equal(t, -2.0, s.lower)
	require.Equal(t, 4.0, s.upper)
	require.Equal(t, 1.0, s.estimate)
}

// TestMannWhitneyAgreesWithBruteForce compares the statistic, the estimate and the interval
// with independent brute-force computations on many random samples, with and without ties:
// U against pair counting, the estimate against the median of all sorted differences, and
// the interval against a transcription of R's wdiff/root (ranks, bisection). The p-value is
// checked against its formula with the brute-force U and tie counts.
func TestMannWhitneyAgreesWithBruteForce(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 400 {
		n, m := 1+r.IntN(25), 1+r.IntN(25)
		x, y := make([]float64, n), make([]float64, m)
		levels := []int{3, 6, 20, 1 << 30}[trial%4] // heavy ties .. no ties
		shift := float64(r.IntN(5) - 2)
		for i := range x {
			x[i] = float64(r.IntN(levels)) + shift
			if levels == 1<<30 {
				x[i] = r.NormFloat64() + shift/2
			}
		}
		for i := range y {
			y[i] = float64(r.IntN(levels))
			if levels == 1<<30 {
				y[i] = r.NormFloat64()
			}
		}
		conf := []float64{0.9, 0.95, 0.98, 0.99}[trial%4]
		xs, ys := mwtSorted(x), mwtSorted(y)
		s := mwTest(xs, ys, conf)

		require.Equal(t, mwtBruteU(x, y), s.u, "trial %d", trial)
		d := mwtBruteDiffs(x, y)
		require.Equal(t, mwtMedian(d), s.estimate, "trial %d", trial)

		_, ties := mwtRanks(append(slices.Clone(x), y...))
		nx, ny := float64(n), float64(m)
		t3 := 0.0
		for _, c := range ties {
			t3 += c*c*c - c
		}
		if v := nx * ny / 12 * ((nx + ny + 1) - t3/((nx+ny)*(nx+ny-1))); v > 0 {
			dz := s.u - nx*ny/2
			z := (dz - math.Copysign(0.5, dz)) / math.Sqrt(v)
			if dz == 0 {
				z = 0
			}
			want := math.Min(1, 2*math.Min(0.5*math.Erfc(z/math.Sqrt2), 0.5*math.Erfc(-z/math.Sqrt2)))
			require.InDelta(t, want, s.pValue, 1e-12, "trial %d", trial)
		} else {
			require.Equal(t, 1.0, s.pValue, "trial %d", trial)
		}

		zq := math.Sqrt2 * math.Erfinv(conf)
		require.InDelta(t, mwtRRoot(x, y, zq), s.lower, 1e-8, "trial %d lower", trial)
		require.InDelta(t, mwtRRoot(x, y, -zq), s.upper, 1e-8, "trial %d upper", trial)
		require.LessOrEqual(t, s.lower, s.estimate)
		require.LessOrEqual(t, s.estimate, s.upper)
		require.Contains(t, d, s.lower)
		require.Contains(t, d, s.upper)
	}
}

// TestMannWhitneySelection checks the selection of order statistics of the pairwise
// differences against sorting them all, for every k, on shapes that exercise its rounds
// (including heavy ties and very unequal sizes).
func TestMannWhitneySelection(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for trial := range 60 {
		n, m := 1+r.IntN(90), 1+r.IntN(90)
		if trial%5 == 0 {
			n = 1 + r.IntN(3)
		}
		levels := []int{2, 5, 50, 1 << 30}[trial%4]
		x, y := make([]float64, n), make([]float64, m)
		for i := range x {
			x[i] = float64(r.IntN(levels))
		}
		for i := range y {
			y[i] = float64(r.IntN(levels)) / 3
		}
		p := mwPairs{x: mwtSorted(x), y: mwtSorted(y)}
		d := mwtBruteDiffs(x, y)
		for k := range d {
			require.Equal(t, d[k], p.kth(int64(k+1)), "trial %d k %d", trial, k+1)
		}
	}
	// A large case is fast: 2000 × 2000 = 4 million differences, never materialised.
	x, y := mwtLatency(r, 2000, 100), mwtLatency(r, 2000, 110)
	s := mwTest(mwtSorted(x), mwtSorted(y), 0.98)
	require.Less(t, s.lower, s.estimate)
	require.Less(t, s.estimate, s.upper)
}

// TestMannWhitneyShiftDetection: a large shift is high for increase and either, low for
// decrease, and never the class a direction cannot fail.
func TestMannWhitneyShiftDetection(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	stable := mwtNormal(r, 30, 100, 5)
	up := mwtShifted(mwtNormal(r, 30, 100, 5), 50)
	down := mwtShifted(mwtNormal(r, 30, 100, 5), -50)
	for _, tc := range []struct {
		direction string
		canary    []float64
		want      MannWhitneyClass
	}{
		{"", up, MWHigh},
		{"either", up, MWHigh},
		{"increase", up, MWHigh},
		{"decrease", up, MWPass},
		{"either", down, MWLow},
		{"decrease", down, MWLow},
		{"increase", down, MWPass},
	} {
		res := JudgeMannWhitney(MannWhitneyConfig{Direction: tc.direction}, tc.canary, stable)
		require.Equal(t, tc.want, res.Class, "direction %q", tc.direction)
		require.Less(t, res.PValue, 1e-6)
		if tc.canary[0] > 120 {
			require.InDelta(t, 50, res.Estimate, 5)
			require.Greater(t, res.Lower, 0.0)
		} else {
			require.InDelta(t, -50, res.Estimate, 5)
			require.Less(t, res.Upper, 0.0)
		}
	}
}

// TestMannWhitneyIdenticalDistributionsPass is the false-positive rate: canary and stable
// drawn from one distribution pass in at least 95% of seeded trials at confidence 0.95 (the
// tolerance band makes the judge more conservative than the bare test), and in at least 98%
// at the default 0.98.
func TestMannWhitneyIdenticalDistributionsPass(t *testing.T) {
	const trials = 2000
	for _, tc := range []struct {
		confidence, least float64
	}{{0.95, 0.95}, {0, 0.98}} {
		passes, significant := 0, 0
		for seed := range uint64(trials) {
			r := rand.New(rand.NewPCG(seed, 7))
			n, m := 10+r.IntN(50), 10+r.IntN(50)
			res := JudgeMannWhitney(MannWhitneyConfig{Confidence: tc.confidence}, mwtLatency(r, n, 100), mwtLatency(r, m, 100))
			if res.Class == MWPass {
				passes++
			}
			conf := tc.confidence
			if conf == 0 {
				conf = mwDefaultConfidence
			}
			if res.PValue < 1-conf {
				significant++
			}
		}
		rate := float64(passes) / trials
		t.Logf("confidence %g: pass rate %.4f, p-values below 1-confidence %.4f", tc.confidence, rate, float64(significant)/trials)
		require.GreaterOrEqual(t, rate, tc.least)
		// The p-value is calibrated too: about 1-confidence of them fall below it.
		require.Less(t, float64(significant)/trials, 1.5*(1-tc.least))
	}
}

// TestMannWhitneyEffectSizeGates: a significant 5% increase is high by default, passes when
// 10% is allowed, and is critical only from its critical threshold.
func TestMannWhitneyEffectSizeGates(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 9))
	stable := mwtNormal(r, 60, 100, 1)
	canary := mwtNormal(r, 60, 105, 1)

	def := JudgeMannWhitney(MannWhitneyConfig{}, canary, stable)
	require.Equal(t, MWHigh, def.Class)
	require.False(t, def.Critical)
	require.InDelta(t, 1.05, def.EffectSize, 0.01)
	require.Greater(t, def.Lower, 0.25*def.Estimate)

	tolerated := JudgeMannWhitney(MannWhitneyConfig{AllowedIncrease: 1.1}, canary, stable)
	require.Equal(t, MWPass, tolerated.Class, "significant but within allowedIncrease")
	require.Greater(t, tolerated.Lower, 0.0)
	require.Less(t, tolerated.PValue, 1e-9)

	// At the allowed effect size exactly it is high (Kayenta: deviation >= allowedIncrease).
	atLimit := JudgeMannWhitney(MannWhitneyConfig{AllowedIncrease: def.EffectSize}, canary, stable)
	require.Equal(t, MWHigh, atLimit.Class)

	require.True(t, JudgeMannWhitney(MannWhitneyConfig{CriticalIncrease: 1.04}, canary, stable).Critical)
	require.True(t, JudgeMannWhitney(MannWhitneyConfig{CriticalIncrease: def.EffectSize}, canary, stable).Critical)
	require.False(t, JudgeMannWhitney(MannWhitneyConfig{CriticalIncrease: 1.5}, canary, stable).Critical)

	// Downward, mirrored: a 50% drop is low; allowedDecrease 0.4 tolerates it; critical at 0.6.
	low := mwtScaled(stable, 0.5)
	require.Equal(t, MWLow, JudgeMannWhitney(MannWhitneyConfig{}, low, stable).Class)
	require.Equal(t, MWPass, JudgeMannWhitney(MannWhitneyConfig{AllowedDecrease: 0.4}, low, stable).Class)
	crit := JudgeMannWhitney(MannWhitneyConfig{CriticalDecrease: 0.6}, low, stable)
	require.Equal(t, MWLow, crit.Class)
	require.True(t, crit.Critical)
	require.InDelta(t, 0.5, crit.EffectSize, 1e-12)
	require.False(t, JudgeMannWhitney(MannWhitneyConfig{CriticalDecrease: 0.4}, low, stable).Critical)
	// A critical threshold of the other direction does not make a low critical.
	require.False(t, JudgeMannWhitney(MannWhitneyConfig{CriticalIncrease: 1.01}, low, stable).Critical)
}

// TestMannWhitneyUndefinedEffectSize: when a mean is zero (or negative) the effect size is
// NaN, its gates are skipped (Kayenta), and the class never is NaN or anything unnamed.
func TestMannWhitneyUndefinedEffectSize(t *testing.T) {
	zeros := make([]float64, 20)
	errorsUp := slices.Repeat([]float64{3}, 20)
	r := JudgeMannWhitney(MannWhitneyConfig{AllowedIncrease: 5, CriticalIncrease: 10}, errorsUp, zeros)
	require.True(t, math.IsNaN(r.EffectSize))
	require.Equal(t, MWHigh, r.Class, "significant, the effect size gate is skipped")
	require.True(t, r.Critical, "an undefined effect size counts as critical (Kayenta)")
	require.False(t, JudgeMannWhitney(MannWhitneyConfig{}, errorsUp, zeros).Critical, "no critical threshold: not critical")

	// Negative means: the ratio would invert, so it is undefined; the ranks decide.
	neg := JudgeMannWhitney(MannWhitneyConfig{}, mwtShifted(zeros, -1), mwtShifted(zeros, -2))
	require.True(t, math.IsNaN(neg.EffectSize))
	require.Equal(t, MWHigh, neg.Class)
}

// TestMannWhitneyDegenerate covers the samples whose variance is zero somewhere.
func TestMannWhitneyDegenerate(t *testing.T) {
	ones := slices.Repeat([]float64{1}, 12)
	twos := slices.Repeat([]float64{2}, 15)
	zeros := make([]float64, 12)

	// One value on both sides: pass, effect size 1 (Kayenta), p-value 1.
	for _, v := range [][]float64{ones, zeros} {
		r := JudgeMannWhitney(MannWhitneyConfig{}, v, slices.Repeat(v[:1], 20))
		require.Equal(t, MWPass, r.Class)
		require.Equal(t, 1.0, r.EffectSize)
		require.Equal(t, 1.0, r.PValue)
		require.Equal(t, 0.0, r.Estimate)
		require.Equal(t, 0.0, r.Lower)
		require.Equal(t, 0.0, r.Upper)
	}

	// One value on each side, different: every difference is 1; Kayenta adds noise to get
	// there, this is its limit. High, with the effect size 2.
	r := JudgeMannWhitney(MannWhitneyConfig{}, twos, ones)
	require.Equal(t, MWHigh, r.Class)
	require.Equal(t, 2.0, r.EffectSize)
	require.Equal(t, [3]float64{1, 1, 1}, [3]float64{r.Lower, r.Estimate, r.Upper})
	require.Less(t, r.PValue, 1e-6)
	require.Equal(t, MWLow, JudgeMannWhitney(MannWhitneyConfig{}, ones, twos).Class)

	// Identical samples in another order: pass, effect size 1, interval around 0.
	rr := rand.New(rand.NewPCG(10, 11))
	a := mwtLatency(rr, 25, 50)
	b := slices.Clone(a)
	slices.Reverse(b)
	id := JudgeMannWhitney(MannWhitneyConfig{}, a, b)
	require.Equal(t, MWPass, id.Class)
	require.Equal(t, 1.0, id.EffectSize)
	require.Equal(t, 0.0, id.Estimate)
	require.LessOrEqual(t, id.Lower, 0.0)
	require.GreaterOrEqual(t, id.Upper, 0.0)
}

// TestMannWhitneyMinPoints: a side with fewer than MinPoints finite points is nodata, with
// no numbers but the counts.
func TestMannWhitneyMinPoints(t *testing.T) {
	r := rand.New(rand.NewPCG(12, 13))
	nine, ten := mwtLatency(r, 9, 100), mwtLatency(r, 10, 300)

	res := JudgeMannWhitney(MannWhitneyConfig{}, nine, ten)
	require.Equal(t, MWNoData, res.Class)
	require.False(t, res.Critical)
	require.Equal(t, 9, res.CanaryPoints)
	require.Equal(t, 10, res.StablePoints)
	for _, v := range []float64{res.EffectSize, res.Estimate, res.Lower, res.Upper, res.PValue} {
		require.True(t, math.IsNaN(v))
	}
	require.Equal(t, MWNoData, JudgeMannWhitney(MannWhitneyConfig{}, ten, nine).Class)
	require.Equal(t, MWNoData, JudgeMannWhitney(MannWhitneyConfig{}, nil, ten).Class)
	require.Equal(t, MWNoData, JudgeMannWhitney(MannWhitneyConfig{}, ten, nil).Class)
	require.Equal(t, MWLow, JudgeMannWhitney(MannWhitneyConfig{MinPoints: 9}, nine, ten).Class)

	// NaNs do not count: ten points with one NaN are nine.
	withNaN := append(slices.Clone(nine), math.NaN())
	res = JudgeMannWhitney(MannWhitneyConfig{}, withNaN, ten)
	require.Equal(t, MWNoData, res.Class)
	require.Equal(t, 9, res.CanaryPoints)
}

// TestMannWhitneyNaNsRemoved: NaN and infinite points are removed; what remains is judged
// as if they had never been there, in any order.
func TestMannWhitneyNaNsRemoved(t *testing.T) {
	r := rand.New(rand.NewPCG(14, 15))
	canary, stable := mwtLatency(r, 30, 200), mwtLatency(r, 25, 100)
	want := JudgeMannWhitney(MannWhitneyConfig{}, canary, stable)

	dirtyC := slices.Insert(slices.Clone(canary), 3, math.NaN(), math.Inf(1))
	dirtyC = append(dirtyC, math.NaN())
	dirtyS := slices.Insert(slices.Clone(stable), 0, math.Inf(-1), math.NaN())
	slices.Reverse(dirtyS)
	got := JudgeMannWhitney(MannWhitneyConfig{}, dirtyC, dirtyS)
	require.Equal(t, want, got)
	require.Equal(t, 30, got.CanaryPoints)
	require.Equal(t, 25, got.StablePoints)
	require.Equal(t, MWHigh, got.Class)
}

// TestMannWhitneyInputsUnmodifiedAndDeterministic: the inputs are left as they were
// (bit for bit, NaNs included), and the result depends on the points, not their order.
func TestMannWhitneyInputsUnmodifiedAndDeterministic(t *testing.T) {
	r := rand.New(rand.NewPCG(16, 17))
	canary := append(mwtLatency(r, 40, 100), math.NaN(), 3, math.Inf(1))
	stable := append(mwtLatency(r, 40, 100), math.NaN())
	bits := func(v []float64) []uint64 {
		out := make([]uint64, len(v))
		for i, f := range v {
			out[i] = math.Float64bits(f)
		}
		return out
	}
	cb, sb := bits(canary), bits(stable)
	first := JudgeMannWhitney(MannWhitneyConfig{}, canary, stable)
	require.Equal(t, cb, bits(canary))
	require.Equal(t, sb, bits(stable))

	for range 20 {
		c, s := slices.Clone(canary), slices.Clone(stable)
		r.Shuffle(len(c), func(i, j int) { c[i], c[j] = c[j], c[i] })
		r.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
		require.Equal(t, bits([]float64{first.EffectSize, first.Estimate, first.Lower, first.Upper, first.PValue}),
			bits(func(x MannWhitneyResult) []float64 {
				return []float64{x.EffectSize, x.Estimate, x.Lower, x.Upper, x.PValue}
			}(JudgeMannWhitney(MannWhitneyConfig{}, c, s))))
	}

	cfg := MannWhitneyConfig{Direction: "increase", AllowedIncrease: 1.2}
	before := cfg
	JudgeMannWhitney(cfg, canary, stable)
	_ = cfg.Validate()
	require.Equal(t, before, cfg)
}

// TestMannWhitneyNeverUnnamedClass throws odd inputs at the judge: every class is one of
// the four, and only high and low can be critical.
func TestMannWhitneyNeverUnnamedClass(t *testing.T) {
	r := rand.New(rand.NewPCG(18, 19))
	odd := []float64{0, -0.0, 1, -1, 1e-300, -1e-300, 1e300, -1e300, math.MaxFloat64, -math.MaxFloat64,
		math.SmallestNonzeroFloat64, math.NaN(), math.Inf(1), math.Inf(-1)}
	cfgs := []MannWhitneyConfig{{}, {Direction: "increase", CriticalIncrease: 1}, {Direction: "decrease", CriticalDecrease: 1},
		{Confidence: 0.5, MinPoints: 3}, {Confidence: math.NaN(), MinPoints: -4, AllowedIncrease: math.Inf(1), Direction: "sideways"}}
	for trial := range 3000 {
		draw := func() []float64 {
			v := make([]float64, r.IntN(30))
			for i := range v {
				if r.IntN(2) == 0 {
					v[i] = odd[r.IntN(len(odd))]
				} else {
					v[i] = r.NormFloat64() * 10
				}
			}
			return v
		}
		res := JudgeMannWhitney(cfgs[trial%len(cfgs)], draw(), draw())
		require.Contains(t, []MannWhitneyClass{MWPass, MWHigh, MWLow, MWNoData}, res.Class)
		if res.Critical {
			require.Contains(t, []MannWhitneyClass{MWHigh, MWLow}, res.Class)
		}
		if res.Class != MWNoData {
			require.False(t, math.IsNaN(res.PValue))
			require.GreaterOrEqual(t, res.PValue, 0.0)
			require.LessOrEqual(t, res.PValue, 1.0)
		}
	}
}

func TestMannWhitneyValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  MannWhitneyConfig
		want []string // the errors' prefixes, in order
	}{
		{MannWhitneyConfig{}, nil},
		{MannWhitneyConfig{Direction: "increase", Confidence: 0.95, AllowedIncrease: 1.2, AllowedDecrease: 0.8,
			CriticalIncrease: 2, CriticalDecrease: 0.5, MinPoints: 3}, nil},
		{MannWhitneyConfig{Direction: "either", Confidence: 0.5, CriticalIncrease: 1, CriticalDecrease: 1}, nil},
		{MannWhitneyConfig{Direction: "up"}, []string{"direction: "}},
		{MannWhitneyConfig{Direction: "Increase"}, []string{"direction: "}},
		{MannWhitneyConfig{Confidence: 1}, []string{"confidence: "}},
		{MannWhitneyConfig{Confidence: 0.4}, []string{"confidence: "}},
		{MannWhitneyConfig{Confidence: -0.95}, []string{"confidence: "}},
		{MannWhitneyConfig{Confidence: math.NaN()}, []string{"confidence: "}},
		{MannWhitneyConfig{AllowedIncrease: 0.9}, []string{"allowedIncrease: "}},
		{MannWhitneyConfig{AllowedIncrease: math.Inf(1)}, []string{"allowedIncrease: "}},
		{MannWhitneyConfig{AllowedDecrease: 1.1}, []string{"allowedDecrease: "}},
		{MannWhitneyConfig{AllowedDecrease: -0.5}, []string{"allowedDecrease: "}},
		{MannWhitneyConfig{AllowedIncrease: 1.5, CriticalIncrease: 1.2}, []string{"criticalIncrease: "}},
		{MannWhitneyConfig{CriticalIncrease: -1}, []string{"criticalIncrease: "}},
		{MannWhitneyConfig{CriticalIncrease: math.NaN()}, []string{"criticalIncrease: "}},
		{MannWhitneyConfig{AllowedDecrease: 0.5, CriticalDecrease: 0.7}, []string{"criticalDecrease: "}},
		{MannWhitneyConfig{CriticalDecrease: -0.1}, []string{"criticalDecrease: "}},
		{MannWhitneyConfig{MinPoints: -1}, []string{"minPoints: "}},
		{MannWhitneyConfig{MinPoints: 2}, []string{"minPoints: "}},
		{MannWhitneyConfig{Direction: "x", Confidence: 2, AllowedIncrease: 0.5, AllowedDecrease: 2, MinPoints: 1},
			[]string{"direction: ", "confidence: ", "allowedIncrease: ", "allowedDecrease: ", "minPoints: "}},
	} {
		errs := tc.cfg.Validate()
		require.Len(t, errs, len(tc.want), "%+v: %v", tc.cfg, errs)
		for i, err := range errs {
			require.True(t, strings.HasPrefix(err.Error(), tc.want[i]), "%+v: %v", tc.cfg, err)
		}
	}
}

// TestMannWhitneyInvalidConfigFallsBack: values Validate rejects are treated as unset.
func TestMannWhitneyInvalidConfigFallsBack(t *testing.T) {
	bad := MannWhitneyConfig{Direction: "sideways", Confidence: 7, AllowedIncrease: 0.5, AllowedDecrease: 3,
		CriticalIncrease: -1, CriticalDecrease: 2, MinPoints: 1}
	require.Equal(t, mwResolve(MannWhitneyConfig{}), mwResolve(bad))
	p := mwResolve(MannWhitneyConfig{})
	require.Equal(t, mwPolicy{increase: true, decrease: true, confidence: 0.98, allowedUp: 1, allowedDown: 1, minPoints: 10}, p)
}

// TestMannWhitneyBlindSpotBimodal documents a known limit of Kayenta's judge: when 5% of
// the canary's points become ten times larger and the rest are unchanged, the mean moves by
// about +45%, but the ranks hardly move: the rank test does not see it, and the canary
// passes in every one of the seeded trials.
func TestMannWhitneyBlindSpotBimodal(t *testing.T) {
	const trials = 200
	passes := 0
	for seed := range uint64(trials) {
		r := rand.New(rand.NewPCG(seed, 20))
		stable := mwtNormal(r, 60, 100, 10)
		canary := mwtNormal(r, 60, 100, 10)
		for i := range 3 { // 3 of 60 = 5%
			canary[i] *= 10
		}
		res := JudgeMannWhitney(MannWhitneyConfig{Direction: "increase"}, canary, stable)
		require.Greater(t, res.EffectSize, 1.3, "seed %d: the mean moved a lot", seed)
		if res.Class == MWPass {
			passes++
		}
	}
	t.Logf("bimodal regression passed %d of %d trials", passes, trials)
	require.Equal(t, trials, passes)
}

// TestMannWhitneyBlindSpotSparseErrors documents another: for error-rate points that are
// mostly 0 with rare 1s, most pairwise differences are 0, so the interval is [0, 0] and
// nothing is ever flagged. A canary with twice the rate of rare errors passes every seeded
// trial, and so does one with ten times the rate. (Only when more than half of the pairs
// have canary > stable can the interval leave 0.)
func TestMannWhitneyBlindSpotSparseErrors(t *testing.T) {
	const trials = 200
	for _, factor := range []float64{2, 10} {
		passes, zeroInterval := 0, 0
		for seed := range uint64(trials) {
			r := rand.New(rand.NewPCG(seed, 21))
			stable := mwtBernoulli(r, 60, 0.02)
			canary := mwtBernoulli(r, 60, 0.02*factor)
			res := JudgeMannWhitney(MannWhitneyConfig{Direction: "increase"}, canary, stable)
			if res.Class == MWPass {
				passes++
			}
			if res.Lower == 0 && res.Upper == 0 {
				zeroInterval++
			}
		}
		t.Logf("rate ×%g: passed %d of %d, interval [0, 0] in %d", factor, passes, trials, zeroInterval)
		require.Equal(t, trials, passes)
		require.Equal(t, trials, zeroInterval)
	}
}

// BenchmarkMannWhitney720 judges two full windows of points (720 a side, 518,400 pairs).
func BenchmarkMannWhitney720(b *testing.B) {
	r := rand.New(rand.NewPCG(22, 23))
	canary, stable := mwtLatency(r, 720, 105), mwtLatency(r, 720, 100)
	for b.Loop() {
		JudgeMannWhitney(MannWhitneyConfig{}, canary, stable)
	}
}
