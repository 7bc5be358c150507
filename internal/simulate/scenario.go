package simulate

import (
	"time"
)

// Kind says what a row measures.
type Kind int

// The kinds of rows.
const (
	// RowRollout: a healthy canary's whole rollout; false rollbacks and time to complete.
	RowRollout Kind = iota
	// RowIncident: a healthy canary's whole rollout through an incident both sides share;
	// false rollbacks, proceeds during the incident, pauses that name it, completion after.
	RowIncident
	// RowRegression: a bad canary held at one weight; time to rollback, and proceeds that
	// came before it at that step.
	RowRegression
	// RowDown: a healthy canary held at one weight whose pods stop serving for a while;
	// proceeds while they are down.
	RowDown
	// RowLowTraffic: a healthy canary with little traffic held at one weight; time to
	// proceed, and what the verdict says it lacks when it does not.
	RowLowTraffic
)

// Scenario is one row of the benchmark.
type Scenario struct {
	Name string
	Kind Kind
	// Weights are the steps' canary weights: the controller moves to the next at each
	// proceed, and the rollout is complete at the last one's proceed. A single weight holds
	// the canary there until the horizon (proceeds are counted, the step does not change).
	Weights []int
	// TotalRPS is the service's traffic, split between the sides by the weight. When
	// CanaryRPS is set, the sides' rates are CanaryRPS and StableRPS whatever the weight.
	TotalRPS             float64
	CanaryRPS, StableRPS float64
	// ErrorRate is both sides' error rate (DefaultErrorRate when 0); CanaryErrorRate
	// (when > 0) and CanaryLatency (the latency median's factor, when > 0) make the canary
	// a regression from its first request.
	ErrorRate       float64
	CanaryErrorRate float64
	CanaryLatency   float64
	// RegressionAfter starts the regression that long into the analysis instead (a fault
	// that begins mid-step); the time to rollback is then counted from it.
	RegressionAfter time.Duration
	// CanaryPods and StablePods are each side's scrape targets (2 and 4 when 0); each pod
	// draws its scrape interval from Intervals (Options.Scrape when empty) and a random
	// offset. Requests spread evenly over a side's serving pods.
	CanaryPods, StablePods int
	Intervals              []time.Duration
	// Churn restarts one pod of each side (a counter reset) and replaces another by a new
	// pod (series that vanish, series that appear), at random times in the first 5 minutes.
	Churn bool
	// Incident, Down and Bursts: see their types.
	Incident *Incident
	Down     *Down
	Bursts   *Bursts
	// Horizon is how long each run lasts at most.
	Horizon time.Duration
}

// Incident is a degradation both sides share (a dependency down): For long, starting at a
// random time within [After, After+Spread] of the analysis' start. Requests fail at
// ErrorRate (when higher than their own), and latency's median is multiplied by Latency
// (when > 0).
type Incident struct {
	ErrorRate float64
	Latency   float64
	For       time.Duration
	After     time.Duration
	Spread    time.Duration
}

// Down makes every canary pod stop serving and being scraped For long, from a random time
// within [After, After+Spread]; their counters restart at 0 when they come back (a crash).
type Down struct {
	For, After, Spread time.Duration
}

// Bursts make each pod of both sides fail ErrorRate of its requests For long, at random
// times about Every apart: errors that come in bursts on one pod (overdispersion), the
// same process on both sides (so the canary is no worse on average).
type Bursts struct {
	Every, For time.Duration
	ErrorRate  float64
}

// DefaultErrorRate is both sides' error rate unless a row says otherwise.
const DefaultErrorRate = 0.005

func (sc *Scenario) errorRate() float64 {
	if sc.ErrorRate > 0 {
		return sc.ErrorRate
	}
	return DefaultErrorRate
}

func (sc *Scenario) canaryPods() int {
	if sc.CanaryPods > 0 {
		return sc.CanaryPods
	}
	return 2
}

func (sc *Scenario) stablePods() int {
	if sc.StablePods > 0 {
		return sc.StablePods
	}
	return 4
}

func (sc *Scenario) totalRPS() float64 {
	if sc.CanaryRPS > 0 {
		return sc.CanaryRPS + sc.StableRPS
	}
	return sc.TotalRPS
}

// whole reports whether the row is a whole rollout (the controller advances at proceed).
func (sc *Scenario) whole() bool { return len(sc.Weights) > 1 }

// WholeRollout are the steps of a whole rollout.
var WholeRollout = []int{10, 25, 50, 75, 100}
