package ingest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/analyzerd/analyzerd/internal/natstest"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/streams"
)

const waitFor = 10 * time.Second

// fakeHandler records the events it handled and answers with fail, when set.
type fakeHandler struct {
	mu     sync.Mutex
	events []rollout.Event
	calls  map[string]int
	fail   func(ev rollout.Event, call int) error
}

func (h *fakeHandler) Handle(_ context.Context, ev rollout.Event) error {
	h.mu.Lock()
	if h.calls == nil {
		h.calls = map[string]int{}
	}
	h.calls[ev.ID]++
	call := h.calls[ev.ID]
	fail := h.fail
	h.mu.Unlock()
	if fail != nil {
		if err := fail(ev, call); err != nil {
			return err
		}
	}
	h.mu.Lock()
	h.events = append(h.events, ev)
	h.mu.Unlock()
	return nil
}

// byID is the handled event with the given id (the zero event when none is).
func (h *fakeHandler) byID(id string) rollout.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ev := range h.events {
		if ev.ID == id {
			return ev
		}
	}
	return rollout.Event{}
}

func (h *fakeHandler) ids() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := make([]string, len(h.events))
	for i, ev := range h.events {
		ids[i] = ev.ID
	}
	return ids
}

func (h *fakeHandler) callsOf(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[id]
}

