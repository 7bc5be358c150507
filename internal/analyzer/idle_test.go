package analyzer

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// TestIdleAnalysisEndsAsAborted: an analysis no event touched for IdleExpiry ends (as
// aborted, reason idle), and its position and verdict leave the read API; a step event
// resets the idle time.
func TestIdleAnalysisEndsAsAborted(t *testing.T) {
	h := &harness{
		m:     &fakeMeasurer{canary: map[string]rollout.Reading{}, stable: ok(0.004, 10000), baseline: ok(0.003, 50000)},
		clock: &clock{now: t0},
	}
	core, logs := observer.New(zap.InfoLevel)
	h.logs, h.store = logs, openStore(t)
	h.replica = h.run(t, Options{Logger: zap.New(core), Store: h.store, ReplicaID: "test-replica", IdleExpiry: time.Hour})
	h.m.set("v2", ok(0.004, 5000))
	require.NoError(t, h.a.Handle(context.Background(), started("e1", "v2")))
	h.waitVerdicts(t, 1)
	pos, ok := h.a.Position(ref)
	require.True(t, ok)
	require.Equal(t, rollout.Position{Revision: "v2", Step: 0, Weight: 10}, pos)

	h.clock.Advance(50 * time.Minute)
	step := rollout.Event{ID: "e2", Source: "test", Type: rollout.EventStep, Time: t0.Add(50 * time.Minute),
		Rollout: ref, Revision: "v2", Step: 1, Weight: 20}
	require.NoError(t, h.a.Handle(context.Background(), step))
	h.clock.Advance(50 * time.Minute)
	time.Sleep(50 * time.Millisecond) // several scans
	_, ok = h.a.Position(ref)
	require.True(t, ok, "the step touched it 50 minutes ago")

	h.clock.Advance(11 * time.Minute)
	require.Eventually(t, func() bool { _, ok := h.a.Position(ref); return !ok }, 5*time.Second, time.Millisecond)
	_, ok = h.a.Latest(ref)
	require.False(t, ok)
	require.Equal(t, 1, logs.FilterMessage("idle analysis ended as aborted").Len())
}
