package compare

import (
	"context"
	"net"
	"net/http"
	"sync"
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

// groupedFixture starts real workloads (four services, stable and canary, the first canary
// on two pods, two scrape jobs at their own intervals) under a real Prometheus, and returns
// it as a Source, with a template of counter checks and the rollouts to measure: the four
// services and rollouts whose values are regex syntax or query text.
func groupedFixture(ctx context.Context, t *testing.T) (source Source, tm *Template, rollouts, hostile []string, began time.Time) {
	t.Helper()
	promBinary, _ := cpTools(t)
	began = time.Now()

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
	source, err = NewPrometheus(PrometheusOptions{URL: prom.URL(), Timeout: 30 * time.Second, Concurrency: 8})
	require.NoError(t, err)

	tm, err = CompileTemplate(rollout.Template{
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
	hostile = []string{"svc-.", "svc-[0-9]", "svc-0|svc-1", `svc-0"} or vector(1) #`, ".*"}
	rollouts = append(append([]string(nil), services...), hostile...)
	return source, tm, rollouts, hostile, began
}

// TestGroupedQueriesMeasureWhatPerRolloutQueriesMeasure measures every rollout of
// groupedFixture at each round twice: through the feeds (one grouped query per selector for
// all rollouts) and by each rollout's own queries over its whole step. The measurements are
// the same; after the first round the feeds send one query per selector whatever the number
// of rollouts; and rollouts whose values are regex syntax or query text read nothing, without
// changing what the others read.
func TestGroupedQueriesMeasureWhatPerRolloutQueriesMeasure(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	source, tm, rollouts, hostile, began := groupedFixture(ctx, t)
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

// gatedSource holds every query until open is closed, counting them.
type gatedSource struct {
	Source
	open    chan struct{}
	queries atomic.Int64
}

func (g *gatedSource) Query(ctx context.Context, reqs []Request) []Response {
	g.queries.Add(int64(len(reqs)))
	select {
	case <-g.open:
	case <-ctx.Done():
	}
	return g.Source.Query(ctx, reqs)
}

// waitingToLoad reports whether each of c's feeds holds want tuples, every one of them
// loading or waiting for a load.
func waitingToLoad(c *Comparer, want int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.feeds) == 0 {
		return false
	}
	for _, f := range c.feeds {
		f.mu.Lock()
		n := 0
		for _, tp := range f.tuples {
			if tp.loading != nil || !tp.want.IsZero() {
				n++
			}
		}
		f.mu.Unlock()
		if n != want {
			return false
		}
	}
	return true
}

// TestFirstReadsAtOnceShareTheirLoads is a restart: every rollout of groupedFixture is
// measured for the first time at once. The feeds load their sides with a few grouped queries
// (at most maxLoads+1 per selector here, where one per side is 2 per rollout), and every
// measurement is what the rollout's own queries measure, the hostile rollouts' included.
func TestFirstReadsAtOnceShareTheirLoads(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	source, tm, rollouts, hostile, began := groupedFixture(ctx, t)
	gated := &gatedSource{Source: source, open: make(chan struct{})}
	gc, pc := New(gated), NewPerRollout(source)
	var at time.Time
	target := func(svc string) Target {
		return Target{Template: tm, Args: map[string]string{"service": svc},
			Canary: Side{Vars: map[string]string{"version": "v2"}}, Stable: Side{Vars: map[string]string{"version": "v1"}},
			From: began.Add(-time.Second), At: at}
	}
	// Measured where there is something to count: every service's requests on both sides.
	require.Eventually(t, func() bool {
		at = time.Now().Add(-3 * time.Second).Truncate(time.Millisecond)
		for _, svc := range rollouts[:len(rollouts)-len(hostile)] {
			m := pc.Measure(ctx, target(svc))
			if m[0].Canary.Status != rollout.StatusOK || m[0].Stable.Status != rollout.StatusOK {
				return false
			}
		}
		return true
	}, time.Minute, 500*time.Millisecond)
	got := make([][]rollout.Measurement, len(rollouts))
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for i, svc := range rollouts {
			wg.Go(func() { got[i] = gc.Measure(ctx, target(svc)) })
		}
		wg.Wait()
	}()
	// Every side of every rollout is loading or waiting for a load (two sides each: the
	// errors, total and buckets selectors are three feeds) before any query is answered.
	require.Eventually(t, func() bool { return waitingToLoad(gc, 2*len(rollouts)) }, time.Minute, 10*time.Millisecond)
	close(gated.open)
	<-done

	require.LessOrEqual(t, gated.queries.Load(), int64(3*(maxLoads+1)),
		"%d sides read for the first time at once, by a few grouped queries", 2*len(rollouts))
	for i, svc := range rollouts {
		require.Equal(t, pc.Measure(ctx, target(svc)), got[i], "rollout %q", svc)
		if !slicesContains(hostile, svc) {
			require.Equal(t, rollout.StatusOK, got[i][0].Canary.Status, "rollout %q: %s", svc, got[i][0].Canary.Message)
		}
	}
}
