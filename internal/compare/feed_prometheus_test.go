package compare

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/promproc"
	"github.com/analyzerd/analyzerd/internal/rollout"
	"github.com/analyzerd/analyzerd/internal/workload"
)

// countingSource counts the queries it passes on.
type countingSource struct {
	Source
	queries atomic.Int64
}

func (c *countingSource) Query(ctx context.Context, reqs []Request) []Response {
	c.queries.Add(int64(len(reqs)))
	return c.Source.Query(ctx, reqs)
}

// TestGroupedQueriesMeasureWhatPerRolloutQueriesMeasure runs real workloads (four services,
// stable and canary, the first canary on two pods, two scrape jobs at their own intervals)
// under a real Prometheus, and measures every rollout at each round twice: through the
// feeds (one grouped query per selector for all rollouts) and by each rollout's own queries
// over its whole step. The measurements are the same; after the first round the feeds send
// one query per selector whatever the number of rollouts; and rollouts whose values are
// regex syntax or query text read nothing, without changing what the others read.
func TestGroupedQueriesMeasureWhatPerRolloutQueriesMeasure(t *testing.T) {
	promBinary, _ := cpTools(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	began := time.Now()

	var targets []promproc.Target
	serve := func(service, version, job string, seed int64) {
		w, err := workload.New(workload.Config{Service: service, Version: version, Seed: seed,
			Profile: workload.Profile{Rate: 200, ErrorRate: 0.02, LatencyMedian: 40 * time.Millisecond}})
		require.NoError(t, err)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		srv := &http.Server{Handler: w.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		go func() { _ = w.Run(ctx) }()
		targets = append(targets, promproc.Target{Job: job, Address: ln.Addr().String()})
	}
	services := []string{"svc-0", "svc-1", "svc-2", "svc-3"}
	for i, s := range services {
		job := []string{"fast", "slow"}[i%2]
		serve(s, "v1", job, int64(2*i+1))
		serve(s, "v2", job, int64(2*i+2))
	}
	serve("svc-0", "v2", "slow", 99) // a second canary pod of svc-0, scraped at its own pace

	prom, err := promproc.Start(ctx, promproc.Options{Binary: promBinary, Dir: t.TempDir(), Targets: targets,
		ScrapeInterval: time.Second, JobScrapeIntervals: map[string]time.Duration{"slow": 1500 * time.Millisecond}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = prom.Close() })
	require.NoError(t, prom.WaitTargetsUp(ctx))
	source, err := NewPrometheus(PrometheusOptions{URL: prom.URL(), Timeout: 30 * time.Second, Concurrency: 8})
	require.NoError(t, err)

	tm, err := CompileTemplate(rollout.Template{
		Name: "grouped", Args: []string{"service"}, Variables: []string{"version"}, RecentWindow: time.Minute,
		Checks: []rollout.Check{
			{Name: "error-rate", Kind: rollout.KindRatio,
				Errors: `http_requests_total{service={{ arg "service" }}, version={{ var "version" }}, code=~"5.."}`,
				Total:  `http_requests_total{service={{ arg "service" }}, version={{ var "version" }}}`},
			{Name: "latency-p95", Kind: rollout.KindHistogram, Quantile: 0.95,
				Buckets: `http_request_duration_seconds_bucket{service={{ arg "service" }}, version={{ var "version" }}}`},
		},
	})
	require.NoError(t, err)
	hostile := []string{"svc-.", "svc-[0-9]", "svc-0|svc-1", `svc-0"} or vector(1) #`, ".*"}
	rollouts := append(append([]string(nil), services...), hostile...)

	grouped, own := &countingSource{Source: source}, &countingSource{Source: source}
	gc, pc := New(grouped), NewPerRollout(own)
	from := began.Add(-time.Second)
	tick := time.NewTicker(1200 * time.Millisecond)
	defer tick.Stop()
	const rounds = 6
	for round := range rounds {
		<-tick.C
		// A few seconds back, so that both comparers read settled data: no scrape of before
		// `at` is still to be ingested by the time either asks.
		at := time.Now().Add(-3 * time.Second).Truncate(time.Millisecond)
		before := grouped.queries.Load()
		for _, svc := range rollouts {
			tg := Target{Template: tm, Args: map[string]string{"service": svc},
				Canary: Side{Vars: map[string]string{"version": "v2"}}, Stable: Side{Vars: map[string]string{"version": "v1"}},
				From: from, At: at}
			got, want := gc.Measure(ctx, tg), pc.Measure(ctx, tg)
			require.Equal(t, want, got, "round %d, rollout %q", round, svc)
			for _, m := range got {
				for _, r := range []rollout.Reading{m.Canary, m.Stable} {
					if slicesContains(hostile, svc) {
						require.Equal(t, rollout.StatusNoData, r.Status, "rollout %q reads nobody's series: %s", svc, r.Message)
					} else {
						require.NotEqual(t, rollout.StatusError, r.Status, "round %d, %s: %s", round, svc, r.Message)
					}
				}
			}
		}
		if round > 0 {
			require.Equal(t, int64(3), grouped.queries.Load()-before,
				"round %d: one query per selector (errors, total, buckets) for all %d rollouts", round, len(rollouts))
		}
	}
	// The last round measured something: the canaries' requests were counted.
	last := gc.Measure(ctx, Target{Template: tm, Args: map[string]string{"service": "svc-0"},
		Canary: Side{Vars: map[string]string{"version": "v2"}}, Stable: Side{Vars: map[string]string{"version": "v1"}},
		From: from, At: time.Now().Add(-3 * time.Second)})
	require.Equal(t, rollout.StatusOK, last[0].Canary.Status, last[0].Canary.Message)
	require.Positive(t, last[0].Canary.Counts.Total.Est)
	// Both canary pods of svc-0 are read: each has a code 200 and a code 500 series of the
	// total, and its code 500 series of the errors.
	require.Equal(t, 2*3, last[0].Canary.Counts.Live)
}

func slicesContains(xs []string, x string) bool {
	for _, s := range xs {
		if s == x {
			return true
		}
	}
	return false
}
