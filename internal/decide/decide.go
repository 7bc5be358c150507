// Package decide turns an analysis template's policy and one evaluation's measurements into a
// verdict with its reasons. It is pure: no I/O, no clock, no logging. Everything a decision
// depends on is in its Input, and everything it must remember for the next one is in the
// Evidence it returns, which is plain data that can be stored.
package decide

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// Input is everything one decision depends on.
type Input struct {
	Template rollout.Template
	// Step and Weight are the rollout's current step and canary traffic percent.
	Step   int
	Weight int
	// StepStarted is the time of the event that started the current step; Now is the
	// evaluation's time. Both come from the caller: decide never reads a clock.
	StepStarted time.Time
	Now         time.Time
	// Measurements holds what compare measured, one per check (matched by name).
	Measurements []rollout.Measurement
	// Evidence is what the previous decision returned (zero for the first).
	Evidence Evidence
}

// Result is a decision: the verdict, why, each check's explanation, and the evidence to
// hand to the next decision.
type Result struct {
	Decision rollout.Decision
	Reason   string
	Checks   []rollout.CheckResult
	Evidence Evidence
}

// Decide judges one evaluation. Aggregation, in order:
//   - rollback when the revision was already rolled back (rollback is final), when a
//     sequential test rejects "the canary is no worse than its margin", when a critical
//     guard fails, when a check's failed evaluations exceed its failureLimit, or when a limit
//     whose escalation is rollback is exceeded (consecutiveErrorLimit, inconclusiveLimit);
//   - proceed when every check passes and the step has lasted minStepDuration;
//   - pause otherwise: an error, no data, too few samples, evidence not yet sufficient, a
//     failure still within its limit, or a step too young. No data and errors never give
//     proceed.
func Decide(in Input) Result {
	ev := in.Evidence.clone()
	byName := make(map[string]rollout.Measurement, len(in.Measurements))
	for _, m := range in.Measurements {
		byName[m.Check] = m
	}
	alpha := testAlpha(in.Template)

	judged := make([]judgement, 0, len(in.Template.Checks))
	for _, c := range in.Template.Checks {
		m, ok := byName[c.Name]
		if !ok {
			m = rollout.Measurement{
				Check:  c.Name,
				Canary: rollout.Reading{Status: rollout.StatusError, Message: "not measured"},
				Stable: rollout.Reading{Status: rollout.StatusError, Message: "not measured"},
			}
		}
		ce := ev.Checks[c.Name]
		if !ce.StepStarted.Equal(in.StepStarted) {
			// A new step: the last one's evidence against stable and its counts join what
			// the analysis has gathered; the step's own start from nothing.
			if len(ce.StepLogLR) > 0 {
				if len(ce.LogLR) != len(ce.StepLogLR) {
					ce.LogLR = make([][]float64, len(ce.StepLogLR))
					for i := range ce.LogLR {
						ce.LogLR[i] = make([]float64, gridSize)
					}
				}
				for i, l := range ce.StepLogLR {
					for k := range l {
						ce.LogLR[i][k] += l[k]
					}
				}
			}
			ce.Settled = addPairs(ce.Settled, ce.StepCounts)
			ce.StepLogLR, ce.StepCounts = nil, nil
			ce.Canary, ce.Stable = Tally{}, Tally{}
			ce.Through, ce.Last, ce.Held = time.Time{}, nil, nil
			ce.StepStarted = in.StepStarted
			ce.Steps++
			ce.Inconclusive = 0
			ce.Points = Points{}
		}
		j := judge(c, m, in, &ce, alpha)
		if !j.carried {
			switch j.result.Outcome {
			case rollout.Fail:
				ce.Failures++
			case rollout.Inconclusive:
				// Evidence still accumulating is no reason to give up: inconclusive
				// evaluations count toward inconclusiveLimit once the step has lasted
				// minStepDuration.
				if in.Now.Sub(in.StepStarted) >= in.Template.MinStepDuration {
					ce.Inconclusive++
				}
			}
			if j.result.Outcome == rollout.Error {
				ce.ConsecutiveErrors++
			} else {
				ce.ConsecutiveErrors = 0
			}
			switch {
			case j.shared == "":
				ce.SharedSince = time.Time{}
			case ce.SharedSince.IsZero():
				ce.SharedSince = in.Now
			}
		}
		j.evidence = ce
		j.now, j.sharedPolicy = in.Now, in.Template.SharedDegradation
		ev.Checks[c.Name] = ce
		judged = append(judged, j)
	}

	res := Result{Checks: make([]rollout.CheckResult, len(judged))}
	for i, j := range judged {
		res.Checks[i] = j.result
	}

	if ev.RolledBack {
		res.Decision, res.Reason = rollout.Rollback, ev.RollbackReason
		res.Evidence = ev
		return res
	}
	for _, j := range judged {
		reason, ok := j.rollback()
		if !ok {
			continue
		}
		res.Decision, res.Reason = rollout.Rollback, reason
		ev.RolledBack, ev.RollbackReason = true, reason
		res.Evidence = ev
		return res
	}

	res.Decision, res.Reason = pauseOrProceed(in, judged)
	res.Evidence = ev
	return res
}

