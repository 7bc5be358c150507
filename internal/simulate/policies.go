package simulate

import (
	"math"
	"strings"
	"time"

	"github.com/analyzerd/analyzerd/internal/compare"
	"github.com/analyzerd/analyzerd/internal/decide"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

// Outcome is what one run of a row did under one policy.
type Outcome struct {
	// RolledBack, and when (since the analysis started).
	RolledBack bool
	RollbackAt time.Duration
	// Completed: the whole rollout's last step proceeded, at CompletedAt.
	Completed   bool
	CompletedAt time.Duration
	// Proceeded: a proceed came, the first at FirstProceed.
	Proceeded    bool
	FirstProceed time.Duration
	// ProceedFirst: a proceed came at the step that was later rolled back.
	ProceedFirst bool
	// ProceedDuring: a proceed came while the incident, or the canary's crash, was in the
	// data (from one scrape interval and compare's grace after the incident began, from two
	// after the crash, to its end);
	// ProceedAfter: a proceed came after it ended.
	ProceedDuring bool
	ProceedAfter  bool
	// SharedPause: a pause whose reason names a shared degradation came from the incident's
	// start on (analyzerd only).
	SharedPause bool
	// Reason is the last verdict's reason (analyzerd only), Evaluations how many verdicts.
	Reason      string
	Evaluations int
}

// tracker records a run's verdicts into its outcome.
type tracker struct {
	o        Outcome
	w        *world
	lag      time.Duration // the longest scrape interval and compare's grace
	downLag  time.Duration // two of the longest scrape intervals, the grace and an evaluation
	proceeds map[int]bool  // steps that had a proceed
}

func newTracker(w *world) *tracker {
	k := &tracker{w: w, proceeds: map[int]bool{}}
	for _, p := range w.pods {
		k.lag = max(k.lag, p.interval)
	}
	// An incident is in the data once every pod has been scraped during it. A crashed pod
	// is known gone once it has missed two scrapes (compare's rule: a series whose last
	// sample is older than two scrape intervals and the grace), and the next evaluation
	// sees it.
	k.downLag = 2*k.lag + 3*time.Second
	k.lag += 2 * time.Second
	return k
}

// watched is the incident's, or the crash's, window (zero when the row has neither).
func (k *tracker) watched() (window, bool) {
	switch {
	case k.w.sc.Incident != nil:
		return k.w.incident, true
	case k.w.sc.Down != nil:
		return k.w.down, true
	}
	return window{}, false
}

func (k *tracker) verdict(now time.Duration, step int, d rollout.Decision, reason string) {
	k.o.Evaluations++
	k.o.Reason = reason
	win, watching := k.watched()
	switch d {
	case rollout.Rollback:
		k.o.RolledBack, k.o.RollbackAt = true, now-k.w.sc.RegressionAfter
		k.o.ProceedFirst = k.proceeds[step]
	case rollout.Proceed:
		if !k.o.Proceeded {
			k.o.Proceeded, k.o.FirstProceed = true, now
		}
		k.proceeds[step] = true
		lag := k.lag
		if k.w.sc.Down != nil {
			lag = k.downLag
		}
		if watching && now > win.From+lag && now <= win.To {
			k.o.ProceedDuring = true
		}
		if watching && now > win.To {
			k.o.ProceedAfter = true
		}
	case rollout.Pause:
		if k.w.sc.Incident != nil && now >= win.From && strings.Contains(strings.ToLower(reason), "shared") {
			k.o.SharedPause = true
		}
	}
}

// measure is the daemon's measurement of tmpl's counter checks at now for the step that
// began at from: each side's selectors answered as range vectors of raw samples, counted by
// compare.MeasureCounters.
func (w *world) measure(tmpl rollout.Template, from, now time.Duration, baseline map[string]rollout.Reading) []rollout.Measurement {
	spans := compare.Spans{From: at(from), At: at(now), Recent: tmpl.RecentWindow}
	r := max(now-from, 0) + lookback
	var ratio, histogram [2][]compare.Response
	for side := range 2 {
		ratio[side] = []compare.Response{w.selectSeries(side, now, r, errorSeries...), w.selectSeries(side, now, r, totalSeries...)}
		histogram[side] = []compare.Response{w.selectSeries(side, now, r, bucketSeries...)}
	}
	out := make([]rollout.Measurement, 0, len(tmpl.Checks))
	for _, c := range tmpl.Checks {
		resps := histogram
		if c.Kind == rollout.KindRatio {
			resps = ratio
		}
		m := compare.MeasureCounters(c, resps[canarySide], resps[stableSide], spans)
		if b, ok := baseline[c.Name]; ok {
			m.Baseline = &b
		}
		out = append(out, m)
	}
	return out
}

// captureBaseline is the daemon's baseline: the stable side over the baseline window before
// the analysis (compare.Comparer.CaptureBaseline).
func (w *world) captureBaseline(tmpl rollout.Template) map[string]rollout.Reading {
	spans := compare.Spans{From: at(-tmpl.BaselineWindow), At: at(0)}
	r := tmpl.BaselineWindow + lookback
	ratio := []compare.Response{w.selectSeries(stableSide, 0, r, errorSeries...), w.selectSeries(stableSide, 0, r, totalSeries...)}
	histogram := []compare.Response{w.selectSeries(stableSide, 0, r, bucketSeries...)}
	out := map[string]rollout.Reading{}
	for _, c := range tmpl.Checks {
		resps := histogram
		if c.Kind == rollout.KindRatio {
			resps = ratio
		}
		out[c.Name] = compare.MeasureCounters(c, resps, resps, spans).Stable
	}
	return out
}

// runAnalyzerd is the daemon on one run: the baseline captured at the start, an evaluation
// at each step's start (the event) and then at the data's pace, the controller moving to the
// next weight at each proceed.
func runAnalyzerd(opts *Options, w *world) Outcome {
	tmpl, sc := opts.Template, w.sc
	k := newTracker(w)
	step, weight := 0, sc.Weights[0]
	w.setWeight(0, weight)
	w.advance(0)
	baseline := w.captureBaseline(tmpl)
	var evidence decide.Evidence
	var stepStart, now time.Duration
	for now <= sc.Horizon {
		w.advance(now)
		ms := w.measure(tmpl, stepStart, now, baseline)
		res := decide.Decide(decide.Input{
			Template: tmpl, Step: step, Weight: weight, StepStarted: at(stepStart), Now: at(now),
			Measurements: ms, Evidence: evidence,
		})
		evidence = res.Evidence
		k.verdict(now, step, res.Decision, res.Reason)
		switch {
		case res.Decision == rollout.Rollback:
			return k.o
		case res.Decision == rollout.Proceed && sc.whole():
			if step >= len(sc.Weights)-2 {
				// Promoted once the step before full traffic proceeds, as the threshold
				// policies are (controllers analyse the steps before promotion).
				k.o.Completed, k.o.CompletedAt = true, now
				return k.o
			}
			// The controller moves on: the step event makes the analyzer evaluate at once.
			step++
			weight = sc.Weights[step]
			w.setWeight(now, weight)
			stepStart = now
			continue
		}
		now = compare.NextEvaluation(at(now), tmpl, ms).Sub(epoch) // the analyzer's pace
	}
	return k.o
}

// runThreshold is a threshold policy on one run. Both measure every interval over the last
// interval, from the step's start; a whole rollout is promoted once the step before the last
// passes (these controllers analyse the steps before full promotion).
func runThreshold(opts *Options, w *world, policy int) Outcome {
	sc := w.sc
	k := newTracker(w)
	step, weight := 0, sc.Weights[0]
	w.setWeight(0, weight)
	last := len(sc.Weights) - 2
	every := opts.Argo.Interval
	if policy == Flagger {
		every = opts.Flagger.Interval
	}
	failures, count, errs := 0, 0, 0
	for t := every; t <= sc.Horizon; t += every {
		w.advance(t)
		o := w.thresholdJudge(opts.Template, t, every, step, weight)
		d := rollout.Pause
		switch policy {
		case Argo:
			switch o {
			case rollout.NoData: // an empty result is an error measurement to Argo Rollouts
				errs++
			case rollout.Fail:
				failures++
				count++
				errs = 0
			default:
				count++
				errs = 0
			}
			switch {
			case failures > opts.Argo.FailureLimit || errs > opts.Argo.ConsecutiveErrorLimit:
				d = rollout.Rollback
			case count >= opts.Argo.Count:
				d = rollout.Proceed
				failures, count, errs = 0, 0, 0 // the next AnalysisRun begins
			}
		case Flagger:
			if o == rollout.Pass {
				d = rollout.Proceed
			} else { // Flagger counts a query that found no values as a failed check
				failures++
				if failures >= opts.Flagger.Threshold {
					d = rollout.Rollback
				}
			}
		}
		k.verdict(t, step, d, "")
		switch {
		case d == rollout.Rollback:
			return k.o
		case d == rollout.Proceed && sc.whole():
			if step >= last {
				k.o.Completed, k.o.CompletedAt = true, t
				return k.o
			}
			step++
			weight = sc.Weights[step]
			w.setWeight(t, weight)
		}
	}
	return k.o
}

// thresholdJudge judges the template's guards against stable, as a threshold policy queries
// them: each side's value from sum(increase(...[window])) at t (histogram_quantile of the
// summed bucket increases), with Prometheus's extrapolation. Guards against the baseline
// are left out (neither controller captures one).
func (w *world) thresholdJudge(tmpl rollout.Template, t, window time.Duration, step, weight int) rollout.Outcome {
	var ratio [2]float64
	var hist [2][]rollout.Bucket
	for side := range 2 {
		errs, eok := w.increase(side, seriesFailed, t, window)
		okc, ook := w.increase(side, seriesOK, t, window)
		ratio[side] = math.NaN()
		if eok && ook && errs+okc > 0 {
			ratio[side] = errs / (errs + okc)
		}
		for i, le := range histogramBounds {
			v, ok := w.increase(side, seriesBucket+i, t, window)
			if !ok {
				hist[side] = nil
				break
			}
			hist[side] = append(hist[side], rollout.Bucket{UpperBound: le, Count: v})
		}
	}
	outcome := rollout.Pass
	for _, c := range tmpl.Checks {
		var v [2]float64
		for side := range 2 {
			switch {
			case c.Kind == rollout.KindRatio:
				v[side] = ratio[side]
			case hist[side] == nil:
				v[side] = math.NaN()
			default:
				q, n, err := rollout.Quantile(c.Quantile, hist[side])
				if err != nil || n <= 0 {
					q = math.NaN()
				}
				v[side] = q
			}
		}
		for _, g := range c.Guards {
			if g.Against == rollout.AgainstBaseline || !g.Active(step, weight) {
				continue
			}
			x := v[canarySide]
			switch g.Measure {
			case rollout.MeasureDelta:
				x -= v[stableSide]
			case rollout.MeasureRatio:
				x /= v[stableSide]
			}
			switch {
			case math.IsNaN(x) || math.IsInf(x, 0):
				if outcome == rollout.Pass {
					outcome = rollout.NoData
				}
			case (g.Max != nil && x >= *g.Max) || (g.Min != nil && x <= *g.Min):
				outcome = rollout.Fail
			}
		}
	}
	return outcome
}

// increase is sum(increase(series[window])) at t over one side's pods' series of one kind,
// as Prometheus computes it: per series, the samples in (t-window, t], resets corrected,
// extrapolated towards the range's edges; false when no series has two samples.
func (w *world) increase(side, kind int, t, window time.Duration) (float64, bool) {
	sum, any := 0.0, false
	end := at(t)
	start := end.Add(-window)
	for _, p := range w.pods {
		if p.side != side {
			continue
		}
		s := windowOf(p.series[kind], end, window).Samples
		if len(s) < 2 {
			continue
		}
		any = true
		sum += extrapolatedIncrease(s, start, end)
	}
	return sum, any
}

// extrapolatedIncrease is Prometheus's extrapolatedRate for increase() on a counter.
func extrapolatedIncrease(s []compare.Sample, rangeStart, rangeEnd time.Time) float64 {
	first, last := s[0], s[len(s)-1]
	result := last.V - first.V
	prev := first.V
	for _, x := range s[1:] {
		if x.V < prev {
			result += prev
		}
		prev = x.V
	}
	sampled := last.Time().Sub(first.Time()).Seconds()
	toStart := first.Time().Sub(rangeStart).Seconds()
	toEnd := rangeEnd.Sub(last.Time()).Seconds()
	avg := sampled / float64(len(s)-1)
	threshold := avg * 1.1
	if toStart >= threshold {
		toStart = avg / 2
	}
	if result > 0 && first.V >= 0 {
		if toZero := sampled * (first.V / result); toZero < toStart {
			toStart = toZero
		}
	}
	if toEnd >= threshold {
		toEnd = avg / 2
	}
	return result * (sampled + toStart + toEnd) / sampled
}
