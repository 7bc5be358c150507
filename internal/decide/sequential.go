package decide

import "math"

// The sequential tests. Each is an e-process: a nonnegative process whose expected value is
// at most 1 at every evaluation while the canary is no worse than its margin, so that by
// Ville's inequality it reaches 1/alpha with probability at most alpha, however often it is
// looked at. That is what lets analyzerd evaluate every few seconds without the false
// rollbacks a repeated fixed-sample test gives.
//
// Against the stable side, the test conditions on each interval's errors: of the k errors
// the two sides had in an interval, the canary's share is Binomial(k, p) with
// p = theta*nc / (theta*nc + ns), where nc and ns are the sides' requests and theta is the
// ratio of their error rates. Under "no worse", theta <= theta0 = 1 + margin. The likelihood
// ratio of an alternative theta > theta0 against theta0, multiplied over intervals, is an
// e-process for every theta <= theta0 (its expectation only falls as p falls); the test mixes
// it over a grid of alternatives, so it needs no guess of how much worse a bad canary is.
// Conditioning on the errors makes it immune to what both sides share: a downstream outage
// that raises both sides' errors moves no evidence. Counts are treated as Poisson; for
// binomial counts the test is conservative (the conditional law is then more concentrated).
//
// Against the baseline (a fixed sample captured before the canary), the null rate is
// lambda0 = (1 + margin) x the baseline rate's upper confidence bound, and the canary's
// errors are tested as Poisson(lambda0 x requests) with the same mixture.

// gridSize alternatives, theta = theta0 * 2^(j/4) for j = 1..gridSize: from 19% worse than
// the margin to 64 times it.
const (
	gridSize = 24
	gridStep = math.Ln2 / 4
)

// gridLogRatio is ln(theta_j / theta0) of alternative j.
func gridLogRatio(j int) float64 { return float64(j+1) * gridStep }

// logPrior is the log weights of the alternatives: a half-normal over ln(theta/theta0) with
// the given scale, normalised to sum to 1.
func logPrior(scale float64) [gridSize]float64 {
	var w [gridSize]float64
	for j := range w {
		x := gridLogRatio(j)
		w[j] = -x * x / (2 * scale * scale)
	}
	norm := logSumExp(w[:])
	for j := range w {
		w[j] -= norm
	}
	return w
}

// counts is one side's events and total over an interval (errors and requests; requests
// slower than a bound and all requests).
type counts struct{ events, total float64 }

// conditionalUpdate adds one interval's evidence to the log likelihood ratios of the
// alternatives against theta0. An interval without errors, or without requests on a side,
// carries none.
func conditionalUpdate(logLR []float64, theta0 float64, canary, stable counts) {
	k := canary.events + stable.events
	if k <= 0 || canary.total <= 0 || stable.total <= 0 {
		return
	}
	null := theta0*canary.total + stable.total
	for j := range logLR {
		lr := gridLogRatio(j)
		theta := theta0 * math.Exp(lr)
		// ln(p/p0) = ln(theta/theta0) + ln(null/alt); ln((1-p)/(1-p0)) = ln(null/alt).
		logLR[j] += canary.events*lr + k*math.Log(null/(theta*canary.total+stable.total))
	}
}

// poissonLogLR is the log likelihood ratios of the alternatives lambda0 * theta_j against
// lambda0 for x events in n requests.
func poissonLogLR(x, n, lambda0 float64) []float64 {
	out := make([]float64, gridSize)
	for j := range out {
		lr := gridLogRatio(j)
		out[j] = x*lr - (math.Exp(lr)-1)*lambda0*n
	}
	return out
}

// logMixture is the log of the e-value: the prior-weighted mean of the likelihood ratios.
func logMixture(logLR []float64, prior [gridSize]float64) float64 {
	if len(logLR) == 0 {
		return 0
	}
	terms := make([]float64, len(logLR))
	for j := range logLR {
		terms[j] = prior[j] + logLR[j]
	}
	return logSumExp(terms)
}

func logSumExp(xs []float64) float64 {
	max := math.Inf(-1)
	for _, x := range xs {
		max = math.Max(max, x)
	}
	if math.IsInf(max, 0) {
		return max
	}
	sum := 0.0
	for _, x := range xs {
		sum += math.Exp(x - max)
	}
	return max + math.Log(sum)
}

// priorRequests is b of the gamma(1, b) prior on a rate that the confidence sequences mix
// over: a prior mean rate of 1/b = 1%.
const priorRequests = 100

// rateCS is an anytime-valid (1 - alpha) confidence sequence for a Poisson rate from x events
// in n requests: the rates whose gamma-Poisson mixture martingale is below 1/alpha. It holds
// at every evaluation at once, so checking it every few seconds is safe.
func rateCS(x, n, alpha float64) (lower, upper float64) {
	return rateLower(x, n, alpha), rateUpper(x, n, alpha)
}

