package ui

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// The colours of the charts (Okabe and Ito's palette, told apart with colour blindness),
// each used by one series only, so that a screenshot can be read by its colours.
const (
	colourCanary    = "#d55e00"
	colourStable    = "#0072b2"
	colourBaseline  = "#999999"
	colourLimit     = "#000000"
	colourEValue    = "#cc79a7"
	colourThreshold = "#009e73"
	colourStep      = "#6b6b6b"
	colourDecision  = "#e69f00"
)

// The geometry of every chart, in SVG user units.
const (
	chartWidth  = 760
	chartHeight = 284
	plotLeft    = 72
	plotRight   = 740
	plotTop     = 48
	plotBottom  = 204
	legendY     = 254
)

// chart is one SVG chart, laid out: the template draws what it holds.
type chart struct {
	ID     string
	Title  string
	Desc   string
	Series []series
	YTicks []tick
	XTicks []tick
	Marks  []chartMark
	Legend []legendItem
	YLabel string
}

type series struct {
	Name     string
	Colour   string
	Dash     string  // stroke-dasharray, "" for a solid line
	Width    float64 // stroke width
	Crisp    bool    // drawn without anti-aliasing (horizontal thresholds)
	Segments []string
	Dots     []point
}

type point struct{ X, Y float64 }

type tick struct {
	Pos    float64
	Label  string
	Anchor string // text-anchor of the label
}

type chartMark struct {
	X      float64
	Label  string
	Anchor string // text-anchor of the label: labels near the right edge end at the line
	DX     int
	Colour string
	Dash   string
	LabelY float64
}

type legendItem struct {
	X      float64
	Name   string
	Colour string
	Dash   string
}

// Geometry for the template.
func (chart) Width() int        { return chartWidth }
func (chart) Height() int       { return chartHeight }
func (chart) PlotLeft() int     { return plotLeft }
func (chart) PlotRight() int    { return plotRight }
func (chart) PlotTop() int      { return plotTop }
func (chart) PlotBottom() int   { return plotBottom }
func (chart) LegendY() int      { return legendY }
func (chart) PlotWidth() int    { return plotRight - plotLeft }
func (chart) PlotHeight() int   { return plotBottom - plotTop }
func (c chart) TitleID() string { return c.ID + "-title" }
func (c chart) DescID() string  { return c.ID + "-desc" }

// timeAxis maps the analysis's verdict times onto the plot's width.
type timeAxis struct{ from, to time.Time }

func axisOf(a Analysis) timeAxis {
	from, to := a.Verdicts[0].DecidedAt, a.Verdicts[len(a.Verdicts)-1].DecidedAt
	if !to.After(from) {
		from, to = from.Add(-time.Second), to.Add(time.Second)
	}
	return timeAxis{from, to}
}

func (t timeAxis) x(at time.Time) float64 {
	f := float64(at.Sub(t.from)) / float64(t.to.Sub(t.from))
	return round(plotLeft + f*(plotRight-plotLeft))
}

func (t timeAxis) ticks() []tick {
	const n = 5
	out := make([]tick, 0, n)
	span := t.to.Sub(t.from)
	layout := "15:04:05"
	if span > 24*time.Hour {
		layout = "01-02 15:04"
	}
	for i := range n {
		at := t.from.Add(time.Duration(float64(span) * float64(i) / (n - 1)))
		anchor := "middle"
		switch i {
		case 0:
			anchor = "start"
		case n - 1:
			anchor = "end"
		}
		out = append(out, tick{Pos: t.x(at), Label: at.UTC().Format(layout), Anchor: anchor})
	}
	return out
}

// yScale maps values onto the plot's height, linear or (for e-values) in log10.
type yScale struct {
	lo, hi float64
	log    bool
}

func (s yScale) y(v float64) float64 {
	if s.log {
		v = math.Log10(v)
	}
	f := (v - s.lo) / (s.hi - s.lo)
	return round(plotBottom - f*(plotBottom-plotTop))
}

func round(f float64) float64 { return math.Round(f*10) / 10 }

