package publish

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/streams"
	"github.com/analyzerd/analyzerd/internal/telemetry"
)

// Defaults of Options.
const (
	DefaultSource               = "analyzerd"
	DefaultRetryInitialInterval = 100 * time.Millisecond
	DefaultRetryMaxInterval     = 10 * time.Second
	DefaultMaxPending           = 100_000
	DefaultLanes                = 64
)

// The reasons of analyzerd_verdicts_dropped_total.
const (
	dropQueueFull = "queue_full"
	dropInvalid   = "invalid"
)

// Options configures a Publisher.
type Options struct {
	// Prefix is the subject prefix P (streams.DefaultPrefix when empty).
	Prefix string
	// Source is the CloudEvents source of verdicts.
	Source string
	// Logger defaults to a no-op logger.
	Logger *zap.Logger
	// Registerer receives the publisher's metrics; nil registers them nowhere.
	Registerer prometheus.Registerer
	// RetryInitialInterval and RetryMaxInterval bound the backoff between attempts to
	// publish a verdict.
	RetryInitialInterval time.Duration
	RetryMaxInterval     time.Duration
	// MaxPending bounds the queue: when it is full, the oldest verdict not being published is
	// dropped (and counted) to make room, so Enqueue never blocks nor grows memory without end
	// while NATS is away.
	MaxPending int
	// Lanes is how many verdicts may be in flight at once, each of another rollout (a lane
	// holds its rollouts' verdicts in order, and publishes one at a time): JetStream
	// acknowledges each publication, and one at a time is one round trip a verdict, which at
	// a few hundred verdicts a second is a queue. MaxPending is shared among them. With 16,
	// at 10,000 rollouts (2,000 verdicts a second) the lanes fell behind: verdicts waited
	// seconds to be published, and every record carried up to four of them not yet
	// acknowledged (half its bytes).
	Lanes int
	// OnPublished, when set, is called with each verdict JetStream acknowledged (stored now,
	// or a duplicate of one stored before), from the publishing goroutine.
	OnPublished func(v rollout.Verdict)
	// OnDropped, when set, is called with each verdict dropped, never to be published (the
	// queue full, or the verdict invalid), from the goroutine that dropped it, which may hold
	// a lane's lock: it must not call the Publisher.
	OnDropped func(v rollout.Verdict)
	// TracerProvider makes the spans of each verdict's message: its creation in the
	// evaluation's trace (Create) and its publication, a trace of its own linked to the
	// creation context that came with it; nil makes none. The message carries the trace
	// context given to Enqueue as it is.
	TracerProvider trace.TracerProvider
}

// WithDefaults returns o with every zero field set to its default.
func (o Options) WithDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = streams.DefaultPrefix
	}
	if o.Source == "" {
		o.Source = DefaultSource
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.RetryInitialInterval == 0 {
		o.RetryInitialInterval = min(DefaultRetryInitialInterval, max(o.RetryMaxInterval, time.Millisecond))
	}
	if o.RetryMaxInterval == 0 {
		o.RetryMaxInterval = max(DefaultRetryMaxInterval, o.RetryInitialInterval)
	}
	if o.MaxPending == 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.Lanes == 0 {
		// No more lanes than verdicts queued: a small MaxPending is valid without Lanes.
		o.Lanes = DefaultLanes
		if o.MaxPending > 0 {
			o.Lanes = min(o.Lanes, o.MaxPending)
		}
	}
	return o
}

// Validate reports the first problem with o (after WithDefaults).
func (o Options) Validate() error {
	if err := streams.ValidatePrefix(o.Prefix); err != nil {
		return err
	}
	if o.RetryInitialInterval <= 0 {
		return fmt.Errorf("retryInitialInterval: must be positive, got %s", o.RetryInitialInterval)
	}
	if o.RetryMaxInterval < o.RetryInitialInterval {
		return fmt.Errorf("retryMaxInterval: must be at least retryInitialInterval (%s), got %s", o.RetryInitialInterval, o.RetryMaxInterval)
	}
	if o.MaxPending < 1 {
		return fmt.Errorf("maxPending: must be at least 1, got %d", o.MaxPending)
	}
	if o.Lanes < 1 || o.Lanes > o.MaxPending {
		return fmt.Errorf("lanes: must be within 1-maxPending (%d), got %d", o.MaxPending, o.Lanes)
	}
	return nil
}

