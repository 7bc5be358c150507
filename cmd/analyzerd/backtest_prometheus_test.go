package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/backfill"
	"github.com/analyzerd/analyzerd/internal/promproc"
)

// btStart is the recorded deployments' rollout.started time: a fixed day in the past.
var btStart = time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)

// serveHistory backfills the healthy deployment (service checkout) and the bad one (service
// payments) into a real Prometheus, or skips where Prometheus is not installed (fails in CI).
func serveHistory(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the real prometheus binary: skipped with -short")
	}
	if _, err := promproc.Find(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must install prometheus: %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	prom, err := backfill.Serve(ctx, t.TempDir(), "", backfill.Healthy("checkout", btStart), backfill.Bad("payments", btStart))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, prom.Close()) })
	return prom.URL()
}

// row is one line of the backtest's table.
type row struct {
	at              time.Time
	step, weight    string
	verdict, reason string
}

// rows reads the table that starts the output (up to the first empty line).
func rows(t *testing.T, out string) []row {
	t.Helper()
	lines := strings.Split(out, "\n")
	require.True(t, strings.HasPrefix(lines[0], "TIME "), "a table: %q", lines[0])
	var rs []row
	for _, l := range lines[1:] {
		if l == "" {
			break
		}
		f := strings.Fields(l)
		require.GreaterOrEqual(t, len(f), 5, l)
		at, err := time.Parse("15:04:05", f[0])
		require.NoError(t, err)
		at = btStart.Truncate(24 * time.Hour).Add(at.Sub(at.Truncate(24 * time.Hour)))
		rs = append(rs, row{at: at, step: f[1], weight: f[2], verdict: f[3], reason: l})
	}
	return rs
}

