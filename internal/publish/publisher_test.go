package publish

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/analyzerd/analyzerd/internal/natstest"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/streams"
)

const waitFor = 10 * time.Second

type env struct {
	js  jetstream.JetStream
	ctx context.Context
}

func newEnv(t *testing.T, withStreams bool) *env {
	t.Helper()
	_, js := natstest.Connect(t, natstest.Start(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	if withStreams {
		require.NoError(t, streams.Ensure(ctx, js, streams.Options{}))
	}
	return &env{js: js, ctx: ctx}
}

// stored returns the messages of the verdicts stream, in order.
func (e *env) stored(t *testing.T) []*jetstream.RawStreamMsg {
	t.Helper()
	s, err := e.js.Stream(e.ctx, streams.VerdictsStream)
	require.NoError(t, err)
	info, err := s.Info(e.ctx)
	require.NoError(t, err)
	var msgs []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(e.ctx, seq)
		require.NoError(t, err)
		msgs = append(msgs, m)
	}
	return msgs
}

func (e *env) storedCount(t *testing.T) uint64 {
	t.Helper()
	s, err := e.js.Stream(e.ctx, streams.VerdictsStream)
	if err != nil {
		return 0
	}
	info, err := s.Info(e.ctx)
	require.NoError(t, err)
	return info.State.Msgs
}

func verdict(name string, seq uint64, d rollout.Decision) rollout.Verdict {
	return rollout.Verdict{
		Rollout:   rollout.Ref{Namespace: "prod", Name: name},
		Revision:  "v2",
		Step:      1,
		Weight:    10,
		Verdict:   d,
		Reason:    "because",
		Sequence:  seq,
		DecidedAt: time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC).Add(time.Duration(seq) * time.Second),
	}
}

func start(t *testing.T, p *Publisher) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
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

func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
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
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s%v", name, labels)
	return 0
}

func TestPublishInOrderWithHeaders(t *testing.T) {
	e := newEnv(t, true)
	reg := prometheus.NewRegistry()
	p := New(e.js, Options{Registerer: reg, Logger: zap.NewNop(), Lanes: 1}) // one lane: the order is the queue's
	start(t, p)

	const n = 40
	var want []rollout.Verdict
	for i := range n {
		d := []rollout.Decision{rollout.Pause, rollout.Proceed, rollout.Rollback}[i%3]
		v := verdict(fmt.Sprintf("app-%d", i%2), uint64(i/2+1), d)
		traceParent := ""
		if i%2 == 0 {
			traceParent = fmt.Sprintf("00-4bf92f3577b34da6a3ce929d0e0e47%02d-00f067aa0ba902b7-01", i)
		}
		p.Enqueue(v, traceParent, map[bool]string{true: "vendor=x", false: ""}[i%4 == 0])
		want = append(want, v)
	}
	require.Eventually(t, func() bool { return e.storedCount(t) == n && p.Pending() == 0 }, waitFor, 5*time.Millisecond)

	msgs := e.stored(t)
	require.Len(t, msgs, n)
	for i, m := range msgs {
		v := want[i]
		require.Equal(t, rollout.VerdictsSubject("rollouts", v.Rollout), m.Subject)
		require.Equal(t, "rollouts.verdicts.prod."+v.Rollout.Name, m.Subject)
		require.Equal(t, ContentType, m.Header.Get("Content-Type"))
		require.Equal(t, MsgID(v), m.Header.Get("Nats-Msg-Id"))
		if i%2 == 0 {
			require.Equal(t, fmt.Sprintf("00-4bf92f3577b34da6a3ce929d0e0e47%02d-00f067aa0ba902b7-01", i), m.Header.Get("traceparent"))
		} else {
			require.NotContains(t, m.Header, "traceparent")
		}
		if i%4 == 0 {
			require.Equal(t, "vendor=x", m.Header.Get("tracestate"))
		} else {
			require.NotContains(t, m.Header, "tracestate")
		}
		wantData, err := Encode(v, DefaultSource)
		require.NoError(t, err)
		require.Equal(t, string(wantData), string(m.Data))
	}
	require.Equal(t, 14.0, counter(t, reg, "analyzerd_verdicts_published_total", map[string]string{"verdict": "pause"}))
	require.Equal(t, 13.0, counter(t, reg, "analyzerd_verdicts_published_total", map[string]string{"verdict": "proceed"}))
	require.Equal(t, 13.0, counter(t, reg, "analyzerd_verdicts_published_total", map[string]string{"verdict": "rollback"}))
	require.Equal(t, 0.0, counter(t, reg, "analyzerd_publish_errors_total", nil))
	require.Equal(t, 0.0, counter(t, reg, "analyzerd_verdicts_pending", nil))
}