// testAlpha is each sequential test's share of the template's alpha.
func testAlpha(t rollout.Template) float64 {
	alpha := t.Alpha
	if !(alpha > 0 && alpha < 1) {
		alpha = rollout.DefaultAlpha
	}
	n := 0
	for _, c := range t.Checks {
		if c.Kind != rollout.KindValue && c.Sequential.On() {
			n += len(against(c.Sequential))
		}
	}
	if n == 0 {
		return alpha
	}
	return alpha / float64(n)
}

// rollback says whether the check rolls the canary back, and why.
func (j judgement) rollback() (string, bool) {
	c, ce := j.check, j.evidence
	switch o := j.result.Outcome; {
	case o == rollout.Fail && j.rejected != "":
		return j.describe(j.rejected), true
	case o == rollout.Fail && j.critical:
		return j.describe(j.criticalWhy), true
	case o == rollout.Fail && ce.Failures > c.FailureLimit:
		return j.failed(), true
	case o == rollout.Error && c.OnErrorLimit == rollout.EscalateRollback && ce.ConsecutiveErrors > errorLimit(c):
		return fmt.Sprintf("%s: %s in a row, limit %d: %s", c.Name, plural(ce.ConsecutiveErrors, "error"), errorLimit(c), j.result.Message), true
	case o == rollout.Inconclusive && j.shared != "" && j.sharedEscalates(rollout.EscalateRollback):
		return fmt.Sprintf("%s: %s for %s, over sharedDegradation.escalateAfter (%s)", c.Name, j.shared,
			j.now.Sub(ce.SharedSince).Truncate(time.Second), j.sharedPolicy.EscalateAfter), true
	case o == rollout.Inconclusive && c.OnInconclusiveLimit == rollout.EscalateRollback && c.InconclusiveLimit > 0 && ce.Inconclusive > c.InconclusiveLimit:
		return fmt.Sprintf("%s: inconclusive %s in step, limit %d: %s", c.Name, times(ce.Inconclusive), c.InconclusiveLimit, j.result.Message), true
	}
	return "", false
}

// failed explains a failed check against its failure limit: by its guard's numbers when a
// guard failed, else by its message (no data counted as a failure, a Mann-Whitney effect).
func (j judgement) failed() string {
	c, ce := j.check, j.evidence
	if j.failedGuard == nil {
		return fmt.Sprintf("%s: %s (failed %s, limit %d)", c.Name, j.result.Message, times(ce.Failures), c.FailureLimit)
	}
	return j.describe(fmt.Sprintf("%s failed %s, limit %d", j.result.Threshold, times(ce.Failures), c.FailureLimit))
}