type env struct {
	ns  *server.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	ctx context.Context
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ns := natstest.Start(t)
	nc, js := natstest.Connect(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	require.NoError(t, streams.Ensure(ctx, js, streams.Options{}))
	return &env{ns: ns, nc: nc, js: js, ctx: ctx}
}

// publish publishes body on the events subject of prod/<name> with the given headers.
func (e *env) publish(t *testing.T, name string, body []byte, header nats.Header) uint64 {
	t.Helper()
	h := nats.Header{"Content-Type": {"application/cloudevents+json"}}
	for k, v := range header {
		h[k] = v
	}
	ack, err := e.js.PublishMsg(e.ctx, &nats.Msg{
		Subject: rollout.EventsSubject("rollouts", rollout.Ref{Namespace: "prod", Name: name}),
		Data:    body,
		Header:  h,
	})
	require.NoError(t, err)
	return ack.Sequence
}

// run starts c.Run and returns a function that stops it and waits for it to return nil.
func run(t *testing.T, c *Consumer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(waitFor):
				t.Fatal("Run did not return after its context was cancelled")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func newConsumer(t *testing.T, e *env, h Handler, opts Options) (*Consumer, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.Logger = zaptest.NewLogger(t)
	opts.Registerer = reg
	if opts.RetryDelay == 0 {
		opts.RetryDelay = 10 * time.Millisecond
	}
	c, err := New(e.js, h, opts)
	require.NoError(t, err)
	return c, reg
}

func eventWithID(ev event, id, name string) event {
	return ev.set("id", id).set("data.rollout.name", name)
}

// TestConsumeInOrder: every event is handled once, and those of one rollout in stream order.
func TestConsumeInOrder(t *testing.T) {
	e := newEnv(t)
	h := &fakeHandler{}
	c, reg := newConsumer(t, e, h, Options{})

	var want []string
	wantOf := map[string][]string{}
	for i := range 30 {
		name := fmt.Sprintf("app-%d", i%3)
		id := fmt.Sprintf("ev-%02d", i)
		var ev event
		switch i % 3 {
		case 0:
			ev = startedEvent()
		case 1:
			ev = stepEvent()
		default:
			ev = endEvent("rollout.completed")
		}
		e.publish(t, name, eventWithID(ev, id, name).bytes(t), nil)
		want = append(want, id)
		wantOf[name] = append(wantOf[name], id)
	}
	run(t, c)

	require.Eventually(t, func() bool { return len(h.ids()) == len(want) }, waitFor, 5*time.Millisecond)
	require.ElementsMatch(t, want, h.ids())
	h.mu.Lock()
	gotOf := map[string][]string{}
	for _, ev := range h.events {
		gotOf[ev.Rollout.Name] = append(gotOf[ev.Rollout.Name], ev.ID)
	}
	h.mu.Unlock()
	require.Equal(t, wantOf, gotOf, "each rollout's events in stream order")
	eventuallyEqual(t, 10.0, func() float64 { return received(t, reg, "rollout.started", outcomeHandled) })
	eventuallyEqual(t, 10.0, func() float64 { return received(t, reg, "rollout.step", outcomeHandled) })
	eventuallyEqual(t, 10.0, func() float64 { return received(t, reg, "rollout.completed", outcomeHandled) })
	families, err := reg.Gather()
	require.NoError(t, err)
	series := map[string]int{}
	for _, f := range families {
		series[f.GetName()] = len(f.GetMetric())
	}
	require.Equal(t, map[string]int{
		"analyzerd_events_received_total": 15, "analyzerd_dead_letters_total": 7,
		"analyzerd_consumer_pending_events": 1, "analyzerd_consumer_ack_pending_events": 1,
	}, series,
		"every bounded label combination is exported from the start")

	// Everything was acknowledged.
	require.Eventually(t, func() bool {
		info, err := c.cons.Info(e.ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0 && info.AckFloor.Stream == 30
	}, waitFor, 5*time.Millisecond)

	// The events carry the producer's trace context and their stored time.
	first := startedEvent().set("id", "traced").del("time")
	seq := e.publish(t, "traced", first.bytes(t), nats.Header{"traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}})
	require.Eventually(t, func() bool { return len(h.ids()) == 31 }, waitFor, 5*time.Millisecond)
	h.mu.Lock()
	got := h.events[30]
	h.mu.Unlock()
	require.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", got.TraceParent)
	stored, err := e.js.Stream(e.ctx, streams.EventsStream)
	require.NoError(t, err)
	msg, err := stored.GetMsg(e.ctx, seq)
	require.NoError(t, err)
	require.Equal(t, msg.Time.UTC(), got.Time)
}

func TestInvalidEventsAreDeadLettered(t *testing.T) {
	e := newEnv(t)
	h := &fakeHandler{fail: func(ev rollout.Event, _ int) error {
		if ev.ID == "unknown-template" {
			return fmt.Errorf("starting analysis: %w", rollout.Invalidf("no analysis template named %q", ev.Analysis))
		}
		return nil
	}}
	c, reg := newConsumer(t, e, h, Options{})

	e.publish(t, "checkout", eventWithID(startedEvent(), "ok-1", "checkout").bytes(t), nil)
	badBody := eventWithID(startedEvent(), "bad", "checkout").set("data.rollout.namespace", "").bytes(t)
	badSeq := e.publish(t, "checkout", badBody, nats.Header{
		"traceparent":          {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"X-Producer":           {"ctl-7"},
		"Nats-Msg-Id":          {"bad"},
		"Nats-Expected-Stream": {streams.EventsStream}, // must not be applied again to the dead letter
	})
	e.publish(t, "checkout", []byte("not json at all"), nil)
	rejectedBody := eventWithID(startedEvent(), "unknown-template", "checkout").set("data.analysis", "nope").bytes(t)
	rejectedSeq := e.publish(t, "checkout", rejectedBody, nil)
	e.publish(t, "checkout", eventWithID(stepEvent(), "ok-2", "checkout").bytes(t), nil)
	run(t, c)

	require.Eventually(t, func() bool { return len(h.ids()) == 2 }, waitFor, 5*time.Millisecond)
	require.Equal(t, []string{"ok-1", "ok-2"}, h.ids())

	dl, err := e.js.Stream(e.ctx, streams.DeadLetterStream)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := dl.Info(e.ctx)
		return err == nil && info.State.Msgs == 3
	}, waitFor, 5*time.Millisecond)

	first, err := dl.GetMsg(e.ctx, 1)
	require.NoError(t, err)
	require.Equal(t, "rollouts.deadletter.events", first.Subject)
	require.Equal(t, badBody, first.Data, "the original data, unchanged")
	require.Equal(t, "data.rollout.namespace: must be 1-63 characters, got 0", first.Header.Get(HeaderError))
	require.Equal(t, "rollouts.events.prod.checkout", first.Header.Get(HeaderSubject))
	require.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", first.Header.Get("traceparent"))
	require.Equal(t, "ctl-7", first.Header.Get("X-Producer"))
	require.Equal(t, "application/cloudevents+json", first.Header.Get("Content-Type"))
	require.Equal(t, fmt.Sprintf("deadletter/%d", badSeq), first.Header.Get("Nats-Msg-Id"))
	require.Empty(t, first.Header.Get("Nats-Expected-Stream"))

	second, err := dl.GetMsg(e.ctx, 2)
	require.NoError(t, err)
	require.Equal(t, []byte("not json at all"), second.Data)
	require.Contains(t, second.Header.Get(HeaderError), "event: not valid JSON: invalid character")

	third, err := dl.GetMsg(e.ctx, 3)
	require.NoError(t, err)
	require.Equal(t, rejectedBody, third.Data)
	require.Equal(t, `starting analysis: invalid: no analysis template named "nope"`, third.Header.Get(HeaderError))
	require.Equal(t, fmt.Sprintf("deadletter/%d", rejectedSeq), third.Header.Get("Nats-Msg-Id"))

	eventuallyEqual(t, 1.0, func() float64 { return deadLetters(t, reg, reasonInvalidData) })
	eventuallyEqual(t, 1.0, func() float64 { return deadLetters(t, reg, reasonMalformed) })
	eventuallyEqual(t, 1.0, func() float64 { return deadLetters(t, reg, reasonRejected) })
	// The event with a bad namespace has a known type; the one that is not JSON has none.
	eventuallyEqual(t, 2.0, func() float64 { return received(t, reg, "rollout.started", outcomeDeadLettered) })
	eventuallyEqual(t, 1.0, func() float64 { return received(t, reg, typeUnknown, outcomeDeadLettered) })

	// The rejected events were terminated, not left for redelivery.
	require.Eventually(t, func() bool {
		info, err := c.cons.Info(e.ctx)
		return err == nil && info.NumAckPending == 0 && info.NumRedelivered == 0 && info.AckFloor.Stream == 5
	}, waitFor, 5*time.Millisecond)
	require.Equal(t, 1, h.callsOf("unknown-template"))
}

func TestHandlerErrorIsRetried(t *testing.T) {
	e := newEnv(t)
	h := &fakeHandler{fail: func(ev rollout.Event, call int) error {
		if ev.ID == "flaky" && call < 3 {
			return errors.New("state store unavailable")
		}
		return nil
	}}
	c, reg := newConsumer(t, e, h, Options{})

	e.publish(t, "checkout", eventWithID(startedEvent(), "flaky", "checkout").bytes(t), nil)
	run(t, c)

	require.Eventually(t, func() bool { return len(h.ids()) == 1 }, waitFor, 5*time.Millisecond)
	require.Equal(t, 3, h.callsOf("flaky"))
	eventuallyEqual(t, 2.0, func() float64 { return received(t, reg, "rollout.started", outcomeRetried) })
	eventuallyEqual(t, 1.0, func() float64 { return received(t, reg, "rollout.started", outcomeHandled) })
	dl, err := e.js.Stream(e.ctx, streams.DeadLetterStream)
	require.NoError(t, err)
	info, err := dl.Info(e.ctx)
	require.NoError(t, err)
	require.Zero(t, info.State.Msgs)
}

func TestHandlerGivesUpAfterMaxDeliver(t *testing.T) {
	e := newEnv(t)
	h := &fakeHandler{fail: func(ev rollout.Event, call int) error {
		if ev.ID == "doomed" {
			return fmt.Errorf("attempt %d:\nstate store unavailable", call)
		}
		return nil
	}}
	c, reg := newConsumer(t, e, h, Options{MaxDeliver: 3})

	e.publish(t, "checkout", eventWithID(startedEvent(), "doomed", "checkout").bytes(t), nil)
	e.publish(t, "other", eventWithID(startedEvent(), "fine", "other").bytes(t), nil)
	run(t, c)

	dl, err := e.js.Stream(e.ctx, streams.DeadLetterStream)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := dl.Info(e.ctx)
		return err == nil && info.State.Msgs == 1
	}, waitFor, 5*time.Millisecond)
	msg, err := dl.GetMsg(e.ctx, 1)
	require.NoError(t, err)
	require.Equal(t, "gave up after 3 deliveries: attempt 3: state store unavailable", msg.Header.Get(HeaderError))
	require.Equal(t, 3, h.callsOf("doomed"))
	require.Eventually(t, func() bool { return slices.Equal([]string{"fine"}, h.ids()) }, waitFor, 5*time.Millisecond)
	eventuallyEqual(t, 1.0, func() float64 { return deadLetters(t, reg, reasonGaveUp) })
	eventuallyEqual(t, 2.0, func() float64 { return received(t, reg, "rollout.started", outcomeRetried) })
}

func TestDuplicateMsgIDIsDropped(t *testing.T) {
	e := newEnv(t)
	h := &fakeHandler{}
	c, _ := newConsumer(t, e, h, Options{})

	body := eventWithID(startedEvent(), "once", "checkout").bytes(t)
	e.publish(t, "checkout", body, nats.Header{"Nats-Msg-Id": {"once"}})
	e.publish(t, "checkout", body, nats.Header{"Nats-Msg-Id": {"once"}})
	e.publish(t, "checkout", eventWithID(stepEvent(), "sentinel", "checkout").bytes(t), nats.Header{"Nats-Msg-Id": {"sentinel"}})
	run(t, c)

	require.Eventually(t, func() bool { return h.callsOf("sentinel") == 1 }, waitFor, 5*time.Millisecond)
	require.Equal(t, []string{"once", "sentinel"}, h.ids())
}

// blockingHandler blocks in Handle until released, and tells when it started.
type blockingHandler struct {
	started  chan rollout.Event
	release  chan struct{}
	ctxErr   chan error
	ignoreCt bool
}

func (h *blockingHandler) Handle(ctx context.Context, ev rollout.Event) error {
	h.started <- ev
	if h.ignoreCt {
		<-h.release
		return nil
	}
	select {
	case <-h.release:
		return nil
	case <-ctx.Done():
		h.ctxErr <- ctx.Err()
		return ctx.Err()
	}
}

func TestRunStopsPromptlyWithoutLeaks(t *testing.T) {
	e := newEnv(t)
	c, _ := newConsumer(t, e, &fakeHandler{}, Options{})
	baseline := clientGoroutines()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	// Let it settle into waiting for messages.
	require.Eventually(t, func() bool {
		info, err := c.cons.Info(e.ctx)
		return err == nil && info.NumWaiting == 1
	}, waitFor, 5*time.Millisecond)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return promptly")
	}
	var left []string
	if !assert.Eventually(t, func() bool {
		left = clientGoroutines()
		return len(left) <= len(baseline)
	}, waitFor, 10*time.Millisecond) {
		t.Fatalf("goroutines leaked: %d before Run, now:\n%s", len(baseline), strings.Join(left, "\n\n"))
	}
}

// clientGoroutines returns the stacks of the goroutines of this package and of the NATS
// client, leaving out the test's own and the server's, which come and go on their own.
func clientGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var stacks []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "testing.tRunner") || strings.Contains(g, "nats-server") || strings.Contains(g, "clientGoroutines") {
			continue
		}
		if strings.Contains(g, "analyzerd/internal/ingest.") || strings.Contains(g, "nats-io/nats") {
			stacks = append(stacks, g)
		}
	}
	return stacks
}

