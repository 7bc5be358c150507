// Package replay evaluates a rollout as the daemon does: the measurement target of an
// evaluation, the decision on its measurements (the baseline attached, the evidence carried),
// and, for a past deployment, the whole analysis over Prometheus history (Run), with the
// rollout's steps at the times its events would have come. The analyzer and
// `analyzerd backtest` share Target and Decide, so that a backtest decides what the daemon
// would have.
package replay

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/analyzerd/analyzerd/internal/compare"
	"github.com/analyzerd/analyzerd/internal/decide"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

// Position is where an analysis stands when it is evaluated: its step, the canary's weight,
// and when the step began (the time of the event that began it).
type Position struct {
	Step        int
	Weight      int
	StepStarted time.Time
}

// Target is what an evaluation at now measures: the step so far, both sides.
func Target(t *compare.Template, args, canary, stable map[string]string, stepStarted, now time.Time) compare.Target {
	return compare.Target{
		Template: t,
		Args:     args,
		Canary:   compare.Side{Vars: canary},
		Stable:   compare.Side{Vars: stable},
		From:     stepStarted,
		At:       now,
	}
}

// Decide is the daemon's decision on one evaluation at now: the measurements, with the
// stored baseline attached to each check that has one, judged by decide.Decide from the
// evidence the previous decision returned. It is pure: ms is not changed.
func Decide(t *compare.Template, pos Position, baseline map[string]rollout.Reading, evidence decide.Evidence, now time.Time, ms []rollout.Measurement) decide.Result {
	withBaseline := make([]rollout.Measurement, len(ms))
	copy(withBaseline, ms)
	for i := range withBaseline {
		if b, ok := baseline[withBaseline[i].Check]; ok {
			withBaseline[i].Baseline = &b
		}
	}
	return decide.Decide(decide.Input{
		Template:     t.Template,
		Step:         pos.Step,
		Weight:       pos.Weight,
		StepStarted:  pos.StepStarted,
		Now:          now,
		Measurements: withBaseline,
		Evidence:     evidence,
	})
}

// Unreachable reports whether every query of an evaluation failed because the metrics source
// could not be reached.
func Unreachable(ms []rollout.Measurement) bool {
	if len(ms) == 0 {
		return false
	}
	for _, m := range ms {
		for _, r := range []rollout.Reading{m.Canary, m.Stable} {
			if r.Status != rollout.StatusError || !strings.Contains(r.Message, compare.ErrUnavailable.Error()) {
				return false
			}
		}
	}
	return true
}

// Measurer measures rollouts; *compare.Comparer is the implementation (the analyzer's
// Measurer, as Run needs it).
type Measurer interface {
	Measure(ctx context.Context, t compare.Target) []rollout.Measurement
	CaptureBaseline(ctx context.Context, t *compare.Template, args, stable map[string]string, at time.Time) (map[string]rollout.Reading, error)
}

// Step is one step of a rollout: the canary's weight from At on.
type Step struct {
	Weight int
	At     time.Time
}

// Rollout is a past deployment to evaluate.
type Rollout struct {
	Ref      rollout.Ref
	Revision string
	Template *compare.Template
	Args     map[string]string
	Canary   map[string]string
	Stable   map[string]string
	// Steps are the rollout's steps in time order: Steps[0].At is the rollout.started time
	// (the baseline is measured over the template's baselineWindow before it), each later one
	// the time of a rollout.step event. Step i is the event's "step" field.
	Steps []Step
	// To ends the analysis: no evaluation after it.
	To time.Time
}