// item is a verdict waiting to be published.
type item struct {
	v           rollout.Verdict
	traceParent string
	traceState  string
}

// Publisher publishes each rollout's verdicts in the order they were enqueued, on
// rollout.VerdictsSubject(prefix, v.Rollout), retrying each until JetStream stored it.
// Rollouts are spread over lanes (Options.Lanes), which publish at once.
type Publisher struct {
	js      jetstream.JetStream
	tracer  trace.Tracer
	opts    Options
	log     *zap.Logger
	metrics *metrics
	// err is a problem with the options or the metrics found by New; Run and Flush return it.
	err error

	lanes []*lane
}

// lane is a queue of the verdicts of some rollouts, published one at a time, in order.
type lane struct {
	p          *Publisher
	maxPending int

	// sem is held by whoever publishes the head of the queue (Run or Flush), so verdicts go
	// out one at a time, in order.
	sem  chan struct{}
	wake chan struct{}

	mu       sync.Mutex
	items    []item // the queue is items[head:]
	head     int
	inflight bool // items[head] is being published
}

// laneOf is the lane of a rollout's verdicts.
func (p *Publisher) laneOf(ref rollout.Ref) *lane {
	if len(p.lanes) == 1 {
		return p.lanes[0]
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(ref.Namespace))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(ref.Name))
	return p.lanes[h.Sum32()%uint32(len(p.lanes))]
}

// New returns a Publisher; call Run to publish. A problem with opts is returned by Run and
// Flush.
func New(js jetstream.JetStream, opts Options) *Publisher {
	opts = opts.WithDefaults()
	tp := opts.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	p := &Publisher{
		tracer: tp.Tracer("github.com/analyzerd/analyzerd/internal/publish"),
		js:     js,
		opts:   opts,
		log:    opts.Logger.With(zap.String("component", "publish")),
	}
	if err := opts.Validate(); err != nil {
		p.err = fmt.Errorf("publisher options: %w", err)
		opts.Lanes = 1
	}
	for range opts.Lanes {
		p.lanes = append(p.lanes, &lane{p: p, maxPending: max(1, opts.MaxPending/opts.Lanes),
			sem: make(chan struct{}, 1), wake: make(chan struct{}, 1)})
	}
	m, err := newMetrics(opts.Registerer, p.Pending)
	if err != nil && p.err == nil {
		p.err = fmt.Errorf("publisher metrics: %w", err)
	}
	p.metrics = m
	return p
}

// Enqueue adds v to the queue. It never blocks. traceParent and traceState, when set, are the
// W3C trace context the verdict's message carries.
func (p *Publisher) Enqueue(v rollout.Verdict, traceParent, traceState string) {
	p.laneOf(v.Rollout).enqueue(item{v: v, traceParent: traceParent, traceState: traceState})
}

func (l *lane) enqueue(it item) {
	l.mu.Lock()
	if pending := len(l.items) - l.head; pending >= l.maxPending {
		if l.inflight && pending > 1 {
			// Keep the verdict being published at the head; drop the one after it.
			dropped := l.items[l.head+1]
			l.items[l.head+1] = l.items[l.head]
			l.pop()
			l.p.dropped(dropped, dropQueueFull)
		} else if !l.inflight {
			dropped := l.items[l.head]
			l.pop()
			l.p.dropped(dropped, dropQueueFull)
		}
	}
	l.items = append(l.items, it)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Revoke drops the queued verdicts of a rollout's revision that are not being published:
// the analyzer lost the rollout to another replica, which publishes from then on. The
// verdict being published, if any, goes out (its number was stored before it was queued).
func (p *Publisher) Revoke(ref rollout.Ref, revision string) int {
	return p.laneOf(ref).revoke(ref, revision)
}

func (l *lane) revoke(ref rollout.Ref, revision string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	first := l.head
	if l.inflight {
		first++
	}
	kept := l.items[:first]
	n := 0
	for _, it := range l.items[first:] {
		if it.v.Rollout == ref && it.v.Revision == revision {
			n++
			continue
		}
		kept = append(kept, it)
	}
	clear(l.items[len(kept):])
	l.items = kept
	if l.head == len(l.items) {
		l.items, l.head = l.items[:0], 0
	}
	return n
}

// Pending is the number of verdicts not yet published.
func (p *Publisher) Pending() int {
	n := 0
	for _, l := range p.lanes {
		n += l.pending()
	}
	return n
}

func (l *lane) pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.items) - l.head
}

