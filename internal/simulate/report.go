package simulate

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// Benchmark is the standard benchmark's rows: a canary at 100 req/s next to a stable side at
// 900 req/s (10% of the traffic), both at a 0.5% error rate unless the row says otherwise.
// Each row runs for at most an hour.
func Benchmark() []Scenario {
	healthy := Traffic{ErrorRate: 0.005, LatencyMedian: DefaultLatencyMedian, LatencySpread: DefaultLatencySpread}
	canary, stable := healthy, healthy
	canary.RPS, stable.RPS = 100, 900
	with := func(f func(*Traffic)) Traffic { t := canary; f(&t); return t }
	const hour = time.Hour
	zero := 0.0
	return []Scenario{
		{Name: "healthy A/A, 0.5% errors: false rollbacks in 1 h", Canary: canary, Stable: stable, Goal: rollout.Rollback, Horizon: hour},
		{Name: "the same with margin 0 (the null's edge)", Canary: canary, Stable: stable, Goal: rollout.Rollback, Horizon: hour, Margin: &zero},
		{Name: "healthy, both sides down 10 s at 5 min: false rollbacks", Canary: canary, Stable: stable, Goal: rollout.Rollback, Horizon: hour,
			Outage: &Outage{At: 5 * time.Minute, For: 10 * time.Second, ErrorRate: 1}},
		{Name: "healthy, both sides at 20% errors 30 s: false rollbacks", Canary: canary, Stable: stable, Goal: rollout.Rollback, Horizon: hour,
			Outage: &Outage{At: 5 * time.Minute, For: 30 * time.Second, ErrorRate: 0.2}},
		{Name: "errors 0.5% -> 5% (10x): s to rollback", Canary: with(func(t *Traffic) { t.ErrorRate = 0.05 }), Stable: stable, Goal: rollout.Rollback, Horizon: hour},
		{Name: "errors 0.5% -> 1% (2x): s to rollback", Canary: with(func(t *Traffic) { t.ErrorRate = 0.01 }), Stable: stable, Goal: rollout.Rollback, Horizon: hour},
		{Name: "latency +30%: s to rollback", Canary: with(func(t *Traffic) { t.LatencyMedian *= 1.3 }), Stable: stable, Goal: rollout.Rollback, Horizon: hour},
		{Name: "healthy: s to first proceed", Canary: canary, Stable: stable, Goal: rollout.Proceed, Horizon: hour},
	}
}

// Write prints the results as one table: for each row, analyzerd's figure, then each
// threshold policy's with the ratio of its figure to analyzerd's.
func Write(w io.Writer, opts Options, results []Result, leftOut []string) {
	fmt.Fprintf(w, "analyzerd simulate: template %q, %d runs per row, seed %d\n", opts.Template.Name, opts.Runs, opts.Seed)
	fmt.Fprintf(w, "traffic: canary 100 req/s, stable 900 req/s (weight %d%%), Poisson; latency log-normal (median %gms, sigma %g); scraped every %s\n",
		opts.Weight, DefaultLatencyMedian*1000, DefaultLatencySpread, opts.Scrape)
	fmt.Fprintf(w, "analyzerd: every %s, alpha %g, minStepDuration %s\n", opts.Template.Interval, opts.Template.Alpha, opts.Template.MinStepDuration)
	fmt.Fprintf(w, "Argo Rollouts-style: %s; Flagger-style: %s; Argo at analyzerd's interval: %s; all judge the template's guards (not its baseline guards) over the last interval\n", opts.Argo, opts.Flagger, opts.ArgoFast)
	if len(leftOut) > 0 {
		fmt.Fprintf(w, "value checks not simulated: %s\n", strings.Join(leftOut, ", "))
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ROW\tANALYZERD\tARGO ROLLOUTS-STYLE\tFLAGGER-STYLE\tARGO AT ANALYZERD'S INTERVAL\t")
	for _, r := range results {
		if r.Scenario.Goal == rollout.Rollback && r.Scenario.Canary == r.Scenario.Stable.withRPS(r.Scenario.Canary.RPS) {
			// A canary identical to stable: the figure is how often it was rolled back.
			rate := func(p int) float64 { return float64(r.Hits(p)) / float64(len(r.Times[p])) }
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", r.Scenario.Name,
				percent(rate(Analyzerd)), percent(rate(Argo)), percent(rate(Flagger)), percent(rate(ArgoFast)))
			continue
		}
		row := func(label string, q float64) {
			ours := r.Quantile(Analyzerd, q)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", label, seconds(ours),
				vs(r.Quantile(Argo, q), ours), vs(r.Quantile(Flagger, q), ours), vs(r.Quantile(ArgoFast, q), ours))
		}
		row(r.Scenario.Name+", median", 0.5)
		if r.Scenario.Goal == rollout.Rollback && strings.Contains(r.Scenario.Name, "10x") {
			row(r.Scenario.Name+", p90", 0.9)
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, r := range results {
		fmt.Fprintf(w, "%s: %s in %d/%d runs (analyzerd), %d/%d (Argo Rollouts-style), %d/%d (Flagger-style), %d/%d (Argo at analyzerd's interval)\n",
			r.Scenario.Name, r.Scenario.Goal, r.Hits(Analyzerd), len(r.Times[Analyzerd]), r.Hits(Argo), len(r.Times[Argo]),
			r.Hits(Flagger), len(r.Times[Flagger]), r.Hits(ArgoFast), len(r.Times[ArgoFast]))
	}
}

func (t Traffic) withRPS(rps float64) Traffic { t.RPS = rps; return t }

func percent(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) }

func seconds(s float64) string {
	if math.IsInf(s, 1) {
		return "never (> 1 h)"
	}
	return fmt.Sprintf("%.0f s", s)
}

// vs is a threshold policy's figure with its ratio to analyzerd's.
func vs(theirs, ours float64) string {
	switch {
	case math.IsInf(theirs, 1):
		return seconds(theirs)
	case ours <= 0 || math.IsInf(ours, 1):
		return seconds(theirs)
	}
	return fmt.Sprintf("%s (%.1fx)", seconds(theirs), theirs/ours)
}
