package tracing

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// SamplingKey is the attribute the analyzer sets on an evaluation's root span, before it
// ends, to say what the evaluation decided compared with the one before it: one of the
// Sample* values. Only SampleRepeat traces are thinned (see repeatFilter).
const SamplingKey = attribute.Key("analyzerd.sampling")

// The values of SamplingKey.
const (
	// SampleFirst: the analysis's first verdict.
	SampleFirst = "first"
	// SampleStep: the first verdict of a step (a new step or weight).
	SampleStep = "step"
	// SampleChange: a verdict other than the one before it.
	SampleChange = "change"
	// SampleRollback: a rollback.
	SampleRollback = "rollback"
	// SampleRepeat: the verdict before it again, at the same step.
	SampleRepeat = "repeat"
)

// KeepRepeat reports whether the trace id of a repeated evaluation is among the share ratio
// kept: the decision of the traceidratio sampler, so that it depends on the trace id only
// (every replica, every test run, and a backend's own ratio sampler agree), and composes with
// a head traceidratio sampler as the smaller of the two ratios.
func KeepRepeat(id trace.TraceID, ratio float64) bool {
	p := sdktrace.SamplingParameters{TraceID: id}
	return sdktrace.TraceIDRatioBased(ratio).ShouldSample(p).Decision == sdktrace.RecordAndSample
}

// The bounds of repeatFilter's memory.
const (
	// maxOpenTraces bounds the traces whose root has not ended yet: past it, new traces are
	// exported as they are, unfiltered.
	maxOpenTraces = 1 << 15
	// maxHeldSpans bounds the spans held for one trace: past it, its further spans are
	// exported at once, whatever becomes of the trace.
	maxHeldSpans = 1024
	// maxDecisions bounds the decisions remembered for spans that end after their trace's
	// root, or that link to it (the publication of a verdict).
	maxDecisions = 1 << 16
)

// repeatFilter is the SpanProcessor in front of the exporter's batcher that thins the traces
// of repeated evaluations. The head sampler decides when a trace starts, but whether an
// evaluation repeats the verdict before it is only known when it has decided, at the end of
// its root span. So the filter holds the ended spans of every trace whose local root is still
// open, and when the root ends it decides for the whole trace:
//
//   - a root with SamplingKey = SampleRepeat is kept when KeepRepeat(trace id, ratio);
//   - a root with any other SamplingKey, or none, is kept;
//   - a root without SamplingKey that links to a trace this filter dropped is dropped too:
//     the publication of a verdict is its own trace, linked to the evaluation's (its spans
//     end after the evaluation's root has).
//
// A span ending after its trace was decided follows the decision; any other is passed on.
type repeatFilter struct {
	next  sdktrace.SpanProcessor
	ratio float64

	mu      sync.Mutex
	open    map[trace.TraceID]*heldTrace
	decided *decisions
}

type heldTrace struct {
	spans []sdktrace.ReadOnlySpan
}

func newRepeatFilter(next sdktrace.SpanProcessor, ratio float64) *repeatFilter {
	return &repeatFilter{
		next: next, ratio: ratio,
		open:    make(map[trace.TraceID]*heldTrace),
		decided: newDecisions(maxDecisions),
	}
}

func (f *repeatFilter) OnStart(ctx context.Context, s sdktrace.ReadWriteSpan) {
	if !s.Parent().IsValid() {
		f.mu.Lock()
		if len(f.open) < maxOpenTraces {
			f.open[s.SpanContext().TraceID()] = &heldTrace{}
		}
		f.mu.Unlock()
	}
	f.next.OnStart(ctx, s)
}

func (f *repeatFilter) OnEnd(s sdktrace.ReadOnlySpan) {
	id := s.SpanContext().TraceID()
	f.mu.Lock()
	held, open := f.open[id]
	if s.Parent().IsValid() {
		if open && len(held.spans) < maxHeldSpans {
			held.spans = append(held.spans, s)
			f.mu.Unlock()
			return
		}
		keep, known := f.decided.get(id)
		f.mu.Unlock()
		if keep || !known {
			f.next.OnEnd(s)
		}
		return
	}
	// A local root: the trace is decided.
	keep := f.keep(s)
	delete(f.open, id)
	f.decided.put(id, keep)
	f.mu.Unlock()
	if !keep {
		return
	}
	if held != nil {
		for _, c := range held.spans {
			f.next.OnEnd(c)
		}
	}
	f.next.OnEnd(s)
}

// keep decides a root span's trace. The caller holds mu.
func (f *repeatFilter) keep(root sdktrace.ReadOnlySpan) bool {
	for _, a := range root.Attributes() {
		if a.Key == SamplingKey {
			return a.Value.AsString() != SampleRepeat || KeepRepeat(root.SpanContext().TraceID(), f.ratio)
		}
	}
	for _, l := range root.Links() {
		if keep, known := f.decided.get(l.SpanContext.TraceID()); known && !keep {
			return false
		}
	}
	return true
}

// release passes on the spans still held: their roots never ended (the daemon is stopping).
func (f *repeatFilter) release() {
	f.mu.Lock()
	open := f.open
	f.open = make(map[trace.TraceID]*heldTrace)
	f.mu.Unlock()
	for _, h := range open {
		for _, s := range h.spans {
			f.next.OnEnd(s)
		}
	}
}

func (f *repeatFilter) Shutdown(ctx context.Context) error {
	f.release()
	return f.next.Shutdown(ctx)
}

func (f *repeatFilter) ForceFlush(ctx context.Context) error { return f.next.ForceFlush(ctx) }

// decisions remembers the latest keep-or-drop decisions, up to a capacity, forgetting the
// oldest.
type decisions struct {
	keep  map[trace.TraceID]bool
	order []trace.TraceID
	next  int
	full  bool
}

func newDecisions(capacity int) *decisions {
	return &decisions{keep: make(map[trace.TraceID]bool), order: make([]trace.TraceID, capacity)}
}

func (d *decisions) get(id trace.TraceID) (keep, known bool) {
	keep, known = d.keep[id]
	return keep, known
}

func (d *decisions) put(id trace.TraceID, keep bool) {
	if _, ok := d.keep[id]; !ok {
		if d.full {
			delete(d.keep, d.order[d.next])
		}
		d.order[d.next] = id
		d.next++
		if d.next == len(d.order) {
			d.next, d.full = 0, true
		}
	}
	d.keep[id] = keep
}