func TestRunFinishesEventInHandWhenStopping(t *testing.T) {
	e := newEnv(t)
	h := &blockingHandler{started: make(chan rollout.Event, 1), release: make(chan struct{}), ctxErr: make(chan error, 1)}
	c, reg := newConsumer(t, e, h, Options{StopGrace: waitFor})
	e.publish(t, "checkout", eventWithID(startedEvent(), "in-hand", "checkout").bytes(t), nil)
	e.publish(t, "checkout", eventWithID(stepEvent(), "next", "checkout").bytes(t), nil)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	ev := <-h.started
	require.Equal(t, "in-hand", ev.ID)

	cancel()
	select {
	case <-done:
		t.Fatal("Run returned while the handler was still working")
	case <-time.After(50 * time.Millisecond): // a negative check: nothing to wait on
	}
	close(h.release)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(waitFor):
		t.Fatal("Run did not return after the handler finished")
	}

	// The event in hand was acknowledged (acks are asynchronous: the server may see it a
	// moment later); the next one was not started and is still there.
	require.Eventually(t, func() bool {
		info, err := c.cons.Info(e.ctx)
		return err == nil && info.AckFloor.Stream == 1 && info.NumPending+uint64(info.NumAckPending) >= 1
	}, waitFor, 5*time.Millisecond)
	require.Equal(t, 1.0, received(t, reg, "rollout.started", outcomeHandled))
	select {
	case ev := <-h.started:
		t.Fatalf("started %s after being stopped", ev.ID)
	default:
	}
}

