package analyzer

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/backfill"
	"github.com/analyzerd/analyzerd/internal/compare"
	"github.com/analyzerd/analyzerd/internal/config"
	"github.com/analyzerd/analyzerd/internal/promproc"
	"github.com/analyzerd/analyzerd/internal/replay"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// TestBacktestDecidesWhatTheDaemonDecides runs two recorded deployments (backfill.Healthy and
// backfill.Bad, backfilled into a real Prometheus) through the backtest (replay.Run, each
// evaluation reading its whole step, compare.NewPerRollout) and through the daemon's own path:
// this Analyzer with the daemon's Comparer (the grouped feeds, compare.New) on the same
// Prometheus, a state store on a real NATS server, the rollout.started and rollout.step
// events handled at their times, and its clock set to each time the backtest evaluated at.
// Every verdict the daemon publishes is the backtest's: the same time, step, weight, verdict,
// reason and checks, in the same order, and the same number of them.
//
// What this covers: the baseline (captured by the analyzer at its first evaluation), the
// evidence carried in the stored record, step events, the rollback being final, and the
// measurement of the feeds against the per-rollout queries the backtest makes, on
// history. What it does not: that the daemon's scheduler would have chosen those times. The
// analyzer evaluates at the first tick at which its clock reaches the time it planned (the
// same compare.NextEvaluation the backtest follows, from the same measurements); the test
// moves its clock straight to the backtest's next time, so an analyzer that planned later
// would publish nothing and fail the test, but one that planned earlier would evaluate at
// that time all the same. And a live daemon evaluates up to a tick (1 s) after the planned
// time, at the wall clock's pace, which the backtest does not reproduce.
func TestBacktestDecidesWhatTheDaemonDecides(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real prometheus binary: skipped with -short")
	}
	if _, err := promproc.Find(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must install prometheus: %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)
	deps := []backfill.Deployment{backfill.Healthy("checkout", start), backfill.Bad("payments", start)}
	prom, err := backfill.Serve(ctx, t.TempDir(), "", deps...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, prom.Close()) })
	source, err := compare.NewPrometheus(compare.PrometheusOptions{URL: prom.URL(), Timeout: 30 * time.Second})
	require.NoError(t, err)

	cfg, err := config.Load("../../configs/analyzerd.yaml")
	require.NoError(t, err)
	rt, ok := cfg.Template("http-golden-signals")
	require.True(t, ok)
	tm, err := compare.CompileTemplate(rt)
	require.NoError(t, err)

	for _, d := range deps {
		t.Run(d.Service, func(t *testing.T) {
			ref := rollout.Ref{Namespace: "prod", Name: d.Service}
			r := replay.Rollout{
				Ref: ref, Revision: "v2", Template: tm,
				Args: map[string]string{"service": d.Service}, Canary: map[string]string{"version": "v2"},
				Stable: map[string]string{"version": "v1"},
				Steps:  d.Steps, To: start.Add(20 * time.Minute),
			}
			backtest, err := replay.Run(ctx, compare.NewPerRollout(source), r)
			require.NoError(t, err)
			require.NotEmpty(t, backtest)

			// The daemon.
			clk := &clock{now: start}
			sink := &fakeSink{}
			a, err := New(Options{
				Templates: map[string]*compare.Template{tm.Name: tm}, Measurer: compare.New(source),
				Sink: sink, Store: openStore(t), ReplicaID: "daemon", Resolution: 2 * time.Millisecond,
				Now: clk.Now, Registerer: prometheus.NewRegistry(),
			})
			require.NoError(t, err)
			sink.ack = a.Acknowledged
			runCtx, stop := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- a.Run(runCtx) }()
			defer func() { stop(); require.NoError(t, <-done) }()
			require.Eventually(t, a.Loaded, 10*time.Second, time.Millisecond)

			event := func(i int) rollout.Event {
				ev := rollout.Event{
					ID: d.Service + "-step-" + string(rune('0'+i)), Source: "test", Type: rollout.EventStep, Time: d.Steps[i].At,
					Rollout: ref, Revision: "v2", Step: i, Weight: d.Steps[i].Weight,
				}
				if i == 0 {
					ev.Type, ev.Analysis, ev.Args, ev.Canary, ev.Stable = rollout.EventStarted, tm.Name, r.Args, r.Canary, r.Stable
				}
				return ev
			}
			step := 0
			require.NoError(t, a.Handle(ctx, event(0)))
			for i, want := range backtest {
				at := want.Verdict.DecidedAt
				if i > 0 {
					if want.Verdict.Step != step {
						step = want.Verdict.Step
						require.Equal(t, d.Steps[step].At, at, "the backtest evaluates a step at once")
						require.NotEqual(t, at, backtest[i-1].Planned,
							"an evaluation of the step before planned at the step's own time: which comes first is a race in the daemon")
						clk.set(at)
						require.NoError(t, a.Handle(ctx, event(step)))
					} else {
						clk.set(at)
					}
				}
				require.Eventually(t, func() bool { return len(sink.of(ref)) > i }, 30*time.Second, time.Millisecond,
					"the daemon's verdict %d, at %s", i+1, at)
				got := sink.of(ref)[i]
				require.Equal(t, want.Verdict.Sequence, got.Sequence)
				require.Equal(t, want.Verdict.DecidedAt, got.DecidedAt, "verdict %d", i+1)
				require.Equal(t, []any{want.Verdict.Step, want.Verdict.Weight, want.Verdict.Verdict, want.Verdict.Reason},
					[]any{got.Step, got.Weight, got.Verdict, got.Reason}, "verdict %d at %s", i+1, at)
				requireSameChecks(t, want.Verdict.Checks, got.Checks, "verdict %d at %s", i+1, at)
			}
			require.Len(t, sink.of(ref), len(backtest), "no verdict the backtest does not have")

			final := replay.Final(backtest)
			if d.FaultFrom.IsZero() {
				require.Equal(t, rollout.Proceed, final)
			} else {
				require.Equal(t, rollout.Rollback, final)
			}
			t.Logf("%s: %d verdicts, the same on both paths; final %s", d.Service, len(backtest), final)
		})
	}
}