func TestPublishSameVerdictTwiceStoresOne(t *testing.T) {
	e := newEnv(t, true)
	reg := prometheus.NewRegistry()
	p := New(e.js, Options{Registerer: reg})
	start(t, p)

	v := verdict("checkout", 1, rollout.Proceed)
	p.Enqueue(v, "", "")
	p.Enqueue(v, "", "")
	p.Enqueue(verdict("checkout", 2, rollout.Proceed), "", "")
	require.Eventually(t, func() bool { return p.Pending() == 0 && e.storedCount(t) == 2 }, waitFor, 5*time.Millisecond)

	msgs := e.stored(t)
	require.Equal(t, "verdict/prod/checkout/v2/1", msgs[0].Header.Get("Nats-Msg-Id"))
	require.Equal(t, "verdict/prod/checkout/v2/2", msgs[1].Header.Get("Nats-Msg-Id"))
	require.Equal(t, 2.0, counter(t, reg, "analyzerd_verdicts_published_total", map[string]string{"verdict": "proceed"}))
}

func TestPublishRetriesUntilTheStreamExists(t *testing.T) {
	e := newEnv(t, false)
	reg := prometheus.NewRegistry()
	core, logs := observer.New(zapcore.InfoLevel)
	p := New(e.js, Options{Registerer: reg, Logger: zap.New(core),
		RetryInitialInterval: 5 * time.Millisecond, RetryMaxInterval: 20 * time.Millisecond})
	start(t, p)

	for i := range 3 {
		p.Enqueue(verdict("checkout", uint64(i+1), rollout.Pause), "", "")
	}
	// It keeps trying...
	require.Eventually(t, func() bool {
		return counter(t, reg, "analyzerd_publish_errors_total", nil) >= 3
	}, waitFor, 5*time.Millisecond)
	require.Equal(t, 3, p.Pending())

	// ...and succeeds once the stream exists.
	require.NoError(t, streams.Ensure(e.ctx, e.js, streams.Options{}))
	require.Eventually(t, func() bool { return p.Pending() == 0 }, waitFor, 5*time.Millisecond)
	msgs := e.stored(t)
	require.Len(t, msgs, 3)
	for i, m := range msgs {
		require.Equal(t, fmt.Sprintf("verdict/prod/checkout/v2/%d", i+1), m.Header.Get("Nats-Msg-Id"))
	}

	// It logged when the error changed, not on every attempt.
	attempts := counter(t, reg, "analyzerd_publish_errors_total", nil)
	warnings := logs.FilterMessage("publishing verdict failed; retrying").Len()
	require.GreaterOrEqual(t, warnings, 1)
	require.Less(t, float64(warnings), attempts)
	require.Equal(t, 1, logs.FilterMessage("verdict published after retrying").Len())
}

func TestRunReturnsWhileRetrying(t *testing.T) {
	e := newEnv(t, false)
	p := New(e.js, Options{RetryInitialInterval: time.Millisecond, RetryMaxInterval: time.Millisecond})
	stop := start(t, p)
	p.Enqueue(verdict("checkout", 1, rollout.Pause), "", "")
	stop() // fails the test if Run does not return
	require.Equal(t, 1, p.Pending(), "the verdict stays queued for Flush")
}

