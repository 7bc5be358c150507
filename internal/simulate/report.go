package simulate

import (
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// Benchmark is the standard benchmark's rows. Unless a row says otherwise the service takes
// 1,000 req/s, both versions fail 0.5% of their requests with the workload's latency
// (log-normal, median 50 ms, sigma 0.2, DefBuckets), the canary runs 2 pods and stable 4, each
// pod scraped at the --scrape interval at an offset of its own. Whole rollouts go
// 10 -> 25 -> 50 -> 75 -> 100%; the other rows hold the canary at one weight.
func Benchmark() []Scenario {
	const total = 1000
	whole := func(name string, f func(*Scenario)) Scenario {
		sc := Scenario{Name: name, Kind: RowRollout, Weights: WholeRollout, TotalRPS: total, Horizon: 45 * time.Minute}
		if f != nil {
			f(&sc)
		}
		return sc
	}
	held := func(name string, kind Kind, weight int, horizon time.Duration, f func(*Scenario)) Scenario {
		sc := Scenario{Name: name, Kind: kind, Weights: []int{weight}, TotalRPS: total, Horizon: horizon}
		if f != nil {
			f(&sc)
		}
		return sc
	}
	rows := []Scenario{
		whole("healthy rollout", nil),
		whole("healthy rollout, 1 s scrapes, 1 pod a side", func(sc *Scenario) {
			sc.Intervals, sc.CanaryPods, sc.StablePods = []time.Duration{time.Second}, 1, 1
		}),
		whole("healthy rollout, pods at 15/30/60 s, a restart and a replaced pod a side", func(sc *Scenario) {
			sc.Intervals = []time.Duration{15 * time.Second, 30 * time.Second, 60 * time.Second}
			sc.Churn = true
		}),
		whole("healthy rollout, error bursts on single pods (15 s at 10%, ~10 min apart, both versions)", func(sc *Scenario) {
			sc.Bursts = &Bursts{Every: 10 * time.Minute, For: 15 * time.Second, ErrorRate: 0.1}
		}),
	}
	for _, size := range []float64{0.05, 0.5, 1} {
		for _, d := range []time.Duration{30 * time.Second, time.Minute, 5 * time.Minute} {
			rows = append(rows, whole(fmt.Sprintf("shared incident: %g%% errors for %s", 100*size, short(d)), func(sc *Scenario) {
				sc.Kind = RowIncident
				sc.Incident = &Incident{ErrorRate: size, For: d, After: 90 * time.Second, Spread: time.Minute}
			}))
		}
	}
	for _, factor := range []float64{1.1, 2, 5} {
		for _, d := range []time.Duration{30 * time.Second, time.Minute, 5 * time.Minute} {
			rows = append(rows, whole(fmt.Sprintf("shared incident: latency %gx for %s", factor, short(d)), func(sc *Scenario) {
				sc.Kind = RowIncident
				sc.Incident = &Incident{Latency: factor, For: d, After: 90 * time.Second, Spread: time.Minute}
			}))
		}
	}
	for _, rps := range []float64{1, 2} {
		rows = append(rows, held(fmt.Sprintf("low-traffic canary, %g req/s vs 200", rps), RowLowTraffic, 1, 15*time.Minute, func(sc *Scenario) {
			sc.CanaryRPS, sc.StableRPS, sc.CanaryPods = rps, 200, 1
		}))
	}
	rows = append(rows,
		held("errors 0.5% -> 5% (10x) at 100 req/s", RowRegression, 10, 10*time.Minute, func(sc *Scenario) { sc.CanaryErrorRate = 0.05 }),
		held("errors 0.5% -> 5% (10x) at 100 req/s from 1 min into the step (time from the fault)", RowRegression, 10, 10*time.Minute, func(sc *Scenario) {
			sc.CanaryErrorRate, sc.RegressionAfter = 0.05, time.Minute
		}),
		held("errors 0.5% -> 5% (10x) at 100 req/s, 1 s scrapes", RowRegression, 10, 10*time.Minute, func(sc *Scenario) {
			sc.CanaryErrorRate = 0.05
			sc.Intervals = []time.Duration{time.Second}
		}),
		held("errors 0.5% -> 1% (2x) at 10%", RowRegression, 10, 15*time.Minute, func(sc *Scenario) { sc.CanaryErrorRate = 0.01 }),
		held("errors 0.5% -> 1% (2x) at 50%", RowRegression, 50, 15*time.Minute, func(sc *Scenario) { sc.CanaryErrorRate = 0.01 }),
		held("latency +30% at 10%", RowRegression, 10, 15*time.Minute, func(sc *Scenario) { sc.CanaryLatency = 1.3 }),
		held("canary stops serving 40 s mid-step (its only pod down)", RowDown, 10, 5*time.Minute, func(sc *Scenario) {
			sc.CanaryPods = 1
			sc.Down = &Down{For: 40 * time.Second, After: 70 * time.Second, Spread: 30 * time.Second}
		}),
	)
	return rows
}

// Select keeps the rows whose name matches the regular expression (all when it is empty).
func Select(rows []Scenario, pattern string) ([]Scenario, error) {
	if pattern == "" {
		return rows, nil
	}
	re, err := regexp.Compile("(?i)" + pattern)
	if err != nil {
		return nil, fmt.Errorf("--rows: %w", err)
	}
	var out []Scenario
	for _, r := range rows {
		if re.MatchString(r.Name) {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--rows %q matches no row", pattern)
	}
	return out, nil
}

func short(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%.0f s", d.Seconds())
	}
	return fmt.Sprintf("%.0f min", d.Minutes())
}

// Share is the share of runs under policy p for which f holds.
func (r Result) Share(p int, f func(Outcome) bool) float64 {
	n := 0
	for _, o := range r.Outcomes[p] {
		if f(o) {
			n++
		}
	}
	return float64(n) / float64(max(1, len(r.Outcomes[p])))
}

// Quantile is the q-quantile over the runs under policy p of the time f gives (+Inf for a
// run where it never came).
func (r Result) Quantile(p int, q float64, f func(Outcome) (time.Duration, bool)) float64 {
	ts := make([]float64, 0, len(r.Outcomes[p]))
	for _, o := range r.Outcomes[p] {
		if d, ok := f(o); ok {
			ts = append(ts, d.Seconds())
		} else {
			ts = append(ts, math.Inf(1))
		}
	}
	if len(ts) == 0 {
		return math.Inf(1)
	}
	sort.Float64s(ts)
	i := int(math.Ceil(q*float64(len(ts)))) - 1
	return ts[max(0, min(i, len(ts)-1))]
}

// The measures the table reports.
var (
	RolledBack     = func(o Outcome) bool { return o.RolledBack }
	Completed      = func(o Outcome) bool { return o.Completed }
	ProceedDuring  = func(o Outcome) bool { return o.ProceedDuring }
	ProceedAfter   = func(o Outcome) bool { return o.ProceedAfter }
	SharedPause    = func(o Outcome) bool { return o.SharedPause }
	ProceedFirst   = func(o Outcome) bool { return o.RolledBack && o.ProceedFirst }
	Proceeded      = func(o Outcome) bool { return o.Proceeded }
	TimeToRollback = func(o Outcome) (time.Duration, bool) { return o.RollbackAt, o.RolledBack }
	TimeToComplete = func(o Outcome) (time.Duration, bool) { return o.CompletedAt, o.Completed }
	TimeToProceed  = func(o Outcome) (time.Duration, bool) { return o.FirstProceed, o.Proceeded }
)

// Write prints the results as one table, a few lines per row (each a measure under every
// policy), then what the analyzerd runs that never proceeded last said, for the rows where
// that is the question.
func Write(w io.Writer, opts Options, results []Result, leftOut []string) {
	fmt.Fprintf(w, "analyzerd simulate: template %q, %d runs per row, seed %d\n", opts.Template.Name, opts.Runs, opts.Seed)
	fmt.Fprintf(w, "service: 1000 req/s split by the weight unless a row says otherwise, 0.5%% errors, latency log-normal (median %gms, sigma %g) in DefBuckets;\n",
		DefaultLatencyMedian*1000, DefaultLatencySpread)
	fmt.Fprintf(w, "  canary 2 pods, stable 4, each scraped every %s at an offset of its own unless a row says otherwise; whole rollouts go %s%%\n",
		opts.Scrape, joinInts(WholeRollout, " -> "))
	fmt.Fprintf(w, "analyzerd: raw samples through compare.MeasureCounters into decide, evaluated at the data's pace (interval %s, minInterval %s), alpha %g, minStepDuration %s\n",
		opts.Template.Interval, minInterval(opts.Template), opts.Template.Alpha, opts.Template.MinStepDuration)
	fmt.Fprintf(w, "Argo Rollouts-style: %s; Flagger-style: %s;\n  both judge the template's guards against stable (not its baseline guards) on sum(increase()) over their interval, and promote after the 75%% step\n", opts.Argo, opts.Flagger)
	if len(leftOut) > 0 {
		fmt.Fprintf(w, "value checks not simulated: %s\n", strings.Join(leftOut, ", "))
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "ROW\tMEASURE\t%s\t%s\t%s\t\n", strings.ToUpper(PolicyNames[Analyzerd]), strings.ToUpper(PolicyNames[Argo]), strings.ToUpper(PolicyNames[Flagger]))
	for _, r := range results {
		name := r.Scenario.Name
		share := func(measure string, f func(Outcome) bool, ours bool) {
			cells := make([]string, policies)
			for p := range policies {
				cells[p] = percent(r.Share(p, f))
				if ours && p != Analyzerd {
					cells[p] = "-"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t\n", name, measure, strings.Join(cells, "\t"))
			name = ""
		}
		timed := func(measure string, q float64, f func(Outcome) (time.Duration, bool)) {
			ours := r.Quantile(Analyzerd, q, f)
			cells := []string{seconds(ours, r.Scenario.Horizon)}
			for _, p := range []int{Argo, Flagger} {
				cells = append(cells, vs(r.Quantile(p, q, f), ours, r.Scenario.Horizon))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t\n", name, measure, strings.Join(cells, "\t"))
			name = ""
		}
		switch r.Scenario.Kind {
		case RowRollout:
			share("false rollbacks", RolledBack, false)
			timed("time to complete, median", 0.5, TimeToComplete)
			timed("time to complete, p90", 0.9, TimeToComplete)
		case RowIncident:
			share("false rollbacks", RolledBack, false)
			share("proceed during the incident", ProceedDuring, false)
			share("paused naming a shared degradation", SharedPause, true)
			share("proceeded after it", ProceedAfter, false)
			timed("time to complete, median", 0.5, TimeToComplete)
		case RowRegression:
			timed("time to rollback, median", 0.5, TimeToRollback)
			timed("time to rollback, p90", 0.9, TimeToRollback)
			share("a proceed first at that step", ProceedFirst, false)
		case RowDown:
			share("proceed while known down", ProceedDuring, false)
			share("proceeded after it served again", ProceedAfter, false)
			share("false rollbacks", RolledBack, false)
		case RowLowTraffic:
			share("proceeded within 10 min", func(o Outcome) bool { return o.Proceeded && o.FirstProceed <= 10*time.Minute }, false)
			timed("time to proceed, median", 0.5, TimeToProceed)
			share("false rollbacks", RolledBack, false)
		}
	}
	tw.Flush()
	for _, r := range results {
		if r.Scenario.Kind != RowLowTraffic {
			continue
		}
		reasons := map[string]int{}
		for _, o := range r.Outcomes[Analyzerd] {
			if !o.Proceeded || o.FirstProceed > 10*time.Minute {
				reasons[o.Reason]++
			}
		}
		if len(reasons) == 0 {
			continue
		}
		keys := make([]string, 0, len(reasons))
		for k := range reasons {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b string) int {
			if reasons[a] != reasons[b] {
				return reasons[b] - reasons[a]
			}
			return strings.Compare(a, b)
		})
		fmt.Fprintf(w, "\n%s: analyzerd runs that did not proceed within 10 min last said:\n", r.Scenario.Name)
		for _, k := range keys[:min(3, len(keys))] {
			fmt.Fprintf(w, "  %d runs: %s\n", reasons[k], k)
		}
	}
}

func minInterval(t rollout.Template) time.Duration {
	if t.MinInterval > 0 {
		return t.MinInterval
	}
	return time.Second
}

func joinInts(xs []int, sep string) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, sep)
}

func percent(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) }

func seconds(s float64, horizon time.Duration) string {
	switch {
	case math.IsInf(s, 1):
		return "never (> " + short(horizon) + ")"
	case s < 120:
		return fmt.Sprintf("%.0f s", s)
	}
	return (time.Duration(s) * time.Second).String()
}

// vs is a threshold policy's figure with its ratio to analyzerd's.
func vs(theirs, ours float64, horizon time.Duration) string {
	if math.IsInf(theirs, 1) || ours <= 0 || math.IsInf(ours, 1) {
		return seconds(theirs, horizon)
	}
	return fmt.Sprintf("%s (%.1fx)", seconds(theirs, horizon), theirs/ours)
}