// valueScale spans 0 (or the lowest value) to the highest, with nice ticks.
func valueScale(values []float64) (yScale, []tick) {
	lo, hi := 0.0, 0.0
	for _, v := range values {
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	if hi == lo {
		hi = lo + 1
	}
	step := niceStep((hi - lo) / 4)
	lo = math.Floor(lo/step) * step
	hi = math.Ceil(hi*1.05/step) * step
	s := yScale{lo: lo, hi: hi}
	var ticks []tick
	for v := lo; v <= hi+step/2; v += step {
		ticks = append(ticks, tick{Pos: s.y(v), Label: formatNumber(v, step)})
	}
	return s, ticks
}

func niceStep(raw float64) float64 {
	if raw <= 0 || math.IsNaN(raw) || math.IsInf(raw, 0) {
		return 1
	}
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*mag {
			return m * mag
		}
	}
	return 10 * mag
}

// logScale spans whole decades from below the smallest value (at most 1) to above the
// largest, with a tick at each decade or every few.
func logScale(values []float64) (yScale, []tick) {
	lo, hi := 0.0, 1.0
	for _, v := range values {
		if v <= 0 {
			continue
		}
		l := math.Log10(v)
		lo, hi = math.Min(lo, math.Floor(l)), math.Max(hi, math.Ceil(l+0.3))
	}
	lo = math.Max(lo, -6)
	s := yScale{lo: lo, hi: hi, log: true}
	every := math.Max(1, math.Ceil((hi-lo)/6))
	var ticks []tick
	for d := lo; d <= hi; d += every {
		ticks = append(ticks, tick{Pos: s.y(math.Pow(10, d)), Label: formatDecade(d)})
	}
	return s, ticks
}

func formatDecade(d float64) string {
	switch {
	case d >= 0 && d <= 4:
		return strconv.FormatFloat(math.Pow(10, d), 'f', 0, 64)
	case d < 0 && d >= -3:
		return strconv.FormatFloat(math.Pow(10, d), 'f', int(-d), 64)
	}
	return fmt.Sprintf("1e%d", int(d))
}

// formatNumber writes v with the precision a tick step of step needs.
func formatNumber(v, step float64) string {
	digits := 0
	if step < 1 {
		digits = int(math.Ceil(-math.Log10(step)))
	}
	return strconv.FormatFloat(v, 'f', digits, 64)
}

// line lays out one series: its points where the value is known, a gap where it is not.
func line(axis timeAxis, scale yScale, times []time.Time, values []*float64) (segments []string, dots []point) {
	var cur []string
	flush := func() {
		if len(cur) > 0 {
			segments = append(segments, strings.Join(cur, " "))
			cur = nil
		}
	}
	for i, v := range values {
		if v == nil || math.IsNaN(*v) || math.IsInf(*v, 0) || (scale.log && *v <= 0) {
			flush()
			continue
		}
		p := point{axis.x(times[i]), clampY(scale.y(*v))}
		cur = append(cur, fmt.Sprintf("%g,%g", p.X, p.Y))
		dots = append(dots, p)
	}
	flush()
	return segments, dots
}

func clampY(y float64) float64 { return math.Max(plotTop, math.Min(plotBottom, y)) }

// checkValues is one check's numbers in each verdict of an analysis (nil where the
// verdict did not carry the check).
type checkValues struct {
	times   []time.Time
	results []*rollout.CheckResult
}

func valuesOf(a Analysis, metric string) checkValues {
	cv := checkValues{times: make([]time.Time, len(a.Verdicts)), results: make([]*rollout.CheckResult, len(a.Verdicts))}
	for i, v := range a.Verdicts {
		cv.times[i] = v.DecidedAt
		for k := range v.Checks {
			if v.Checks[k].Metric == metric {
				cv.results[i] = &v.Checks[k]
				break
			}
		}
	}
	return cv
}

func (cv checkValues) pick(f func(*rollout.CheckResult) *float64) []*float64 {
	out := make([]*float64, len(cv.results))
	for i, r := range cv.results {
		if r != nil {
			out[i] = f(r)
		}
	}
	return out
}

// limitNames are the guards a check's limits name, in order of appearance.
func (cv checkValues) limitNames() []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range cv.results {
		if r == nil {
			continue
		}
		for _, l := range r.Limits {
			if !seen[l.Guard] {
				seen[l.Guard] = true
				out = append(out, l.Guard)
			}
		}
	}
	return out
}

func (cv checkValues) limit(guard string, upper bool) []*float64 {
	return cv.pick(func(r *rollout.CheckResult) *float64 {
		for _, l := range r.Limits {
			if l.Guard == guard {
				if upper {
					return l.Max
				}
				return l.Min
			}
		}
		return nil
	})
}

