package decide

import (
	"fmt"
	"math"
	"strings"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// judge decides one check's outcome at one evaluation and updates its evidence: the counts
// since the analysis started, the step's own counts (which the guards judge), the sequential
// tests, the Mann-Whitney points.
func judge(c rollout.Check, m rollout.Measurement, step, weight int, ce *CheckEvidence, alpha float64) judgement {
	m.Canary, m.Stable = usable(m.Canary), usable(m.Stable)
	if m.Baseline != nil {
		b := usable(*m.Baseline)
		m.Baseline = &b
	}

	// Readings with counts are counts since the analysis started; the guards judge the
	// step's share of them. Readings without counts are judged as they are.
	canaryT, hasCanary := tallyOf(c.Kind, m.Canary)
	stableT, hasStable := tallyOf(c.Kind, m.Stable)
	prevCanary, prevStable := ce.Canary, ce.Stable
	stepM := m
	if hasCanary {
		canaryT = atLeast(canaryT, ce.Canary)
		ce.Canary = canaryT
		stepM.Canary = stepReading(c, since(canaryT, ce.StepCanary))
	}
	if hasStable {
		stableT = atLeast(stableT, ce.Stable)
		ce.Stable = stableT
		stepM.Stable = stepReading(c, since(stableT, ce.StepStable))
	}
	if c.MannWhitney != nil {
		v, ok := point(c, m.Canary, canaryT, prevCanary, hasCanary)
		ce.Points.Canary = appendPoint(ce.Points.Canary, v, ok)
		v, ok = point(c, m.Stable, stableT, prevStable, hasStable)
		ce.Points.Stable = appendPoint(ce.Points.Stable, v, ok)
	}

	var sq sequentialResult
	seqOn := c.Kind != rollout.KindValue && c.Sequential.On()
	if seqOn {
		sq = sequential(c, m, ce, canaryT, hasCanary, stableT, hasStable, alpha)
	}
	j := judgeGuards(c, stepM, step, weight, seqOn && sq.needsStable)
	if seqOn {
		j.result.EValue = ptr(math.Min(sq.eValue, math.MaxFloat64)) // overwhelming evidence stays a number
		j.result.Threshold = strings.TrimPrefix(j.result.Threshold+"; "+sq.threshold, "; ")
	}

	switch o := j.result.Outcome; {
	case sq.rejected != "":
		// Evidence that the canary is worse than its margin: whatever else this evaluation
		// lacks, the test's answer holds (it is valid at every evaluation).
		j.result.Outcome, j.result.Message = rollout.Fail, sq.message
		j.rejected, j.failedAgainst, j.canary, j.reference = sq.rejected, sq.against, sq.canary, sq.reference
		j.failedGuard, j.critical = nil, false
		// The reason shows the check's own numbers (the step's values, as the verdict's
		// check does) where there are some; else the rates the test saw.
		ref := stepM.Stable
		if sq.against == rollout.AgainstBaseline && m.Baseline != nil {
			ref = *m.Baseline
		}
		if stepM.Canary.OK() && ref.OK() {
			j.canary, j.reference = stepM.Canary.Value, ref.Value
		}
		return j
	case o == rollout.Error:
		return j
	case o == rollout.NoData && c.NoData == rollout.NoDataFail:
		j.result.Outcome = rollout.Fail
		j.result.Message += " (counted as a failure: noData is fail)"
		return j
	case o == rollout.NoData:
		return j
	}
	if c.MannWhitney != nil {
		j = judgeMannWhitney(j, *c.MannWhitney, ce.Points)
	}
	if j.result.Outcome == rollout.Pass && seqOn && !sq.shown {
		j.result.Outcome, j.result.Message = rollout.Inconclusive, sq.why
	}
	return j
}

// stepReading is the reading the guards judge from a step's counts.
func stepReading(c rollout.Check, t Tally) rollout.Reading {
	switch c.Kind {
	case rollout.KindRatio:
		if t.Total <= 0 {
			return rollout.Reading{Status: rollout.StatusNoData, Message: "no requests in this step yet"}
		}
		return rollout.Reading{Status: rollout.StatusOK, Value: t.Events / t.Total, Samples: int64(math.Round(t.Total)),
			Events: t.Events, Total: t.Total}
	default:
		q, count, err := rollout.Quantile(c.Quantile, t.Buckets)
		switch {
		case err != nil:
			return rollout.Reading{Status: rollout.StatusError, Message: err.Error()}
		case count <= 0:
			return rollout.Reading{Status: rollout.StatusNoData, Message: "no observations in this step yet"}
		case math.IsNaN(q):
			return rollout.Reading{Status: rollout.StatusError, Message: "histogram has no finite bucket to estimate a quantile from"}
		}
		return rollout.Reading{Status: rollout.StatusOK, Value: q, Samples: int64(math.Round(count)), Buckets: t.Buckets}
	}
}

// point is one evaluation's value of a side for the Mann-Whitney judge: for counts, the
// value over the interval since the previous evaluation; otherwise the reading's value. ok is
// false when there is none.
func point(c rollout.Check, r rollout.Reading, cur, prev Tally, hasCounts bool) (float64, bool) {
	if !hasCounts {
		return r.Value, r.OK()
	}
	interval := stepReading(c, since(cur, prev))
	return interval.Value, interval.OK()
}

func appendPoint(points []float64, v float64, ok bool) []float64 {
	if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
		return points
	}
	points = append(points, v)
	if len(points) > maxPoints {
		points = append(points[:0:0], points[len(points)-maxPoints:]...)
	}
	return points
}

