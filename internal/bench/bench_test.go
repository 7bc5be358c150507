package bench

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/promproc"
)

// TestBenchMeasures runs the bench at a small size with every part real (nats-server,
// Prometheus, the exporter, the analyzerd binary built from this tree) and checks that it
// measured what it prints: every rollout got verdicts, a first one, and one again after the
// restart. The figures themselves are the machine's, and not asserted.
func TestBenchMeasures(t *testing.T) {
	if testing.Short() {
		t.Skip("builds analyzerd and runs Prometheus for a minute")
	}
	promBinary, err := promproc.Find()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must install prometheus: %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
	binary := filepath.Join(t.TempDir(), "analyzerd")
	out, err := exec.Command("go", "build", "-o", binary, "../../cmd/analyzerd").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)

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

	var table bytes.Buffer
	r.Print(&table)
	for _, row := range []string{"verdict gap p50 / p99 / max", "event -> first verdict", "queries per interval",
		"prometheus query time per interval", "analyzerd CPU / RSS", "state writes/s", "restart: verdict again"} {
		require.Contains(t, table.String(), row)
	}
}