// rateLower and rateUpper are rateCS's ends, each found alone: a decision reads one end of
// each sequence it forms (a histogram's buckets make dozens at every evaluation), and each end
// costs a root search.
func rateLower(x, n, alpha float64) float64 {
	if n <= 0 {
		return 0
	}
	return rateMixture(x, n).below(math.Log(1 / alpha))
}

func rateUpper(x, n, alpha float64) float64 {
	if n <= 0 {
		return math.Inf(1)
	}
	return rateMixture(x, n).above(math.Log(1 / alpha))
}

// rateMixture is, for x events in n > 0 requests, the log of the gamma-Poisson mixture
// martingale as a function of the rate; the sequence's ends are where it reaches ln(1/alpha).
func rateMixture(x, n float64) curve {
	const a, b = 1.0, priorRequests
	lgA, _ := math.Lgamma(a)
	lgAX, _ := math.Lgamma(a + x)
	c := a*math.Log(b) + lgAX - lgA - (a+x)*math.Log(b+n) // the curve is c - x ln(l) + n l
	if x > 0 {
		c += x - x*math.Log(x/n) // its value at x/n
	}
	return curve{least: c, x: x, n: n}
}

// poissonBound is a fixed-sample (1 - alpha) bound on a Poisson rate from x events in n
// requests, by the Chernoff bound: the rates l with n * KL(x/n, l) = ln(1/alpha). It serves
// for a baseline, which is captured once and never looked at again with more data.
func poissonBound(x, n, alpha float64, upper bool) float64 {
	if n <= 0 {
		if upper {
			return math.Inf(1)
		}
		return 0
	}
	k := curve{x: x, n: n} // n * KL(x/n, l): 0 at x/n
	target := math.Log(1 / alpha)
	if upper {
		return k.above(target)
	}
	return k.below(target)
}

// curve is c - x*ln(l) + n*l over rates l > 0 (x >= 0 events, n > 0 requests): the log of
// the mixture martingale (rateMixture) and n times the Poisson KL divergence (poissonBound)
// are both of this form. It is convex, least at m = x/n; it is evaluated as
// least + x*ln(m/l) + n*(l - m), whose terms are of the size of its change from there
// (c and x*ln(l) alone are of the size of x*|ln(m)|, and their difference loses digits when x
// is large). At l <= 0 it is +Inf with events (least without).
type curve struct{ least, x, n float64 }

func (k curve) at(l float64) float64 {
	if l <= 0 {
		if k.x > 0 {
			return math.Inf(1)
		}
		return k.least
	}
	if k.x == 0 {
		return k.least + k.n*l
	}
	m := k.x / k.n
	return k.least + k.x*math.Log(m/l) + k.n*(l-m)
}

// above is the rate l > x/n where the curve reaches target (+Inf past 1e12); below is the
// one under x/n (0 without events: nothing bounds the rate away from 0). Each is found by
// Newton's method from the far side of the root, where the curve is above target: on a
// convex curve every step then lands between the last point and the root, so the search
// never crosses it, and it stops at the last point at or above target. The ends it gives are
// thus never inside the true ones (an upper end is never below it, a lower end never
// above), and they come in a few steps where bisecting to the same precision took sixty,
// each a logarithm: a histogram's sequences are most of a decision's cost.
func (k curve) above(target float64) float64 {
	mle := k.x / k.n
	if k.least >= target && (mle > 0 || k.x == 0) {
		return mle // no rate is inside (not so for the curves here: theirs is at most 0 at x/n)
	}
	l := math.Max(2*mle, 1/k.n)
	for k.at(l) < target {
		if l *= 2; l > 1e12 {
			return math.Inf(1)
		}
	}
	return k.newton(l, target)
}

func (k curve) below(target float64) float64 {
	if k.x <= 0 || k.least >= target {
		return 0 // (the last: no rate is inside, as with above)
	}
	l := k.x / k.n / 2
	for k.at(l) < target {
		if l /= 2; l == 0 {
			return 0
		}
	}
	return k.newton(l, target)
}

// newton walks from l, where the curve is at or above target, toward the root on l's side.
func (k curve) newton(l, target float64) float64 {
	f := k.at(l) - target
	for range 100 {
		if f == 0 {
			return l
		}
		slope := k.n - k.x/l
		next := l - f/slope
		if next == l || (next-l)*slope > 0 || math.IsNaN(next) {
			return l // no step left (or none toward the root)
		}
		fn := k.at(next) - target
		if math.IsNaN(fn) {
			return l
		}
		if fn < 0 {
			// Across the root, by the rounding of the curve's terms (the step before was
			// already within about the square root of the precision): back to l's side by
			// as little as it takes.
			back := l - next
			for d := math.Max(math.Abs(next)*0x1p-52, math.SmallestNonzeroFloat64); ; d *= 2 {
				c := next + math.Copysign(d, back)
				if math.Abs(c-next) >= math.Abs(back) {
					return l
				}
				if k.at(c) >= target {
					return c
				}
			}
		}
		l, f = next, fn
	}
	return l
}