// sequentialResult is what a check's sequential tests say at one evaluation.
type sequentialResult struct {
	// eValue is the largest e-value of the check's tests (1: no evidence yet).
	eValue float64
	// rejected is set when a test rejected "no worse": why, for the rollback reason;
	// message explains it in the check; against, canary and reference are the rates it saw.
	rejected  string
	message   string
	against   rollout.Reference
	canary    float64
	reference float64
	// shown is set when non-inferiority is shown (a ratio check's confidence sequence is
	// inside the margin for every reference that can be compared with); why says why not.
	// Histogram checks pass by their guards: shown is always set for them.
	shown bool
	why   string
	// confirming says why a rejection waits for the next evaluation (a shared burst).
	confirming string
	// threshold describes the tests for the check's threshold field.
	threshold string
	// needsStable is set when a test compares with the stable side.
	needsStable bool
}

func against(s *rollout.Sequential) []rollout.Reference {
	if len(s.Against) == 0 {
		return []rollout.Reference{rollout.AgainstStable}
	}
	return s.Against
}

func margin(s *rollout.Sequential) float64 {
	if s.Margin == nil {
		return rollout.DefaultMargin
	}
	return *s.Margin
}

func tolerance(s *rollout.Sequential) float64 {
	if s.Tolerance == nil {
		return rollout.DefaultTolerance
	}
	return *s.Tolerance
}

func priorScale(s *rollout.Sequential) float64 {
	if s.PriorScale <= 0 {
		return rollout.DefaultPriorScale
	}
	return s.PriorScale
}