// requireSameChecks compares two verdicts' checks as their JSON says them, numbers to 1e-9
// relative and 1e-12 absolute (see above), everything else exactly.
func requireSameChecks(t *testing.T, want, got []rollout.CheckResult, msgAndArgs ...any) {
	t.Helper()
	decode := func(v any) any {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		var out any
		require.NoError(t, json.Unmarshal(b, &out))
		return out
	}
	var diffs []string
	var walk func(path string, w, g any)
	walk = func(path string, w, g any) {
		switch wv := w.(type) {
		case float64:
			gv, ok := g.(float64)
			if !ok || math.Abs(wv-gv) > 1e-9*math.Max(math.Abs(wv), math.Abs(gv))+1e-12 {
				diffs = append(diffs, fmt.Sprintf("%s: %v, the daemon %v", path, w, g))
			}
		case map[string]any:
			gv, ok := g.(map[string]any)
			if !ok || len(gv) != len(wv) {
				diffs = append(diffs, fmt.Sprintf("%s: %v, the daemon %v", path, w, g))
				return
			}
			for k := range wv {
				walk(path+"."+k, wv[k], gv[k])
			}
		case []any:
			gv, ok := g.([]any)
			if !ok || len(gv) != len(wv) {
				diffs = append(diffs, fmt.Sprintf("%s: %v, the daemon %v", path, w, g))
				return
			}
			for i := range wv {
				walk(fmt.Sprintf("%s[%d]", path, i), wv[i], gv[i])
			}
		default:
			if w != g {
				diffs = append(diffs, fmt.Sprintf("%s: %v, the daemon %v", path, w, g))
			}
		}
	}
	walk("checks", decode(want), decode(got))
	require.Empty(t, diffs, msgAndArgs...)
}
