package decide

import (
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
	// the canary is worse carries over from step to step.
	Failures int `json:"failures,omitempty"`
	// ConsecutiveErrors counts the evaluations in a row that ended in error.
	ConsecutiveErrors int `json:"consecutiveErrors,omitempty"`
	// Inconclusive counts the inconclusive evaluations of the current step.
	Inconclusive int `json:"inconclusive,omitempty"`
	// StepStarted names the step that Inconclusive, StepCanary, StepStable and Points
	// belong to.
	StepStarted time.Time `json:"stepStarted"`

	// Canary and Stable are each side's counts since the analysis started, as last measured.
	Canary Tally `json:"canary"`
	Stable Tally `json:"stable"`
	// StepCanary and StepStable are those counts as they were when the step began: the
	// step's own counts are the difference.
	StepCanary Tally `json:"stepCanary"`
	StepStable Tally `json:"stepStable"`

	// Tested are the upper bounds of the histogram buckets the sequential tests follow,
	// chosen once per analysis.
	Tested []float64 `json:"tested,omitempty"`
	// PairedCanary and PairedStable are the counts the test against stable has consumed:
	// it moves only when both sides were measured, so that each interval pairs the sides.
	PairedCanary Tally `json:"pairedCanary"`
	PairedStable Tally `json:"pairedStable"`
	// LogLR holds the test against stable: for each tested count (a ratio's errors, or each
	// tested bucket's slower requests), the log likelihood ratio of each alternative.
	LogLR [][]float64 `json:"logLR,omitempty"`

	// Confirming is set while a rejection waits for the next evaluation (see isBurst).
	Confirming bool `json:"confirming,omitempty"`

	// Points are the step's per-evaluation values of each side, for the Mann-Whitney judge.
	Points Points `json:"points"`
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
	out.StepCanary, out.StepStable = c.StepCanary.clone(), c.StepStable.clone()
	out.PairedCanary, out.PairedStable = c.PairedCanary.clone(), c.PairedStable.clone()
	out.Tested = slices.Clone(c.Tested)
	out.LogLR = make([][]float64, len(c.LogLR))
	for i, l := range c.LogLR {
		out.LogLR[i] = slices.Clone(l)
	}
	if c.LogLR == nil {
		out.LogLR = nil
	}
	out.Points = Points{Canary: slices.Clone(c.Points.Canary), Stable: slices.Clone(c.Points.Stable)}
	return out
}

func (t Tally) clone() Tally {
	t.Buckets = slices.Clone(t.Buckets)
	return t
}

// tallyOf is the counts a reading rests on; ok is false when it carries none.
func tallyOf(kind rollout.CheckKind, r rollout.Reading) (Tally, bool) {
	if !r.OK() {
		return Tally{}, false
	}
	switch kind {
	case rollout.KindRatio:
		if r.Total > 0 && r.Events >= 0 && !math.IsInf(r.Total, 0) && !math.IsNaN(r.Events) {
			return Tally{Events: r.Events, Total: r.Total}, true
		}
	case rollout.KindHistogram:
		if len(r.Buckets) > 0 {
			return Tally{Buckets: rollout.SortBuckets(r.Buckets)}, true
		}
	}
	return Tally{}, false
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

// atLeast is t with every count raised to at least prev's: counts since the analysis started
// never fall (Prometheus's increase() extrapolates, so successive measurements can dip
// slightly).
func atLeast(t, prev Tally) Tally {
	out := t.clone()
	out.Events = math.Max(t.Events, prev.Events)
	out.Total = math.Max(t.Total, prev.Total)
	for i, b := range out.Buckets {
		if c, ok := prev.bucketCount(b.UpperBound); ok && c > b.Count {
			out.Buckets[i].Count = c
		}
	}
	return out
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

// slower is how many of a histogram's observations were above le, and how many there were;
// nothing when the histogram has no bucket at le (a new bucket layout): its missing count
// is unknown, not zero.
func (t Tally) slower(le float64) counts {
	all := t.observations()
	c, ok := t.bucketCount(le)
	if !ok {
		return counts{}
	}
	return counts{events: math.Max(0, all-c), total: all}
}

// pairs is what a check's sequential tests count: a ratio's errors in its requests, or each
// tested bucket's slower requests in all requests.
func (t Tally) pairs(kind rollout.CheckKind, tested []float64) []counts {
	if kind == rollout.KindRatio {
		return []counts{{events: t.Events, total: t.Total}}
	}
	out := make([]counts, len(tested))
	for i, le := range tested {
		out[i] = t.slower(le)
	}
	return out
}

// maxTested is how many buckets a histogram check's tests follow.
const maxTested = 3

// chooseBuckets picks the buckets a histogram check's tests follow: up to maxTested finite
// bounds whose share of slower requests is nearest the quantile's tail (1 - q), among those
// with a share in (0, 0.5]. It needs about 20 expected slower requests; before that it
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
		if share <= 0 || share > 0.5 {
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

func pooled(a, b Tally) Tally {
	out := Tally{Events: a.Events + b.Events, Total: a.Total + b.Total}
	for _, x := range a.Buckets {
		c, _ := b.bucketCount(x.UpperBound)
		out.Buckets = append(out.Buckets, rollout.Bucket{UpperBound: x.UpperBound, Count: x.Count + c})
	}
	return out
}