// Run publishes the queue, in order, until ctx is done; then it returns nil, leaving what is
// still queued for Flush. Each verdict is retried with backoff until JetStream acknowledges
// it. Run must not be called concurrently with itself.
func (p *Publisher) Run(ctx context.Context) error {
	if p.err != nil {
		return p.err
	}
	var wg sync.WaitGroup
	for _, l := range p.lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.run(ctx)
		}()
	}
	wg.Wait()
	return nil
}

func (l *lane) run(ctx context.Context) {
	for {
		if err := l.drain(ctx); err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-l.wake:
		}
	}
}

// Flush publishes what is still queued until the queue is empty or ctx is done, in which case
// it says how many verdicts were left unpublished. Call it on shutdown, after Run returned,
// with a deadline.
func (p *Publisher) Flush(ctx context.Context) error {
	if p.err != nil {
		return p.err
	}
	errs := make([]error, len(p.lanes))
	var wg sync.WaitGroup
	for i, l := range p.lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.drain(ctx)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("flushing verdicts: %d left unpublished: %w", p.Pending(), err)
		}
	}
	return nil
}

// drain publishes the head of the queue until the queue is empty (nil) or ctx is done
// (ctx.Err()).
func (l *lane) drain(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		select {
		case l.sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		more, err := l.publishHead(ctx)
		<-l.sem
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
}

// publishHead publishes the verdict at the head of the queue and removes it from the queue,
// unless ctx ends first. more is false when the queue was empty. The caller holds sem.
func (l *lane) publishHead(ctx context.Context) (more bool, err error) {
	l.mu.Lock()
	if l.head == len(l.items) {
		l.mu.Unlock()
		return false, nil
	}
	it := l.items[l.head]
	l.inflight = true
	l.mu.Unlock()

	err = l.p.publish(ctx, it)

	l.mu.Lock()
	defer l.mu.Unlock()
	l.inflight = false
	if err != nil {
		return true, err
	}
	l.pop()
	return true, nil
}

// pop removes the head of the queue. The caller holds mu.
func (l *lane) pop() {
	l.items[l.head] = item{}
	l.head++
	if l.head == len(l.items) {
		l.items, l.head = l.items[:0], 0
	} else if l.head >= 1024 && l.head*2 >= len(l.items) {
		n := copy(l.items, l.items[l.head:])
		clear(l.items[n:])
		l.items, l.head = l.items[:n], 0
	}
}

// dropped counts and logs a verdict that will never be published. The caller may hold mu.
func (p *Publisher) dropped(it item, reason string) {
	p.metrics.droppedTotal.WithLabelValues(reason).Inc()
	p.log.Error("verdict dropped, never published", append(verdictFields(it.v), zap.String("reason", reason))...)
	if p.opts.OnDropped != nil {
		p.opts.OnDropped(it.v)
	}
}

// publish publishes one verdict, retrying until JetStream stored it or ctx is done (the
// error). A verdict that can never be published is dropped and counted: nil.
func (p *Publisher) publish(ctx context.Context, it item) error {
	v := it.v
	fields := verdictFields(v)
	data, err := Encode(v, p.opts.Source)
	if err != nil {
		p.metrics.errorsTotal.Inc()
		p.log.Error("encoding verdict failed", append(fields, zap.Error(err))...)
		p.dropped(it, dropInvalid)
		return nil
	}
	subject := rollout.VerdictsSubject(p.opts.Prefix, v.Rollout)
	header := nats.Header{}
	header.Set("Content-Type", ContentType)
	header.Set(jetstream.MsgIDHeader, MsgID(v))

	// The message carries the verdict's creation context (see Create) as it is. The
	// publication is a trace of its own, linked to it: it ends when JetStream acknowledges,
	// often after the evaluation ended, and a span must not outlive its trace's root.
	if it.traceParent != "" {
		header.Set("traceparent", it.traceParent)
		if it.traceState != "" {
			header.Set("tracestate", it.traceState)
		}
	}
	span := p.startSend(ctx, it, subject)

	var (
		attempts int
		lastErr  string
	)
	op := func() error {
		attempts++
		msg := &nats.Msg{Subject: subject, Data: data, Header: header}
		ack, err := p.js.PublishMsg(ctx, msg)
		if err != nil {
			if ctx.Err() != nil {
				return backoff.Permanent(ctx.Err())
			}
			p.metrics.errorsTotal.Inc()
			if tooLarge(err) {
				return backoff.Permanent(err)
			}
			return err
		}
		if ack.Duplicate {
			p.log.Debug("verdict was already stored", fields...)
		} else {
			p.metrics.publishedTotal.WithLabelValues(string(v.Verdict)).Inc()
		}
		return nil
	}
	notify := func(err error, next time.Duration) {
		if err.Error() == lastErr {
			return
		}
		lastErr = err.Error()
		p.log.Warn("publishing verdict failed; retrying",
			append(fields, zap.String("subject", subject), zap.Error(err), zap.Duration("retryIn", next))...)
	}
	b := backoff.WithContext(backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(p.opts.RetryInitialInterval),
		backoff.WithMaxInterval(p.opts.RetryMaxInterval),
		backoff.WithMaxElapsedTime(0)), ctx)
	err = backoff.RetryNotify(op, b, notify)
	span.SetAttributes(attribute.Int("analyzerd.publish.attempts", attempts))
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End() // before OnPublished: what it tells of finds the span ended
	switch {
	case err == nil:
		if attempts > 1 {
			p.log.Info("verdict published after retrying", append(fields, zap.Int("attempts", attempts))...)
		}
		if p.opts.OnPublished != nil {
			p.opts.OnPublished(v)
		}
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	default:
		p.log.Error("publishing verdict failed for good", append(fields, zap.Error(err))...)
		p.dropped(it, dropInvalid)
		return nil
	}
}

