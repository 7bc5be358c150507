// Package simulate benchmarks analysis templates, deterministically from a seed. Each run
// models a service as Prometheus sees it: several pods per version, each a scrape target
// with its own interval and offset, exposing request counters by code and latency histogram
// buckets, with Poisson traffic split by the rollout's weight, counter resets, pods that
// are replaced, shared incidents, error bursts and crashes. analyzerd judges it exactly as
// the daemon does: each evaluation's range vectors of raw samples go through
// compare.MeasureCounters into decide.Decide, at the analyzer's pace, and the controller
// moves to the next weight at each proceed. Next to it, the threshold policies users run
// today (Argo Rollouts' AnalysisRuns, Flagger's canary loop) judge the same template's
// guards on the same kind of scraped data, queried as they query it: sum(increase()) over
// their interval.
package simulate

import (
	"errors"
	"fmt"
	"hash/fnv"
	"runtime"
	"sync"
	"time"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// Options configure a simulation.
type Options struct {
	// Template is the analysis template, with its defaults applied. Its value checks are
	// not simulated (see Simulated).
	Template rollout.Template
	// Runs per scenario, and the seed they are drawn from.
	Runs int
	Seed uint64
	// Scrape is every pod's scrape interval in the rows that do not set their own.
	Scrape time.Duration
	// Workers run scenarios' runs in parallel (default GOMAXPROCS); results do not depend
	// on it.
	Workers int
	// Argo and Flagger are the threshold policies compared with.
	Argo    ArgoPolicy
	Flagger FlaggerPolicy
}

// ArgoPolicy is an Argo Rollouts AnalysisRun: a measurement every Interval over the last
// Interval, failing when any threshold fails; the run fails (rollback) when failures exceed
// FailureLimit or more than ConsecutiveErrorLimit measurements in a row found no data, and
// succeeds (proceed) after Count measurements. Runs follow one another.
type ArgoPolicy struct {
	Interval              time.Duration
	FailureLimit          int
	Count                 int
	ConsecutiveErrorLimit int
}

// FlaggerPolicy is Flagger's canary analysis: a check every Interval over the last
// Interval; the canary is rolled back when failed checks reach Threshold, and advances
// (proceed) at the first check that passes.
type FlaggerPolicy struct {
	Interval  time.Duration
	Threshold int
}

// Defaults of the compared policies, as their documentation's examples configure them.
var (
	DefaultArgo    = ArgoPolicy{Interval: time.Minute, FailureLimit: 2, Count: 5, ConsecutiveErrorLimit: 4}
	DefaultFlagger = FlaggerPolicy{Interval: time.Minute, Threshold: 5}
)

// Policies, in the order of a Result's Outcomes.
const (
	Analyzerd = iota
	Argo
	Flagger
	policies
)

// PolicyNames are the policies' names, in that order.
var PolicyNames = [policies]string{"analyzerd", "Argo Rollouts-style", "Flagger-style"}

// Result is what a scenario's runs did, per policy and run.
type Result struct {
	Scenario Scenario
	Outcomes [policies][]Outcome
}

// Simulated returns the template as the simulation judges it: its ratio and histogram
// checks (value checks measure what the simulation does not generate), and the names of the
// checks it left out.
func Simulated(t rollout.Template) (rollout.Template, []string) {
	out := t
	out.Checks = nil
	var left []string
	for _, c := range t.Checks {
		if c.Kind == rollout.KindValue {
			left = append(left, c.Name)
			continue
		}
		out.Checks = append(out.Checks, c)
	}
	return out, left
}

// Run simulates every scenario.
func Run(opts Options, scenarios []Scenario) ([]Result, error) {
	if opts.Runs <= 0 {
		return nil, errors.New("simulate: runs must be positive")
	}
	if opts.Scrape <= 0 {
		return nil, errors.New("simulate: the scrape interval must be positive")
	}
	if opts.Template.Interval <= 0 {
		return nil, errors.New("simulate: the template's interval must be positive")
	}
	tmpl, _ := Simulated(opts.Template)
	if len(tmpl.Checks) == 0 {
		return nil, errors.New("simulate: the template has no ratio or histogram check to simulate")
	}
	opts.Template = tmpl
	for _, sc := range scenarios {
		if len(sc.Weights) == 0 || sc.Horizon <= 0 {
			return nil, fmt.Errorf("simulate: row %q needs weights and a horizon", sc.Name)
		}
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	results := make([]Result, len(scenarios))
	for s := range scenarios {
		results[s].Scenario = scenarios[s]
		for p := range policies {
			results[s].Outcomes[p] = make([]Outcome, opts.Runs)
		}
	}
	type job struct{ scenario, run int }
	jobs := make(chan job)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				sc := &scenarios[j.scenario]
				out := simulateRun(&opts, sc, rowSeed(sc.Name), uint64(j.run))
				for p := range policies {
					results[j.scenario].Outcomes[p][j.run] = out[p] // each run its own slot
				}
			}
		}()
	}
	for s := range scenarios {
		for r := range opts.Runs {
			jobs <- job{s, r}
		}
	}
	close(jobs)
	wg.Wait()
	return results, nil
}

// rowSeed derives a row's streams from its name, so that a row's figures do not depend on
// which other rows run.
func rowSeed(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()
}

// epoch is the simulated analysis' start; any fixed time does.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// simulateRun runs one scenario once under every policy. Each policy drives its own world
// (the controller's weights follow its verdicts), laid out alike and drawing from the same
// random streams.
func simulateRun(opts *Options, sc *Scenario, scenario, run uint64) [policies]Outcome {
	var out [policies]Outcome
	out[Analyzerd] = runAnalyzerd(opts, newWorld(sc, opts, opts.Seed, scenario, run))
	out[Argo] = runThreshold(opts, newWorld(sc, opts, opts.Seed, scenario, run), Argo)
	out[Flagger] = runThreshold(opts, newWorld(sc, opts, opts.Seed, scenario, run), Flagger)
	return out
}

// String describes a policy.
func (a ArgoPolicy) String() string {
	return fmt.Sprintf("interval %s, failureLimit %d, count %d, consecutiveErrorLimit %d", a.Interval, a.FailureLimit, a.Count, a.ConsecutiveErrorLimit)
}

// String describes a policy.
func (f FlaggerPolicy) String() string {
	return fmt.Sprintf("interval %s, threshold %d", f.Interval, f.Threshold)
}
