package decide

import (
	"maps"
	"math"
	"slices"
	"time"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// Evidence is what decisions carry from one evaluation to the next, across steps. It is plain
// data: it encodes as JSON, so that it can be stored and handed back after a restart.
type Evidence struct {
	// Checks holds each check's evidence, by check name.
	Checks map[string]CheckEvidence `json:"checks,omitempty"`
	// RolledBack is set by the first rollback; rollback is final for a revision.
	RolledBack bool `json:"rolledBack,omitempty"`
	// RollbackReason is the reason of that first rollback.
	RollbackReason string `json:"rollbackReason,omitempty"`
}

// CheckEvidence is one check's evidence.
type CheckEvidence struct {
	// Failures counts the check's failed evaluations over the whole analysis: evidence that
	// the canary is worse carries over from step to step. Only evaluations with new samples
	// count.
	Failures int `json:"failures,omitempty"`
	// ConsecutiveErrors counts the evaluations in a row that ended in error.
	ConsecutiveErrors int `json:"consecutiveErrors,omitempty"`
	// Inconclusive counts the inconclusive evaluations of the current step.
	Inconclusive int `json:"inconclusive,omitempty"`
	// StepStarted names the step that the Step* fields, Inconclusive and Points belong to;
	// Steps counts the steps the analysis has begun (the guards' error budget is spent
	// across them).
	StepStarted time.Time `json:"stepStarted"`
	Steps       int       `json:"steps,omitempty"`

	// Through is the newest instant a judgement of this check counted up to (counter
	// checks); Last is that judgement, repeated while no new sample arrives.
	Through time.Time            `json:"through,omitempty"`
	Last    *rollout.CheckResult `json:"last,omitempty"`
	// Held is, per guard judged on the step's counts (by its expression), the intersection
	// of its intervals over the step so far: each is a confidence sequence, valid at every
	// look, so their intersection is one too, and a guard shown to hold (or to fail) stays
	// shown while the step's counts move within their uncertainty.
	Held map[string][2]float64 `json:"held,omitempty"`

	// Tested are the upper bounds of the histogram buckets the sequential tests follow,
	// chosen once per analysis.
	Tested []float64 `json:"tested,omitempty"`
	// LogLR holds the test against stable over the steps already over: for each tested count
	// (a ratio's errors, or each tested bucket's slower requests), the log likelihood ratio
	// of each alternative. StepLogLR is the current step's share, as last judged; it joins
	// LogLR when the step ends.
	LogLR     [][]float64 `json:"logLR,omitempty"`
	StepLogLR [][]float64 `json:"stepLogLR,omitempty"`
	// Settled is the canary's counts over the steps already over, and StepCounts over the
	// current step as last judged, each tested count at its bound least favourable to a
	// rollback (events low, requests high): for the test against the baseline and the
	// tolerance.
	Settled    []Pair `json:"settled,omitempty"`
	StepCounts []Pair `json:"stepCounts,omitempty"`

	// Canary and Stable are each side's estimated counts in the step as last judged, for the
	// Mann-Whitney points and to tell a canary that stopped serving.
	Canary Tally `json:"canary"`
	Stable Tally `json:"stable"`
	// SharedSince is when a degradation both sides share began, while it lasts.
	SharedSince time.Time `json:"sharedSince,omitempty"`

	// Points are the step's per-evaluation values of each side, for the Mann-Whitney judge.
	Points Points `json:"points"`
}

// Pair is one tested count: events (errors, or requests slower than a bound) in a total.
type Pair struct {
	Events float64 `json:"events"`
	Total  float64 `json:"total"`
}

// Points are per-evaluation values.
type Points struct {
	Canary []float64 `json:"canary,omitempty"`
	Stable []float64 `json:"stable,omitempty"`
}

// maxPoints bounds the points kept per side (two hours at a 10 s interval).
const maxPoints = 720

// Tally is one side's counts since the analysis started: a ratio's events (errors) and total
// (requests), or a histogram's cumulative buckets.
type Tally struct {
	Events  float64          `json:"events,omitempty"`
	Total   float64          `json:"total,omitempty"`
	Buckets []rollout.Bucket `json:"buckets,omitempty"`
}

func (e Evidence) clone() Evidence {
	out := e
	out.Checks = make(map[string]CheckEvidence, len(e.Checks))
	for k, v := range e.Checks {
		out.Checks[k] = v.clone()
	}
	return out
}

func (c CheckEvidence) clone() CheckEvidence {
	out := c
	out.Canary, out.Stable = c.Canary.clone(), c.Stable.clone()
	out.Tested = slices.Clone(c.Tested)
	out.LogLR, out.StepLogLR = cloneLR(c.LogLR), cloneLR(c.StepLogLR)
	out.Settled, out.StepCounts = slices.Clone(c.Settled), slices.Clone(c.StepCounts)
	if c.Last != nil {
		last := *c.Last
		out.Last = &last
	}
	out.Points = Points{Canary: slices.Clone(c.Points.Canary), Stable: slices.Clone(c.Points.Stable)}
	out.Held = maps.Clone(c.Held)
	return out
}

func cloneLR(lr [][]float64) [][]float64 {
	if lr == nil {
		return nil
	}
	out := make([][]float64, len(lr))
	for i, l := range lr {
		out[i] = slices.Clone(l)
	}
	return out
}

func (t Tally) clone() Tally {
	t.Buckets = slices.Clone(t.Buckets)
	return t
}

// bucketCount is the count of the bucket with the given upper bound, and whether it exists.
func (t Tally) bucketCount(le float64) (float64, bool) {
	for _, b := range t.Buckets {
		if b.UpperBound == le {
			return b.Count, true
		}
	}
	return 0, false
}

// observations is a histogram's count of all observations (its +Inf bucket).
func (t Tally) observations() float64 {
	c, _ := t.bucketCount(math.Inf(1))
	return c
}

// since is the counts of t gathered after base (never negative).
func since(t, base Tally) Tally {
	out := Tally{Events: math.Max(0, t.Events-base.Events), Total: math.Max(0, t.Total-base.Total)}
	for _, b := range t.Buckets {
		c, _ := base.bucketCount(b.UpperBound)
		out.Buckets = append(out.Buckets, rollout.Bucket{UpperBound: b.UpperBound, Count: math.Max(0, b.Count-c)})
	}
	return out
}

// maxTested is how many buckets a histogram check's tests follow.
const maxTested = 3

// chooseBuckets picks the buckets a histogram check's tests follow: up to maxTested finite
// bounds whose share of slower requests is nearest the quantile's tail (1 - q), among those
// with a share in (0, 1): coarse buckets can leave the quantile between a bound that half the
// requests exceed and one that almost none do, and both then follow it. It needs about 20 expected slower requests; before that it
// returns nil. The choice is made from data that says nothing of the canary's share (the
// baseline, or both sides pooled), so it costs the tests no validity.
func chooseBuckets(t Tally, q float64) []float64 {
	all := t.observations()
	tail := 1 - q
	if all*tail < 20 {
		return nil
	}
	type candidate struct {
		le, distance float64
	}
	var cs []candidate
	for _, b := range t.Buckets {
		if math.IsInf(b.UpperBound, 0) {
			continue
		}
		share := (all - b.Count) / all
		if share <= 0 || share >= 1 {
			continue
		}
		cs = append(cs, candidate{b.UpperBound, math.Abs(math.Log(share / tail))})
	}
	slices.SortStableFunc(cs, func(a, b candidate) int {
		switch {
		case a.distance < b.distance:
			return -1
		case a.distance > b.distance:
			return 1
		}
		return 0
	})
	if len(cs) > maxTested {
		cs = cs[:maxTested]
	}
	out := make([]float64, len(cs))
	for i, c := range cs {
		out[i] = c.le
	}
	slices.Sort(out)
	return out
}
