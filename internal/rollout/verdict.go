package rollout

import "time"

// Decision is what a verdict tells the controller to do.
type Decision string

// The decisions of CONTRACT.md section 4.
const (
	Proceed  Decision = "proceed"
	Pause    Decision = "pause"
	Rollback Decision = "rollback"
)

// Outcome is the result of one check at one evaluation.
type Outcome string

// The outcomes of a check. They are distinct everywhere: no data is not an error, and an
// error is not a failure.
const (
	Pass         Outcome = "pass"
	Fail         Outcome = "fail"
	Inconclusive Outcome = "inconclusive"
	NoData       Outcome = "nodata"
	Error        Outcome = "error"
)

// Verdict is the payload of a rollout.verdict event, exactly as controllers read it.
type Verdict struct {
	Rollout   Ref           `json:"rollout"`
	Revision  string        `json:"revision"`
	Step      int           `json:"step"`
	Weight    int           `json:"weight"`
	Verdict   Decision      `json:"verdict"`
	Reason    string        `json:"reason"`
	Sequence  uint64        `json:"sequence"`
	Checks    []CheckResult `json:"checks"`
	DecidedAt time.Time     `json:"decidedAt"`
	Cause     string        `json:"cause"`
	TraceID   string        `json:"traceId"`
}

// Key is the analysis the verdict is about.
func (v Verdict) Key() Key { return Key{Ref: v.Rollout, Revision: v.Revision} }

// CheckResult explains one check of a verdict. Numbers that could not be computed are nil
// and encode as null.
type CheckResult struct {
	Metric   string   `json:"metric"`
	Outcome  Outcome  `json:"outcome"`
	Canary   *float64 `json:"canary"`
	Stable   *float64 `json:"stable"`
	Baseline *float64 `json:"baseline"`
	// Delta and RelativeDelta compare the canary with the stable side: canary - stable and
	// (canary - stable) / stable.
	Delta         *float64 `json:"delta"`
	RelativeDelta *float64 `json:"relativeDelta"`
	// BaselineDelta and BaselineRelativeDelta compare the canary with the baseline:
	// canary - baseline and (canary - baseline) / baseline. Optional (added to v1).
	BaselineDelta         *float64 `json:"baselineDelta"`
	BaselineRelativeDelta *float64 `json:"baselineRelativeDelta"`
	Threshold             string   `json:"threshold"`
	Samples               Samples  `json:"samples"`
	// EValue is the evidence the check's sequential tests have gathered that the canary is
	// worse than its margin (the largest of its tests; 1 is none, rollback at 1/alpha).
	// Optional (added to v1): absent when the check runs no sequential test.
	EValue *float64 `json:"eValue,omitempty"`
	// EValueThreshold is what EValue must reach for a rollback: 1/alpha of the test behind
	// EValue, alpha being that test's share of the template's budget. Optional (added to v1):
	// absent with EValue.
	EValueThreshold *float64 `json:"eValueThreshold,omitempty"`
	// Limits are the check's active guards as bounds on the canary's value at this
	// evaluation: a guard "canary - stable < 0.01" with stable at 0.004 is the limit
	// {max: 0.014}. Optional (added to v1): absent when no guard applies; a guard whose
	// reference is not known yet has no bound.
	Limits []Limit `json:"limits,omitempty"`
	// Message says why a check is not pass when the numbers alone do not: no data, a query
	// error, too few samples. Optional.
	Message string `json:"message,omitempty"`
}

// Limit is one guard's bounds on the canary's value: the guard holds when Min < canary < Max.
// A bound that does not exist, or cannot be computed yet, is nil and omitted.
type Limit struct {
	Guard string   `json:"guard"`
	Min   *float64 `json:"min,omitempty"`
	Max   *float64 `json:"max,omitempty"`
}

// Samples counts the observations behind a check's values (requests, for the HTTP checks).
type Samples struct {
	Canary int64 `json:"canary"`
	Stable int64 `json:"stable"`
}
