// Package compare measures canaries: it renders an analysis template's queries safely for
// each side, runs them in one batch against a metrics Source, and turns the raw series into
// readings (values and sample counts) per check and side. It also captures baselines.
package compare

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// Template is an analysis template with its queries compiled.
type Template struct {
	rollout.Template
	checks []compiledCheck
}

type compiledCheck struct {
	check   rollout.Check
	queries []Query // ratio: errors, total; histogram: buckets; value: query
}

// CompileTemplate compiles every query of t, checking that placeholders name only declared
// arguments and variables.
func CompileTemplate(t rollout.Template) (*Template, error) {
	out := &Template{Template: t}
	var errs []error
	for i, c := range t.Checks {
		cc := compiledCheck{check: c}
		for _, q := range []struct{ field, text string }{
			{"errors", c.Errors}, {"total", c.Total}, {"buckets", c.Buckets}, {"query", c.Query},
		} {
			if q.text == "" {
				continue
			}
			compiled, err := Compile(q.text, t.Args, t.Variables)
			if err != nil {
				errs = append(errs, fmt.Errorf("checks[%d] (%s).%s: %w", i, c.Name, q.field, err))
				continue
			}
			cc.queries = append(cc.queries, compiled)
		}
		out.checks = append(out.checks, cc)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// Side is what selects one side's series at one evaluation.
type Side struct {
	Vars map[string]string
	// Window is the range a value check's {{ window }} spans: the step so far.
	Window time.Duration
	// CountsWindow is the range a ratio or histogram check's {{ window }} spans: the counts
	// since the analysis started, which decide's sequential tests accumulate and whose
	// step share its guards judge. Zero means Window.
	CountsWindow time.Duration
	At           time.Time
}

// window is the range a check's queries span on this side.
func (s Side) window(kind rollout.CheckKind) time.Duration {
	if kind != rollout.KindValue && s.CountsWindow > 0 {
		return s.CountsWindow
	}
	return s.Window
}

// Target is one rollout's measurement: its template, its arguments and both sides.
type Target struct {
	Template *Template
	Args     map[string]string
	Canary   Side
	Stable   Side
}

// Comparer measures targets against a Source.
type Comparer struct {
	source Source
}

// New returns a Comparer over source.
func New(source Source) *Comparer { return &Comparer{source: source} }

// Measure runs every check of the target on both sides in one batch and returns one
// measurement per check, in template order. Baselines are not filled in: the caller holds them.
func (c *Comparer) Measure(ctx context.Context, t Target) []rollout.Measurement {
	b := newBatch()
	type planned struct{ canary, stable []int }
	plans := make([]planned, len(t.Template.checks))
	for i, cc := range t.Template.checks {
		plans[i].canary = b.add(cc, t.Args, t.Canary)
		plans[i].stable = b.add(cc, t.Args, t.Stable)
	}
	resps := b.run(ctx, c.source)
	out := make([]rollout.Measurement, len(t.Template.checks))
	for i, cc := range t.Template.checks {
		out[i] = rollout.Measurement{
			Check:  cc.check.Name,
			Canary: b.reading(cc.check, plans[i].canary, resps),
			Stable: b.reading(cc.check, plans[i].stable, resps),
		}
	}
	return out
}

// CaptureBaseline measures the stable side over the template's baseline window ending at
// `at` (the rollout.started event's time). It returns an error when any reading failed to be
// measured, so that the caller tries again later; "no data" is a valid baseline.
func (c *Comparer) CaptureBaseline(ctx context.Context, t *Template, args, stable map[string]string, at time.Time) (map[string]rollout.Reading, error) {
	b := newBatch()
	side := Side{Vars: stable, Window: t.BaselineWindow, At: at}
	plans := make([][]int, len(t.checks))
	for i, cc := range t.checks {
		plans[i] = b.add(cc, args, side)
	}
	resps := b.run(ctx, c.source)
	out := make(map[string]rollout.Reading, len(t.checks))
	var errs []error
	for i, cc := range t.checks {
		r := b.reading(cc.check, plans[i], resps)
		if r.Status == rollout.StatusError {
			errs = append(errs, fmt.Errorf("%s: %s", cc.check.Name, r.Message))
		}
		out[cc.check.Name] = r
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("capture baseline: %w", err)
	}
	return out, nil
}

// batch collects the queries of one evaluation, running each distinct one once.
type batch struct {
	reqs  []Request
	index map[Request]int
	errs  map[int]error // render errors, by planned slot
	slots []int         // planned slot -> request index (or -1 for a render error)
}

func newBatch() *batch { return &batch{index: map[Request]int{}, errs: map[int]error{}} }

func (b *batch) add(cc compiledCheck, args map[string]string, side Side) []int {
	var slots []int
	for _, q := range cc.queries {
		slot := len(b.slots)
		expr, err := q.Render(Values{Args: args, Vars: side.Vars, Window: side.window(cc.check.Kind)})
		if err != nil {
			b.errs[slot] = err
			b.slots = append(b.slots, -1)
			slots = append(slots, slot)
			continue
		}
		req := Request{Expr: expr, Time: side.At}
		i, ok := b.index[req]
		if !ok {
			i = len(b.reqs)
			b.reqs = append(b.reqs, req)
			b.index[req] = i
		}
		b.slots = append(b.slots, i)
		slots = append(slots, slot)
	}
	return slots
}

func (b *batch) run(ctx context.Context, s Source) []Response {
	if len(b.reqs) == 0 {
		return nil
	}
	resps := s.Query(ctx, b.reqs)
	if len(resps) != len(b.reqs) {
		// A Source must answer every request; treat a short answer as unavailable.
		full := make([]Response, len(b.reqs))
		copy(full, resps)
		for i := len(resps); i < len(full); i++ {
			full[i] = Response{Err: fmt.Errorf("%w: no answer", ErrUnavailable)}
		}
		resps = full
	}
	return resps
}

func (b *batch) response(slot int, resps []Response) Response {
	if err, ok := b.errs[slot]; ok {
		return Response{Err: err}
	}
	return resps[b.slots[slot]]
}

func (b *batch) reading(c rollout.Check, slots []int, resps []Response) rollout.Reading {
	got := make([]Response, len(slots))
	for i, s := range slots {
		got[i] = b.response(s, resps)
	}
	// Validation guarantees a ratio check two queries and the others one; a template that
	// skipped it gets an error reading rather than a panic.
	need := 1
	if c.Kind == rollout.KindRatio {
		need = 2
	}
	if len(got) < need {
		return errorReading(fmt.Errorf("%w: a %s check needs its queries; validate the template", ErrBadQuery, c.Kind))
	}
	switch c.Kind {
	case rollout.KindRatio:
		return ratioReading(got[0], got[1])
	case rollout.KindHistogram:
		return histogramReading(got[0], c.Quantile)
	default:
		return valueReading(got[0])
	}
}

func errorReading(err error) rollout.Reading {
	return rollout.Reading{Status: rollout.StatusError, Message: err.Error()}
}

func noData(msg string) rollout.Reading {
	return rollout.Reading{Status: rollout.StatusNoData, Message: msg}
}

// single reads a one-series answer. ok is false when there is no (finite) value.
func single(r Response) (v float64, ok bool, err error) {
	switch n := len(r.Series); {
	case n == 0:
		return 0, false, nil
	case n > 1:
		return 0, false, fmt.Errorf("%w: query returned %d series, want 1 (aggregate it, e.g. with sum)", ErrBadQuery, n)
	}
	v = r.Series[0].Value
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false, nil
	}
	return v, true, nil
}

// ratioReading divides errors by total. No series for errors with requests present means
// no errors: error counters often have no series until the first error.
func ratioReading(errorsResp, totalResp Response) rollout.Reading {
	if totalResp.Err != nil {
		return errorReading(totalResp.Err)
	}
	if errorsResp.Err != nil {
		return errorReading(errorsResp.Err)
	}
	total, ok, err := single(totalResp)
	if err != nil {
		return errorReading(fmt.Errorf("total: %w", err))
	}
	if !ok || total <= 0 {
		return noData("no requests in the window")
	}
	errCount, ok, err := single(errorsResp)
	if err != nil {
		return errorReading(fmt.Errorf("errors: %w", err))
	}
	if !ok || errCount < 0 {
		errCount = 0
	}
	return rollout.Reading{Status: rollout.StatusOK, Value: errCount / total, Samples: int64(math.Round(total)),
		Events: errCount, Total: total}
}

func valueReading(r Response) rollout.Reading {
	if r.Err != nil {
		return errorReading(r.Err)
	}
	v, ok, err := single(r)
	if err != nil {
		return errorReading(err)
	}
	if !ok {
		return noData("no series")
	}
	return rollout.Reading{Status: rollout.StatusOK, Value: v}
}

func histogramReading(r Response, q float64) rollout.Reading {
	if r.Err != nil {
		return errorReading(r.Err)
	}
	if len(r.Series) == 0 {
		return noData("no histogram series")
	}
	buckets := make([]rollout.Bucket, 0, len(r.Series))
	seen := make(map[float64]bool, len(r.Series))
	for _, s := range r.Series {
		le, ok := s.Labels["le"]
		if !ok {
			return errorReading(fmt.Errorf("%w: histogram query returned a series without an le label (group it by le)", ErrBadQuery))
		}
		ub, err := strconv.ParseFloat(le, 64)
		if err != nil || math.IsNaN(ub) {
			return errorReading(fmt.Errorf("%w: histogram bucket le=%q is not a number", ErrBadQuery, le))
		}
		// Series of several pods or instances would interleave into nonsense: the query
		// must sum them by le.
		if seen[ub] {
			return errorReading(fmt.Errorf("%w: histogram query returned several series for le=%q (aggregate them, e.g. with sum by (le))", ErrBadQuery, le))
		}
		seen[ub] = true
		if math.IsNaN(s.Value) {
			continue
		}
		buckets = append(buckets, rollout.Bucket{UpperBound: ub, Count: s.Value})
	}
	value, count, err := rollout.Quantile(q, buckets)
	if err != nil {
		return errorReading(fmt.Errorf("%w: %w", ErrBadQuery, err))
	}
	if count <= 0 {
		return noData("no observations in the window")
	}
	if math.IsNaN(value) {
		// Only the +Inf bucket: observations, but no bound to estimate a quantile from.
		return errorReading(fmt.Errorf("%w: histogram has no finite bucket to estimate a quantile from", ErrBadQuery))
	}
	return rollout.Reading{Status: rollout.StatusOK, Value: value, Samples: int64(math.Round(count)),
		Buckets: rollout.SortBuckets(buckets)}
}
