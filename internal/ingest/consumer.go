// Package ingest consumes rollout events (CONTRACT.md section 3) from the ROLLOUT_EVENTS
// stream with a durable JetStream consumer, decodes and validates them, hands them to a
// Handler (those of one rollout one at a time, in stream order; those of different rollouts
// at once), and dead-letters the ones that can never succeed (section 5).
package ingest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/streams"
	"github.com/analyzerd/analyzerd/internal/telemetry"
)

// The headers a dead letter carries besides the original ones (CONTRACT.md section 5).
const (
	HeaderError   = "Analyzerd-Error"
	HeaderSubject = "Analyzerd-Subject"
)

// Defaults of Options.
const (
	DefaultDurable       = "analyzerd"
	DefaultMaxEventBytes = 64 << 10
	DefaultMaxDeliver    = 10
	DefaultAckWait       = 30 * time.Second
	DefaultRetryDelay    = time.Second
	DefaultMaxRetryDelay = time.Minute
	DefaultStopGrace     = 10 * time.Second
	DefaultMaxClockSkew  = 30 * time.Second
	DefaultLagInterval   = 5 * time.Second
	DefaultConcurrency   = 64
)

const (
	// setupTimeout bounds creating the consumer in New.
	setupTimeout = 10 * time.Second
	// deadLetterTimeout bounds publishing one dead letter, retries included.
	deadLetterTimeout = 5 * time.Second
	// fetchWait bounds one pull request: Run asks again after it.
	fetchWait = 30 * time.Second
	// fetchErrorPause is how long Run waits after a failed fetch before the next.
	fetchErrorPause = 250 * time.Millisecond
	// abandonWait is how long a handler whose context was cancelled may take to return
	// before Run stops waiting for it.
	abandonWait = 2 * time.Second
	// maxErrorHeader bounds the Analyzerd-Error header, in bytes.
	maxErrorHeader = 1024
)

// The outcomes of analyzerd_events_received_total.
const (
	outcomeHandled      = "handled"
	outcomeDeadLettered = "deadlettered"
	outcomeRetried      = "retried"
)

// Handler handles one decoded event. An error wrapping rollout.ErrInvalid dead-letters the
// event; any other error has it redelivered later, until MaxDeliver deliveries, after which it
// is dead-lettered too. The event is acknowledged only when Handle returns nil, so Handle must
// be idempotent on the event's ID.
type Handler interface {
	Handle(ctx context.Context, ev rollout.Event) error
}

// Options configures a Consumer.
type Options struct {
	// Prefix is the subject prefix P (streams.DefaultPrefix when empty).
	Prefix string
	// Durable is the name of the durable consumer that every replica shares.
	Durable string
	// MaxEventBytes is the largest event accepted; larger ones are dead-lettered.
	MaxEventBytes int
	// MaxDeliver is how many times an event is delivered before it is dead-lettered.
	MaxDeliver int
	// AckWait is how long JetStream waits for an acknowledgement before it redelivers an
	// event. It also bounds how long one Handle call may take.
	AckWait time.Duration
	// RetryDelay is how long after a failed delivery the event is redelivered; the delay
	// doubles with every further delivery, up to MaxRetryDelay.
	RetryDelay    time.Duration
	MaxRetryDelay time.Duration
	// StopGrace is how long Run, once its context is done, lets the handler finish the event
	// in hand before it cancels the handler's context.
	StopGrace time.Duration
	// MaxClockSkew is how far an event's time may lie from the time the stream stored it;
	// beyond that the stream's time is used instead (see ClampTime).
	MaxClockSkew time.Duration
	// LagInterval is how often Run reads the durable consumer's backlog into the lag gauges.
	LagInterval time.Duration
	// Concurrency is how many events are handled at once, each of another subject (another
	// rollout): those of one subject are handled one at a time, in stream order. One at a
	// time, each event's store round trips made a start of thousands of rollouts a queue of
	// minutes.
	Concurrency int
	// Logger defaults to a no-op logger.
	Logger *zap.Logger
	// Registerer receives the consumer's metrics; nil registers them nowhere.
	Registerer prometheus.Registerer
}