func TestRunCancelsHandlerAfterStopGrace(t *testing.T) {
	e := newEnv(t)
	h := &blockingHandler{started: make(chan rollout.Event, 1), release: make(chan struct{}), ctxErr: make(chan error, 1)}
	c, reg := newConsumer(t, e, h, Options{StopGrace: 20 * time.Millisecond})
	e.publish(t, "checkout", eventWithID(startedEvent(), "slow", "checkout").bytes(t), nil)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	<-h.started
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(waitFor):
		t.Fatal("Run did not return")
	}
	require.ErrorIs(t, <-h.ctxErr, context.Canceled)
	// The event was given back at once, not dead-lettered.
	require.Equal(t, 1.0, received(t, reg, "rollout.started", outcomeRetried))
	require.Zero(t, deadLetters(t, reg, reasonGaveUp))
}

func TestRunAbandonsHandlerIgnoringItsContext(t *testing.T) {
	e := newEnv(t)
	h := &blockingHandler{started: make(chan rollout.Event, 1), release: make(chan struct{}), ignoreCt: true}
	t.Cleanup(func() { close(h.release) })
	c, _ := newConsumer(t, e, h, Options{StopGrace: 10 * time.Millisecond})
	e.publish(t, "checkout", eventWithID(startedEvent(), "stuck", "checkout").bytes(t), nil)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	<-h.started
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(waitFor):
		t.Fatal("Run hung on a handler that ignores its context")
	}
}

