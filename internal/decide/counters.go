package decide

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// Counter checks (ratio, histogram) are judged from counts that compare aligned in time: the
// step's counts on both sides cover the same span, each known within bounds (see
// rollout.Bounds). Every conclusion takes the counts at the bound least favourable to it:
//
//   - a rollback (the canary is worse) takes the canary's events low and requests high, the
//     stable side's events high and requests low;
//   - a pass (the canary is within its margin) takes the opposite.
//
// So what compare could not pin down (at most one scrape interval of each series at the
// span's edges) can never turn a burst both sides share into the canary's, and never passes
// a canary on counts it may not have.
//
// One check has one indifference zone: with theta = 1 + margin and the tolerance t (ratio
// checks), it rolls back only once the canary's rate is shown above both theta x the
// stable's and t, and passes only once it is shown below theta x the stable's, or below t.
// The regions do not overlap: a canary that can be rolled back can never have passed. Its
// guards likewise fail only on a violation shown with confidence and hold only on a margin
// shown with confidence.

// Directions in which counts are taken at their bounds.
type favour int

const (
	forRollback favour = iota // canary events low, requests high; stable the opposite
	forPass                   // canary events high, requests low; stable the opposite
	estimated                 // the estimates (a baseline: a fixed sample)
)

// pairsOf is what a check's tests count on one side: a ratio's errors in its requests, or
// each tested bucket's slower requests in all requests, at the bounds that favour the
// conclusion (canary says which side they are).
func pairsOf(kind rollout.CheckKind, c *rollout.Counts, tested []float64, f favour, canary bool) []Pair {
	if c == nil {
		return nil
	}
	low := (f == forRollback) == canary // take events at their low bound
	pick := func(events, total rollout.Bounds) Pair {
		if f == estimated {
			return Pair{Events: events.Est, Total: total.Est}
		}
		if low {
			return Pair{Events: events.Low, Total: total.High}
		}
		return Pair{Events: events.High, Total: total.Low}
	}
	if kind == rollout.KindRatio {
		return []Pair{pick(c.Events, c.Total)}
	}
	out := make([]Pair, len(tested))
	for i, le := range tested {
		for _, b := range c.Buckets {
			if b.UpperBound == le {
				out[i] = pick(b.Slower, c.Total)
			}
		}
	}
	return out
}

// tallyOfCounts is the estimated counts, as the Mann-Whitney points and the bucket choice
// read them.
func tallyOfCounts(c *rollout.Counts) Tally {
	if c == nil {
		return Tally{}
	}
	return Tally{Events: c.Events.Est, Total: c.Total.Est, Buckets: rollout.SortBuckets(c.EstBuckets())}
}

// interval is a number with an anytime-valid confidence interval.
type interval struct{ lo, est, hi float64 }

// rateInterval is the rate of a ratio check's counts with its confidence sequence at level a.
func rateInterval(c *rollout.Counts, a float64) (interval, bool) {
	if c == nil || c.Total.Est <= 0 {
		return interval{}, false
	}
	lo := rateLower(c.Events.Low, c.Total.High, a/2)
	hi := rateUpper(c.Events.High, c.Total.Low, a/2)
	return interval{lo: lo, est: c.Events.Est / c.Total.Est, hi: hi}, true
}

// quantileInterval is a histogram's q-quantile with a confidence interval at level a: each
// bucket's share of slower requests has a confidence sequence (Bonferroni over the
// buckets), and the quantile is read, as histogram_quantile does, from the lowest and the
// highest distribution they allow.
func quantileInterval(c *rollout.Counts, q, a float64) (interval, bool) {
	if c == nil || c.Total.Est <= 0 {
		return interval{}, false
	}
	est, _, err := rollout.Quantile(q, c.EstBuckets())
	if err != nil || math.IsNaN(est) {
		return interval{}, false
	}
	finite := 0
	for _, b := range c.Buckets {
		if !math.IsInf(b.UpperBound, 1) {
			finite++
		}
	}
	ab := a / float64(2*max(1, finite))
	var loCDF, hiCDF []rollout.Bucket // hiCDF: the most observations at or below each bound
	for _, b := range c.Buckets {
		if math.IsInf(b.UpperBound, 1) {
			continue
		}
		sLo := rateLower(b.Slower.Low, c.Total.High, ab)
		sHi := rateUpper(b.Slower.High, c.Total.Low, ab)
		hiCDF = append(hiCDF, rollout.Bucket{UpperBound: b.UpperBound, Count: 1 - math.Min(1, sLo)})
		loCDF = append(loCDF, rollout.Bucket{UpperBound: b.UpperBound, Count: 1 - math.Min(1, sHi)})
	}
	inf := rollout.Bucket{UpperBound: math.Inf(1), Count: 1}
	lo, _, _ := rollout.Quantile(q, append(hiCDF, inf))
	hi, _, _ := rollout.Quantile(q, append(loCDF, inf))
	if math.IsNaN(lo) || math.IsNaN(hi) {
		return interval{}, false
	}
	return interval{lo: math.Min(lo, est), est: est, hi: math.Max(hi, est)}, true
}