// WithDefaults returns o with every zero field set to its default.
func (o Options) WithDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = streams.DefaultPrefix
	}
	if o.Durable == "" {
		o.Durable = DefaultDurable
	}
	if o.MaxEventBytes == 0 {
		o.MaxEventBytes = DefaultMaxEventBytes
	}
	if o.MaxDeliver == 0 {
		o.MaxDeliver = DefaultMaxDeliver
	}
	if o.AckWait == 0 {
		o.AckWait = DefaultAckWait
	}
	if o.RetryDelay == 0 {
		o.RetryDelay = DefaultRetryDelay
	}
	if o.MaxRetryDelay == 0 {
		o.MaxRetryDelay = max(DefaultMaxRetryDelay, o.RetryDelay)
	}
	if o.StopGrace == 0 {
		o.StopGrace = DefaultStopGrace
	}
	if o.LagInterval == 0 {
		o.LagInterval = DefaultLagInterval
	}
	if o.MaxClockSkew == 0 {
		o.MaxClockSkew = DefaultMaxClockSkew
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return o
}

// Validate reports the first problem with o (after WithDefaults).
func (o Options) Validate() error {
	if err := streams.ValidatePrefix(o.Prefix); err != nil {
		return err
	}
	if strings.ContainsAny(o.Durable, ".*> \t\r\n/\\") {
		return fmt.Errorf("durable: %q must not contain '.', '*', '>', '/', '\\' or whitespace", o.Durable)
	}
	if o.MaxEventBytes < 1 {
		return fmt.Errorf("maxEventBytes: must be positive, got %d", o.MaxEventBytes)
	}
	if o.MaxDeliver < 1 {
		return fmt.Errorf("maxDeliver: must be at least 1, got %d", o.MaxDeliver)
	}
	if o.AckWait < time.Second {
		return fmt.Errorf("ackWait: must be at least 1s, got %s", o.AckWait)
	}
	if o.RetryDelay <= 0 {
		return fmt.Errorf("retryDelay: must be positive, got %s", o.RetryDelay)
	}
	if o.MaxRetryDelay < o.RetryDelay {
		return fmt.Errorf("maxRetryDelay: must be at least retryDelay (%s), got %s", o.RetryDelay, o.MaxRetryDelay)
	}
	if o.LagInterval <= 0 {
		return fmt.Errorf("lagInterval: must be positive, got %s", o.LagInterval)
	}
	if o.StopGrace <= 0 {
		return fmt.Errorf("stopGrace: must be positive, got %s", o.StopGrace)
	}
	if o.Concurrency < 1 {
		return fmt.Errorf("concurrency: must be at least 1, got %d", o.Concurrency)
	}
	return nil
}

// Consumer is the durable consumer of rollout events.
type Consumer struct {
	js        jetstream.JetStream
	cons      jetstream.Consumer
	h         Handler
	opts      Options
	log       *zap.Logger
	metrics   *metrics
	dlSubject string
}