// sequential runs a check's sequential tests: it feeds the test against stable the counts
// gathered since it last moved, recomputes the test against the baseline from the counts
// since the analysis started, and, for a ratio check, asks whether the step's confidence
// sequence is inside the margin.
func sequential(c rollout.Check, m rollout.Measurement, ce *CheckEvidence, canaryT Tally, hasCanary bool, stableT Tally, hasStable bool, alpha float64) sequentialResult {
	s := c.Sequential
	theta0 := 1 + margin(s)
	prior := logPrior(priorScale(s))
	refs := against(s)
	res := sequentialResult{eValue: 1, shown: c.Kind != rollout.KindRatio}

	var baseT Tally
	baseOK := false
	if m.Baseline != nil && thin(c, m.Baseline) == "" {
		baseT, baseOK = tallyOf(c.Kind, *m.Baseline)
	}
	if c.Kind == rollout.KindHistogram && ce.Tested == nil {
		switch {
		case baseOK:
			ce.Tested = chooseBuckets(baseT, c.Quantile)
		case hasCanary && hasStable:
			ce.Tested = chooseBuckets(pooled(canaryT, stableT), c.Quantile)
		}
	}
	ready := c.Kind == rollout.KindRatio || len(ce.Tested) > 0

	what := "rate"
	if c.Kind == rollout.KindHistogram {
		what = "share slower than " + bounds(ce.Tested)
		if !ready {
			what = "share slower than the tail's buckets"
		}
	}
	var described []string
	burst := false // the interval just counted held an error burst on both sides together
	rejecting := false
	reject := func(ref rollout.Reference, e, threshold float64, canary, reference counts, detail string) {
		if math.IsNaN(e) {
			e = 1 // no evidence (a test without counts); NaN would compare as a rejection
		}
		res.eValue = math.Max(res.eValue, e)
		if e < threshold || res.rejected != "" {
			return
		}
		rejecting = true
		if burst && !ce.Confirming {
			// Both sides' errors rose together: the two sides are scraped at different
			// moments, so one interval can hold one side's share of a shared burst and not
			// yet the other's. Such evidence must hold at the next evaluation, which
			// counts the other side's share too.
			res.confirming = fmt.Sprintf("e-value %s >= %s%s after errors rose on both sides: confirming at the next evaluation",
				formatE(e), formatE(threshold), detail)
			return
		}
		res.against = ref
		res.canary, res.reference = rate(canary), rate(reference)
		res.rejected = fmt.Sprintf("e-value %s >= %s%s", formatE(e), formatE(threshold), detail)
		res.message = fmt.Sprintf("the canary's %s is more than %s times the %s's: %s", what, trimFloat(theta0, 4), ref, res.rejected)
	}
	for _, ref := range refs {
		switch ref {
		case rollout.AgainstStable:
			res.needsStable = true
			if ready && hasCanary && hasStable {
				cp := since(canaryT, ce.PairedCanary).pairs(c.Kind, ce.Tested)
				sp := since(stableT, ce.PairedStable).pairs(c.Kind, ce.Tested)
				if len(ce.LogLR) != len(cp) {
					ce.LogLR = make([][]float64, len(cp))
					for i := range ce.LogLR {
						ce.LogLR[i] = make([]float64, gridSize)
					}
				}
				for i := range cp {
					if i == 0 {
						burst = isBurst(cp[0], sp[0], ce.PairedCanary.pairs(c.Kind, ce.Tested)[0], ce.PairedStable.pairs(c.Kind, ce.Tested)[0])
					}
					conditionalUpdate(ce.LogLR[i], theta0, cp[i], sp[i])
				}
				ce.PairedCanary, ce.PairedStable = canaryT.clone(), stableT.clone()
			}
			threshold := float64(max(1, len(ce.LogLR))) / alpha
			cp, sp := canaryT.pairs(c.Kind, ce.Tested), stableT.pairs(c.Kind, ce.Tested)
			for i, l := range ce.LogLR {
				if i < len(cp) && i < len(sp) {
					reject(ref, math.Exp(logMixture(l, prior)), threshold, cp[i], sp[i], bucketNote(c, ce.Tested, i))
				}
			}
			described = append(described, fmt.Sprintf("%s x stable (e-value < %s)", trimFloat(theta0, 4), formatE(threshold)))
		case rollout.AgainstBaseline:
			bp := baseT.pairs(c.Kind, ce.Tested)
			a := alpha / float64(max(1, len(bp)))
			threshold := 2 / a
			described = append(described, fmt.Sprintf("%s x baseline (e-value < %s)", trimFloat(theta0, 4), formatE(threshold)))
			if !baseOK || !ready || !hasCanary {
				continue
			}
			cp := canaryT.pairs(c.Kind, ce.Tested)
			for i := range bp {
				if bp[i].total <= 0 || cp[i].total <= 0 {
					continue // a bucket one of them lacks: nothing to test at it
				}
				// The baseline's rate is known only to within its confidence bound: the
				// null rate is (1 + margin) times its upper bound, at half the test's alpha.
				lambda0 := theta0 * poissonBound(bp[i].events, bp[i].total, a/2, true)
				e := math.Exp(logMixture(poissonLogLR(cp[i].events, cp[i].total, lambda0), prior))
				reject(ref, e, threshold, cp[i], bp[i], bucketNote(c, ce.Tested, i))
			}
		}
	}
	res.threshold = "canary " + what + " <= " + strings.Join(described, ", ")
	// A rejection awaiting confirmation is confirmed while the evidence holds, and forgotten
	// when it does not.
	ce.Confirming = res.confirming != ""
	if !rejecting {
		ce.Confirming = false
	}
	if res.rejected == "" && res.confirming != "" {
		res.shown, res.why = false, res.confirming
		return res
	}
	if c.Kind == rollout.KindRatio {
		res.shown, res.why = nonInferior(c, theta0, alpha, ce, canaryT, hasCanary, stableT, hasStable, baseT, baseOK, refs)
	}
	if res.shown && res.eValue >= maxPassingEValue {
		// Within the tolerance, yet evidence that the canary is worse than the margin is
		// building: no pass until it clears (or the test rejects).
		res.shown, res.why = false, fmt.Sprintf("evidence that the canary is worse is building (e-value %s): not passing while it is %s or more",
			formatE(res.eValue), formatE(maxPassingEValue))
	}
	return res
}

