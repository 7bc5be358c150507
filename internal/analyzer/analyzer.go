// Package analyzer runs the analyses: it holds one state per live rollout, applies rollout
// events to it, and every interval of the rollout's template runs the pipeline
// compare -> decide -> publish on it. All state is owned by one goroutine (the loop); queries
// run on a bounded pool of workers and hand their measurements back to the loop.
package analyzer

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/analyzerd/analyzerd/internal/compare"
	"github.com/analyzerd/analyzerd/internal/decide"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

// Measurer measures rollouts; *compare.Comparer is the implementation.
type Measurer interface {
	Measure(ctx context.Context, t compare.Target) []rollout.Measurement
	CaptureBaseline(ctx context.Context, t *compare.Template, args, stable map[string]string, at time.Time) (map[string]rollout.Reading, error)
}

// Sink takes verdicts to publish, in order, without blocking; *publish.Publisher is one.
type Sink interface {
	Enqueue(v rollout.Verdict, traceParent, traceState string)
}

// ErrStopped is returned by Handle when the analyzer is not running; the event is retried.
var ErrStopped = errors.New("analyzer is not running")

// Options configure an Analyzer. Templates, Measurer and Sink are required.
type Options struct {
	Templates map[string]*compare.Template
	Measurer  Measurer
	Sink      Sink
	// Workers bounds the evaluations that query the metrics source at once (default 16).
	Workers int
	// Resolution is how often the loop looks for analyses that are due (default 1s).
	Resolution time.Duration
	// DrainTimeout bounds how long a stop waits for evaluations in flight (default 10s).
	DrainTimeout time.Duration
	// Now is the scheduler's clock; evaluations take their time from it (time.Now when nil).
	Now        func() time.Time
	Tracer     trace.Tracer
	Logger     *zap.Logger
	Registerer prometheus.Registerer
}