// New creates the durable pull consumer on ROLLOUT_EVENTS, or updates it to opts when it
// exists (several replicas share it). The stream must exist (see streams.Ensure).
func New(js jetstream.JetStream, h Handler, opts Options) (*Consumer, error) {
	opts = opts.WithDefaults()
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("ingest options: %w", err)
	}
	if h == nil {
		return nil, errors.New("ingest: handler is nil")
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("ingest metrics: %w", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	filter := opts.Prefix + ".events.>"
	cons, err := js.CreateOrUpdateConsumer(ctx, streams.EventsStream, jetstream.ConsumerConfig{
		Durable:       opts.Durable,
		Description:   "analyzerd: rollout events",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       opts.AckWait,
		MaxDeliver:    opts.MaxDeliver,
		FilterSubject: filter,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("creating consumer %s on stream %s (filter %s): %w", opts.Durable, streams.EventsStream, filter, err)
	}
	return &Consumer{
		js:      js,
		cons:    cons,
		h:       h,
		opts:    opts,
		log:     opts.Logger.With(zap.String("component", "ingest"), zap.String("consumer", opts.Durable)),
		metrics: m,
		// The contract's subject, from the shared helper.
		dlSubject: rollout.DeadLetterSubject(opts.Prefix),
	}, nil
}

// Run consumes events until ctx is done, handling those of one subject one at a time in
// stream order, and up to Concurrency of different subjects at once. When ctx is done it
// stops fetching, lets the handlers finish the events in hand (for at most StopGrace), gives
// back the events fetched but not handled, and returns nil. It returns an error when
// consuming cannot go on (the consumer was deleted, the connection closed). Run must not be
// called concurrently.
func (c *Consumer) Run(ctx context.Context) error {
	c.log.Info("consuming events", zap.String("stream", streams.EventsStream), zap.Int("concurrency", c.opts.Concurrency))
	lagCtx, stopLag := context.WithCancel(ctx)
	lagDone := make(chan struct{})
	go func() { defer close(lagDone); c.watchLag(lagCtx) }()
	defer func() { stopLag(); <-lagDone }()
	ls := c.startLanes(ctx)
	defer ls.stop()
	var lastErr string
	pause := time.NewTimer(0)
	defer pause.Stop()
	for ctx.Err() == nil {
		err := c.fetch(ctx, ls)
		if err == nil || ctx.Err() != nil {
			if lastErr != "" && err == nil {
				c.log.Info("fetching events again")
				lastErr = ""
			}
			continue
		}
		if terminal(err) {
			return fmt.Errorf("consuming %s from stream %s: %w", c.opts.Durable, streams.EventsStream, err)
		}
		if err.Error() != lastErr {
			c.log.Warn("fetching events failed; retrying", zap.Error(err))
			lastErr = err.Error()
		}
		pause.Reset(fetchErrorPause)
		select {
		case <-ctx.Done():
		case <-pause.C:
		}
	}
	c.log.Info("stopped consuming events")
	return nil
}

// lanes hand fetched events to handlers: the events of one subject are handled one at a
// time, in the order fetched, by a goroutine that lives while the subject has events to
// handle; those of different subjects at once. slots bound the events fetched and not yet
// handled, so that none waits long in this process while its ack wait runs out.
type lanes struct {
	c     *Consumer
	ctx   context.Context
	slots chan struct{}
	mu    sync.Mutex
	// waiting holds, per subject whose events are being handled, those waiting their turn.
	waiting map[string][]jetstream.Msg
	wg      sync.WaitGroup
}

func (c *Consumer) startLanes(ctx context.Context) *lanes {
	return &lanes{c: c, ctx: ctx, slots: make(chan struct{}, c.opts.Concurrency), waiting: map[string][]jetstream.Msg{}}
}

// hand has a fetched event handled after those of its subject before it. It holds a slot,
// freed when the event is settled.
func (ls *lanes) hand(msg jetstream.Msg) {
	subject := msg.Subject()
	ls.mu.Lock()
	if q, busy := ls.waiting[subject]; busy {
		ls.waiting[subject] = append(q, msg)
		ls.mu.Unlock()
		return
	}
	ls.waiting[subject] = nil
	ls.mu.Unlock()
	ls.wg.Go(func() { ls.work(subject, msg) })
}

// work handles a subject's events until none waits.
func (ls *lanes) work(subject string, msg jetstream.Msg) {
	for {
		if ls.ctx.Err() != nil {
			// Fetched as we were told to stop: give it back rather than start on it.
			if nerr := msg.Nak(); nerr != nil {
				ls.c.log.Debug("giving back an unhandled event failed; it is redelivered after its ack wait", zap.Error(nerr))
			}
		} else {
			ls.c.process(ls.ctx, msg)
		}
		<-ls.slots
		ls.mu.Lock()
		q := ls.waiting[subject]
		if len(q) == 0 {
			delete(ls.waiting, subject)
			ls.mu.Unlock()
			return
		}
		msg = q[0]
		ls.waiting[subject] = q[1:]
		ls.mu.Unlock()
		// Its ack wait ran while it waited its turn: begun again, so that JetStream does not
		// deliver it again (perhaps to another replica, beside the next of its subject)
		// while it is being handled here.
		if err := msg.InProgress(); err != nil {
			ls.c.log.Debug("marking a waiting event in progress failed", zap.Error(err))
		}
	}
}

// acquire waits for a free slot, and takes every other one free then: how many events to
// fetch (none once ctx is done).
func (ls *lanes) acquire(ctx context.Context) int {
	select {
	case ls.slots <- struct{}{}:
	case <-ctx.Done():
		return 0
	}
	n := 1
	for ; n < cap(ls.slots); n++ {
		select {
		case ls.slots <- struct{}{}:
		default:
			return n
		}
	}
	return n
}

// stop waits for the events handed over to be settled.
func (ls *lanes) stop() { ls.wg.Wait() }

// fetch waits for a free slot, then for events, at most fetchWait, and hands each to its lane
// as it comes: as many as there are free slots at once. Replicas sharing the durable each
// take the next events when they are free.
func (c *Consumer) fetch(ctx context.Context, ls *lanes) error {
	n := ls.acquire(ctx)
	if n == 0 {
		return nil // stopping
	}
	handed := 0
	defer func() {
		for ; handed < n; handed++ {
			<-ls.slots // the slots no event came for
		}
	}()
	fctx, cancel := context.WithTimeout(ctx, fetchWait)
	defer cancel()
	batch, err := c.cons.Fetch(n, jetstream.FetchContext(fctx))
	if err != nil {
		return err
	}
	for msg := range batch.Messages() {
		ls.hand(msg)
		handed++
	}
	err = batch.Error()
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, nats.ErrTimeout) {
		return nil // nothing more to fetch within fetchWait, or stopping
	}
	return err
}

// terminal reports whether err from fetching means no event will ever be fetched again.
func terminal(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerDeleted) ||
		errors.Is(err, jetstream.ErrConsumerNotFound) ||
		errors.Is(err, jetstream.ErrBadRequest) ||
		errors.Is(err, jetstream.ErrConnectionClosed) ||
		errors.Is(err, nats.ErrConnectionClosed)
}