func (cv checkValues) hasEValue() bool {
	for _, r := range cv.results {
		if r != nil && r.EValue != nil {
			return true
		}
	}
	return false
}

func known(values ...[]*float64) []float64 {
	var out []float64
	for _, vs := range values {
		for _, v := range vs {
			if v != nil && !math.IsNaN(*v) && !math.IsInf(*v, 0) {
				out = append(out, *v)
			}
		}
	}
	return out
}

// marksOf lays out the analysis's step starts and decisions on the chart.
func marksOf(axis timeAxis, a Analysis) []chartMark {
	var out []chartMark
	for _, m := range a.steps() {
		out = append(out, chartMark{X: axis.x(m.At), Label: fmt.Sprintf("step %d (%d%%)", m.Step, m.Weight), Colour: colourStep, Dash: "2 3", LabelY: plotTop - 20})
	}
	for _, m := range a.decisions() {
		out = append(out, chartMark{X: axis.x(m.At), Label: string(m.Verdict), Colour: colourDecision, LabelY: plotTop - 6})
	}
	placeLabels(out)
	return out
}

// placeLabels puts each mark's label above the plot where it overlaps no label placed
// before it: on its own row first (steps above, decisions below), right of its line, then
// left of it, then on the other rows.
func placeLabels(marks []chartMark) {
	type span struct{ row, from, to float64 }
	var placed []span
	free := func(sp span) bool {
		if sp.from < 0 || sp.to > chartWidth {
			return false
		}
		for _, p := range placed {
			if p.row == sp.row && sp.from < p.to+4 && p.from < sp.to+4 {
				return false
			}
		}
		return true
	}
	for i := range marks {
		m := &marks[i]
		width := 6.5 * float64(len(m.Label))
		rows := []float64{plotTop - 6, plotTop - 20, plotTop - 34}
		if m.LabelY == plotTop-20 {
			rows[0], rows[1] = rows[1], rows[0]
		}
		chosen := false
		for _, row := range rows {
			for _, right := range []bool{true, false} {
				sp := span{row, m.X + 3, m.X + 3 + width}
				anchor, dx := "start", 3
				if !right {
					sp = span{row, m.X - 3 - width, m.X - 3}
					anchor, dx = "end", -3
				}
				if !chosen && free(sp) {
					m.LabelY, m.Anchor, m.DX = row, anchor, dx
					placed = append(placed, sp)
					chosen = true
				}
			}
		}
		if !chosen { // crowded: right of its line on its own row, or left at the right edge
			m.LabelY, m.Anchor, m.DX = rows[0], "start", 3
			if m.X+3+width > chartWidth {
				m.Anchor, m.DX = "end", -3
			}
		}
	}
}

func legendOf(items ...legendItem) []legendItem {
	x := float64(plotLeft)
	for i := range items {
		items[i].X = x
		x += 30 + 7*float64(len(items[i].Name))
	}
	return items
}

// valuesChart is a check's chart of the three sides' values and its guards' limits.
func valuesChart(id, metric string, a Analysis, cv checkValues) chart {
	axis := axisOf(a)
	canary := cv.pick(func(r *rollout.CheckResult) *float64 { return r.Canary })
	stable := cv.pick(func(r *rollout.CheckResult) *float64 { return r.Stable })
	baseline := cv.pick(func(r *rollout.CheckResult) *float64 { return r.Baseline })
	all := [][]*float64{canary, stable, baseline}
	type lim struct {
		name   string
		values []*float64
	}
	var limits []lim
	for _, g := range cv.limitNames() {
		for _, upper := range []bool{true, false} {
			vs := cv.limit(g, upper)
			if len(known(vs)) == 0 {
				continue
			}
			limits = append(limits, lim{g, vs})
			all = append(all, vs)
		}
	}
	scale, yticks := valueScale(known(all...))
	c := chart{
		ID: id, Title: fmt.Sprintf("%s: canary, stable and baseline values over time", metric),
		YTicks: yticks, XTicks: axis.ticks(), Marks: marksOf(axis, a), YLabel: "value",
	}
	add := func(name, colour, dash string, width float64, vs []*float64) {
		seg, dots := line(axis, scale, cv.times, vs)
		if dash != "" {
			dots = nil // a limit is a line, not measurements
		}
		c.Series = append(c.Series, series{Name: name, Colour: colour, Dash: dash, Width: width, Segments: seg, Dots: dots})
	}
	for _, l := range limits {
		add("limit "+l.name, colourLimit, "6 4", 1.5, l.values)
	}
	add("baseline", colourBaseline, "", 2, baseline)
	add("stable", colourStable, "", 2.5, stable)
	add("canary", colourCanary, "", 2.5, canary)
	items := []legendItem{{Name: "canary", Colour: colourCanary}, {Name: "stable", Colour: colourStable}, {Name: "baseline", Colour: colourBaseline}}
	if len(limits) > 0 {
		items = append(items, legendItem{Name: "guard limits", Colour: colourLimit, Dash: "6 4"})
	}
	c.Legend = legendOf(items...)
	c.Desc = describeValues(metric, cv, canary, stable, baseline, cv.limitNames())
	return c
}

