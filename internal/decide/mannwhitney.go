package decide

// A Kayenta-compatible Mann-Whitney U judge.
//
// Spinnaker's Kayenta judges a metric with its NetflixACAJudge, whose MannWhitneyClassifier
// compares the canary's points with the baseline's by the Mann-Whitney U (Wilcoxon rank-sum)
// test. This file reproduces that classifier:
//
//   - Points that are not finite are removed (Kayenta's nanStrategy "remove", its default,
//     removes NaNs; infinities, which would poison its means, are removed here too).
//     Kayenta's optional outlier removal is not done: the judge sees the points it is given.
//   - A side with fewer than MinPoints points is "nodata" (Kayenta: only an empty side).
//   - Identical samples, or one value on both sides throughout, pass with effect size 1.
//   - Otherwise the judge takes the Hodges-Lehmann estimate of the shift canary - stable
//     and its confidence interval, computed as R's wilcox.test(canary, stable,
//     conf.int = TRUE, correct = TRUE) does with its normal approximation (which Kayenta's
//     kayenta-mannwhitney module ports to the JVM). The canary is "high" when the whole
//     interval lies above 0.25 × |estimate| and "low" when it lies below -0.25 × |estimate|
//     (Kayenta's tolerance band, fixed at 0.25 there and here), as far as the direction
//     allows.
//   - A high or low then needs an effect size (canary mean / stable mean) at or beyond
//     allowedIncrease or allowedDecrease, or it passes; an effect size that cannot be
//     computed skips that gate. A high or low whose effect size reaches criticalIncrease or
//     criticalDecrease is critical (an undefined effect size counts as reaching it).
//
// How the interval is computed. R finds each end of the interval by root-finding
// (uniroot, tol 1e-4; Kayenta: Brent, tol 1e-6) on the standardised rank-sum statistic
// of (canary - d, stable) as a function of the shift d. That statistic is a step function
// of d that only changes at the pairwise differences canary[i] - stable[j], and between
// them its variance only has the ties within each sample, so the roots are order
// statistics of the pairwise differences D(1) <= ... <= D(n·m). (Kayenta uses this
// asymptotic interval at every sample size; R would use the exact one below 50 points a
// side without ties.)
//
//	lower = D(kL), kL = floor(n·m/2 - 0.5 - z·σ) + 1
//	upper = D(kU), kU = floor(n·m/2 + 0.5 + z·σ) + 1     (both clamped to 1..n·m)
//
// with z the normal quantile 1 - (1-confidence)/2 and σ² = n·m/12·((N+1) - Σ(t³-t)/(N(N-1)))
// over the tie groups t within each sample (N = n+m). This is the distribution-free
// interval of Hollander & Wolfe with R's normal-approximation index, computed exactly
// instead of to the root finder's tolerance (R's tolerance of 1e-4 is absolute, and on
// tie-heavy data it even returns lower > upper, as the R tie-out in Kayenta's own tests
// shows). R's estimate is the root at z = 0 without
// continuity correction, anywhere on the plateau around the median of the differences;
// this file uses that median itself (Hodges-Lehmann). The order statistics are selected
// without materialising the n·m differences (see mwPairs.kth): O((n+m)·log(n+m)·log(n·m))
// time and O(n+m) memory, whatever the sample sizes.
//
// The p-value is two-sided, by the normal approximation with tie and continuity correction
// (R's exact = FALSE, correct = TRUE). R would use the exact distribution when both samples
// have fewer than 50 points and no ties; Kayenta's classifier computes no p-value at all.
// The approximation is kept throughout so that the p-value agrees with the interval that
// decides the class. It is informational: the class comes from the interval, as in Kayenta.