// DestinationTemplate is the verdicts' subject with its variable tokens named, the
// messaging.destination.template of their spans: P.verdicts.{namespace}.{name}.
func DestinationTemplate(prefix string) string { return prefix + ".verdicts.{namespace}.{name}" }

// Create records the creation of v's message, as the OpenTelemetry messaging conventions
// have it for a message sent later by another goroutine: a PRODUCER span
// "create P.verdicts.{namespace}.{name}", a child of the span in ctx (the evaluation), ended
// at once. Its context is the message's creation context: the traceparent and tracestate to
// give Enqueue with v, which the message carries and its publication links to. Without a
// TracerProvider, it is the context of the span in ctx.
func (p *Publisher) Create(ctx context.Context, v rollout.Verdict) (traceParent, traceState string) {
	subject := rollout.VerdictsSubject(p.opts.Prefix, v.Rollout)
	ctx, span := p.tracer.Start(ctx, "create "+DestinationTemplate(p.opts.Prefix),
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
			append(messageAttributes(v, subject, p.opts.Prefix),
				semconv.MessagingOperationTypeCreate,
				semconv.MessagingOperationNameKey.String("create"))...))
	span.End()
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	return carrier.Get("traceparent"), carrier.Get("tracestate")
}

// startSend starts the span of a verdict's publication: a CLIENT span
// "publish P.verdicts.{namespace}.{name}", the root of its own trace, linked to the
// message's creation context. A creation context that was not sampled is followed: no span.
func (p *Publisher) startSend(ctx context.Context, it item, subject string) trace.Span {
	created := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(ctx,
		propagation.MapCarrier{"traceparent": it.traceParent, "tracestate": it.traceState}))
	if created.IsValid() && !created.IsSampled() {
		return trace.SpanFromContext(context.Background()) // records nothing
	}
	opts := []trace.SpanStartOption{
		trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(append(messageAttributes(it.v, subject, p.opts.Prefix),
			semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationNameKey.String("publish"))...),
	}
	if created.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: created}))
	}
	_, span := p.tracer.Start(ctx, "publish "+DestinationTemplate(p.opts.Prefix), opts...)
	return span
}