// nonInferior reports whether a ratio check's step shows the canary within its margin: the
// upper end of an anytime-valid confidence sequence of the canary's rate in the step is below
// (1 + margin) x the reference's lower bound + tolerance, for every reference that can be
// compared with (at least one). why explains a no.
func nonInferior(c rollout.Check, theta0, alpha float64, ce *CheckEvidence, canaryT Tally, hasCanary bool,
	stableT Tally, hasStable bool, baseT Tally, baseOK bool, refs []rollout.Reference) (bool, string) {
	if !hasCanary {
		return false, "no canary counts to show it within its margin"
	}
	tol := tolerance(c.Sequential)
	step := since(canaryT, ce.StepCanary)
	_, upper := rateCS(step.Events, step.Total, alpha/2)
	confidence := trimFloat(100*(1-alpha/2), 2) + "%"
	compared := 0
	for _, ref := range refs {
		var lower float64
		switch {
		case ref == rollout.AgainstStable && hasStable:
			s := since(stableT, ce.StepStable)
			lower, _ = rateCS(s.Events, s.Total, alpha/2)
		case ref == rollout.AgainstBaseline && baseOK:
			lower = poissonBound(baseT.Events, baseT.Total, alpha/2, false)
		default:
			continue
		}
		compared++
		allowed := theta0*lower + tol
		if !(upper < allowed) {
			return false, fmt.Sprintf("not yet shown within the margin: the canary's rate in this step is below %s (%s confidence), %s allowed (%s x %s + %s)",
				formatValue(rollout.KindRatio, upper), confidence, formatValue(rollout.KindRatio, allowed), trimFloat(theta0, 4), ref, trimFloat(tol, 6))
		}
	}
	if compared == 0 {
		return false, "nothing to show the canary within its margin against: no stable counts, and no usable baseline"
	}
	return true, ""
}

// maxPassingEValue is the e-value from which a check no longer passes: a canary within the
// tolerance but with growing evidence of being worse than the margin waits for the test.
const maxPassingEValue = 10

// burstFactor is how many times the pooled rate so far an interval's pooled rate must be for
// the interval to count as a burst shared by both sides.
const burstFactor = 5

// isBurst reports whether an interval's errors (c, s), both sides pooled, rose well above the
// pooled rate of the counts before it (beforeC, beforeS). It depends only on the totals the test conditions on, not on the canary's
// share, so deciding on it keeps the test valid.
func isBurst(c, s, beforeC, beforeS counts) bool {
	n, k := c.total+s.total, c.events+s.events
	n0, k0 := beforeC.total+beforeS.total, beforeC.events+beforeS.events
	if n <= 0 || n0 <= 0 || k < 10 {
		return false
	}
	return k/n > burstFactor*math.Max(k0/n0, 1/n0)
}

func rate(c counts) float64 {
	if c.total <= 0 {
		return math.NaN()
	}
	return c.events / c.total
}

func bucketNote(c rollout.Check, tested []float64, i int) string {
	if c.Kind != rollout.KindHistogram || i >= len(tested) {
		return ""
	}
	return " at " + trimFloat(tested[i], 6) + "s"
}

func bounds(les []float64) string {
	parts := make([]string, len(les))
	for i, le := range les {
		parts[i] = trimFloat(le, 6) + "s"
	}
	return strings.Join(parts, ", ")
}

// formatE writes an e-value for people: 3 significant digits, large ones in exponent form.
func formatE(e float64) string {
	switch {
	case math.IsInf(e, 1) || e > 1e15:
		return ">1e15"
	case e >= 1e6:
		return fmt.Sprintf("%.3g", e)
	case e >= 100:
		return fmt.Sprintf("%.0f", e)
	}
	return fmt.Sprintf("%.3g", e)
}
