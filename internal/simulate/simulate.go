// Package simulate benchmarks analysis templates: it drives decide with synthetic Poisson
// traffic seen through a Prometheus-like scrape, deterministically from a seed, and measures
// how fast and how often analyzerd rolls back or proceeds, next to the threshold policies
// users run today (Argo Rollouts' AnalysisRuns, Flagger's canary loop) judging the same
// simulated data with the same thresholds.
package simulate

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/analyzerd/analyzerd/internal/decide"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

// Scenario is one row of the benchmark: both sides' traffic, and what is measured.
type Scenario struct {
	Name   string
	Canary Traffic
	Stable Traffic
	// Goal is the verdict whose first time is measured: rollback (how fast a bad canary is
	// caught, or how often a healthy one is wrongly rolled back) or proceed.
	Goal rollout.Decision
	// Horizon is how long each run lasts at most.
	Horizon time.Duration
	// Margin, when set, replaces the margin of every sequential test of the template (to
	// measure the tests at the edge of their null hypothesis).
	Margin *float64
	// Outage, when set, makes both sides fail alike for a while: a dependency down.
	Outage *Outage
}

// Outage is a stretch of time, from At for For, during which both sides' requests fail at
// ErrorRate.
type Outage struct {
	At, For   time.Duration
	ErrorRate float64
}

// template is the template a scenario runs.
func (sc Scenario) template(t rollout.Template) rollout.Template {
	if sc.Margin == nil {
		return t
	}
	out := t
	out.Checks = append([]rollout.Check(nil), t.Checks...)
	for i, c := range out.Checks {
		if c.Sequential != nil {
			s := *c.Sequential
			s.Margin = sc.Margin
			out.Checks[i].Sequential = &s
		}
	}
	return out
}

// Options configure a simulation.
type Options struct {
	// Template is the analysis template, with its defaults applied. Its value checks are
	// not simulated (see Simulated).
	Template rollout.Template
	// Runs per scenario, and the seed they are drawn from.
	Runs int
	Seed uint64
	// Scrape is the interval at which counters are read (5s).
	Scrape time.Duration
	// Weight is the canary's traffic percent, reported to decide.
	Weight int
	// Workers run scenarios' runs in parallel (default GOMAXPROCS); results do not depend
	// on it.
	Workers int
	// Argo and Flagger are the threshold policies compared with; ArgoFast is Argo Rollouts
	// measuring at analyzerd's own interval, to tell the interval's share of the speed from
	// the test's.
	Argo     ArgoPolicy
	Flagger  FlaggerPolicy
	ArgoFast ArgoPolicy
}

// ArgoPolicy is an Argo Rollouts AnalysisRun: a measurement every Interval over the last
// Interval, failing when any threshold fails; the run fails (rollback) when failures exceed
// FailureLimit, and succeeds (proceed) after Count measurements. Runs follow one another.
type ArgoPolicy struct {
	Interval     time.Duration
	FailureLimit int
	Count        int
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
	DefaultArgo    = ArgoPolicy{Interval: time.Minute, FailureLimit: 2, Count: 5}
	DefaultFlagger = FlaggerPolicy{Interval: time.Minute, Threshold: 5}
)

// Policies, in the order of a Result's Times.
const (
	Analyzerd = iota
	Argo
	Flagger
	ArgoFast
	policies
)

// Result is what a scenario's runs measured, per policy.
type Result struct {
	Scenario Scenario
	// Times holds, per policy, each run's seconds to the goal, +Inf when it never came
	// within the horizon; sorted.
	Times [policies][]float64
}

// Hits is how many runs reached the goal under policy p.
func (r Result) Hits(p int) int {
	n := 0
	for _, t := range r.Times[p] {
		if !math.IsInf(t, 1) {
			n++
		}
	}
	return n
}

// Quantile is the q-quantile of the seconds to the goal under policy p (+Inf when more
// than that share of runs never reached it).
func (r Result) Quantile(p int, q float64) float64 {
	ts := r.Times[p]
	if len(ts) == 0 {
		return math.Inf(1)
	}
	i := int(math.Ceil(q*float64(len(ts)))) - 1
	return ts[max(0, min(i, len(ts)-1))]
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
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	results := make([]Result, len(scenarios))
	type job struct{ scenario, run int }
	jobs := make(chan job)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				times := simulateRun(opts, scenarios[j.scenario], uint64(j.scenario), uint64(j.run))
				mu.Lock()
				for p := range policies {
					results[j.scenario].Times[p] = append(results[j.scenario].Times[p], times[p])
				}
				mu.Unlock()
			}
		}()
	}
	for s := range scenarios {
		results[s].Scenario = scenarios[s]
		for r := range opts.Runs {
			jobs <- job{s, r}
		}
	}
	close(jobs)
	wg.Wait()
	for s := range results {
		for p := range policies {
			sort.Float64s(results[s].Times[p])
		}
	}
	return results, nil
}