func TestNewValidatesOptions(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{Prefix: "a.>"}, "prefix"},
		{Options{Durable: "a.b"}, "durable"},
		{Options{MaxEventBytes: -1}, "maxEventBytes"},
		{Options{MaxDeliver: -1}, "maxDeliver"},
		{Options{AckWait: time.Millisecond}, "ackWait"},
		{Options{RetryDelay: time.Minute, MaxRetryDelay: time.Second}, "maxRetryDelay"},
	} {
		_, err := New(e.js, &fakeHandler{}, tc.opts)
		require.ErrorContains(t, err, "ingest options: "+tc.want)
	}
	_, err := New(e.js, nil, Options{})
	require.ErrorContains(t, err, "handler is nil")

	// Without the stream the error names it.
	require.NoError(t, e.js.DeleteStream(e.ctx, streams.EventsStream))
	_, err = New(e.js, &fakeHandler{}, Options{})
	require.ErrorContains(t, err, "creating consumer analyzerd on stream ROLLOUT_EVENTS")
}

func TestReplicasShareTheDurable(t *testing.T) {
	e := newEnv(t)
	h := &fakeHandler{}
	reg := prometheus.NewRegistry()
	a, err := New(e.js, h, Options{Registerer: reg})
	require.NoError(t, err)
	b, err := New(e.js, h, Options{Registerer: reg}) // same registry: the metrics are shared
	require.NoError(t, err)
	for i := range 20 {
		e.publish(t, "checkout", eventWithID(stepEvent(), fmt.Sprintf("ev-%d", i), "checkout").bytes(t), nil)
	}
	run(t, a)
	run(t, b)
	require.Eventually(t, func() bool { return len(h.ids()) == 20 }, waitFor, 5*time.Millisecond)
	require.ElementsMatch(t, []string{"ev-0", "ev-1", "ev-2", "ev-3", "ev-4", "ev-5", "ev-6", "ev-7", "ev-8", "ev-9",
		"ev-10", "ev-11", "ev-12", "ev-13", "ev-14", "ev-15", "ev-16", "ev-17", "ev-18", "ev-19"}, h.ids())
	eventuallyEqual(t, 20.0, func() float64 { return received(t, reg, "rollout.step", outcomeHandled) })
}

// eventuallyEqual waits for get to return want: metrics are counted just after the handler
// returns, so a test that saw the handler's effect may look a moment too early.
func eventuallyEqual(t *testing.T, want float64, get func() float64) {
	t.Helper()
	var got float64
	if !assert.Eventually(t, func() bool { got = get(); return got == want }, waitFor, 5*time.Millisecond) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// metricValue is the value of the counter name{labels} in reg.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s%v", name, labels)
	return 0
}

func received(t *testing.T, reg *prometheus.Registry, typ, outcome string) float64 {
	t.Helper()
	return metricValue(t, reg, "analyzerd_events_received_total", map[string]string{"type": typ, "outcome": outcome})
}

func deadLetters(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	return metricValue(t, reg, "analyzerd_dead_letters_total", map[string]string{"reason": reason})
}