func TestFlush(t *testing.T) {
	e := newEnv(t, true)
	p := New(e.js, Options{})
	for i := range 3 {
		p.Enqueue(verdict("checkout", uint64(i+1), rollout.Pause), "", "")
	}

	expired, cancel := context.WithCancel(context.Background())
	cancel()
	err := p.Flush(expired)
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "flushing verdicts: 3 left unpublished")
	require.Equal(t, uint64(0), e.storedCount(t))

	require.NoError(t, p.Flush(e.ctx))
	require.Equal(t, 0, p.Pending())
	require.Equal(t, uint64(3), e.storedCount(t))
	require.NoError(t, p.Flush(e.ctx), "nothing to flush")
}

func TestFlushTimesOutWhenNATSIsAway(t *testing.T) {
	e := newEnv(t, false)
	p := New(e.js, Options{RetryInitialInterval: time.Millisecond, RetryMaxInterval: 5 * time.Millisecond})
	p.Enqueue(verdict("checkout", 1, rollout.Pause), "", "")
	p.Enqueue(verdict("checkout", 2, rollout.Pause), "", "")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := p.Flush(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "flushing verdicts: 2 left unpublished")
}

func TestEnqueueDropsOldestWhenFull(t *testing.T) {
	e := newEnv(t, true)
	reg := prometheus.NewRegistry()
	var dropped []uint64
	p := New(e.js, Options{Registerer: reg, MaxPending: 3, Lanes: 1, OnDropped: func(v rollout.Verdict) { dropped = append(dropped, v.Sequence) }})
	for i := range 5 {
		p.Enqueue(verdict("checkout", uint64(i+1), rollout.Pause), "", "")
	}
	require.Equal(t, 3, p.Pending())
	require.Equal(t, []uint64{1, 2}, dropped, "each dropped verdict told of")
	require.Equal(t, 2.0, counter(t, reg, "analyzerd_verdicts_dropped_total", map[string]string{"reason": "queue_full"}))
	require.Equal(t, 3.0, counter(t, reg, "analyzerd_verdicts_pending", nil))

	require.NoError(t, p.Flush(e.ctx))
	var ids []string
	for _, m := range e.stored(t) {
		ids = append(ids, m.Header.Get("Nats-Msg-Id"))
	}
	require.Equal(t, []string{"verdict/prod/checkout/v2/3", "verdict/prod/checkout/v2/4", "verdict/prod/checkout/v2/5"}, ids)
}

func TestInvalidVerdictIsDroppedNotRetried(t *testing.T) {
	e := newEnv(t, true)
	reg := prometheus.NewRegistry()
	dropped := make(chan rollout.Verdict, 2)
	p := New(e.js, Options{Registerer: reg, OnDropped: func(v rollout.Verdict) { dropped <- v }})
	bad := verdict("checkout", 0, rollout.Pause) // sequences start at 1
	p.Enqueue(bad, "", "")
	p.Enqueue(verdict("checkout", 1, rollout.Pause), "", "")
	require.NoError(t, p.Flush(e.ctx))
	require.Len(t, dropped, 1)
	require.Equal(t, bad, <-dropped, "the dropped verdict told of")
	require.Equal(t, uint64(1), e.storedCount(t))
	require.Equal(t, 1.0, counter(t, reg, "analyzerd_verdicts_dropped_total", map[string]string{"reason": "invalid"}))
}

func TestInvalidOptions(t *testing.T) {
	e := newEnv(t, true)
	p := New(e.js, Options{Prefix: "bad prefix"})
	err := p.Run(e.ctx)
	require.ErrorContains(t, err, "publisher options: prefix")
	require.ErrorContains(t, p.Flush(e.ctx), "publisher options: prefix")
}

// TestSmallQueueNeedsNoLanes: a queue smaller than the default lanes is valid without Lanes
// set (as it was when the default was 16): the lanes default to the queue's size.
func TestSmallQueueNeedsNoLanes(t *testing.T) {
	o := Options{MaxPending: 3}.WithDefaults()
	require.NoError(t, o.Validate())
	require.Equal(t, 3, o.Lanes)
	require.Equal(t, DefaultLanes, Options{}.WithDefaults().Lanes)
	require.ErrorContains(t, Options{MaxPending: 3, Lanes: 4}.WithDefaults().Validate(), "lanes", "lanes set beyond the queue are refused")
}