// process handles one message and settles it: Ack, Nak with a delay, or dead letter and Term.
func (c *Consumer) process(ctx context.Context, msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		c.log.Warn("event without JetStream metadata; using the time of receipt", zap.Error(err))
		md = &jetstream.MsgMetadata{NumDelivered: 1, Timestamp: time.Now()}
	}
	log := c.log.With(
		zap.String("subject", msg.Subject()),
		zap.Uint64("streamSeq", md.Sequence.Stream),
		zap.Uint64("delivery", md.NumDelivered))

	ev, err := Decode(msg.Data(), msg.Headers(), md.Timestamp, c.opts.MaxEventBytes)
	if err != nil {
		reason, typ := reasonInvalidData, typeUnknown
		var de *decodeError
		if errors.As(err, &de) {
			reason, typ = de.reason, de.typ
		}
		c.deadLetter(ctx, msg, md, typ, reason, err.Error(), log)
		return
	}

	given := ev.Time
	var clamped bool
	if ev, clamped = ClampTime(ev, md.Timestamp, c.opts.MaxClockSkew); clamped {
		log.Warn("event time is too far from the time the stream stored it; using the stream's time",
			zap.Time("eventTime", given), zap.Time("storedAt", md.Timestamp), zap.Duration("maxClockSkew", c.opts.MaxClockSkew))
	}

	typ := string(ev.Type)
	log = log.With(
		zap.String("eventId", ev.ID),
		zap.String("type", typ),
		zap.String("rollout", ev.Rollout.String()),
		zap.String("revision", ev.Revision))

	err = c.handle(ctx, ev, log)
	switch {
	case errors.Is(err, errAbandoned):
		// The handler may still be working on it: leave the event unsettled, JetStream
		// redelivers it after its ack wait.
		c.metrics.received(typ, outcomeRetried)
		log.Error("abandoned event handler that ignored its context; the event is redelivered after its ack wait",
			zap.Duration("ackWait", c.opts.AckWait))
	case err == nil:
		if aerr := msg.Ack(); aerr != nil {
			log.Warn("acknowledging event failed; it will be redelivered", zap.Error(aerr))
		}
		c.metrics.received(typ, outcomeHandled)
		log.Debug("event handled")
	case errors.Is(err, rollout.ErrInvalid):
		c.deadLetter(ctx, msg, md, typ, reasonRejected, err.Error(), log)
	case md.NumDelivered >= uint64(c.opts.MaxDeliver):
		c.deadLetter(ctx, msg, md, typ, reasonGaveUp,
			fmt.Sprintf("gave up after %d deliveries: %v", md.NumDelivered, err), log)
	default:
		delay := c.retryDelay(md.NumDelivered)
		if ctx.Err() != nil {
			delay = 0 // stopping: let another replica have it at once
		}
		if nerr := msg.NakWithDelay(delay); nerr != nil {
			log.Warn("rejecting event for redelivery failed; it is redelivered after its ack wait", zap.Error(nerr))
		}
		c.metrics.received(typ, outcomeRetried)
		log.Warn("handling event failed; it will be redelivered",
			zap.Error(err), zap.Duration("delay", delay), zap.Int("maxDeliver", c.opts.MaxDeliver))
	}
}