func TestRetryDelayGrows(t *testing.T) {
	c := &Consumer{opts: Options{RetryDelay: time.Second, MaxRetryDelay: 10 * time.Second}}
	require.Equal(t, time.Second, c.retryDelay(1))
	require.Equal(t, 2*time.Second, c.retryDelay(2))
	require.Equal(t, 4*time.Second, c.retryDelay(3))
	require.Equal(t, 8*time.Second, c.retryDelay(4))
	require.Equal(t, 10*time.Second, c.retryDelay(5))
	require.Equal(t, 10*time.Second, c.retryDelay(1000))
}

// TestEventTimesFarFromTheStreamAreClamped: a controller clock hours off must not make a
// step look hours old; within the skew, the event's own time is kept.
func TestEventTimesFarFromTheStreamAreClamped(t *testing.T) {
	e := newEnv(t)
	h := &fakeHandler{}
	c, _ := newConsumer(t, e, h, Options{MaxClockSkew: time.Minute})
	onTime := time.Now().UTC().Add(-10 * time.Second).Truncate(time.Millisecond)
	seqOld := e.publish(t, "old", eventWithID(startedEvent().set("time", "2020-01-01T00:00:00Z"), "old", "old").bytes(t), nil)
	e.publish(t, "ok", eventWithID(startedEvent().set("time", onTime.Format(time.RFC3339Nano)), "ok", "ok").bytes(t), nil)
	run(t, c)
	require.Eventually(t, func() bool { return len(h.ids()) == 2 }, waitFor, 5*time.Millisecond)

	stored, err := e.js.Stream(e.ctx, streams.EventsStream)
	require.NoError(t, err)
	msg, err := stored.GetMsg(e.ctx, seqOld)
	require.NoError(t, err)
	require.Equal(t, msg.Time.UTC().Add(-time.Minute), h.byID("old").Time, "six years off: the earliest time the skew allows")
	require.Equal(t, onTime, h.byID("ok").Time, "within the skew: the event's time is kept")
}

// slowHandler holds the events of one rollout until released, and records the order in
// which every event was handled.
type slowHandler struct {
	slow    string
	entered chan string // the ids of the slow rollout's events, as their handling begins
	release chan struct{}
	mu      sync.Mutex
	order   []string
}

func (h *slowHandler) Handle(ctx context.Context, ev rollout.Event) error {
	if ev.Rollout.Name == h.slow {
		h.entered <- ev.ID
		select {
		case <-h.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	h.mu.Lock()
	h.order = append(h.order, ev.ID)
	h.mu.Unlock()
	return nil
}

func (h *slowHandler) handled() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.order)
}

// TestSlowRolloutHoldsNoOther: while one rollout's event is in its handler's hands, the
// events of other rollouts that came after it are handled; that rollout's next event waits
// for the first.
func TestSlowRolloutHoldsNoOther(t *testing.T) {
	e := newEnv(t)
	h := &slowHandler{slow: "slow", entered: make(chan string, 2), release: make(chan struct{})}
	c, _ := newConsumer(t, e, h, Options{})
	e.publish(t, "slow", eventWithID(startedEvent(), "slow-1", "slow").bytes(t), nil)
	e.publish(t, "slow", eventWithID(stepEvent(), "slow-2", "slow").bytes(t), nil)
	var others []string
	for i := range 5 {
		name := fmt.Sprintf("app-%d", i)
		e.publish(t, name, eventWithID(startedEvent(), name, name).bytes(t), nil)
		others = append(others, name)
	}
	run(t, c)

	next := func() string {
		t.Helper()
		select {
		case id := <-h.entered:
			return id
		case <-time.After(waitFor):
			t.Fatal("the slow rollout's event was not handled")
			return ""
		}
	}
	require.Equal(t, "slow-1", next())
	require.Eventually(t, func() bool { return len(h.handled()) == len(others) }, waitFor, 5*time.Millisecond,
		"the other rollouts' events are handled while the slow one's is held")
	require.ElementsMatch(t, others, h.handled())
	require.Empty(t, h.entered, "the slow rollout's second event waits for its first")

	close(h.release)
	require.Equal(t, "slow-2", next())
	require.Eventually(t, func() bool { return len(h.handled()) == len(others)+2 }, waitFor, 5*time.Millisecond)
	require.Equal(t, []string{"slow-1", "slow-2"}, h.handled()[len(others):], "in stream order")
}