func TestRunAndFlushTogetherKeepOrder(t *testing.T) {
	e := newEnv(t, true)
	p := New(e.js, Options{})
	start(t, p)
	const n = 200
	for i := range n {
		p.Enqueue(verdict("checkout", uint64(i+1), rollout.Pause), "", "")
	}
	require.NoError(t, p.Flush(e.ctx))
	require.Eventually(t, func() bool { return e.storedCount(t) == n }, waitFor, 5*time.Millisecond)
	for i, m := range e.stored(t) {
		var env struct {
			Data struct {
				Sequence uint64 `json:"sequence"`
			} `json:"data"`
		}
		require.NoError(t, json.Unmarshal(m.Data, &env))
		require.Equal(t, uint64(i+1), env.Data.Sequence)
		require.True(t, strings.HasSuffix(m.Header.Get("Nats-Msg-Id"), fmt.Sprintf("/%d", i+1)))
	}
}

// TestRevokeDropsARolloutsQueuedVerdicts: what another replica now publishes leaves the
// queue; other rollouts' verdicts and their order stay.
func TestRevokeDropsARolloutsQueuedVerdicts(t *testing.T) {
	p := New(nil, Options{Lanes: 1})
	a, b := rollout.Ref{Namespace: "prod", Name: "a"}, rollout.Ref{Namespace: "prod", Name: "b"}
	for seq := uint64(1); seq <= 3; seq++ {
		p.Enqueue(rollout.Verdict{Rollout: a, Revision: "v2", Sequence: seq}, "", "")
		p.Enqueue(rollout.Verdict{Rollout: b, Revision: "v2", Sequence: seq}, "", "")
	}
	p.Enqueue(rollout.Verdict{Rollout: a, Revision: "v3", Sequence: 1}, "", "")
	require.Equal(t, 3, p.Revoke(a, "v2"))
	require.Equal(t, 4, p.Pending())
	var got []string
	for _, it := range p.lanes[0].items[p.lanes[0].head:] {
		got = append(got, fmt.Sprintf("%s/%s/%d", it.v.Rollout.Name, it.v.Revision, it.v.Sequence))
	}
	require.Equal(t, []string{"b/v2/1", "b/v2/2", "b/v2/3", "a/v3/1"}, got)
	require.Zero(t, p.Revoke(a, "v2"))
}

// TestLanesKeepEachRolloutsOrder: with verdicts of many rollouts spread over lanes, each
// rollout's are stored in the order they were enqueued, and every one is.
func TestLanesKeepEachRolloutsOrder(t *testing.T) {
	e := newEnv(t, true)
	p := New(e.js, Options{Lanes: 4})
	start(t, p)
	const rollouts, each = 20, 10
	for seq := range each {
		for r := range rollouts {
			p.Enqueue(verdict(fmt.Sprintf("svc-%d", r), uint64(seq+1), rollout.Pause), "", "")
		}
	}
	require.NoError(t, p.Flush(e.ctx))
	require.Eventually(t, func() bool { return e.storedCount(t) == rollouts*each }, waitFor, 5*time.Millisecond)
	next := map[string]uint64{}
	lanes := map[*lane]bool{}
	for _, m := range e.stored(t) {
		var env struct {
			Data struct {
				Rollout  rollout.Ref `json:"rollout"`
				Sequence uint64      `json:"sequence"`
			} `json:"data"`
		}
		require.NoError(t, json.Unmarshal(m.Data, &env))
		name := env.Data.Rollout.Name
		next[name]++
		require.Equal(t, next[name], env.Data.Sequence, "%s's verdicts in order", name)
		lanes[p.laneOf(env.Data.Rollout)] = true
	}
	require.Len(t, next, rollouts)
	require.Greater(t, len(lanes), 1, "the rollouts are spread over lanes")
}