// errAbandoned: the handler did not return in time, even after its context was cancelled.
var errAbandoned = errors.New("handler did not return after its context was cancelled")

// handle calls the handler and waits for it, boundedly. The handler's context ends after
// AckWait, and, once ctx is done, after StopGrace more at the latest: the event in hand can
// be finished when the consumer stops. A handler that ignores its context is abandoned
// abandonWait after that (errAbandoned). A panic in the handler is an ordinary failure.
func (c *Consumer) handle(ctx context.Context, ev rollout.Event, log *zap.Logger) error {
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.AckWait)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				log.Error("event handler panicked", zap.Any("panic", r), zap.Stack("stack"))
				done <- fmt.Errorf("handler panicked: %v", r)
			}
		}()
		done <- c.h.Handle(hctx, ev)
	}()

	select {
	case err := <-done:
		return err
	case <-hctx.Done():
	case <-ctx.Done():
		grace := time.NewTimer(c.opts.StopGrace)
		defer grace.Stop()
		select {
		case err := <-done:
			return err
		case <-hctx.Done():
		case <-grace.C:
		}
	}
	cancel()
	abandon := time.NewTimer(abandonWait)
	defer abandon.Stop()
	select {
	case err := <-done:
		return err
	case <-abandon.C:
		return errAbandoned
	}
}

// retryDelay is how long to wait before delivery number delivered+1.
func (c *Consumer) retryDelay(delivered uint64) time.Duration {
	d := c.opts.RetryDelay
	for i := uint64(1); i < delivered && d < c.opts.MaxRetryDelay; i++ {
		d *= 2
	}
	return min(d, c.opts.MaxRetryDelay)
}

// deadLetter republishes the message unchanged on the dead-letter subject with the reason,
// and terminates it. When the dead letter cannot be published the message is rejected for
// redelivery instead, so that it is not lost.
func (c *Consumer) deadLetter(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, typ, reason, text string, log *zap.Logger) {
	text = oneLine(text, maxErrorHeader)
	h := nats.Header{}
	for k, vs := range msg.Headers() {
		// JetStream control headers (Nats-Msg-Id, Nats-Expected-*, Nats-TTL, ...) would act
		// again on the republished message: drop them.
		if len(k) >= 5 && strings.EqualFold(k[:5], "Nats-") {
			continue
		}
		h[k] = append([]string(nil), vs...)
	}
	h.Set(HeaderError, text)
	h.Set(HeaderSubject, msg.Subject())
	out := &nats.Msg{Subject: c.dlSubject, Data: msg.Data(), Header: h}
	msgID := fmt.Sprintf("deadletter/%d", md.Sequence.Stream)

	// Publish even when stopping: the message in hand is settled either way.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deadLetterTimeout)
	defer cancel()
	b := backoff.WithContext(backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(100*time.Millisecond),
		backoff.WithMaxInterval(time.Second),
		backoff.WithMaxElapsedTime(0)), pctx)
	err := backoff.Retry(func() error {
		_, err := c.js.PublishMsg(pctx, out, jetstream.WithMsgID(msgID))
		return err
	}, b)
	if err != nil {
		delay := c.retryDelay(md.NumDelivered)
		if nerr := msg.NakWithDelay(delay); nerr != nil {
			log.Warn("rejecting event for redelivery failed", zap.Error(nerr))
		}
		c.metrics.received(typ, outcomeRetried)
		fields := []zap.Field{zap.Error(err), zap.String("deadLetterReason", text), zap.String("deadLetterSubject", c.dlSubject)}
		if md.NumDelivered >= uint64(c.opts.MaxDeliver) {
			log.Error("publishing dead letter failed on the last delivery: the event stays in the stream, unacknowledged, and will not be redelivered", fields...)
		} else {
			log.Error("publishing dead letter failed; the event will be redelivered", append(fields, zap.Duration("delay", delay))...)
		}
		return
	}
	if terr := msg.TermWithReason(text); terr != nil {
		log.Warn("terminating dead-lettered event failed; a redelivery is dropped as a duplicate dead letter", zap.Error(terr))
	}
	c.metrics.received(typ, outcomeDeadLettered)
	c.metrics.deadLetter(reason)
	log.Warn("event dead-lettered", zap.String("reason", reason), zap.String("error", text))
}