// messageAttributes are the attributes of a verdict message's spans: where it goes (the
// subject in attributes, never in span names), what it is, and the event that caused it.
func messageAttributes(v rollout.Verdict, subject, prefix string) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKey.String("nats"),
		semconv.MessagingDestinationNameKey.String(subject),
		semconv.MessagingDestinationTemplateKey.String(DestinationTemplate(prefix)),
		semconv.MessagingMessageIDKey.String(MsgID(v)),
		attribute.String("rollout.namespace", v.Rollout.Namespace),
		attribute.String("rollout.name", v.Rollout.Name),
		attribute.String("rollout.revision", v.Revision),
		attribute.Int64("analyzerd.verdict.sequence", int64(v.Sequence)),
		attribute.String("analyzerd.verdict", string(v.Verdict)),
	}
	if v.Cause != "" {
		attrs = append(attrs, attribute.String("analyzerd.event.id", v.Cause))
	}
	return attrs
}

// tooLarge reports whether err says the message is larger than the server or the stream
// accepts: retrying cannot help.
func tooLarge(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, nats.ErrMaxPayload) ||
		(errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum)
}

func verdictFields(v rollout.Verdict) []zap.Field {
	return []zap.Field{
		zap.String("rollout", v.Rollout.String()),
		zap.String("revision", v.Revision),
		zap.Uint64("sequence", v.Sequence),
		zap.String("verdict", string(v.Verdict)),
	}
}

// metrics are the publisher's Prometheus metrics.
type metrics struct {
	publishedTotal *prometheus.CounterVec
	errorsTotal    prometheus.Counter
	droppedTotal   *prometheus.CounterVec
	pending        prometheus.GaugeFunc
}

func newMetrics(reg prometheus.Registerer, pending func() int) (*metrics, error) {
	m := &metrics{
		publishedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "analyzerd_verdicts_published_total",
			Help: "Verdicts stored by JetStream, by verdict (proceed, pause, rollback).",
		}, []string{"verdict"}),
		errorsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "analyzerd_publish_errors_total",
			Help: "Failed attempts to publish a verdict (each is retried).",
		}),
		droppedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "analyzerd_verdicts_dropped_total",
			Help: "Verdicts never published, by reason: queue_full, invalid.",
		}, []string{"reason"}),
		pending: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "analyzerd_verdicts_pending",
			Help: "Verdicts waiting to be published.",
		}, func() float64 { return float64(pending()) }),
	}
	var errs []error
	var err error
	m.publishedTotal, err = telemetry.Register(reg, m.publishedTotal)
	errs = append(errs, err)
	m.errorsTotal, err = telemetry.Register(reg, m.errorsTotal)
	errs = append(errs, err)
	m.droppedTotal, err = telemetry.Register(reg, m.droppedTotal)
	errs = append(errs, err)
	m.pending, err = telemetry.Register(reg, m.pending)
	errs = append(errs, err)
	for _, d := range []rollout.Decision{rollout.Proceed, rollout.Pause, rollout.Rollback} {
		m.publishedTotal.WithLabelValues(string(d))
	}
	for _, r := range []string{dropQueueFull, dropInvalid} {
		m.droppedTotal.WithLabelValues(r)
	}
	return m, errors.Join(errs...)
}
