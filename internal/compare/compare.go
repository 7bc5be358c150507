// Package compare measures canaries: it renders an analysis template's queries safely for
// each side, runs them in one batch against a metrics Source, and turns the raw series into
// readings (values and sample counts) per check and side. It also captures baselines.
package compare

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
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
			if (c.Kind == rollout.KindRatio || c.Kind == rollout.KindHistogram) && strings.TrimSpace(q.text) != "" && !compiled.IsSelector() {
				errs = append(errs, fmt.Errorf("checks[%d] (%s).%s: a %s check's query is a series selector of counters, "+
					"e.g. http_requests_total{service={{ arg \"service\" }}}: analyzerd reads their raw samples and counts "+
					"them itself, over the same time on both sides (no sum, increase() or {{ window }})", i, c.Name, q.field, c.Kind))
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

// Side is what selects one side's series.
type Side struct {
	Vars map[string]string
}

// Target is one rollout's measurement at one evaluation: its template, its arguments, both
// sides, and the span measured. Value checks read one number over the step so far ({{ window
// }} is At - From); counter checks count the step's samples, (From, the newest instant both
// sides have been scraped at].
type Target struct {
	Template *Template
	Args     map[string]string
	Canary   Side
	Stable   Side
	// From is when the step began; At is the evaluation's time.
	From time.Time
	At   time.Time
}

func (t Target) spans() Spans {
	return Spans{From: t.From, At: t.At, Recent: t.Template.RecentWindow}
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
	spans := t.spans()
	for i, cc := range t.Template.checks {
		plans[i].canary = b.add(cc, t.Args, t.Canary.Vars, spans)
		plans[i].stable = b.add(cc, t.Args, t.Stable.Vars, spans)
	}
	resps := b.run(ctx, c.source)
	out := make([]rollout.Measurement, len(t.Template.checks))
	for i, cc := range t.Template.checks {
		out[i] = b.measurement(cc.check, plans[i].canary, plans[i].stable, resps, t.spans())
	}
	return out
}

// CaptureBaseline measures the stable side over the template's baseline window ending at
// `at` (the rollout.started event's time). It returns an error when any reading failed to be
// measured, so that the caller tries again later; "no data" is a valid baseline.
func (c *Comparer) CaptureBaseline(ctx context.Context, t *Template, args, stable map[string]string, at time.Time) (map[string]rollout.Reading, error) {
	b := newBatch()
	spans := Spans{From: at.Add(-t.BaselineWindow), At: at}
	plans := make([][]int, len(t.checks))
	for i, cc := range t.checks {
		plans[i] = b.add(cc, args, stable, spans)
	}
	resps := b.run(ctx, c.source)
	out := make(map[string]rollout.Reading, len(t.checks))
	var errs []error
	for i, cc := range t.checks {
		r := b.measurement(cc.check, plans[i], plans[i], resps, spans).Stable
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

func (b *batch) add(cc compiledCheck, args, vars map[string]string, spans Spans) []int {
	var slots []int
	for _, q := range cc.queries {
		slot := len(b.slots)
		expr, err := q.Render(Values{Args: args, Vars: vars, Window: spans.At.Sub(spans.From)})
		if err != nil {
			b.errs[slot] = err
			b.slots = append(b.slots, -1)
			slots = append(slots, slot)
			continue
		}
		if cc.check.Kind != rollout.KindValue {
			// A counter check reads the selector's raw samples (see align.go).
			expr += "[" + FormatDuration(spans.rangeFor()) + "]"
		}
		req := Request{Expr: expr, Time: spans.At}
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

func (b *batch) responses(slots []int, resps []Response) []Response {
	got := make([]Response, len(slots))
	for i, s := range slots {
		got[i] = b.response(s, resps)
	}
	return got
}

// measurement is one check's measurement from the answers to its planned queries.
func (b *batch) measurement(c rollout.Check, canary, stable []int, resps []Response, spans Spans) rollout.Measurement {
	cr, sr := b.responses(canary, resps), b.responses(stable, resps)
	// Validation guarantees a ratio check two queries and the others one; a template that
	// skipped it gets an error reading rather than a panic.
	need := 1
	if c.Kind == rollout.KindRatio {
		need = 2
	}
	if len(cr) < need || len(sr) < need {
		bad := errorReading(fmt.Errorf("%w: a %s check needs its queries; validate the template", ErrBadQuery, c.Kind))
		return rollout.Measurement{Check: c.Name, Canary: bad, Stable: bad}
	}
	if c.Kind != rollout.KindValue {
		return MeasureCounters(c, cr, sr, spans)
	}
	return rollout.Measurement{Check: c.Name, Canary: valueReading(cr[0]), Stable: valueReading(sr[0])}
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
