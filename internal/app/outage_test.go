package app

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/rolloutclient"
)

// TestPrometheusOutage stops the real prometheus process in the middle of a healthy
// canary's analysis and starts it again: while it is away every check reports error and
// every verdict is pause, never proceed; evaluations back off (fewer verdicts than the
// interval would give); once it is back the analysis recovers (checks measured again, and
// the healthy canary proceeds), with the sequence going on without a gap.
func TestPrometheusOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts prometheus and a workload")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prom := startPrometheus(t, ctx, 0.005) // a healthy canary
	cfg := fastConfig(t, prom.URL())

	_, js := startConnected(t, ctx, cfg, Options{})
	var (
		mu       sync.Mutex
		verdicts []rollout.Verdict
	)
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		_ = rolloutclient.WatchVerdicts(watchCtx, js, "rollouts", func(r rolloutclient.Received) {
			mu.Lock()
			verdicts = append(verdicts, r.Verdict)
			mu.Unlock()
		})
	}()
	t.Cleanup(func() { stopWatch(); <-watched })
	snapshot := func() []rollout.Verdict {
		mu.Lock()
		defer mu.Unlock()
		return append([]rollout.Verdict(nil), verdicts...)
	}

	ref := rollout.Ref{Namespace: "prod", Name: "checkout"}
	pub := rolloutclient.Publisher{JS: js, Prefix: "rollouts"}
	require.NoError(t, pub.Publish(ctx, ref, "start-1", rollout.EventStarted, time.Now(), rolloutclient.Started{
		Rollout: ref, Revision: "v2", Analysis: "fast", Args: map[string]string{"service": "checkout"},
		Canary: map[string]string{"version": "v2"}, Stable: map[string]string{"version": "v1"}, Weight: 50,
	}))
	// Measured first: some verdicts with the check's numbers.
	require.Eventually(t, func() bool {
		vs := snapshot()
		return len(vs) >= 3 && vs[len(vs)-1].Checks[0].Outcome != rollout.Error
	}, 30*time.Second, 20*time.Millisecond)

	require.NoError(t, prom.Stop())
	outageStart := len(snapshot())
	// Away: every verdict pauses, its check in error. Evaluations back off: the time between
	// two evaluations that could not reach Prometheus doubles (1 s, 2 s, 4 s, ...), as the
	// verdicts' decidedAt (the daemon's own schedule) show.
	var errs []rollout.Verdict
	require.Eventually(t, func() bool {
		errs = errs[:0]
		for _, v := range snapshot()[outageStart:] {
			if v.Checks[0].Outcome == rollout.Error {
				errs = append(errs, v)
			}
		}
		return len(errs) >= 5
	}, 90*time.Second, 20*time.Millisecond, "evaluations go on, in error")
	var gaps []time.Duration
	for i := 1; i < len(errs); i++ {
		gaps = append(gaps, errs[i].DecidedAt.Sub(errs[i-1].DecidedAt))
	}
	t.Logf("time between evaluations while Prometheus is away: %v", gaps)
	for i := 1; i < len(gaps); i++ {
		require.GreaterOrEqual(t, gaps[i], gaps[i-1]-100*time.Millisecond, "the pace never quickens during the outage")
	}
	require.GreaterOrEqual(t, gaps[len(gaps)-1], 3*time.Second, "backed off from the 1 s interval")
	for _, v := range snapshot()[outageStart+1:] {
		require.Equal(t, rollout.Pause, v.Verdict, "sequence %d: never proceed while Prometheus is away", v.Sequence)
	}
	last := errs[len(errs)-1]
	require.Contains(t, last.Reason, "metrics source unavailable")

	require.NoError(t, prom.Restart(ctx))
	require.NoError(t, prom.WaitTargetsUp(ctx))
	// Back: measured again, and the healthy canary proceeds.
	require.Eventually(t, func() bool {
		vs := snapshot()
		return vs[len(vs)-1].Verdict == rollout.Proceed
	}, 2*time.Minute, 50*time.Millisecond, "the analysis recovers")
	for i, v := range snapshot() {
		require.Equal(t, uint64(i+1), v.Sequence, "sequences go on without a gap")
	}
}
