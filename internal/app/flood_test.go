package app

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/analyzerd/analyzerd/internal/config"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/rolloutclient"
)

// floodSize is how many invalid events the flood test publishes (issue #4, point 6).
const floodSize = 10_000

// floodClock is the scheduler's clock in the flood test: it moves only when the test moves it.
type floodClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *floodClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *floodClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// floodClass is one kind of invalid event in the flood, and the Analyzerd-Error its dead
// letters must carry (a prefix, or the whole reason when exact).
type floodClass struct {
	name  string
	exact bool
	want  string
	// make returns the event's subject, body and headers beyond Content-Type.
	make func(i int) (subject string, body []byte, header nats.Header)
}

// floodClasses mix every hostile class of issue #4, point 6. The last two decode and are
// rejected by the analyzer itself (no such template, a missing argument): they go through the
// analyzer's loop, which also schedules the evaluations, so they are the ones that could hold
// verdicts back. Some name the rollout under analysis itself.
func floodClasses(t *testing.T) (classes []floodClass, oversized floodClass) {
	t.Helper()
	subject := func(i int) string {
		name := "checkout" // the rollout under analysis
		if i%3 != 0 {
			name = fmt.Sprintf("flood-%d", i%50)
		}
		return rollout.EventsSubject("rollouts", rollout.Ref{Namespace: "prod", Name: name})
	}
	// started is a valid rollout.started event of the shipped template, with id flood-i,
	// passed through edit (on its JSON text) to break it.
	at := time.Now()
	started := func(i int, edit func(string) string) []byte {
		body, err := rolloutclient.Event(fmt.Sprintf("flood-%d", i), rollout.EventStarted, at, rolloutclient.Started{
			Rollout: rollout.Ref{Namespace: "prod", Name: "checkout"}, Revision: fmt.Sprintf("v%d", i),
			Analysis: "http-golden-signals", Args: map[string]string{"service": "checkout"},
			Canary: map[string]string{"version": "v3"}, Stable: map[string]string{"version": "v1"}, Weight: 10,
		})
		require.NoError(t, err)
		out := edit(string(body))
		require.NotEqual(t, string(body), out, "the edit changed nothing")
		return []byte(out)
	}
	swap := func(old, new string) func(string) string {
		return func(s string) string { return strings.Replace(s, old, new, 1) }
	}
	event := func(edit func(string) string) func(i int) (string, []byte, nats.Header) {
		return func(i int) (string, []byte, nats.Header) { return subject(i), started(i, edit), nil }
	}
	var bigArgs strings.Builder
	for k := range 200 {
		fmt.Fprintf(&bigArgs, `"k%d":"v",`, k)
	}
	classes = []floodClass{
		{name: "not-json", want: "event: not valid JSON: unexpected end of JSON input", make: func(i int) (string, []byte, nats.Header) {
			return subject(i), []byte(fmt.Sprintf(`{"specversion":"1.0","id":"flood-%d",`, i)), nil
		}},
		{name: "unknown-type", want: `type: unknown event type "rollout.paused", want one of`, make: event(swap(`"type":"rollout.started"`, `"type":"rollout.paused"`))},
		{name: "missing-data", exact: true, want: "data: required", make: event(func(s string) string { return s[:strings.Index(s, `,"data":`)] + "}" })},
		{name: "mistyped-weight", exact: true, want: "data.weight: must be an integer, got string", make: event(swap(`"weight":10`, `"weight":"10"`))},
		{name: "huge-map", exact: true, want: "data.args: must have at most 64 entries, got 201", make: event(swap(`"args":{`, `"args":{`+bigArgs.String()))},
		{name: "nul", exact: true, want: "data.rollout.name: must not contain control characters, found U+0000 at byte 5", make: event(swap(`"name":"checkout"`, `"name":"check\u0000out"`))},
		{name: "invalid-utf8", exact: true, want: "data.revision: must be valid UTF-8", make: event(swap(`"revision":"v`, "\"revision\":\"\xff\xfev"))},
		{name: "lone-surrogate", exact: true, want: `data.canary.version: must be valid UTF-8 (it has an invalid \u escape)`, make: event(swap(`"version":"v3"`, `"version":"v3\udc00"`))},
		{name: "injection-key", want: `data.args: key "service\"} or vector(1) #": must be a name`, make: event(swap(`"args":{"service"`, `"args":{"service\"} or vector(1) #"`))},
		{name: "injection-newline", exact: true, want: "data.args.service: must not contain control characters, found U+000A at byte 8", make: event(swap(`"service":"checkout"`, `"service":"checkout\n\"} or vector(1)"`))},
		{name: "binary-mode", want: "binary-mode CloudEvents (ce-* headers) are not supported", make: func(i int) (string, []byte, nats.Header) {
			return subject(i), []byte(`{"rollout":{"namespace":"prod","name":"checkout"},"revision":"v2"}`),
				nats.Header{"Content-Type": {"application/json"}, "ce-specversion": {"1.0"}, "ce-type": {"rollout.started"}}
		}},
		{name: "wrong-content-type", exact: true, want: `Content-Type header: must be application/cloudevents+json, got "text/plain"`, make: func(i int) (string, []byte, nats.Header) {
			return subject(i), started(i, swap(`"weight":10`, `"weight":11`)), nats.Header{"Content-Type": {"text/plain"}}
		}},
		{name: "unknown-template", exact: true, want: `invalid: data.analysis: no analysis template named "no-such-template"`, make: event(swap(`"analysis":"http-golden-signals"`, `"analysis":"no-such-template"`))},
		{name: "missing-arg", exact: true, want: `invalid: data.args.service: required by analysis template "http-golden-signals"`, make: event(swap(`"args":{"service":"checkout"}`, `"args":{"svc":"checkout"}`))},
	}
	oversized = floodClass{name: "oversized", want: "event: 65537 bytes is over the limit of 65536", exact: true, make: func(i int) (string, []byte, nats.Header) {
		body := started(i, swap(`"weight":10`, `"weight":10,"padding":""`))
		body = started(i, swap(`"weight":10`, `"weight":10,"padding":"`+strings.Repeat("x", 64<<10+1-len(body))+`"`))
		require.Len(t, body, 64<<10+1)
		return subject(i), body, nil
	}}
	return classes, oversized
}