func (o *Options) defaults() {
	if o.Workers <= 0 {
		o.Workers = 16
	}
	if o.Resolution <= 0 {
		o.Resolution = time.Second
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Tracer == nil {
		o.Tracer = noop.NewTracerProvider().Tracer("analyzerd")
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
}

// Analyzer owns every live analysis.
type Analyzer struct {
	opts    Options
	events  chan eventRequest
	results chan result
	done    chan struct{}
	metrics *metrics

	// Owned by the loop.
	live  map[rollout.Ref]*analysis
	seen  *recent[struct{}] // ids of applied events
	ended *recent[ended]    // analyses retired by completion, abortion or a newer revision
	gen   uint64

	// latest is what the read API serves; written by the loop, read by HTTP handlers.
	mu     sync.RWMutex
	latest map[rollout.Ref]rollout.Verdict
}

// New builds an Analyzer; Run starts it.
func New(opts Options) (*Analyzer, error) {
	opts.defaults()
	if opts.Measurer == nil || opts.Sink == nil || len(opts.Templates) == 0 {
		return nil, errors.New("analyzer: Templates, Measurer and Sink are required")
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	return &Analyzer{
		opts:    opts,
		events:  make(chan eventRequest),
		results: make(chan result, opts.Workers),
		done:    make(chan struct{}),
		metrics: m,
		live:    map[rollout.Ref]*analysis{},
		seen:    newRecent[struct{}](1 << 16),
		ended:   newRecent[ended](1 << 16),
		latest:  map[rollout.Ref]rollout.Verdict{},
	}, nil
}

type eventRequest struct {
	ev    rollout.Event
	reply chan error
}

// Handle applies one event. It returns nil once the event's effect is in the analyzer's
// state, an error wrapping rollout.ErrInvalid for an event that can never apply, and
// ErrStopped when the analyzer is stopping (the event is then retried).
func (a *Analyzer) Handle(ctx context.Context, ev rollout.Event) error {
	req := eventRequest{ev: ev, reply: make(chan error, 1)}
	select {
	case a.events <- req:
	case <-a.done:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Latest returns the latest verdict of a live rollout.
func (a *Analyzer) Latest(ref rollout.Ref) (rollout.Verdict, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	v, ok := a.latest[ref]
	return v, ok
}

// List returns the latest verdict of every live rollout that has one, sorted by rollout.
func (a *Analyzer) List() []rollout.Verdict {
	a.mu.RLock()
	out := make([]rollout.Verdict, 0, len(a.latest))
	for _, v := range a.latest {
		out = append(out, v)
	}
	a.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Rollout.String() < out[j].Rollout.String() })
	return out
}

// Run is the loop. It returns when ctx is done, after the evaluations in flight have
// finished (within DrainTimeout) and their verdicts were handed to the sink.
func (a *Analyzer) Run(ctx context.Context) error {
	defer close(a.done)
	// Evaluations in flight get their own context so that a stop lets them finish.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	var workers sync.WaitGroup
	slots := make(chan struct{}, a.opts.Workers)

	ticker := time.NewTicker(a.opts.Resolution)
	defer ticker.Stop()
	a.dispatch(workCtx, &workers, slots)
	for {
		select {
		case <-ctx.Done():
			return a.drain(&workers, cancelWork)
		case req := <-a.events:
			err := a.apply(req.ev)
			req.reply <- err
			if err == nil {
				a.dispatch(workCtx, &workers, slots)
			}
		case res := <-a.results:
			<-slots
			a.complete(res)
		case <-ticker.C:
			a.dispatch(workCtx, &workers, slots)
		}
	}
}

// drain waits for the evaluations in flight and completes them, then cancels the rest.
func (a *Analyzer) drain(workers *sync.WaitGroup, cancelWork context.CancelFunc) error {
	finished := make(chan struct{})
	go func() { workers.Wait(); close(finished) }()
	timer := time.NewTimer(a.opts.DrainTimeout)
	defer timer.Stop()
	deadline := timer.C // nil once the workers were cancelled: they finish promptly then
	for {
		select {
		case res := <-a.results:
			a.complete(res)
		case <-finished:
			for {
				select {
				case res := <-a.results:
					a.complete(res)
				default:
					return nil
				}
			}
		case <-deadline:
			a.opts.Logger.Warn("evaluations still in flight at the end of the drain timeout; cancelling them",
				zap.Duration("drainTimeout", a.opts.DrainTimeout))
			cancelWork()
			deadline = nil
		}
	}
}

// dispatch starts an evaluation of every due analysis, as far as workers are free.
func (a *Analyzer) dispatch(workCtx context.Context, workers *sync.WaitGroup, slots chan struct{}) {
	now := a.opts.Now()
	for _, an := range a.live {
		if an.inFlight || an.final || now.Before(an.next) {
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			a.metrics.saturated.Inc()
			return // every worker is busy; the next tick tries again
		}
		j := an.job(now, a.opts.Tracer)
		an.inFlight = true
		workers.Add(1)
		go func() {
			defer workers.Done()
			a.results <- a.evaluate(workCtx, j)
		}()
	}
}

// evaluate runs on a worker: it measures, and captures the baseline while there is none.
func (a *Analyzer) evaluate(ctx context.Context, j job) result {
	ctx = trace.ContextWithSpan(ctx, j.span)
	res := result{job: j}
	if j.needBaseline {
		res.baseline, res.baselineErr = a.opts.Measurer.CaptureBaseline(ctx, j.target.Template, j.target.Args, j.target.Stable.Vars, j.started)
	}
	res.measurements = a.opts.Measurer.Measure(ctx, j.target)
	return res
}

// complete runs decide on an evaluation's measurements and hands the verdict to the sink.
func (a *Analyzer) complete(res result) {
	j := res.job
	defer j.span.End()
	an, ok := a.live[j.key.Ref]
	if !ok || an.gen != j.gen {
		return // retired or superseded while the evaluation ran
	}
	an.inFlight = false
	an.next = j.now.Add(an.template.Interval)
	if j.needBaseline {
		if res.baselineErr != nil {
			// Logged when the error changes, not at every evaluation of an outage.
			if msg := res.baselineErr.Error(); msg != an.baselineErr {
				an.baselineErr = msg
				a.opts.Logger.Warn("baseline not captured; trying again at every evaluation",
					zap.Stringer("rollout", j.key), zap.Error(res.baselineErr))
			}
		} else {
			if an.baselineErr != "" {
				a.opts.Logger.Info("baseline captured after all", zap.Stringer("rollout", j.key))
			}
			an.baseline, an.baselineErr = res.baseline, ""
		}
	}
	if j.stepGen != an.stepGen {
		// The step changed while the evaluation ran: its window is stale. Evaluate again now.
		an.next = a.opts.Now()
		return
	}
	for i := range res.measurements {
		if b, ok := an.baseline[res.measurements[i].Check]; ok {
			b := b
			res.measurements[i].Baseline = &b
		}
	}
	d := decide.Decide(decide.Input{
		Template:     an.template.Template,
		Step:         an.step,
		Weight:       an.weight,
		StepStarted:  an.stepStarted,
		Now:          j.now,
		Measurements: res.measurements,
		Evidence:     an.evidence,
	})
	an.evidence = d.Evidence
	an.sequence++
	v := rollout.Verdict{
		Rollout:   an.key.Ref,
		Revision:  an.key.Revision,
		Step:      an.step,
		Weight:    an.weight,
		Verdict:   d.Decision,
		Reason:    d.Reason,
		Sequence:  an.sequence,
		Checks:    d.Checks,
		DecidedAt: j.now.UTC().Truncate(time.Millisecond), // the precision of the wire format
		Cause:     an.cause,
		TraceID:   j.span.SpanContext().TraceID().String(),
	}
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(trace.ContextWithSpan(context.Background(), j.span), carrier)
	a.opts.Sink.Enqueue(v, carrier.Get("traceparent"), carrier.Get("tracestate"))
	a.metrics.evaluations.Inc()
	a.metrics.verdicts.WithLabelValues(string(v.Verdict)).Inc()
	if an.firstVerdict {
		an.firstVerdict = false
		a.metrics.firstVerdict.Observe(j.now.Sub(an.received).Seconds())
	}

	previous, had := a.Latest(an.key.Ref)
	a.mu.Lock()
	a.latest[an.key.Ref] = v
	a.mu.Unlock()
	if !had || previous.Verdict != v.Verdict || previous.Revision != v.Revision {
		a.opts.Logger.Info("verdict",
			zap.String("rollout", an.key.Ref.String()),
			zap.String("revision", an.key.Revision),
			zap.String("verdict", string(v.Verdict)),
			zap.String("reason", v.Reason),
			zap.Uint64("sequence", v.Sequence),
			zap.String("traceId", v.TraceID))
	}
	if v.Verdict == rollout.Rollback {
		an.final = true // rollback is final for a revision: no more evaluations
	}
}

// retire ends an analysis: it is no longer evaluated nor served, and what a later start of
// the same revision needs of it is remembered.
func (a *Analyzer) retire(an *analysis, at time.Time) {
	a.ended.put(endedKey(an.key), ended{at: at, sequence: an.sequence, evidence: an.evidence})
	delete(a.live, an.key.Ref)
	a.mu.Lock()
	delete(a.latest, an.key.Ref)
	a.mu.Unlock()
	a.metrics.live.Set(float64(len(a.live)))
}