// intervals are one check's value intervals at one level, each computed once per judgement:
// a check's guards read the same counts (the canary's, stable's, their recent ones) at the
// same level, and each interval of a histogram is a root search per bucket.
type intervals struct {
	check rollout.Check
	alpha float64
	memo  map[*rollout.Counts]memoInterval
}

type memoInterval struct {
	v  interval
	ok bool
}

func newIntervals(c rollout.Check, a float64) *intervals {
	return &intervals{check: c, alpha: a, memo: map[*rollout.Counts]memoInterval{}}
}

// of is valueInterval of counts (which are never changed while judged).
func (iv *intervals) of(counts *rollout.Counts) (interval, bool) {
	if m, ok := iv.memo[counts]; ok {
		return m.v, m.ok
	}
	v, ok := valueInterval(iv.check, counts, iv.alpha)
	iv.memo[counts] = memoInterval{v, ok}
	return v, ok
}

func valueInterval(c rollout.Check, counts *rollout.Counts, a float64) (interval, bool) {
	if c.Kind == rollout.KindRatio {
		return rateInterval(counts, a)
	}
	return quantileInterval(counts, c.Quantile, a)
}

// measureInterval combines the canary's interval with the reference's as the guard's
// measure does.
func measureInterval(g rollout.Guard, canary, ref interval) interval {
	switch g.Measure {
	case rollout.MeasureDelta:
		return interval{lo: canary.lo - ref.hi, est: canary.est - ref.est, hi: canary.hi - ref.lo}
	case rollout.MeasureRatio:
		return interval{lo: ratio(canary.lo, ref.hi), est: ratio(canary.est, ref.est), hi: ratio(canary.hi, ref.lo)}
	}
	return canary
}

// shownOutside reports whether the interval lies wholly outside the guard's bounds (the
// guard fails), shownInside whether it lies wholly inside (the guard holds).
func shownOutside(g rollout.Guard, v interval) bool {
	return (g.Max != nil && v.lo >= *g.Max) || (g.Min != nil && v.hi <= *g.Min)
}

func shownInside(g rollout.Guard, v interval) bool {
	return (g.Max == nil || v.hi < *g.Max) && (g.Min == nil || v.lo > *g.Min)
}

// guardAlpha is each counter guard's share of the template's alpha at the analysis's k-th
// step: alpha is split across the template's counter guards, and across steps by 6/(pi k)^2,
// which sums to 1, so that a canary identical to its stable side fails a guard by chance in
// at most alpha of whole rollouts, however long and however many steps.
func guardAlpha(t rollout.Template, k int) float64 {
	alpha := t.Alpha
	if !(alpha > 0 && alpha < 1) {
		alpha = rollout.DefaultAlpha
	}
	n := 0
	for _, c := range t.Checks {
		if c.Kind != rollout.KindValue {
			n += len(c.Guards)
		}
	}
	k = max(k, 1)
	return alpha / float64(max(n, 1)) * 6 / (math.Pi * math.Pi * float64(k*k))
}

// conditionalBelow is conditionalUpdate's mirror for the pass test: the log likelihood
// ratios of alternatives theta0 / 2^((j+1)/4) (better than the margin) against theta0.
func conditionalBelow(logLR []float64, theta0 float64, canary, stable Pair) {
	k := canary.Events + stable.Events
	if k <= 0 || canary.Total <= 0 || stable.Total <= 0 {
		return
	}
	null := theta0*canary.Total + stable.Total
	for j := range logLR {
		lr := -gridLogRatio(j)
		theta := theta0 * math.Exp(lr)
		logLR[j] += canary.Events*lr + k*math.Log(null/(theta*canary.Total+stable.Total))
	}
}