// Validate reports what makes the rollout impossible to evaluate.
func (r Rollout) Validate() error {
	var errs []error
	if r.Template == nil {
		errs = append(errs, errors.New("no template"))
	}
	if len(r.Steps) == 0 {
		errs = append(errs, errors.New("no steps: the first step is the rollout's start"))
	}
	for i, s := range r.Steps {
		if s.Weight < 0 || s.Weight > 100 {
			errs = append(errs, fmt.Errorf("step %d: weight must be within 0..100, got %d", i, s.Weight))
		}
		if i > 0 && !s.At.After(r.Steps[i-1].At) {
			errs = append(errs, fmt.Errorf("step %d (%s) does not come after step %d (%s)", i, s.At.UTC().Format(time.RFC3339), i-1, r.Steps[i-1].At.UTC().Format(time.RFC3339)))
		}
		if !r.To.IsZero() && s.At.After(r.To) {
			errs = append(errs, fmt.Errorf("step %d (%s) begins after the end (%s)", i, s.At.UTC().Format(time.RFC3339), r.To.UTC().Format(time.RFC3339)))
		}
	}
	if len(r.Steps) > 0 && !r.To.After(r.Steps[0].At) {
		errs = append(errs, fmt.Errorf("the end (%s) must come after the start (%s)", r.To.UTC().Format(time.RFC3339), r.Steps[0].At.UTC().Format(time.RFC3339)))
	}
	if r.Template != nil {
		ev := rollout.Event{Args: r.Args, Canary: r.Canary, Stable: r.Stable}
		if err := r.Template.CheckStart(ev); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Evaluation is one evaluation of a replayed analysis: the verdict the daemon would have
// published, and when it would have evaluated next (before a step event came: the next
// evaluation comes at the earlier of the two).
type Evaluation struct {
	Verdict rollout.Verdict
	// Planned is when the daemon's scheduler planned the next evaluation (zero after a
	// rollback, which is final).
	Planned time.Time
}

// ErrUnavailable means the metrics source could not be reached during the replay: history
// does not come back by waiting, so the replay stops.
var ErrUnavailable = errors.New("metrics source unavailable")

// Run evaluates the rollout over history as the daemon would have: at its start (the daemon
// evaluates a new analysis at once), then at the data's pace (Next: the next scrape the counts
// wait for, at least minInterval and at most interval later, backing off while none comes),
// and at once at each step's event. The baseline is captured at the first evaluation, over the
// baselineWindow before the start (and at each evaluation until it is captured, as the
// daemon does). Evidence carries from each decision to the next; a rollback is final. It
// returns the evaluations up to r.To, and stops with an error wrapping ErrUnavailable when
// every query of an evaluation failed to reach the source.
func Run(ctx context.Context, m Measurer, r Rollout) ([]Evaluation, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	started := r.Steps[0].At
	var (
		out      []Evaluation
		baseline map[string]rollout.Reading
		evidence decide.Evidence
		seq      uint64
		step     = 0
		now      = started
		idle     int // evaluations in a row without a new sample (Next)
	)
	for !now.After(r.To) {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		// The step events due by now are applied first (the daemon evaluates a new step at
		// once, and drops an evaluation of the step before that was still in flight).
		for step+1 < len(r.Steps) && !r.Steps[step+1].At.After(now) {
			step++
		}
		pos := Position{Step: step, Weight: r.Steps[step].Weight, StepStarted: r.Steps[step].At}
		if baseline == nil {
			// A failed capture leaves it nil: tried again at the next evaluation, and the
			// baseline guards wait meanwhile ("baseline not captured yet").
			baseline, _ = m.CaptureBaseline(ctx, r.Template, r.Args, r.Stable, started)
		}
		ms := m.Measure(ctx, Target(r.Template, r.Args, r.Canary, r.Stable, pos.StepStarted, now))
		if Unreachable(ms) {
			return out, fmt.Errorf("%w at %s: %s", ErrUnavailable, now.UTC().Format(time.RFC3339), ms[0].Canary.Message)
		}
		d := Decide(r.Template, pos, baseline, evidence, now, ms)
		before := evidence
		evidence = d.Evidence
		seq++
		ev := Evaluation{Verdict: rollout.Verdict{
			Rollout: r.Ref, Revision: r.Revision, Step: pos.Step, Weight: pos.Weight,
			Verdict: d.Decision, Reason: d.Reason, Sequence: seq, Checks: d.Checks,
			DecidedAt: now.UTC().Truncate(time.Millisecond), // the precision of the wire format
		}}
		if d.Decision == rollout.Rollback {
			out = append(out, ev)
			return out, nil // final: the daemon evaluates a rolled-back revision no more
		}
		ev.Planned, idle = Next(r.Template, now, ms, before, pos.StepStarted, idle)
		out = append(out, ev)
		next := ev.Planned
		if step+1 < len(r.Steps) && r.Steps[step+1].At.Before(next) {
			next = r.Steps[step+1].At
		}
		now = next
	}
	return out, nil
}

// Next is when the daemon evaluates again after an evaluation at now that measured ms, with
// before the evidence it decided on, in the step started at stepStarted: as soon as new
// samples can have come (compare.NextEvaluation); but after evaluations in a row that found
// none (idle counts those before this one; the scrape awaited came late, or the feed had
// not read it yet), 1 s, 2 s, 4 s... after now, up to the interval: a late scrape is met at
// about its pace, not polled every second by every rollout while Prometheus is slow. It
// returns the count to pass to the next call.
func Next(t *compare.Template, now time.Time, ms []rollout.Measurement, before decide.Evidence, stepStarted time.Time, idle int) (time.Time, int) {
	next := compare.NextEvaluation(now, t.Template, ms)
	if !nothingNew(before, stepStarted, ms) {
		return next, 0
	}
	idle++
	wait := t.Interval
	if idle <= 8 {
		wait = min(wait, time.Second<<(idle-1))
	}
	if l := now.Add(wait); l.After(next) {
		next = l
	}
	return next, idle
}

// nothingNew reports whether an evaluation's counter checks all counted up to where the
// evidence's did already in the same step (no new sample came since), and it has at least
// one. A value check does not wait for samples: in a template with both, the counter checks
// say when the next evaluation is due (at most the interval).
func nothingNew(ev decide.Evidence, stepStarted time.Time, ms []rollout.Measurement) bool {
	counters := false
	for _, m := range ms {
		if m.Through.IsZero() {
			continue // a value check, or no sample at all: nothing to wait for
		}
		counters = true
		if ce, ok := ev.Checks[m.Check]; !ok || !ce.StepStarted.Equal(stepStarted) || m.Through.After(ce.Through) {
			return false
		}
	}
	return counters
}

// Final is the verdict a replay ends on, for a pipeline to gate on: rollback when it rolled
// back (final for the revision); otherwise the last verdict of the last step evaluated at a
// weight below 100, or of the last step evaluated when every one was at 100. A step at weight
// 100 is full promotion: there is no stable traffic left to compare with, so the template's
// checks against stable pause there whatever the canary does; the step before it says
// whether the promotion was right. Pause when nothing was evaluated.
func Final(evals []Evaluation) rollout.Decision {
	if len(evals) == 0 {
		return rollout.Pause
	}
	last := evals[len(evals)-1].Verdict
	if last.Verdict == rollout.Rollback {
		return rollout.Rollback
	}
	for i := len(evals) - 1; i >= 0; i-- {
		if v := evals[i].Verdict; v.Weight < 100 {
			return v.Verdict
		}
	}
	return last.Verdict
}
