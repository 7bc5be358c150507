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

// Evidence is what decisions carry from one evaluation to the next, across steps.
type Evidence struct {
	// Failures counts the failed evaluations of each check, by check name. Failures carry
	// over from step to step: evidence that the canary is worse is never forgotten.
	Failures map[string]int `json:"failures,omitempty"`
	// RolledBack is set by the first rollback; rollback is final for a revision.
	RolledBack bool `json:"rolledBack,omitempty"`
	// RollbackReason is the reason of that first rollback.
	RollbackReason string `json:"rollbackReason,omitempty"`
}

func (e Evidence) clone() Evidence {
	out := e
	out.Failures = make(map[string]int, len(e.Failures))
	for k, v := range e.Failures {
		out.Failures[k] = v
	}
	return out
}

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
//     critical guard fails, or when a check's failed evaluations exceed its failureLimit;
//   - proceed when every check passes and the step has lasted minStepDuration;
//   - pause otherwise: an error, no data, too few samples, a failure still within its
//     limit, or a step too young. No data and errors never give proceed.
func Decide(in Input) Result {
	ev := in.Evidence.clone()
	byName := make(map[string]rollout.Measurement, len(in.Measurements))
	for _, m := range in.Measurements {
		byName[m.Check] = m
	}

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
		j := judge(c, m, in.Step, in.Weight)
		if j.result.Outcome == rollout.Fail {
			ev.Failures[c.Name]++
		}
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
		if j.result.Outcome != rollout.Fail {
			continue
		}
		failures := ev.Failures[j.check.Name]
		switch {
		case j.critical:
			res.Decision, res.Reason = rollout.Rollback, j.describe("critical: "+j.failedGuard.Expression()+" failed")
		case failures > j.check.FailureLimit:
			res.Decision, res.Reason = rollout.Rollback, j.describe(fmt.Sprintf("%s failed %s, limit %d",
				j.result.Threshold, times(failures), j.check.FailureLimit))
		default:
			continue
		}
		ev.RolledBack, ev.RollbackReason = true, res.Reason
		res.Evidence = ev
		return res
	}

	res.Decision, res.Reason = pauseOrProceed(in, judged, ev)
	res.Evidence = ev
	return res
}

func pauseOrProceed(in Input, judged []judgement, ev Evidence) (rollout.Decision, string) {
	// The most pressing reason to wait comes first: the source failing, then missing data,
	// then failures within their limits, then thin evidence.
	for _, outcome := range []rollout.Outcome{rollout.Error, rollout.NoData, rollout.Fail, rollout.Inconclusive} {
		for _, j := range judged {
			if j.result.Outcome != outcome {
				continue
			}
			switch outcome {
			case rollout.Fail:
				return rollout.Pause, j.describe(fmt.Sprintf("%s failed %s, limit %d",
					j.result.Threshold, times(ev.Failures[j.check.Name]), j.check.FailureLimit))
			default:
				return rollout.Pause, j.check.Name + ": " + j.result.Message
			}
		}
	}
	age := in.Now.Sub(in.StepStarted)
	if age < in.Template.MinStepDuration {
		return rollout.Pause, fmt.Sprintf("step %d has lasted %s of the %s it needs",
			in.Step, age.Truncate(time.Second), in.Template.MinStepDuration)
	}
	return rollout.Proceed, fmt.Sprintf("all %d checks pass after %s at step %d (weight %d%%)",
		len(judged), age.Truncate(time.Second), in.Step, in.Weight)
}

func times(n int) string {
	if n == 1 {
		return "once"
	}
	return fmt.Sprintf("%d times", n)
}

// judgement is one check's outcome with what is needed to explain it.
type judgement struct {
	check    rollout.Check
	result   rollout.CheckResult
	critical bool
	// failedGuard is the guard the reason text explains: the first critical guard that
	// failed, or else the first guard that failed; failedAgainst, canary and reference are
	// its numbers.
	failedGuard   rollout.Guard
	failedAgainst rollout.Reference
	canary        float64
	reference     float64
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

// judge decides one check's outcome from its measurement.
func judge(c rollout.Check, m rollout.Measurement, step, weight int) judgement {
	m.Canary, m.Stable = usable(m.Canary), usable(m.Stable)
	if m.Baseline != nil {
		b := usable(*m.Baseline)
		m.Baseline = &b
	}
	r := rollout.CheckResult{
		Metric:  c.Name,
		Samples: rollout.Samples{Canary: m.Canary.Samples, Stable: m.Stable.Samples},
	}
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

	// A baseline that was captured but holds no data, or too few samples to compare with (a
	// service with little or no history before the canary), cannot be compared with: its
	// guards do not apply, and the check says so. A skipped guard never makes a pass: when a
	// skipped guard was a condition for proceeding (not critical) and no other guard
	// compared anything, the check is inconclusive. Critical guards are emergency brakes
	// (roll back at once), not conditions for proceeding: when only they were skipped, the
	// check stands on its other guards, or passes as one with no guard at this step.
	thinBaseline := ""
	if b := m.Baseline; b != nil {
		switch {
		case b.Status == rollout.StatusNoData:
			thinBaseline = "the baseline has no data"
		case b.OK() && c.Kind != rollout.KindValue && b.Samples < c.MinSamples:
			thinBaseline = fmt.Sprintf("the baseline has %d of the %d samples it needs", b.Samples, c.MinSamples)
		}
	}
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
	j := judgement{check: c, result: r}
	set := func(o rollout.Outcome, msg string) judgement {
		if skipped && o == rollout.Pass {
			msg = strings.TrimPrefix(msg+"; ", "; ") + thinBaseline + ", so its guards were skipped"
		}
		j.result.Outcome, j.result.Message = o, msg
		return j
	}

	switch {
	case m.Canary.Status == rollout.StatusError:
		return set(rollout.Error, "canary: "+m.Canary.Message)
	case needs(active, rollout.AgainstStable) && m.Stable.Status == rollout.StatusError:
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
				j.failedGuard, j.failedAgainst, j.canary, j.reference = g, g.Against, canary, ref
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
