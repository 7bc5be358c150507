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
	"sync"
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
	// shapes are the counter queries' group shapes (nil for a query that cannot be grouped,
	// and for value checks): see feed.go.
	shapes []*groupShape
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
			var shape *groupShape
			if c.Kind == rollout.KindRatio || c.Kind == rollout.KindHistogram {
				if g, ok := compiled.grouping(); ok {
					shape = &g
				}
			}
			cc.shapes = append(cc.shapes, shape)
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

// Comparer measures targets against a Source. Its counter queries are grouped: one query
// refreshes every rollout that reads the same selector (see feed.go). Safe for concurrent use.
type Comparer struct {
	source     Source
	perRollout bool

	mu    sync.Mutex
	feeds map[string]*feed // by query template
}

// New returns a Comparer over source.
func New(source Source) *Comparer { return &Comparer{source: source, feeds: map[string]*feed{}} }

// NewPerRollout returns a Comparer that runs every rollout's queries on their own, reading the
// whole step at each evaluation (as analyzerd did before feeds): for comparison in tests.
func NewPerRollout(source Source) *Comparer {
	return &Comparer{source: source, perRollout: true, feeds: map[string]*feed{}}
}

func (c *Comparer) feed(q Query, shape *groupShape) *feed {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.feeds[q.Text()]
	if f == nil {
		f = newFeed(*shape, q.Text())
		c.feeds[q.Text()] = f
	}
	return f
}

// Measure runs every check of the target on both sides and returns one measurement per
// check, in template order: the counter queries that can be grouped from their feeds, the
// others in one batch. Baselines are not filled in: the caller holds them.
func (c *Comparer) Measure(ctx context.Context, t Target) []rollout.Measurement {
	b := newBatch()
	spans := t.spans()
	type planned struct {
		canary, stable []int
		fed            []fedRead // the reads from feeds, filled in below
	}
	plans := make([]planned, len(t.Template.checks))
	var reads []*fedRead
	for i, cc := range t.Template.checks {
		plans[i].canary = b.add(cc, t.Args, t.Canary.Vars, spans)
		plans[i].stable = b.add(cc, t.Args, t.Stable.Vars, spans)
		if c.perRollout {
			continue
		}
		for qi, shape := range cc.shapes {
			if shape == nil {
				continue
			}
			for si, side := range []Side{t.Canary, t.Stable} {
				values, err := shape.values(Values{Args: t.Args, Vars: side.Vars})
				if err != nil || !groupable(values) {
					continue // the batch runs it on its own (or reports the render error)
				}
				own, err := cc.queries[qi].Render(Values{Args: t.Args, Vars: side.Vars})
				if err != nil {
					continue
				}
				plans[i].fed = append(plans[i].fed, fedRead{query: qi, stable: si == 1, feed: c.feed(cc.queries[qi], shape), values: values, own: own})
			}
		}
		for k := range plans[i].fed {
			r := &plans[i].fed[k]
			slots := plans[i].canary
			if r.stable {
				slots = plans[i].stable
			}
			b.drop(slots[r.query]) // read from the feed instead
			reads = append(reads, r)
		}
	}
	var wg sync.WaitGroup
	for _, r := range reads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.resp, r.horizon, r.newer = r.feed.read(ctx, c.source, r.values, r.own, spans.From, keepFrom(spans), spans.At)
		}()
	}
	resps := b.run(ctx, c.source)
	wg.Wait()
	out := make([]rollout.Measurement, len(t.Template.checks))
	for i, cc := range t.Template.checks {
		cr, sr := b.responses(plans[i].canary, resps), b.responses(plans[i].stable, resps)
		checkSpans := spans
		var newer time.Time // when every feed read can have newer data
		for _, r := range plans[i].fed {
			side := cr
			if r.stable {
				side = sr
			}
			side[r.query] = r.resp
			if r.resp.Err == nil && r.horizon.Before(checkSpans.At) {
				checkSpans.At = r.horizon // both sides are counted up to the data every query has
			}
			if r.newer.After(newer) {
				newer = r.newer
			}
		}
		out[i] = measurement(cc.check, cr, sr, checkSpans)
		if m := &out[i]; !m.NextSample.IsZero() && m.NextSample.Before(newer) {
			// The next scrape is read only once the feeds refresh: an evaluation before
			// that would find nothing new.
			m.NextSample = newer
		}
	}
	return out
}

// fedRead is one side's query of a check read from its feed.
type fedRead struct {
	query   int
	stable  bool
	feed    *feed
	values  []string
	own     string
	resp    Response
	horizon time.Time
	newer   time.Time
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
	reqs   []Request
	index  map[Request]int
	errs   map[int]error // render errors, by planned slot
	slots  []int         // planned slot -> request index (-1 for a render error, -2 dropped)
	unused map[int]bool  // requests no slot needs any more (see drop)
}

func newBatch() *batch {
	return &batch{index: map[Request]int{}, errs: map[int]error{}, unused: map[int]bool{}}
}

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
		if ok {
			delete(b.unused, i) // dropped for a fed read, and needed here
		} else {
			i = len(b.reqs)
			b.reqs = append(b.reqs, req)
			b.index[req] = i
		}
		b.slots = append(b.slots, i)
		slots = append(slots, slot)
	}
	return slots
}

// drop takes a planned slot's query out of the batch (its answer comes from elsewhere). A
// request another slot still needs stays.
func (b *batch) drop(slot int) {
	if i := b.slots[slot]; i >= 0 {
		b.slots[slot] = -2
		for _, other := range b.slots {
			if other == i {
				return
			}
		}
		b.unused[i] = true
	}
}

func (b *batch) run(ctx context.Context, s Source) []Response {
	if len(b.unused) > 0 {
		// Run only the requests still needed, and answer the others with nothing.
		var kept []Request
		var where []int
		for i, r := range b.reqs {
			if !b.unused[i] {
				kept = append(kept, r)
				where = append(where, i)
			}
		}
		full := make([]Response, len(b.reqs))
		if len(kept) > 0 {
			got := (&batch{reqs: kept}).run(ctx, s)
			for k, i := range where {
				full[i] = got[k]
			}
		}
		return full
	}
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
	if b.slots[slot] < 0 {
		return Response{} // dropped: the caller fills it in
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
	return measurement(c, b.responses(canary, resps), b.responses(stable, resps), spans)
}

// measurement is one check's measurement from each side's answers, in the check's order.
func measurement(c rollout.Check, cr, sr []Response, spans Spans) rollout.Measurement {
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