// addGrid is the step's log likelihood ratios plus the settled steps' for tested count i.
func addGrid(step []float64, settled [][]float64, i int) []float64 {
	l := make([]float64, len(step))
	copy(l, step)
	if i < len(settled) {
		for k := range l {
			l[k] += settled[i][k]
		}
	}
	return l
}

func addPairs(a, b []Pair) []Pair {
	out := make([]Pair, max(len(a), len(b)))
	for i := range out {
		if i < len(a) {
			out[i].Events, out[i].Total = a[i].Events, a[i].Total
		}
		if i < len(b) {
			out[i].Events += b[i].Events
			out[i].Total += b[i].Total
		}
	}
	return out
}

// staleAfter is how old a check's newest common sample may be before its last judgement
// stops standing: two of its scrape intervals, and a grace for a scrape landing late.
func staleAfter(m rollout.Measurement) time.Duration {
	iv := m.ScrapeInterval
	if iv <= 0 {
		iv = time.Minute
	}
	return 2*iv + 5*time.Second
}

// judgeCounters judges a ratio or histogram check.
func judgeCounters(c rollout.Check, m rollout.Measurement, in Input, ce *CheckEvidence, alpha float64) judgement {
	seqOn := c.Sequential.On()
	var refs []rollout.Reference
	theta0, prior, tol := 1.0, [gridSize]float64{}, 0.0
	if seqOn {
		refs = against(c.Sequential)
		theta0 = 1 + margin(c.Sequential)
		prior = logPrior(priorScale(c.Sequential))
		tol = floorOf(c)
	}
	ga := guardAlpha(in.Template, ce.Steps)

	var active []rollout.Guard
	thinBaseline := thin(c, m.Baseline)
	skipped, skippedCondition := false, false
	for _, g := range c.Guards {
		if !g.Active(in.Step, in.Weight) {
			continue
		}
		if g.Against == rollout.AgainstBaseline && thinBaseline != "" {
			skipped = true
			skippedCondition = skippedCondition || !g.Critical
			continue
		}
		active = append(active, g)
	}
	needStable := (seqOn && contains(refs, rollout.AgainstStable)) || needs(active, rollout.AgainstStable)

	r := numbers(c, m)
	r.Threshold = expressions(active)
	r.Limits = limitsOf(active, r)
	j := judgement{check: c, result: r}
	set := func(o rollout.Outcome, msg string) judgement {
		j.result.Outcome, j.result.Message = o, msg
		return j
	}

	switch {
	case m.Canary.Status == rollout.StatusError:
		return set(rollout.Error, "canary: "+m.Canary.Message)
	case needStable && m.Stable.Status == rollout.StatusError:
		return set(rollout.Error, "stable: "+m.Stable.Message)
	}

	// No sample newer than the last judgement: nothing new to judge, and nothing counted
	// again. The judgement stands while its samples are fresh.
	if !m.Through.After(ce.Through) && ce.Last != nil && ce.StepStarted.Equal(in.StepStarted) {
		if age := in.Now.Sub(ce.Through); age > staleAfter(m) {
			return set(rollout.NoData, fmt.Sprintf("no new samples for %s (the newest both sides have is from %s)",
				age.Truncate(time.Second), ce.Through.UTC().Format(time.RFC3339)))
		}
		j.result = *ce.Last
		j.carried = true
		return j
	}
	if !m.Canary.OK() {
		j = set(rollout.NoData, "no canary data: "+m.Canary.Message)
		if c.NoData == rollout.NoDataFail {
			j.result.Outcome = rollout.Fail
			j.result.Message += " (counted as a failure: noData is fail)"
		}
		return j
	}

	// Which histogram buckets the tests follow: chosen once, from data that says nothing of
	// the canary's share (the baseline, or both sides pooled).
	if c.Kind == rollout.KindHistogram && len(ce.Tested) == 0 {
		if m.Baseline != nil && thinBaseline == "" && m.Baseline.Counts != nil {
			ce.Tested = chooseBuckets(tallyOfCounts(m.Baseline.Counts), c.Quantile)
		}
		if len(ce.Tested) == 0 && m.Stable.Counts != nil {
			pooled := tallyOfCounts(m.Canary.Counts)
			st := tallyOfCounts(m.Stable.Counts)
			for i := range pooled.Buckets {
				if n, ok := st.bucketCount(pooled.Buckets[i].UpperBound); ok {
					pooled.Buckets[i].Count += n
				}
			}
			ce.Tested = chooseBuckets(pooled, c.Quantile)
		}
	}
	tested := ce.Tested
	ready := c.Kind == rollout.KindRatio || len(tested) > 0
	what := "rate"
	if c.Kind == rollout.KindHistogram {
		what = "share slower than " + bounds(tested)
		if !ready {
			what = "share slower than the tail's buckets"
		}
	}

	cR := pairsOf(c.Kind, m.Canary.Counts, tested, forRollback, true)
	sR := pairsOf(c.Kind, m.Stable.Counts, tested, forRollback, false)
	cP := pairsOf(c.Kind, m.Canary.Counts, tested, forPass, true)
	sP := pairsOf(c.Kind, m.Stable.Counts, tested, forPass, false)
	stableCounted := m.Stable.OK() && m.Stable.Counts != nil
	// Bursts on single canary targets: rollbacks are judged without them too.
	steady, burstsWhy := steadyOf(m.Canary.Counts)
	var cRw, cumW []Pair
	if steady != nil {
		cRw = pairsOf(c.Kind, steady, tested, forRollback, true)
		cumW = addPairs(ce.Settled, cRw)
	}
	heldBack := false

	// The sequential tests: rollback once the canary is shown worse than the margin.
	// eValue is the largest of the tests' e-values, eThreshold what it must reach (the
	// threshold of the test it came from; before any, the smallest threshold).
	eValue, eThreshold := 1.0, 0.0
	evidence := func(e, threshold float64) {
		if e > eValue {
			eValue, eThreshold = e, threshold
		} else if eValue == 1 && (eThreshold == 0 || threshold < eThreshold) {
			eThreshold = threshold
		}
	}
	var rejected, rejectedMsg string
	var rejectedAgainst rollout.Reference
	var described []string
	shown, shownWhy := !seqOn, ""
	var proved []string
	if seqOn && ready {
		cum := addPairs(ce.Settled, cR)
		for _, ref := range refs {
			switch ref {
			case rollout.AgainstStable:
				threshold := float64(len(cR)) / alpha
				evidence(1, threshold)
				described = append(described, fmt.Sprintf("%s x stable (e-value < %s)", trimFloat(theta0, 4), formatE(threshold)))
				if !stableCounted {
					continue
				}
				step := make([][]float64, len(cR))
				full := make([]float64, len(cR)) // each count's e-value on all the counts
				for i := range cR {
					step[i] = make([]float64, gridSize)
					conditionalUpdate(step[i], theta0, counts{cR[i].Events, cR[i].Total}, counts{sR[i].Events, sR[i].Total})
					full[i] = math.Exp(logMixture(addGrid(step[i], ce.LogLR, i), prior))
					if cRw != nil {
						// Each alternative's evidence is the lesser of the two: at most
						// what all the counts show.
						w := make([]float64, gridSize)
						conditionalUpdate(w, theta0, counts{cRw[i].Events, cRw[i].Total}, counts{sR[i].Events, sR[i].Total})
						for k := range w {
							step[i][k] = math.Min(step[i][k], w[k])
						}
					}
				}
				ce.StepLogLR = step
				for i := range cR {
					// The analysis's whole evidence: the steps over, and this one's.
					e := math.Exp(logMixture(addGrid(step[i], ce.LogLR, i), prior))
					if math.IsNaN(e) {
						e = 1
					}
					evidence(e, threshold)
					onAll := full[i] >= threshold && aboveTolerance(cum[i], tol, alpha)
					if onAll && e >= threshold && (cumW == nil || aboveTolerance(cumW[i], tol, alpha)) {
						if rejected == "" {
							rejectedAgainst = ref
							rejected = fmt.Sprintf("e-value %s >= %s%s", formatE(e), formatE(threshold), bucketNote(c, tested, i))
						}
					} else if onAll {
						heldBack = true // all the counts would reject; without the bursts they do not
					}
				}
			case rollout.AgainstBaseline:
				bp := pairsOf(c.Kind, baselineCounts(m), tested, estimated, false)
				a := alpha / float64(max(1, len(bp)))
				threshold := 2 / a
				evidence(1, threshold)
				described = append(described, fmt.Sprintf("%s x baseline (e-value < %s)", trimFloat(theta0, 4), formatE(threshold)))
				if thinBaseline != "" || len(bp) == 0 {
					continue
				}
				for i := range bp {
					if bp[i].Total <= 0 || cum[i].Total <= 0 {
						continue
					}
					lambda0 := theta0 * poissonBound(bp[i].Events, bp[i].Total, a/2, true)
					e := math.Exp(logMixture(poissonLogLR(cum[i].Events, cum[i].Total, lambda0), prior))
					if math.IsNaN(e) {
						e = 1
					}
					eAll := e
					// Without the canary's bursts too: the e-value shown is the lesser.
					steadyShows := true
					if cumW != nil && cumW[i].Total > 0 {
						ew := math.Exp(logMixture(poissonLogLR(cumW[i].Events, cumW[i].Total, lambda0), prior))
						steadyShows = ew >= threshold && aboveTolerance(cumW[i], tol, alpha)
						e = math.Min(e, ew)
					}
					evidence(e, threshold)
					if eAll >= threshold && rejected == "" && aboveTolerance(cum[i], tol, alpha) {
						// A degradation against the baseline that the stable side shares is
						// not the canary's: it pauses (see sharedDegradation).
						if stableCounted && i < len(sR) && rate(Pair{sR[i].Events, sR[i].Total}) > lambda0 {
							j.shared = fmt.Sprintf("shared degradation: canary %s and stable %s both above %s x the baseline's %s",
								formatValue(rollout.KindRatio, rate(cum[i])), formatValue(rollout.KindRatio, rate(sR[i])),
								trimFloat(theta0, 4), formatValue(rollout.KindRatio, bp[i].Events/bp[i].Total))
							continue
						}
						if !steadyShows {
							heldBack = true
							continue
						}
						rejectedAgainst = ref
						rejected = fmt.Sprintf("e-value %s >= %s%s", formatE(e), formatE(threshold), bucketNote(c, tested, i))
					}
				}
			}
		}
		if rejected != "" {
			rejectedMsg = fmt.Sprintf("the canary's %s is more than %s times the %s's: %s", what, trimFloat(theta0, 4), rejectedAgainst, rejected)
		}
		shown, shownWhy, proved = passTest(c, m, refs, theta0, tol, alpha, prior, cP, sP, stableCounted, thinBaseline, tested)
	} else if seqOn {
		shownWhy = "not enough observations yet to choose the tail's buckets"
	}
	if seqOn {
		j.result.EValue = ptr(math.Min(eValue, math.MaxFloat64))
		if eThreshold > 0 {
			j.result.EValueThreshold = ptr(eThreshold)
		}
		desc := "canary " + what + " <= " + strings.Join(described, ", ")
		if tol > 0 {
			desc += " or <= " + formatValue(rollout.KindRatio, tol)
			if c.Kind == rollout.KindHistogram {
				desc += " of requests"
			}
		}
		j.result.Threshold = strings.TrimPrefix(j.result.Threshold+"; "+desc, "; ")
	}

	// The guards, each judged with its uncertainty.
	var failed []rollout.Guard
	var waiting []string
	recentSteady, recentBurstsWhy := steadyOf(m.Canary.Recent)
	iv := newIntervals(c, ga)
	for _, g := range active {
		counts, rest, restWhy := m.Canary.Counts, steady, burstsWhy
		if g.Against == rollout.AgainstBaseline && m.Canary.Recent != nil {
			counts, rest, restWhy = m.Canary.Recent, recentSteady, recentBurstsWhy
		}
		cv, ok := iv.of(counts)
		if !ok {
			waiting = append(waiting, "no canary counts for "+g.Expression())
			continue
		}
		ref := interval{}
		switch g.Against {
		case rollout.AgainstStable:
			if !stableCounted {
				waiting = append(waiting, "no stable data: "+m.Stable.Message)
				continue
			}
			if ref, ok = iv.of(m.Stable.Counts); !ok {
				waiting = append(waiting, "no stable counts for "+g.Expression())
				continue
			}
		case rollout.AgainstBaseline:
			if m.Baseline == nil || !m.Baseline.OK() {
				waiting = append(waiting, "baseline not captured yet")
				continue
			}
			if ref, ok = iv.of(baselineCounts(m)); !ok {
				ref = interval{lo: m.Baseline.Value, est: m.Baseline.Value, hi: m.Baseline.Value}
			}
		}
		v := measureInterval(g, cv, ref)
		if g.Against != rollout.AgainstBaseline {
			// While the estimate itself is outside the guard's bounds (a canary degrading
			// within the step), what earlier looks held does not carry a pass.
			if h := ce.held(g.Expression(), v); shownInside(g, interval{lo: v.est, est: v.est, hi: v.est}) {
				v = h
			}
		}
		switch {
		case shownOutside(g, v):
			if g.Against == rollout.AgainstBaseline {
				if why, ok := sharedWithStable(c, g, m, ref, iv); ok {
					j.shared = strings.TrimPrefix(j.shared+"; "+why, "; ")
					continue
				}
			}
			if rest != nil {
				// It fails only if it also does without the canary's bursts.
				if rv, ok := iv.of(rest); ok && !shownOutside(g, measureInterval(g, rv, ref)) {
					heldBack, burstsWhy = true, restWhy
					waiting = append(waiting, g.Expression()+" fails only with the canary's bursts")
					continue
				}
			}
			if len(failed) == 0 || (g.Critical && !j.critical) {
				gg := g
				j.failedGuard, j.failedAgainst, j.canary, j.reference = &gg, g.Against, cv.est, ref.est
				if g.Critical {
					j.criticalWhy = "critical: " + g.Expression() + " failed"
				}
			}
			failed = append(failed, g)
			j.critical = j.critical || g.Critical
		case !shownInside(g, v) && !g.Critical && !heldRecently(g, m, iv):
			// A critical guard is a brake, not a condition for proceeding: only a shown
			// violation matters.
			waiting = append(waiting, fmt.Sprintf("%s not yet shown (%s within %s..%s)", g.Expression(),
				measureName(g), trimFloat(v.lo, 4), trimFloat(v.hi, 4)))
		}
	}

	// What the step's counts say about the canary serving at all.
	stopped := ""
	if m.Canary.Counts != nil && m.Canary.Counts.Live == 0 && m.Stable.Counts != nil && m.Stable.Counts.Live > 0 {
		stopped = "the canary stopped serving: none of its targets has been scraped for two scrape intervals (its last counts reach " +
			m.Through.UTC().Format(time.RFC3339) + ")"
	} else if ce.Last != nil && ce.StepStarted.Equal(in.StepStarted) && !ce.Through.IsZero() &&
		m.Canary.Total <= ce.Canary.Total && m.Stable.OK() && m.Stable.Total > ce.Stable.Total {
		stopped = fmt.Sprintf("the canary served no requests from %s to %s while stable served %d",
			ce.Through.UTC().Format(time.RFC3339), m.Through.UTC().Format(time.RFC3339), int64(m.Stable.Total-ce.Stable.Total))
	}

	prevCanary, prevStable := ce.Canary, ce.Stable
	ce.Canary, ce.Stable = tallyOfCounts(m.Canary.Counts), tallyOfCounts(m.Stable.Counts)
	ce.StepCounts = cR
	ce.Through = m.Through
	if c.MannWhitney != nil {
		v, ok := intervalRate(c, ce.Canary, prevCanary)
		ce.Points.Canary = appendPoint(ce.Points.Canary, v, ok)
		v, ok = intervalRate(c, ce.Stable, prevStable)
		ce.Points.Stable = appendPoint(ce.Points.Stable, v, ok)
	}

	switch {
	case rejected != "":
		j.result.Outcome, j.result.Message = rollout.Fail, rejectedMsg
		j.rejected, j.failedAgainst = rejected, rejectedAgainst
		j.failedGuard, j.critical = nil, false
		j.canary = m.Canary.Value
		j.reference = m.Stable.Value
		if rejectedAgainst == rollout.AgainstBaseline && m.Baseline != nil {
			j.reference = m.Baseline.Value
		}
	case len(failed) > 0:
		j.result.Threshold = expressions(failed)
		j.result.Outcome = rollout.Fail
	case j.shared != "":
		j.result.Outcome, j.result.Message = rollout.Inconclusive, j.shared
	case stopped != "":
		j.result.Outcome, j.result.Message = rollout.Inconclusive, stopped
	case m.Canary.Samples < c.MinSamples:
		j.result.Outcome, j.result.Message = rollout.Inconclusive, fmt.Sprintf("%d of the %d canary samples it needs", m.Canary.Samples, c.MinSamples)
	case len(active) == 0 && skippedCondition && !seqOn:
		j.result.Outcome, j.result.Message = rollout.Inconclusive, "nothing to compare with: "+thinBaseline+" and no other guard applies at this step"
	case heldBack:
		j.result.Outcome, j.result.Message = rollout.Inconclusive, burstsWhy
	case len(waiting) > 0:
		j.result.Outcome, j.result.Message = rollout.Inconclusive, strings.Join(waiting, "; ")
	case !shown:
		j.result.Outcome, j.result.Message = rollout.Inconclusive, shownWhy
	default:
		j.result.Outcome = rollout.Pass
		j.proved = strings.Join(proved, ", ")
		if c.MannWhitney != nil {
			j = judgeMannWhitney(j, *c.MannWhitney, ce.Points)
		}
	}
	if skipped && (j.result.Outcome == rollout.Pass || j.result.Outcome == rollout.Inconclusive) {
		// As judgeGuards says it: a pass, or a wait, that no guard against the baseline
		// could brake.
		j.result.Message = skippedNote(j.result.Message, thinBaseline)
	}
	last := j.result
	ce.Last = &last
	return j
}