// TestBacktestOnBackfilledHistory runs `analyzerd backtest` with the shipped template on two
// recorded deployments (10 -> 25 -> 50 -> 100%, 5 minutes a step, four stable pods and two
// canary pods scraped every 15 s at their own offsets, a pod restart on each side): the
// healthy one proceeds at every step and exits 0; the bad one, whose canary fails 2% of its
// requests from the 25% step on, proceeds at 10%, rolls back soon after the 25% step began
// and not before, and exits 1.
func TestBacktestOnBackfilledHistory(t *testing.T) {
	url := serveHistory(t)
	backtest := func(service string, extra ...string) (int, string, string) {
		args := append([]string{"backtest", "--config", "../../configs/analyzerd.yaml", "--template", "http-golden-signals",
			"--prometheus", url, "--from", "2026-11-25T14:00:00Z", "--to", "2026-11-25T14:20:00Z",
			"--arg", "service=" + service, "--canary", "version=v2", "--stable", "version=v1",
			"--steps", "10@14:00,25@14:05,50@14:10,100@14:15"}, extra...)
		code, out, errOut := runCmd(args...)
		t.Logf("analyzerd %s\nexit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		return code, out, errOut
	}

	code, out, errOut := backtest("checkout")
	require.Equal(t, exitProceed, code, errOut)
	all := rows(t, out)
	steps := []time.Time{btStart, btStart.Add(5 * time.Minute), btStart.Add(10 * time.Minute), btStart.Add(15 * time.Minute)}
	proceeded := map[string]bool{}
	for i, r := range all {
		require.NotEqual(t, "rollback", r.verdict, r.reason)
		if i > 0 {
			require.True(t, r.at.After(all[i-1].at), "evaluations in time order: %s", r.reason)
		}
		if r.verdict == "proceed" {
			proceeded[r.step] = true
		}
		// Each step is evaluated at once when it begins, and its first verdict is a pause.
		for s, at := range steps {
			if r.at.Equal(at) {
				require.Equal(t, []string{string(rune('0' + s)), "pause"}, []string{r.step, r.verdict}, r.reason)
			}
		}
	}
	require.Equal(t, map[string]bool{"0": true, "1": true, "2": true, "3": true}, proceeded, "every step proceeds")
	require.Contains(t, out, "final verdict: proceed (exit status 0)")
	require.Contains(t, out, "step 2 (50%, from 2026-11-25T14:10:00Z): ")

	page := filepath.Join(t.TempDir(), "payments.html")
	code, out, errOut = backtest("payments", "--changes", "--report", page)
	require.Equal(t, exitRollback, code, errOut)
	require.Contains(t, out, "the rollout page: "+page)
	html, err := os.ReadFile(page)
	require.NoError(t, err)
	for _, want := range []string{
		"<!DOCTYPE html>",
		"Backtest of template http-golden-signals on Prometheus history from 2026-11-25T14:00:00Z to 2026-11-25T14:20:00Z UTC (steps at 10@14:00:00, 25@14:05:00, 50@14:10:00, 100@14:15:00): final verdict rollback.",
		"backtest/rollout", "<svg", "error-rate", "latency-p99", "rollback", "canary 2.04% vs stable 0.04%",
	} {
		require.Contains(t, string(html), want)
	}
	require.NotContains(t, string(html), url, "the page does not name the Prometheus it read")
	all = rows(t, out)
	last := all[len(all)-1]
	require.Equal(t, "rollback", last.verdict, last.reason)
	require.Equal(t, []string{"1", "25%"}, []string{last.step, last.weight})
	require.False(t, last.at.Before(steps[1]), "not before the bad canary's step: %s", last.reason)
	require.Less(t, last.at.Sub(steps[1]), 2*time.Minute, "soon after it began: %s", last.reason)
	require.Contains(t, last.reason, "error-rate: canary 2.")
	var step0 []string
	for _, r := range all[:len(all)-1] {
		require.NotEqual(t, "rollback", r.verdict)
		if r.step == "0" {
			step0 = append(step0, r.verdict)
		}
	}
	require.Contains(t, step0, "proceed", "the canary was healthy at 10%")
	require.Contains(t, out, "step 2 (50%, from 2026-11-25T14:10:00Z): not evaluated")
	require.Contains(t, out, "final verdict: rollback (exit status 1)")
	for i := 1; i < len(all)-1; i++ {
		require.False(t, all[i].step == all[i-1].step && all[i].verdict == all[i-1].verdict, "--changes prints changes only: %s", all[i].reason)
	}

	// The same rollout cut short, before its 10% step could proceed: never decided.
	code, out, _ = runCmd("backtest", "--config", "../../configs/analyzerd.yaml", "--template", "http-golden-signals",
		"--prometheus", url, "--from", "2026-11-25T14:00:00Z", "--to", "2026-11-25T14:00:30Z",
		"--arg", "service=checkout", "--canary", "version=v2", "--stable", "version=v1", "--steps", "10")
	require.Equal(t, exitUndecided, code, out)
	require.Contains(t, out, "final verdict: pause (exit status 2)")

	// A template not in the configuration: the shipped one with a 1% error budget against
	// the baseline, read from a file, rolls the bad canary back as well.
	tmpl := filepath.Join(t.TempDir(), "tuned.yaml")
	require.NoError(t, os.WriteFile(tmpl, []byte(`name: tuned
args: [service]
variables: [version]
checks:
  - name: error-rate
    kind: ratio
    errors: http_requests_total{service={{ arg "service" }}, version={{ var "version" }}, code=~"5.."}
    total: http_requests_total{service={{ arg "service" }}, version={{ var "version" }}}
    sequential:
      against: [baseline]
    guards:
      - against: baseline
        measure: delta
        max: 0.01
        critical: true
`), 0o600))
	code, out, errOut = backtest("payments", "--template", "", "--template-file", tmpl, "--changes")
	require.Equal(t, exitRollback, code, errOut)
	require.NotContains(t, out, "LATENCY", "the file's template, with its one check")
	all = rows(t, out)
	last = all[len(all)-1]
	require.Equal(t, "rollback", last.verdict)
	require.Contains(t, last.reason, "vs baseline", "judged against the baseline captured before --from")
}