// epoch is the simulated canary's start; any fixed time does.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// simulateRun runs one scenario once and returns each policy's seconds to the goal.
func simulateRun(opts Options, sc Scenario, scenario, run uint64) [policies]float64 {
	r := rand.New(rand.NewPCG(opts.Seed^(scenario<<40), run))
	opts.Template = sc.template(opts.Template)
	// The baseline: the stable side over the template's window before the canary.
	base := newCounter()
	sc.Stable.serve(r, &base, sc.Stable.shares(), opts.Template.BaselineWindow.Seconds())
	baseRatio, baseHist := base.since(newCounter())

	out := [policies]float64{math.Inf(1), math.Inf(1), math.Inf(1), math.Inf(1)}
	done := [policies]bool{}
	scrape := opts.Scrape.Seconds()
	horizon := sc.Horizon.Seconds()
	interval := opts.Template.Interval.Seconds()

	// Each side is its own scrape target, read at a phase of its own: a burst both sides
	// share can reach one side's counts an interval before the other's, as in Prometheus.
	// Each side draws from a stream of its own, so every policy sees the same traffic
	// whichever asks first.
	type reading struct{ canary, stable counter }
	canarySide := newScraped(sc.Canary, sc.Outage, rand.New(rand.NewPCG(opts.Seed^(scenario<<40)^1, run)), r.Float64()*scrape, scrape)
	stableSide := newScraped(sc.Stable, sc.Outage, rand.New(rand.NewPCG(opts.Seed^(scenario<<40)^2, run)), r.Float64()*scrape, scrape)
	seen := func(t float64) reading { return reading{canarySide.at(t), stableSide.at(t)} }
	measure := func(now, from reading) []rollout.Measurement {
		cr, ch := now.canary.since(from.canary)
		sr, sh := now.stable.since(from.stable)
		ms := make([]rollout.Measurement, 0, len(opts.Template.Checks))
		for _, c := range opts.Template.Checks {
			m := rollout.Measurement{Check: c.Name}
			if c.Kind == rollout.KindRatio {
				m.Canary, m.Stable, m.Baseline = cr, sr, &baseRatio
			} else {
				b := quantile(baseHist, c.Quantile)
				m.Canary, m.Stable, m.Baseline = quantile(ch, c.Quantile), quantile(sh, c.Quantile), &b
			}
			ms = append(ms, m)
		}
		return ms
	}
	zero := reading{newCounter(), newCounter()}

	// analyzerd: decide at every interval from the counts since the start.
	var evidence decide.Evidence
	for t := 0.0; t <= horizon && !done[Analyzerd]; t += interval {
		res := decide.Decide(decide.Input{
			Template: opts.Template, Step: 0, Weight: opts.Weight,
			StepStarted: epoch, Now: epoch.Add(time.Duration(t * float64(time.Second))),
			Measurements: measure(seen(t), zero), Evidence: evidence,
		})
		evidence = res.Evidence
		if res.Decision == sc.Goal {
			out[Analyzerd], done[Analyzerd] = t, true
		}
	}

	// The threshold policies: every interval, the last interval's counts, judged by the
	// template's thresholds.
	thresholds := thresholdTemplate(opts.Template)
	failed := func(t, window float64) bool {
		res := decide.Decide(decide.Input{
			Template: thresholds, Weight: opts.Weight, StepStarted: epoch, Now: epoch,
			Measurements: measure(seen(t), seen(t-window)),
		})
		return res.Decision != rollout.Proceed
	}
	argoRun := func(p int, policy ArgoPolicy) {
		if policy.Interval <= 0 {
			return
		}
		failures, count := 0, 0
		every := policy.Interval.Seconds()
		for t := every; t <= horizon && !done[p]; t += every {
			if failed(t, every) {
				failures++
			}
			count++
			switch {
			case failures > policy.FailureLimit:
				if sc.Goal == rollout.Rollback {
					out[p], done[p] = t, true
				}
				failures, count = 0, 0
			case count == policy.Count:
				if sc.Goal == rollout.Proceed {
					out[p], done[p] = t, true
				}
				failures, count = 0, 0 // the next run begins
			}
		}
	}
	argoRun(Argo, opts.Argo)
	argoRun(ArgoFast, opts.ArgoFast)
	flaggerFailures := 0
	flagger := opts.Flagger.Interval.Seconds()
	for t := flagger; t <= horizon && !done[Flagger]; t += flagger {
		if !failed(t, flagger) {
			if sc.Goal == rollout.Proceed {
				out[Flagger], done[Flagger] = t, true
			}
			continue
		}
		flaggerFailures++
		if flaggerFailures >= opts.Flagger.Threshold && sc.Goal == rollout.Rollback {
			out[Flagger], done[Flagger] = t, true
		}
	}
	return out
}

// thresholdTemplate is the template as a threshold policy applies it: the same guards on
// one window's values, with no sequential test, no baseline (neither Argo Rollouts nor
// Flagger captures one), no minimum sample and every check judged afresh.
func thresholdTemplate(t rollout.Template) rollout.Template {
	out := t
	out.MinStepDuration = 0
	out.Checks = nil
	for _, c := range t.Checks {
		c.Sequential, c.MannWhitney = nil, nil
		c.MinSamples = 0
		var guards []rollout.Guard
		for _, g := range c.Guards {
			if g.Against == rollout.AgainstBaseline {
				continue
			}
			g.Critical = false
			guards = append(guards, g)
		}
		c.Guards = guards
		out.Checks = append(out.Checks, c)
	}
	return out
}

// String describes a policy.
func (a ArgoPolicy) String() string {
	return fmt.Sprintf("interval %s, failureLimit %d, count %d", a.Interval, a.FailureLimit, a.Count)
}

// String describes a policy.
func (f FlaggerPolicy) String() string {
	return fmt.Sprintf("interval %s, threshold %d", f.Interval, f.Threshold)
}