// held intersects a guard's interval on the step's counts with those of its earlier looks in
// the step (CheckEvidence.Held) and keeps the result. An empty intersection says the canary
// or stable changed during the step (their confidence sequences assume a rate that does
// not): the interval starts again from this look. Infinite bounds are not kept.
func (ce *CheckEvidence) held(guard string, v interval) interval {
	if math.IsNaN(v.lo) || math.IsNaN(v.hi) {
		return v
	}
	if h, ok := ce.Held[guard]; ok {
		lo, hi := math.Max(v.lo, h[0]), math.Min(v.hi, h[1])
		if lo <= hi {
			v.lo, v.hi = lo, hi
			v.est = math.Min(math.Max(v.est, lo), hi)
		}
	}
	if math.IsInf(v.lo, 0) || math.IsInf(v.hi, 0) {
		return v
	}
	if ce.Held == nil {
		ce.Held = map[string][2]float64{}
	}
	ce.Held[guard] = [2]float64{v.lo, v.hi}
	return v
}

// heldRecently reports whether a guard against stable (or the canary's own value) is shown to
// hold over the recent window: after a shared incident, the step's counts hold its errors and
// their spread for a long time, while the last recentWindow says how the canary does now. A
// guard fails only on the step's counts; it may pass on either.
func heldRecently(g rollout.Guard, m rollout.Measurement, iv *intervals) bool {
	if g.Against == rollout.AgainstBaseline || m.Canary.Recent == nil {
		return false
	}
	cv, ok := iv.of(m.Canary.Recent)
	if !ok {
		return false
	}
	ref := interval{}
	if g.Against == rollout.AgainstStable {
		if m.Stable.Recent == nil {
			return false
		}
		if ref, ok = iv.of(m.Stable.Recent); !ok {
			return false
		}
	}
	return shownInside(g, measureInterval(g, cv, ref))
}