// oneLine makes s fit one header line: control characters become spaces, and it is cut to
// at most max bytes on a character boundary.
func oneLine(s string, max int) string {
	s = strings.TrimSpace(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return ' '
		}
		return r
	}, s))
	if len(s) <= max {
		return s
	}
	const ellipsis = "..."
	cut := max - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

// metrics are the consumer's Prometheus metrics.
type metrics struct {
	receivedTotal    *prometheus.CounterVec
	deadLettersTotal *prometheus.CounterVec
	pending          prometheus.Gauge
	ackPending       prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		receivedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "analyzerd_events_received_total",
			Help: "Rollout events received, by type (or unknown) and outcome: handled, deadlettered, retried.",
		}, []string{"type", "outcome"}),
		deadLettersTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "analyzerd_dead_letters_total",
			Help: "Rollout events dead-lettered, by reason.",
		}, []string{"reason"}),
	}
	var err error
	if m.receivedTotal, err = telemetry.Register(reg, m.receivedTotal); err != nil {
		return nil, err
	}
	if m.deadLettersTotal, err = telemetry.Register(reg, m.deadLettersTotal); err != nil {
		return nil, err
	}
	if m.pending, err = telemetry.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "analyzerd_consumer_pending_events",
		Help: "Events in the stream not yet delivered to the durable consumer (its NumPending), read every ingest lag interval.",
	})); err != nil {
		return nil, err
	}
	if m.ackPending, err = telemetry.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "analyzerd_consumer_ack_pending_events",
		Help: "Events delivered to the durable consumer and not yet acknowledged (its NumAckPending), read every ingest lag interval.",
	})); err != nil {
		return nil, err
	}
	for _, t := range []string{string(rollout.EventStarted), string(rollout.EventStep), string(rollout.EventCompleted), string(rollout.EventAborted), typeUnknown} {
		for _, o := range []string{outcomeHandled, outcomeDeadLettered, outcomeRetried} {
			m.receivedTotal.WithLabelValues(t, o)
		}
	}
	for _, r := range []string{reasonTooLarge, reasonMalformed, reasonNotCloudEvent, reasonUnknownType, reasonInvalidData, reasonRejected, reasonGaveUp} {
		m.deadLettersTotal.WithLabelValues(r)
	}
	return m, nil
}

func (m *metrics) received(typ, outcome string) {
	if !rollout.EventType(typ).Known() {
		typ = typeUnknown
	}
	m.receivedTotal.WithLabelValues(typ, outcome).Inc()
}

func (m *metrics) deadLetter(reason string) { m.deadLettersTotal.WithLabelValues(reason).Inc() }

// watchLag reads the durable consumer's backlog into the lag gauges at once and then every
// LagInterval until ctx is done. A failed read keeps the last values and is logged when the
// error changes.
func (c *Consumer) watchLag(ctx context.Context) {
	ticker := time.NewTicker(c.opts.LagInterval)
	defer ticker.Stop()
	var lastErr string
	for {
		rctx, cancel := context.WithTimeout(ctx, max(c.opts.LagInterval, time.Second))
		info, err := c.cons.Info(rctx)
		cancel()
		switch {
		case err == nil:
			c.metrics.pending.Set(float64(info.NumPending))
			c.metrics.ackPending.Set(float64(info.NumAckPending))
			if lastErr != "" {
				c.log.Info("reading the consumer's backlog again")
				lastErr = ""
			}
		case ctx.Err() == nil && err.Error() != lastErr:
			lastErr = err.Error()
			c.log.Warn("reading the consumer's backlog failed; the lag gauges keep their last values", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}