import (
	"math"
	"slices"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// MannWhitneyConfig is the judge's policy, as configured on a check (rollout.MannWhitney,
// whose Validate checks it). Zero values mean the defaults: direction either, confidence 0.98
// (Kayenta's NetflixACAJudge fixes it there; R's wilcox.test defaults to 0.95), allowed
// effect sizes 1.0 (as Kayenta), no critical effect size, 10 points a side.
type MannWhitneyConfig = rollout.MannWhitney

// MannWhitneyClass is the judge's classification, named as Kayenta's.
type MannWhitneyClass string

// The judge's classifications.
const (
	MWPass   MannWhitneyClass = "pass"
	MWHigh   MannWhitneyClass = "high"
	MWLow    MannWhitneyClass = "low"
	MWNoData MannWhitneyClass = "nodata" // a side has fewer than MinPoints finite points
)

// MannWhitneyResult explains a judgement with its numbers.
type MannWhitneyResult struct {
	Class    MannWhitneyClass
	Critical bool
	// EffectSize is canary mean / stable mean; NaN when undefined (a mean that is not
	// positive). It is 1 when the samples are identical.
	EffectSize float64
	// Estimate is the Hodges-Lehmann estimate of the location shift canary - stable: the
	// median of all pairwise differences.
	Estimate float64
	// Lower and Upper are its confidence interval at the configured confidence.
	Lower, Upper float64
	// PValue is the two-sided p-value of the rank-sum test, by the normal approximation
	// with tie and continuity correction; 1 when every point is tied.
	PValue float64
	// CanaryPoints and StablePoints are the finite points each side had.
	CanaryPoints, StablePoints int
}

// The judge's defaults and Kayenta's fixed constant.
const (
	mwDefaultConfidence = 0.98 // Kayenta's NetflixACAJudge
	mwDefaultAllowed    = 1.0  // Kayenta's effectSize.allowedIncrease / allowedDecrease
	mwDefaultMinPoints  = 10
	mwLeastMinPoints    = 3
	// mwTolerance is Kayenta's tolerance: the interval must clear ±0.25 × |estimate|.
	mwTolerance = 0.25
)

// mwPolicy is a configuration with its defaults resolved.
type mwPolicy struct {
	increase, decrease       bool // the directions that can fail
	confidence               float64
	allowedUp, allowedDown   float64
	criticalUp, criticalDown float64 // 0: none
	minPoints                int
}

// mwResolve fills in the defaults. A value Validate rejects is treated as unset, except
// that a critical threshold inside the allowed one is kept (every high or low is then
// critical, which is what it says).
func mwResolve(c MannWhitneyConfig) mwPolicy {
	p := mwPolicy{
		increase: true, decrease: true,
		confidence: mwDefaultConfidence,
		allowedUp:  mwDefaultAllowed, allowedDown: mwDefaultAllowed,
		minPoints: mwDefaultMinPoints,
	}
	switch c.Direction {
	case "increase":
		p.decrease = false
	case "decrease":
		p.increase = false
	}
	if c.Confidence >= 0.5 && c.Confidence < 1 {
		p.confidence = c.Confidence
	}
	if c.AllowedIncrease >= 1 && !math.IsInf(c.AllowedIncrease, 1) {
		p.allowedUp = c.AllowedIncrease
	}
	if c.AllowedDecrease > 0 && c.AllowedDecrease <= 1 {
		p.allowedDown = c.AllowedDecrease
	}
	if c.CriticalIncrease > 0 && !math.IsInf(c.CriticalIncrease, 1) {
		p.criticalUp = c.CriticalIncrease
	}
	if c.CriticalDecrease > 0 && c.CriticalDecrease <= 1 {
		p.criticalDown = c.CriticalDecrease
	}
	if c.MinPoints >= mwLeastMinPoints {
		p.minPoints = c.MinPoints
	}
	return p
}

// JudgeMannWhitney classifies the canary's points against the stable's. It neither keeps
// nor modifies its inputs, and the same inputs give the same result in any order.
func JudgeMannWhitney(cfg MannWhitneyConfig, canary, stable []float64) MannWhitneyResult {
	p := mwResolve(cfg)
	x, y := mwFinite(canary), mwFinite(stable)
	nan := math.NaN()
	r := MannWhitneyResult{
		Class:      MWNoData,
		EffectSize: nan, Estimate: nan, Lower: nan, Upper: nan, PValue: nan,
		CanaryPoints: len(x), StablePoints: len(y),
	}
	if len(x) < p.minPoints || len(y) < p.minPoints || len(x) == 0 || len(y) == 0 {
		return r
	}

	s := mwTest(x, y, p.confidence)
	r.Class = MWPass
	r.Estimate, r.Lower, r.Upper, r.PValue = s.estimate, s.lower, s.upper, s.pValue
	r.EffectSize = mwMeanRatio(x, y)

	// Kayenta passes identical samples, and one value on both sides, with effect size 1.
	// (Its interval would contain 0 anyway: these only fix the effect size reported.)
	if slices.Equal(x, y) || (x[0] == x[len(x)-1] && y[0] == y[len(y)-1] && x[0] == y[0]) {
		r.EffectSize = 1
		return r
	}

	band := mwTolerance * math.Abs(s.estimate)
	high := p.increase && s.lower > band
	low := p.decrease && s.upper < -band
	es, known := r.EffectSize, !math.IsNaN(r.EffectSize)
	switch {
	case high && (!known || es >= p.allowedUp):
		r.Class = MWHigh
		r.Critical = p.criticalUp > 0 && (!known || es >= p.criticalUp)
	case low && (!known || es <= p.allowedDown):
		r.Class = MWLow
		r.Critical = p.criticalDown > 0 && (!known || es <= p.criticalDown)
	}
	return r
}

// mwFinite returns the finite values of v, sorted, in a new slice.
func mwFinite(v []float64) []float64 {
	out := make([]float64, 0, len(v))
	for _, f := range v {
		if !math.IsNaN(f) && !math.IsInf(f, 0) {
			out = append(out, f)
		}
	}
	slices.Sort(out)
	return out
}

// mwMean is the mean of v (not empty), without overflowing on large finite values.
func mwMean(v []float64) float64 {
	n := float64(len(v))
	sum := 0.0
	for _, f := range v {
		sum += f
	}
	if !math.IsInf(sum, 0) {
		return sum / n
	}
	sum = 0
	for _, f := range v {
		sum += f / n
	}
	return sum
}

// mwMeanRatio is the effect size canary mean / stable mean, Kayenta's default measure
// (meanRatio). It is NaN unless both means are positive: Kayenta makes it NaN when either
// mean is zero; a negative mean would invert its meaning, so it is undefined here too.
func mwMeanRatio(x, y []float64) float64 {
	mx, my := mwMean(x), mwMean(y)
	if !(mx > 0 && my > 0) {
		return math.NaN()
	}
	ratio := mx / my
	if math.IsInf(ratio, 0) || ratio == 0 {
		return math.NaN() // the means are too far apart for a float64
	}
	return ratio
}

// mwStats is the rank-sum test of two samples.
type mwStats struct {
	u        float64 // the canary's U: pairs with canary > stable, plus half the ties
	pValue   float64
	estimate float64
	lower    float64
	upper    float64
}

// mwTest runs the rank-sum test of x (the canary) against y (the stable), both sorted, not
// empty and finite, with a confidence interval of the shift x - y at the confidence level.
func mwTest(x, y []float64, confidence float64) mwStats {
	n, m := float64(len(x)), float64(len(y))
	N := n + m

	// Midranks of the pooled sample, walking both sorted samples at once. A tie group of a
	// points of x and b of y takes ranks rank+1..rank+a+b, each (a+b+1)/2 past rank.
	var rankSumX, tiesAll, tiesWithin float64
	rank := 0.0
	for i, j := 0, 0; i < len(x) || j < len(y); {
		var v float64
		switch {
		case j == len(y) || (i < len(x) && x[i] <= y[j]):
			v = x[i]
		default:
			v = y[j]
		}
		a, b := 0.0, 0.0
		for ; i < len(x) && x[i] == v; i++ {
			a++
		}
		for ; j < len(y) && y[j] == v; j++ {
			b++
		}
		t := a + b
		rankSumX += a * (rank + (t+1)/2)
		rank += t
		tiesAll += t*t*t - t
		tiesWithin += a*a*a - a + b*b*b - b
	}

	var s mwStats
	s.u = rankSumX - n*(n+1)/2

	// p-value: R's wilcox.test(exact = FALSE, correct = TRUE), two-sided.
	s.pValue = 1
	if v := n * m / 12 * ((N + 1) - tiesAll/(N*(N-1))); v > 0 {
		dz := s.u - n*m/2
		z := (math.Abs(dz) - 0.5) / math.Sqrt(v) // |dz| - sign(dz)·0.5, under its sign
		if dz != 0 && z > 0 {
			s.pValue = math.Erfc(z / math.Sqrt2)
		}
	}

	// The interval (see the top of the file). Between the pairwise differences only the
	// ties within each sample remain, and those never tie everything: σ > 0 for n, m >= 1.
	pairs := int64(len(x)) * int64(len(y))
	sigma := math.Sqrt(n * m / 12 * ((N + 1) - tiesWithin/(N*(N-1))))
	zq := math.Sqrt2 * math.Erfinv(confidence)
	half := float64(pairs) / 2
	kL := mwClamp(math.Floor(half-0.5-zq*sigma)+1, pairs)
	kU := mwClamp(math.Floor(half+0.5+zq*sigma)+1, pairs)
	d := mwPairs{x: x, y: y}
	s.lower, s.upper = d.kth(kL), d.kth(kU)
	if pairs%2 == 1 {
		s.estimate = d.kth(pairs/2 + 1)
	} else {
		s.estimate = d.kth(pairs/2)/2 + d.kth(pairs/2+1)/2
	}
	return s
}

// mwClamp turns the order-statistic index k into an int64 within 1..n.
func mwClamp(k float64, n int64) int64 {
	switch {
	case !(k >= 1): // also NaN
		return 1
	case k >= float64(n):
		return n
	}
	return int64(k)
}

// mwPairs is the implicit n×m matrix of the pairwise differences x[i] - y[m-1-j] of two
// ascending samples: ascending along its rows and along its columns.
type mwPairs struct{ x, y []float64 }

func (p mwPairs) at(i, j int) float64 { return p.x[i] - p.y[len(p.y)-1-j] }

// below sets cnt[i] to how many entries of row i are below v (or at most v, with orEqual)
// and returns their sum. The counts fall from row to row, so one staircase walk finds them
// all, in O(n+m).
func (p mwPairs) below(v float64, orEqual bool, cnt []int) int64 {
	var total int64
	j := len(p.y)
	for i := range p.x {
		for j > 0 && !(p.at(i, j-1) < v || orEqual && p.at(i, j-1) == v) {
			j--
		}
		cnt[i] = j
		total += int64(j)
	}
	return total
}

// kth returns the k-th smallest (1-based) of the n·m pairwise differences without
// materialising them: each row keeps a range [lo, hi) of columns that may still hold it;
// the pivot is the weighted median of the ranges' middle entries, which lies at or above a
// quarter of the remaining entries and at or below another quarter, so each round drops at
// least a quarter of them (Johnson & Mizoguchi's selection in X + Y). When few remain they
// are sorted. O((n+m)·log(n+m)·log(n·m)) time, O(n+m) memory.
func (p mwPairs) kth(k int64) float64 {
	n, m := len(p.x), len(p.y)
	lo, hi := make([]int, n), make([]int, n)
	lt, le := make([]int, n), make([]int, n)
	for i := range hi {
		hi[i] = m
	}
	type weighted struct {
		v float64
		w int64
	}
	middles := make([]weighted, 0, n)
	for {
		var left, remaining int64
		for i := range lo {
			left += int64(lo[i])
			remaining += int64(hi[i] - lo[i])
		}
		if remaining <= int64(n+m)+64 {
			rest := make([]float64, 0, remaining)
			for i := range lo {
				for j := lo[i]; j < hi[i]; j++ {
					rest = append(rest, p.at(i, j))
				}
			}
			slices.Sort(rest)
			return rest[k-1-left]
		}

		middles = middles[:0]
		for i := range lo {
			if lo[i] < hi[i] {
				middles = append(middles, weighted{p.at(i, (lo[i]+hi[i])/2), int64(hi[i] - lo[i])})
			}
		}
		slices.SortFunc(middles, func(a, b weighted) int {
			switch {
			case a.v < b.v:
				return -1
			case a.v > b.v:
				return 1
			}
			return 0
		})
		pivot, acc := middles[len(middles)-1].v, int64(0)
		for _, c := range middles {
			if acc += c.w; 2*acc >= remaining {
				pivot = c.v
				break
			}
		}

		switch {
		case k <= p.below(pivot, false, lt):
			for i := range hi {
				hi[i] = min(hi[i], lt[i])
			}
		case k <= p.below(pivot, true, le):
			return pivot
		default:
			for i := range lo {
				lo[i] = max(lo[i], le[i])
			}
		}
	}
}