// floorOf is the rate below which a tested count neither fails nor needs comparing: a ratio
// check's tolerance (an error rate good enough whatever stable does), or, for a histogram
// check, half its quantile's tail (1 - quantile) / 2: a bound that fewer requests than that
// exceed lies above the quantile, and its share cannot move it. Coarse buckets often leave a
// bound whose share is a fraction of a percent, which no test could show within a relative
// margin.
func floorOf(c rollout.Check) float64 {
	if c.Kind == rollout.KindHistogram {
		return (1 - c.Quantile) / 2
	}
	return tolerance(c.Sequential)
}

// aboveTolerance reports whether the canary's rate is shown above the tolerance t (always,
// when t is 0): below it the check never rolls back.
func aboveTolerance(p Pair, t, alpha float64) bool {
	if t <= 0 {
		return true
	}
	lo := rateLower(p.Events, p.Total, alpha/2)
	return lo > t
}

// passTest says whether the step shows the canary within its margin: for each reference it
// can be compared with (at least one), its rate (or each tested share) shown below theta0
// times the reference's by a conditional test of the step's counts, or, for a ratio check,
// below the tolerance. proved says what was shown.
func passTest(c rollout.Check, m rollout.Measurement, refs []rollout.Reference, theta0, tol, alpha float64, prior [gridSize]float64,
	cP, sP []Pair, stableCounted bool, thinBaseline string, tested []float64) (bool, string, []string) {
	if len(cP) == 0 {
		return false, "no canary counts to show it within its margin", nil
	}
	threshold := float64(len(cP)) / alpha
	// below says whether tested count i is shown below the floor: a ratio check's tolerance,
	// or a share of slower requests too small to move the quantile.
	below := func(i int) bool {
		if tol <= 0 {
			return false
		}
		upper := rateUpper(cP[i].Events, cP[i].Total, alpha/(2*float64(len(cP))))
		return upper < tol
	}
	if c.Kind == rollout.KindRatio && below(0) {
		return true, "", []string{fmt.Sprintf("%s shown below %s", c.Name, formatValue(rollout.KindRatio, tol))}
	}
	compared := 0
	var proved []string
	for _, ref := range refs {
		switch {
		case ref == rollout.AgainstStable && stableCounted:
			for i := range cP {
				if c.Kind == rollout.KindHistogram && below(i) {
					continue
				}
				l := make([]float64, gridSize)
				conditionalBelow(l, theta0, cP[i], sP[i])
				e := math.Exp(logMixture(l, prior))
				if !(e >= threshold) {
					why := fmt.Sprintf("not yet shown below %s x stable%s (e-value %s of the %s it needs)",
						trimFloat(theta0, 4), bucketNote(c, tested, i), formatE(e), formatE(threshold))
					if tol > 0 {
						why += fmt.Sprintf(", nor below %s", formatValue(rollout.KindRatio, tol))
					}
					return false, why, nil
				}
			}
			proved = append(proved, fmt.Sprintf("%s shown below %s x stable", c.Name, trimFloat(theta0, 4)))
			compared++
		case ref == rollout.AgainstBaseline && thinBaseline == "" && m.Baseline != nil && m.Baseline.Counts != nil:
			bp := pairsOf(c.Kind, m.Baseline.Counts, tested, estimated, false)
			for i := range cP {
				if i >= len(bp) || bp[i].Total <= 0 {
					continue
				}
				upper := rateUpper(cP[i].Events, cP[i].Total, alpha/2)
				allowed := theta0 * poissonBound(bp[i].Events, bp[i].Total, alpha/2, false)
				if !(upper < allowed) {
					return false, fmt.Sprintf("not yet shown below %s x baseline%s: the canary's %s is below %s, %s allowed",
						trimFloat(theta0, 4), bucketNote(c, tested, i), "rate", trimFloat(upper, 6), trimFloat(allowed, 6)), nil
				}
			}
			proved = append(proved, fmt.Sprintf("%s shown below %s x baseline", c.Name, trimFloat(theta0, 4)))
			compared++
		}
	}
	if compared == 0 {
		return false, "nothing to show the canary within its margin against: no stable counts, and no usable baseline", nil
	}
	return true, "", proved
}