// evidenceChart is a check's chart of its sequential test's e-value against 1/alpha.
func evidenceChart(id, metric string, a Analysis, cv checkValues) chart {
	axis := axisOf(a)
	evalues := cv.pick(func(r *rollout.CheckResult) *float64 { return r.EValue })
	thresholds := cv.pick(func(r *rollout.CheckResult) *float64 { return r.EValueThreshold })
	scale, yticks := logScale(known(evalues, thresholds))
	c := chart{
		ID: id, Title: fmt.Sprintf("%s: the sequential test's e-value against 1/alpha, log scale", metric),
		YTicks: yticks, XTicks: axis.ticks(), Marks: marksOf(axis, a), YLabel: "e-value",
	}
	seg, _ := line(axis, scale, cv.times, thresholds)
	c.Series = append(c.Series, series{Name: "1/alpha", Colour: colourThreshold, Width: 2, Crisp: true, Segments: seg})
	seg, dots := line(axis, scale, cv.times, evalues)
	c.Series = append(c.Series, series{Name: "e-value", Colour: colourEValue, Width: 3, Segments: seg, Dots: dots})
	c.Legend = legendOf(legendItem{Name: "e-value", Colour: colourEValue}, legendItem{Name: "1/alpha (rollback at or above)", Colour: colourThreshold})
	c.Desc = describeEvidence(metric, cv, evalues, thresholds)
	return c
}

func describeValues(metric string, cv checkValues, canary, stable, baseline []*float64, limits []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d evaluations of %s.", len(cv.times), metric)
	for _, s := range []struct {
		name string
		vs   []*float64
	}{{"Canary", canary}, {"Stable", stable}, {"Baseline", baseline}} {
		k := known(s.vs)
		if len(k) == 0 {
			fmt.Fprintf(&b, " %s: no value.", s.name)
			continue
		}
		lo, hi := k[0], k[0]
		for _, v := range k {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
		fmt.Fprintf(&b, " %s from %s to %s, last %s.", s.name, short(lo), short(hi), short(k[len(k)-1]))
	}
	if len(limits) > 0 {
		fmt.Fprintf(&b, " Guards: %s.", strings.Join(limits, "; "))
	}
	return b.String()
}

func describeEvidence(metric string, cv checkValues, evalues, thresholds []*float64) string {
	var b strings.Builder
	k := known(evalues)
	if len(k) == 0 {
		return fmt.Sprintf("No e-value of %s.", metric)
	}
	maxE, maxAt := k[0], 0
	for i, v := range evalues {
		if v != nil && *v > maxE {
			maxE, maxAt = *v, i
		}
	}
	fmt.Fprintf(&b, "The e-value of %s ended at %s and was largest, %s, at %s.", metric, short(k[len(k)-1]), short(maxE),
		cv.times[maxAt].UTC().Format(timeLayout))
	for i, v := range evalues {
		if v != nil && thresholds[i] != nil && *v >= *thresholds[i] {
			fmt.Fprintf(&b, " It reached 1/alpha (%s) at %s.", short(*thresholds[i]), cv.times[i].UTC().Format(timeLayout))
			return b.String()
		}
	}
	if t := known(thresholds); len(t) > 0 {
		fmt.Fprintf(&b, " It stayed below 1/alpha (%s).", short(t[len(t)-1]))
	}
	return b.String()
}

// short writes a number with 3 significant digits.
func short(f float64) string { return strconv.FormatFloat(f, 'g', 3, 64) }
