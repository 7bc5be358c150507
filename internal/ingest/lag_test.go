package ingest

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// gauge is the value of the unlabelled gauge name in reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() == name {
			require.Len(t, f.GetMetric(), 1)
			require.Empty(t, f.GetMetric()[0].GetLabel(), "no labels")
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestLagGaugesFollowTheBacklog: the consumer's backlog (events not yet delivered, and
// delivered but not acknowledged) is exported as gauges and follows the consumer.
func TestLagGaugesFollowTheBacklog(t *testing.T) {
	e := newEnv(t)
	h := &blockingHandler{started: make(chan rollout.Event, 10), release: make(chan struct{}), ctxErr: make(chan error, 10)}
	c, reg := newConsumer(t, e, h, Options{LagInterval: 10 * time.Millisecond, Concurrency: 1})
	for i := range 4 {
		name := fmt.Sprintf("app-%d", i)
		e.publish(t, name, eventWithID(startedEvent(), fmt.Sprintf("ev-%d", i), name).bytes(t), nil)
	}
	run(t, c)

	// The first event is in the handler's hands; three wait in the stream.
	<-h.started
	lag := func() [2]float64 {
		return [2]float64{gauge(t, reg, "analyzerd_consumer_pending_events"), gauge(t, reg, "analyzerd_consumer_ack_pending_events")}
	}
	var got [2]float64
	if !assert.Eventually(t, func() bool { got = lag(); return got == [2]float64{3, 1} }, waitFor, 5*time.Millisecond) {
		t.Fatalf("pending, ack pending = %v, want [3 1]", got)
	}

	// Once every event is handled, the backlog is empty.
	for range 3 {
		h.release <- struct{}{}
		<-h.started
	}
	h.release <- struct{}{}
	if !assert.Eventually(t, func() bool { got = lag(); return got == [2]float64{0, 0} }, waitFor, 5*time.Millisecond) {
		t.Fatalf("pending, ack pending = %v, want [0 0]", got)
	}
}

func TestLagIntervalMustBePositive(t *testing.T) {
	e := newEnv(t)
	_, err := New(e.js, &fakeHandler{}, Options{LagInterval: -time.Second})
	require.ErrorContains(t, err, "lagInterval")
}