// baselineCounts is the baseline's counts (nil when it has none).
func baselineCounts(m rollout.Measurement) *rollout.Counts {
	if m.Baseline == nil {
		return nil
	}
	return m.Baseline.Counts
}

// sharedWithStable says whether the stable side, judged by the same guard against the
// baseline over the same recent span, is degraded too (not shown within the guard), so that
// the canary does not carry the degradation more than the stable side does. With no stable
// traffic (weight 100) there is nothing to share it with.
func sharedWithStable(c rollout.Check, g rollout.Guard, m rollout.Measurement, base interval, iv *intervals) (string, bool) {
	counts := m.Stable.Recent
	if counts == nil {
		counts = m.Stable.Counts
	}
	if counts == nil || counts.Total.Est <= 0 {
		return "", false
	}
	sv, ok := iv.of(counts)
	if !ok || shownInside(g, measureInterval(g, sv, base)) {
		return "", false
	}
	cv, _ := iv.of(m.Canary.Recent)
	return fmt.Sprintf("shared degradation: canary %s and stable %s against the baseline's %s (%s)",
		formatValue(c.Kind, cv.est), formatValue(c.Kind, sv.est), formatValue(c.Kind, base.est), g.Expression()), true
}

func measureName(g rollout.Guard) string {
	switch g.Measure {
	case rollout.MeasureDelta:
		return "canary - " + string(g.Against)
	case rollout.MeasureRatio:
		return "canary / " + string(g.Against)
	}
	return "canary"
}

// intervalRate is the check's value over the interval between two estimated step counts,
// for the Mann-Whitney points.
func intervalRate(c rollout.Check, cur, prev Tally) (float64, bool) {
	d := since(cur, prev)
	if c.Kind == rollout.KindRatio {
		if d.Total <= 0 {
			return 0, false
		}
		return d.Events / d.Total, true
	}
	q, n, err := rollout.Quantile(c.Quantile, d.Buckets)
	if err != nil || n <= 0 || math.IsNaN(q) {
		return 0, false
	}
	return q, true
}

func contains(refs []rollout.Reference, r rollout.Reference) bool {
	for _, x := range refs {
		if x == r {
			return true
		}
	}
	return false
}
