package bench

import (
	"bytes"
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/promproc"
	"github.com/analyzerd/analyzerd/internal/publish"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

// TestBenchMeasures runs the bench at a small size with every part real (nats-server,
// Prometheus, the exporter, the analyzerd binary built from this tree) and checks that it
// measured what it prints: every rollout got verdicts, a first one, and one again after the
// restart. The figures themselves are the machine's, and not asserted.
func TestBenchMeasures(t *testing.T) {
	if testing.Short() {
		t.Skip("builds analyzerd and runs Prometheus for a minute")
	}
	promBinary, binary := parts(t)

	var progress bytes.Buffer
	r, err := Run(context.Background(), Options{
		Rollouts: 3, Duration: 25 * time.Second, Warmup: 2 * time.Minute, Restart: true,
		PerShard: 2, Daemon: binary, Config: "../../configs/analyzerd.yaml", Prometheus: promBinary,
		Progress: &progress,
	})
	require.NoError(t, err, progress.String())
	require.Zero(t, r.FirstMissing, "every rollout got a first verdict")
	require.Zero(t, r.NoVerdict, "every rollout got verdicts in the window")
	require.True(t, r.Restarted)
	require.Zero(t, r.RestartMissing, "every rollout got a verdict again after the restart")
	require.Positive(t, r.GapMax)
	require.Positive(t, r.QueriesPerInterval)
	require.Positive(t, r.EvaluationsPerSecond)
	require.Positive(t, r.DaemonRSS)
	require.Positive(t, r.KVWritesPerSecond)
	require.Positive(t, r.StepEvents, "the daemon measured its overhead for the window's step events")

	var table bytes.Buffer
	r.Print(&table)
	for _, row := range []string{"verdict gap p50 / p99 / max", "event -> first verdict", "queries per interval",
		"prometheus query time per interval", "analyzerd CPU / RSS", "daemon overhead p50 / p99", "state writes/s", "restart: verdict again"} {
		require.Contains(t, table.String(), row)
	}
}

// parts finds Prometheus and builds the analyzerd binary of this tree.
func parts(t *testing.T) (prometheus, analyzerd string) {
	t.Helper()
	promBinary, err := promproc.Find()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must install prometheus: %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
	return promBinary, build(t)
}

// build builds the analyzerd binary of this tree.
func build(t *testing.T) string {
	t.Helper()
	binary := filepath.Join(t.TempDir(), "analyzerd")
	out, err := exec.Command("go", "build", "-o", binary, "../../cmd/analyzerd").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return binary
}

// TestBenchMeasuresWithTheSyntheticSource runs the bench without Prometheus: the daemon reads
// the synthetic source, which understands every query it sends (none refused), and every
// rollout gets verdicts.
func TestBenchMeasuresWithTheSyntheticSource(t *testing.T) {
	if testing.Short() {
		t.Skip("builds analyzerd and runs it for half a minute")
	}
	var progress bytes.Buffer
	r, err := Run(context.Background(), Options{
		Rollouts: 3, Duration: 15 * time.Second, Warmup: 2 * time.Minute, Source: SourceSynthetic,
		PerShard: 2, Daemon: build(t), Config: "../../configs/analyzerd.yaml", Progress: &progress,
	})
	require.NoError(t, err, progress.String())
	require.Zero(t, r.FirstMissing, "every rollout got a first verdict")
	require.Zero(t, r.NoVerdict, "every rollout got verdicts in the window")
	require.Zero(t, r.SourceRefused, "the synthetic source understood every query: %s", progress.String())
	require.Zero(t, r.Verdicts["none"])
	require.Positive(t, r.QueriesPerInterval)
	require.Positive(t, r.PrometheusQuerySeconds, "the synthetic source's own time answering")

	var table bytes.Buffer
	r.Print(&table)
	require.Contains(t, table.String(), "synthetic source query time per interval")
	require.Contains(t, table.String(), "bench CPU (synthetic source)")
	require.NotContains(t, table.String(), "prometheus CPU")

	_, err = Run(context.Background(), Options{Rollouts: 1, Source: "victoriametrics", Daemon: "x", Config: "y"})
	require.ErrorContains(t, err, "victoriametrics")
}

// TestBenchMeasuresATakeover runs the bench with three replicas on a three-node NATS
// cluster, kills one, and checks that it measured the share of each and the takeover: every
// rollout owned by one of them, every one of the killed replica's rollouts evaluated again
// by a survivor.
func TestBenchMeasuresATakeover(t *testing.T) {
	if testing.Short() {
		t.Skip("builds analyzerd and runs Prometheus, a NATS cluster and three daemons for a minute")
	}
	promBinary, binary := parts(t)
	var progress bytes.Buffer
	const n = 12
	r, err := Run(context.Background(), Options{
		Rollouts: n, Duration: 15 * time.Second, Warmup: 2 * time.Minute, Restart: true, Replicas: 3,
		PerShard: 4, Daemon: binary, Config: "../../configs/analyzerd.yaml", Prometheus: promBinary,
		Progress: &progress,
	})
	require.NoError(t, err, progress.String())
	require.Zero(t, r.FirstMissing, "every rollout got a first verdict")
	require.Len(t, r.Owned, 3)
	require.Equal(t, n, r.Owned[0]+r.Owned[1]+r.Owned[2], "every rollout is owned by one replica")
	require.Equal(t, r.Owned[0], r.Killed, "the killed replica's rollouts are measured")
	require.Zero(t, r.TakeoverMissing, "each of them got a verdict again: %s", progress.String())
	require.Len(t, r.TakenBy, 2)
	require.Equal(t, r.Killed, r.TakenBy[0]+r.TakenBy[1], "the survivors own every one of them")

	var table bytes.Buffer
	r.Print(&table)
	for _, row := range []string{"replicas", "takeover: verdict again", "takeover: taken by the survivors"} {
		require.Contains(t, table.String(), row)
	}
}

func TestHistogramQuantileInterpolatesWithinTheBucket(t *testing.T) {
	inf := math.Inf(1)
	before := []bucket{{0.01, 10}, {0.1, 10}, {1, 10}, {inf, 10}}
	// 100 more observations: 50 at or below 10 ms, 40 more at or below 100 ms, 10 above 1 s.
	after := []bucket{{0.01, 60}, {0.1, 100}, {1, 100}, {inf, 110}}
	p50, n := histogramQuantile(0.5, before, after)
	require.Equal(t, 100, n, "the window's observations only")
	require.Equal(t, 10*time.Millisecond, p50, "the 50th of 100 is the last of the first bucket")
	p75, _ := histogramQuantile(0.75, before, after)
	require.InDelta(t, 0.01+0.09*25/40, p75.Seconds(), 1e-9, "a quarter of the way is interpolated within (10 ms, 100 ms]")
	p99, _ := histogramQuantile(0.99, before, after)
	require.Equal(t, time.Second, p99, "past the largest finite bound: that bound")
	_, n = histogramQuantile(0.5, after, after)
	require.Zero(t, n, "nothing observed between the two")
}

func TestDecisionOfReadsAPublishedVerdict(t *testing.T) {
	for _, d := range []rollout.Decision{rollout.Proceed, rollout.Pause} {
		data, err := publish.Encode(rollout.Verdict{
			Rollout: rollout.Ref{Namespace: "bench", Name: "svc-1"}, Revision: "v2", Verdict: d, Sequence: 1,
			Reason: `a reason that quotes "verdict":"rollback"`, DecidedAt: time.Now(),
		}, "analyzerd")
		require.NoError(t, err)
		require.Equal(t, string(d), decisionOf(data))
	}
	require.Equal(t, "unreadable", decisionOf([]byte(`{}`)))
}