func errorLimit(c rollout.Check) int {
	if c.ConsecutiveErrorLimit == nil {
		return rollout.DefaultConsecutiveErrorLimit
	}
	return *c.ConsecutiveErrorLimit
}

func pauseOrProceed(in Input, judged []judgement) (rollout.Decision, string) {
	// The most pressing reason to wait comes first: the source failing, then missing data,
	// then failures within their limits, then thin evidence.
	for _, outcome := range []rollout.Outcome{rollout.Error, rollout.NoData, rollout.Fail, rollout.Inconclusive} {
		for _, j := range judged {
			if j.result.Outcome != outcome {
				continue
			}
			c, ce := j.check, j.evidence
			switch outcome {
			case rollout.Fail:
				return rollout.Pause, j.failed()
			case rollout.Error:
				if ce.ConsecutiveErrors > errorLimit(c) {
					return rollout.Pause, fmt.Sprintf("%s: %s in a row, over the limit of %d: paused until a person decides (onErrorLimit: pause): %s",
						c.Name, plural(ce.ConsecutiveErrors, "error"), errorLimit(c), j.result.Message)
				}
			case rollout.Inconclusive:
				if j.shared != "" && j.sharedEscalates(rollout.EscalatePause) {
					return rollout.Pause, fmt.Sprintf("%s: %s for %s, over sharedDegradation.escalateAfter (%s): paused until a person decides",
						c.Name, j.shared, j.now.Sub(ce.SharedSince).Truncate(time.Second), j.sharedPolicy.EscalateAfter)
				}
				if c.InconclusiveLimit > 0 && ce.Inconclusive > c.InconclusiveLimit {
					return rollout.Pause, fmt.Sprintf("%s: inconclusive %s in step, over the limit of %d: paused until a person decides (onInconclusiveLimit: pause): %s",
						c.Name, times(ce.Inconclusive), c.InconclusiveLimit, j.result.Message)
				}
			}
			return rollout.Pause, c.Name + ": " + j.result.Message
		}
	}
	age := in.Now.Sub(in.StepStarted)
	if age < in.Template.MinStepDuration {
		return rollout.Pause, fmt.Sprintf("step %d has lasted %s of the %s it needs",
			in.Step, age.Truncate(time.Second), in.Template.MinStepDuration)
	}
	reason := fmt.Sprintf("all %d checks pass after %s at step %d (weight %d%%)",
		len(judged), age.Truncate(time.Second), in.Step, in.Weight)
	var proved []string
	for _, j := range judged {
		if j.proved != "" {
			proved = append(proved, j.proved)
		}
	}
	if len(proved) > 0 {
		reason += ": " + strings.Join(proved, "; ")
	}
	return rollout.Proceed, reason
}