// TestFloodOfInvalidEventsDoesNotDelayVerdicts runs the daemon in-process with the shipped
// configuration, starts a valid rollout, and publishes 10,000 invalid events of every hostile
// class as fast as it can, on the events subjects (the rollout's own among them). It shows
// that (issue #4, point 6):
//
//   - the valid rollout's verdicts keep coming while the flood is being dead-lettered: its
//     scheduled evaluations do not queue behind the flood;
//   - every one of the 10,000 lands on the dead-letter stream with the reason of its class,
//     and none is delivered twice.
//
// How "not delayed by more than one interval" is shown without timing the wall clock: the
// scheduler runs on the test's clock (Options.Now), which the test moves by exactly one
// analysis interval I at a time, each time after the verdict of the interval before was
// published. Each verdict must be decided at exactly the time its interval became due
// (decidedAt), one interval after the previous one, with the next sequence number: on the
// scheduler's clock no verdict is late, and none is skipped. That alone proves nothing about
// the flood, since the clock waits for the verdict. What the flood could do is hold the
// analyzer back in real time (its loop also applies, and rejects, the flood's events that
// decode but name no template), so that a due evaluation waits for the flood to be processed.
// The dead-letter count is the flood's own clock: the test reads it when an interval becomes
// due and when its verdict arrives. If verdicts waited for the flood, the count would climb by
// about the whole flood across one interval, and no interval would begin and end while it
// climbs. The test requires instead that
//
//   - between an interval becoming due and its verdict, the consumer dead-letters at most
//     floodSize/10 events: no verdict waits for more than a tenth of the flood; and
//   - at least 5 intervals begin and end while the count is strictly between 0 and floodSize:
//     while the flood is in the stream, verdicts keep coming, one per interval.
//
// The figures (how long the flood took, how many intervals fell within it, the real-time
// latency of the verdicts) are logged, not asserted.
//
// The metrics source is the smallest Prometheus that answers (no data for every query): with
// an unreachable one the daemon would back off from evaluating, and the intervals would
// lengthen for a reason that has nothing to do with the flood.
func TestFloodOfInvalidEventsDoesNotDelayVerdicts(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: publishes and dead-letters 10,000 events")
	}
	noLeaks(t)
	clearOTelEnv(t)

	prom := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"success","data":{"resultType":"vector","result":[]}}`))
	}))
	t.Cleanup(prom.Close)

	cfg, err := config.Load("../../configs/analyzerd.yaml")
	require.NoError(t, err)
	cfg.NATS.Embedded.Port = -1
	cfg.NATS.Embedded.StoreDir = t.TempDir()
	cfg.Prometheus.URL = prom.URL
	cfg.HTTP.Addr = "127.0.0.1:0"
	require.NoError(t, cfg.Validate())
	interval := cfg.Templates[0].Interval
	require.Equal(t, 64<<10, cfg.Ingest.MaxEventBytes, "the oversized class is sized for the default limit")

	clock := &floodClock{now: time.Now().UTC().Truncate(time.Millisecond)}
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	info, stop := floodDaemon(t, ctx, cfg, Options{
		Logger: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)), Registry: reg,
		Now: clock.Now, Resolution: 5 * time.Millisecond,
	})
	defer func() { cancel(); stop() }()

	nc, err := nats.Connect(info.NATSURL)
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(floodSize+1))
	require.NoError(t, err)

	// Every verdict, in stream order.
	verdicts := make(chan rollout.Verdict, floodSize)
	watchCtx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		_ = rolloutclient.WatchVerdicts(watchCtx, js, "rollouts", func(r rolloutclient.Received) { verdicts <- r.Verdict })
	}()
	defer func() { stopWatch(); <-watchDone }()
	next := func(seq uint64) rollout.Verdict {
		t.Helper()
		select {
		case v := <-verdicts:
			require.Equal(t, seq, v.Sequence, "verdicts come one by one, in order")
			return v
		case <-time.After(30 * time.Second):
			t.Fatalf("no verdict %d within 30s", seq)
			return rollout.Verdict{}
		}
	}

	// The valid rollout, and its first verdict, at once.
	ref := rollout.Ref{Namespace: "prod", Name: "checkout"}
	pub := rolloutclient.Publisher{JS: js, Prefix: "rollouts"}
	require.NoError(t, pub.Publish(ctx, ref, "valid-start", rollout.EventStarted, time.Now(), rolloutclient.Started{
		Rollout: ref, Revision: "v2", Analysis: "http-golden-signals",
		Args: map[string]string{"service": "checkout"}, Canary: map[string]string{"version": "v2"},
		Stable: map[string]string{"version": "v1"}, Weight: 10,
	}))
	first := next(1)
	require.True(t, clock.Now().Equal(first.DecidedAt), "decided at %s, the clock says %s", first.DecidedAt, clock.Now())

	// The flood, built beforehand so that it is published as fast as the client can.
	classes, oversized := floodClasses(t)
	type floodMsg struct {
		class string
		msg   *nats.Msg
	}
	msgs := make([]floodMsg, floodSize)
	want := map[string]floodClass{oversized.name: oversized}
	wantCount := map[string]int{}
	for i := range msgs {
		c := classes[i%len(classes)]
		if i%100 == 99 { // 100 events of 64 KiB and a byte: 6.5 MB, not 650
			c = oversized
		}
		want[c.name] = c
		wantCount[c.name]++
		subject, body, header := c.make(i)
		m := nats.NewMsg(subject)
		m.Data = body
		m.Header.Set("Content-Type", "application/cloudevents+json")
		for k, v := range header {
			m.Header[k] = v
		}
		m.Header.Set("X-Flood-Class", c.name) // kept on the dead letter
		msgs[i] = floodMsg{class: c.name, msg: m}
	}

	dlStream, err := js.Stream(ctx, "ROLLOUT_DEADLETTER")
	require.NoError(t, err)
	deadLetters := func() uint64 {
		t.Helper()
		info, err := dlStream.Info(ctx)
		require.NoError(t, err)
		return info.State.Msgs
	}
	require.Zero(t, deadLetters())

	floodStart := time.Now()
	published := make(chan error, 1)
	var publishTook time.Duration // reported, not asserted
	go func() {
		for _, m := range msgs {
			if _, err := js.PublishMsgAsync(m.msg); err != nil {
				published <- err
				return
			}
		}
		select {
		case <-js.PublishAsyncComplete():
			publishTook = time.Since(floodStart)
			published <- nil
		case <-time.After(time.Minute):
			published <- fmt.Errorf("%d events not acknowledged by the stream", js.PublishAsyncPending())
		}
	}()

	// One interval after another, while the flood is dead-lettered.
	type tick struct {
		seq           uint64
		before, after uint64        // the dead-letter count when it became due, and at its verdict
		latency       time.Duration // reported, not asserted
	}
	var ticks []tick
	for seq := uint64(2); ; seq++ {
		before := deadLetters()
		if before >= floodSize {
			break
		}
		due := clock.Advance(interval)
		asked := time.Now()
		v := next(seq)
		got := tick{seq: seq, before: before, after: deadLetters(), latency: time.Since(asked)}
		require.True(t, due.Equal(v.DecidedAt), "verdict %d decided at %s, due at %s", seq, v.DecidedAt, due)
		require.Equal(t, rollout.Pause, v.Verdict, "no data is never proceed")
		ticks = append(ticks, got)
	}
	floodTook := time.Since(floodStart)
	require.NoError(t, <-published)
	require.Equal(t, uint64(floodSize), deadLetters(), "every invalid event is dead-lettered once")

	var during, maxClimb uint64
	var latencies []time.Duration
	for _, iv := range ticks {
		maxClimb = max(maxClimb, iv.after-iv.before)
		if iv.before > 0 && iv.after < floodSize {
			during++
			latencies = append(latencies, iv.latency)
		}
	}
	slices.Sort(latencies)
	median := time.Duration(0)
	if len(latencies) > 0 {
		median = latencies[len(latencies)/2]
	}
	t.Logf("flood of %d invalid events published in %s, dead-lettered in %s (%.0f/s); %d intervals of %s on the scheduler's clock meanwhile, "+
		"%d of them wholly within the flood; at most %d dead letters between an interval becoming due and its verdict; "+
		"verdict latency within the flood: median %s, max %s",
		floodSize, publishTook.Round(time.Millisecond), floodTook.Round(time.Millisecond), float64(floodSize)/floodTook.Seconds(), len(ticks), interval,
		during, maxClimb, median, func() time.Duration {
			if len(latencies) == 0 {
				return 0
			}
			return latencies[len(latencies)-1]
		}())
	require.LessOrEqual(t, maxClimb, uint64(floodSize/10), "a verdict waited for more than a tenth of the flood")
	require.GreaterOrEqual(t, during, uint64(5), "verdicts stopped while the flood was dead-lettered")

	// Every dead letter carries the reason of its class, one line, and the subject it came on.
	got := map[string]int{}
	cons, err := dlStream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	for range floodSize {
		m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		require.NoError(t, err)
		class := m.Headers().Get("X-Flood-Class")
		c, ok := want[class]
		require.True(t, ok, "dead letter of unknown class %q", class)
		reason := m.Headers().Get("Analyzerd-Error")
		require.NotContains(t, reason, "\n")
		if c.exact {
			require.Equal(t, c.want, reason, class)
		} else {
			require.True(t, strings.HasPrefix(reason, c.want), "%s: %q, want %q...", class, reason, c.want)
		}
		require.True(t, strings.HasPrefix(m.Headers().Get("Analyzerd-Subject"), "rollouts.events.prod."), class)
		got[class]++
	}
	require.Equal(t, wantCount, got)

	// Nothing was redelivered: each event was delivered once, and settled.
	events, err := js.Stream(ctx, "ROLLOUT_EVENTS")
	require.NoError(t, err)
	evInfo, err := events.Info(ctx)
	require.NoError(t, err)
	consumer, err := js.Consumer(ctx, "ROLLOUT_EVENTS", "analyzerd")
	require.NoError(t, err)
	var ci *jetstream.ConsumerInfo
	require.Eventually(t, func() bool {
		ci, err = consumer.Info(ctx)
		return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0 && ci.AckFloor.Stream == evInfo.State.LastSeq
	}, 10*time.Second, 10*time.Millisecond, "the consumer settles every event")
	require.Zero(t, ci.NumRedelivered)
	require.Equal(t, uint64(floodSize+1), evInfo.State.Msgs)
	require.Equal(t, evInfo.State.LastSeq, ci.Delivered.Consumer, "one delivery per event")
	require.Equal(t, float64(floodSize), floodCounter(t, reg, "analyzerd_dead_letters_total", nil))
	require.Zero(t, floodCounter(t, reg, "analyzerd_events_received_total", map[string]string{"outcome": "retried"}))
}

// floodCounter sums the counter name over the series whose labels include labels.
func floodCounter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	sum := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue series
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// floodDaemon runs the daemon in-process with opts until ctx ends, and waits until it is
// ready. The returned function waits for it to stop, and fails the test unless it stopped
// cleanly within its shutdown timeout.
func floodDaemon(t *testing.T, ctx context.Context, cfg config.Config, opts Options) (Info, func()) {
	t.Helper()
	ready := make(chan Info, 1)
	done := make(chan error, 1)
	opts.OnReady = func(i Info) { ready <- i }
	go func() { done <- Run(ctx, cfg, opts) }()
	select {
	case info := <-ready:
		var once sync.Once
		return info, func() {
			t.Helper()
			once.Do(func() {
				select {
				case err := <-done:
					require.NoError(t, err)
				case <-time.After(cfg.ShutdownTimeout + 5*time.Second):
					t.Fatal("daemon did not stop within its shutdown timeout")
				}
			})
		}
	case err := <-done:
		t.Fatalf("daemon stopped before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("daemon not ready within 30s")
	}
	return Info{}, nil
}