func times(n int) string {
	if n == 1 {
		return "once"
	}
	return fmt.Sprintf("%d times", n)
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// judgement is one check's outcome with what is needed to explain it.
type judgement struct {
	check    rollout.Check
	result   rollout.CheckResult
	evidence CheckEvidence
	// critical is set when a critical guard, or a critical Mann-Whitney effect, failed;
	// criticalWhy says which.
	critical    bool
	criticalWhy string
	// rejected says why a sequential test rejected "the canary is no worse", when one did.
	rejected string
	// failedGuard is the guard the reason text explains: the first critical guard that
	// failed, or else the first guard that failed (nil when no guard failed); failedAgainst,
	// canary and reference are the numbers the reason shows.
	failedGuard   *rollout.Guard
	failedAgainst rollout.Reference
	canary        float64
	reference     float64
	// carried is set when nothing new was measured: the last judgement stands, and counts
	// toward no limit. shared says why a degradation against the baseline is shared by
	// both sides (a pause, not a rollback); proved what a pass showed.
	carried      bool
	shared       string
	proved       string
	now          time.Time
	sharedPolicy rollout.SharedDegradation
}

// sharedEscalates reports whether a shared degradation has lasted past the template's
// limit and escalates to e.
func (j judgement) sharedEscalates(e rollout.Escalation) bool {
	p := j.sharedPolicy
	then := p.Then
	if then == "" {
		then = rollout.EscalatePause
	}
	return p.EscalateAfter > 0 && then == e && !j.evidence.SharedSince.IsZero() &&
		j.now.Sub(j.evidence.SharedSince) > p.EscalateAfter
}

// describe explains a failed check, e.g.
// "error-rate: canary 5.2% vs stable 0.4% (canary - stable < 0.01 failed once, limit 0)".
func (j judgement) describe(detail string) string {
	var b strings.Builder
	b.WriteString(j.check.Name)
	b.WriteString(": canary ")
	b.WriteString(formatValue(j.check.Kind, j.canary))
	if j.failedAgainst != rollout.AgainstNone {
		b.WriteString(" vs ")
		b.WriteString(string(j.failedAgainst))
		b.WriteString(" ")
		b.WriteString(formatValue(j.check.Kind, j.reference))
	}
	b.WriteString(" (")
	b.WriteString(detail)
	b.WriteString(")")
	return b.String()
}

func formatValue(kind rollout.CheckKind, v float64) string {
	switch kind {
	case rollout.KindRatio:
		return trimFloat(v*100, 2) + "%"
	case rollout.KindHistogram:
		return trimFloat(v, 4) + "s"
	}
	return trimFloat(v, 4)
}

func trimFloat(v float64, prec int) string {
	s := fmt.Sprintf("%.*f", prec, v)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// judgeGuards decides a check's outcome by its threshold guards, from the step's readings.
// needStable is set when something other than a guard (a sequential test) needs the stable
// side, so that its error is the check's error.
func judgeGuards(c rollout.Check, m rollout.Measurement, step, weight int, needStable bool) judgement {
	r := numbers(c, m)

	// A baseline that was captured but holds no data, or too few samples to compare with (a
	// service with little or no history before the canary), cannot be compared with: its
	// guards do not apply, and the check says so. A skipped guard never makes a pass: when a
	// skipped guard was a condition for proceeding (not critical) and no other guard
	// compared anything, the check is inconclusive. Critical guards are emergency brakes
	// (roll back at once), not conditions for proceeding: when only they were skipped, the
	// check stands on its other guards, or passes as one with no guard at this step.
	thinBaseline := thin(c, m.Baseline)
	var active []rollout.Guard
	skipped, skippedCondition := false, false
	for _, g := range c.Guards {
		if !g.Active(step, weight) {
			continue
		}
		if g.Against == rollout.AgainstBaseline && thinBaseline != "" {
			skipped = true
			skippedCondition = skippedCondition || !g.Critical
			continue
		}
		active = append(active, g)
	}
	r.Threshold = expressions(active)
	r.Limits = limitsOf(active, r)
	j := judgement{check: c, result: r}
	set := func(o rollout.Outcome, msg string) judgement {
		if skipped && o == rollout.Pass {
			msg = skippedNote(msg, thinBaseline)
		}
		j.result.Outcome, j.result.Message = o, msg
		return j
	}

	switch {
	case m.Canary.Status == rollout.StatusError:
		return set(rollout.Error, "canary: "+m.Canary.Message)
	case (needStable || needs(active, rollout.AgainstStable)) && m.Stable.Status == rollout.StatusError:
		return set(rollout.Error, "stable: "+m.Stable.Message)
	case !m.Canary.OK():
		return set(rollout.NoData, "no canary data: "+m.Canary.Message)
	case c.Kind != rollout.KindValue && m.Canary.Samples < c.MinSamples:
		return set(rollout.Inconclusive, fmt.Sprintf("%d of the %d canary samples it needs", m.Canary.Samples, c.MinSamples))
	case len(active) == 0 && skippedCondition:
		return set(rollout.Inconclusive, "nothing to compare with: "+thinBaseline+" and no other guard applies at this step")
	case len(active) == 0:
		return set(rollout.Pass, "no guard applies at this step")
	}

	canary := m.Canary.Value
	var failed []rollout.Guard
	var waiting []string
	for _, g := range active {
		ref, ok, why := reference(c, g.Against, m)
		if !ok {
			waiting = append(waiting, why)
			continue
		}
		if !holds(g, canary, ref) {
			if len(failed) == 0 || (g.Critical && !j.critical) {
				j.failedGuard, j.failedAgainst, j.canary, j.reference = &g, g.Against, canary, ref
				if g.Critical {
					j.criticalWhy = "critical: " + g.Expression() + " failed"
				}
			}
			failed = append(failed, g)
			j.critical = j.critical || g.Critical
		}
	}
	switch {
	case len(failed) > 0:
		j.result.Threshold = expressions(failed)
		return set(rollout.Fail, "")
	case len(waiting) > 0:
		return set(rollout.Inconclusive, strings.Join(waiting, "; "))
	}
	return set(rollout.Pass, "")
}

// numbers is a check's result with the numbers of its measurement: each side's value and
// samples, the baseline, and the deltas.
func numbers(c rollout.Check, m rollout.Measurement) rollout.CheckResult {
	r := rollout.CheckResult{Metric: c.Name, Samples: rollout.Samples{Canary: m.Canary.Samples, Stable: m.Stable.Samples}}
	if m.Canary.OK() {
		r.Canary = ptr(m.Canary.Value)
	}
	if m.Stable.OK() {
		r.Stable = ptr(m.Stable.Value)
	}
	if m.Baseline != nil && m.Baseline.OK() {
		r.Baseline = ptr(m.Baseline.Value)
	}
	r.Delta, r.RelativeDelta = deltas(m.Canary, &m.Stable)
	r.BaselineDelta, r.BaselineRelativeDelta = deltas(m.Canary, m.Baseline)
	return r
}

// skippedNote adds to a check's message that its guards against the baseline were skipped,
// and why (thin's reason).
func skippedNote(msg, thinBaseline string) string {
	return strings.TrimPrefix(msg+"; ", "; ") + thinBaseline + ", so its guards were skipped"
}

// thin says why a captured baseline cannot be compared with (no data, or too few samples),
// or "" when it can be or is not captured yet.
func thin(c rollout.Check, b *rollout.Reading) string {
	switch {
	case b == nil:
		return ""
	case b.Status == rollout.StatusNoData:
		return "the baseline has no data"
	case b.OK() && c.Kind != rollout.KindValue && b.Samples < c.MinSamples:
		return fmt.Sprintf("the baseline has %d of the %d samples it needs", b.Samples, c.MinSamples)
	case b.OK() && b.Counts != nil && b.Counts.Total.Low < float64(c.MinSamples):
		// Counted from raw samples, the baseline is sure of its low bound only: series first
		// scraped within its window (Prometheus or the stable pods new) may have counted
		// everything before it, and its interval then admits any rate, which no guard can be
		// shown outside of.
		return fmt.Sprintf("the baseline has %d samples for certain of the %d it needs (%d estimated: its edges hold most of them, as when its series were first scraped within its window)",
			int64(b.Counts.Total.Low), c.MinSamples, b.Samples)
	}
	return ""
}

// reference is the value a guard compares the canary with, or why there is none yet. The
// stable side needs as many samples as the canary does: a stable side of a few requests is no
// reference (the canary's share of traffic can be the larger one).
func reference(c rollout.Check, against rollout.Reference, m rollout.Measurement) (value float64, ok bool, why string) {
	switch against {
	case rollout.AgainstStable:
		if !m.Stable.OK() {
			return 0, false, "no stable data: " + m.Stable.Message
		}
		if c.Kind != rollout.KindValue && m.Stable.Samples < c.MinSamples {
			return 0, false, fmt.Sprintf("%d of the %d stable samples it needs", m.Stable.Samples, c.MinSamples)
		}
		return m.Stable.Value, true, ""
	case rollout.AgainstBaseline:
		if m.Baseline == nil {
			return 0, false, "baseline not captured yet"
		}
		if !m.Baseline.OK() {
			return 0, false, "baseline not usable: " + m.Baseline.Message
		}
		return m.Baseline.Value, true, ""
	}
	return 0, true, ""
}

func needs(guards []rollout.Guard, against rollout.Reference) bool {
	for _, g := range guards {
		if g.Against == against {
			return true
		}
	}
	return false
}

// holds reports whether the guard's measure is strictly within its bounds.
func holds(g rollout.Guard, canary, ref float64) bool {
	v := canary
	switch g.Measure {
	case rollout.MeasureDelta:
		v = canary - ref
	case rollout.MeasureRatio:
		v = ratio(canary, ref)
	}
	if math.IsNaN(v) {
		return false
	}
	if g.Max != nil && !(v < *g.Max) {
		return false
	}
	if g.Min != nil && !(v > *g.Min) {
		return false
	}
	return true
}

// ratio is canary / ref, with 0/0 = 1 (both sides equally quiet) and x/0 = +Inf.
func ratio(canary, ref float64) float64 {
	if ref == 0 {
		if canary == 0 {
			return 1
		}
		return math.Inf(1)
	}
	return canary / ref
}

func expressions(guards []rollout.Guard) string {
	parts := make([]string, len(guards))
	for i, g := range guards {
		parts[i] = g.Expression()
	}
	return strings.Join(parts, "; ")
}

// limitsOf are the guards' bounds on the canary's value, given the references in r: for a
// delta the reference plus the bound, for a ratio the reference times it. A bound whose
// reference r does not hold is nil; nil when there are no guards.
func limitsOf(guards []rollout.Guard, r rollout.CheckResult) []rollout.Limit {
	if len(guards) == 0 {
		return nil
	}
	out := make([]rollout.Limit, len(guards))
	for i, g := range guards {
		l := rollout.Limit{Guard: g.Expression()}
		var ref *float64
		switch g.Against {
		case rollout.AgainstStable:
			ref = r.Stable
		case rollout.AgainstBaseline:
			ref = r.Baseline
		}
		bound := func(b *float64) *float64 {
			switch {
			case b == nil:
				return nil
			case g.Against == rollout.AgainstNone:
				return ptr(*b)
			case ref == nil:
				return nil
			case g.Measure == rollout.MeasureRatio:
				return ptr(*ref * *b)
			default:
				return ptr(*ref + *b)
			}
		}
		l.Min, l.Max = bound(g.Min), bound(g.Max)
		if l.Min != nil && l.Max != nil && *l.Min > *l.Max { // a ratio to a negative reference
			l.Min, l.Max = l.Max, l.Min
		}
		out[i] = l
	}
	return out
}

// ptr returns a pointer to f, or nil when f is NaN or infinite: a verdict's numbers must
// encode as JSON, and a number that is not finite could not be computed.
// deltas are canary - ref and (canary - ref) / ref, nil where they cannot be computed.
func deltas(canary rollout.Reading, ref *rollout.Reading) (delta, relative *float64) {
	if ref == nil || !canary.OK() || !ref.OK() {
		return nil, nil
	}
	d := canary.Value - ref.Value
	if ref.Value != 0 {
		relative = ptr(d / ref.Value)
	}
	return ptr(d), relative
}

func ptr(f float64) *float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	return &f
}

// usable turns an ok reading whose value is NaN into no data: NaN is not a measurement, and
// judging it would fail every guard.
func usable(r rollout.Reading) rollout.Reading {
	if r.OK() && math.IsNaN(r.Value) {
		return rollout.Reading{Status: rollout.StatusNoData, Samples: r.Samples, Message: "the value is NaN"}
	}
	return r
}
