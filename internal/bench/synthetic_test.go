package bench

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/compare"
	"github.com/analyzerd/analyzerd/internal/promproc"
)

// syntheticAt is a synthetic source over 5 services in 3 targets, scraped every second since
// start, at now: its clock is fixed. It answers the daemon's own client (compare.Prometheus).
func syntheticAt(t *testing.T, start, now time.Time) (*synthetic, *exporter, *compare.Prometheus) {
	t.Helper()
	exp := newExporter(5, 2, 20, 0.005, start.Add(-time.Hour))
	var targets []promproc.Target
	for i := range exp.shards {
		targets = append(targets, promproc.Target{Job: "bench", Address: fmt.Sprintf("127.0.0.1:%d", 9100+i)})
	}
	s := newSynthetic(exp, targets, time.Second)
	s.now = func() time.Time { return now }
	s.started = start.UnixMilli()
	require.NoError(t, s.start())
	t.Cleanup(func() { _ = s.Close() })
	src, err := compare.NewPrometheus(compare.PrometheusOptions{URL: s.URL()})
	require.NoError(t, err)
	return s, exp, src
}

func ask(t *testing.T, src compare.Source, expr string, at time.Time) []compare.Series {
	t.Helper()
	resp := src.Query(context.Background(), []compare.Request{{Expr: expr, Time: at}})[0]
	require.NoError(t, resp.Err, expr)
	return resp.Series
}

// exportedIndex is the index in exported of a series' labels.
func exportedIndex(t *testing.T, labels map[string]string) int {
	t.Helper()
	for i, e := range exported {
		if e.name == labels["__name__"] && (e.label == "" || labels[e.label] == e.value) {
			return i
		}
	}
	t.Fatalf("no exported series has labels %v", labels)
	return -1
}

func TestSyntheticAnswersAsAPrometheusThatScrapedTheExporter(t *testing.T) {
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	now := start.Add(30*time.Second + 400*time.Millisecond)
	s, exp, src := syntheticAt(t, start, now)

	// A side's own query: its two codes' series, ten scrapes in (now-10s, now], at its
	// target's offset, with what the exporter exposed then.
	got := ask(t, src, `http_requests_total{service="svc-1", version="v2"}[10s]`, now)
	require.Len(t, got, 2)
	for _, sr := range got {
		require.Equal(t, "http_requests_total", sr.Labels["__name__"])
		require.Equal(t, "svc-1", sr.Labels["service"])
		require.Equal(t, "v2", sr.Labels["version"])
		require.Equal(t, "127.0.0.1:9100", sr.Labels["instance"], "svc-1 is in the first target")
		require.Equal(t, "bench", sr.Labels["job"])
		require.Contains(t, []string{"200", "500"}, sr.Labels["code"])
		require.Len(t, sr.Labels, 6)
		require.Len(t, sr.Samples, 10, "one scrape a second")
		i := exportedIndex(t, sr.Labels)
		for k, x := range sr.Samples {
			require.Greater(t, x.T, now.Add(-10*time.Second).UnixMilli())
			require.LessOrEqual(t, x.T, now.UnixMilli())
			require.Equal(t, s.targets[0].phase, x.T%1000, "at the target's offset")
			if k > 0 {
				require.Equal(t, int64(1000), x.T-sr.Samples[k-1].T)
			}
			require.Equal(t, exp.value(i, time.UnixMilli(x.T)), x.V)
		}
	}

	// The grouped refresh of the buckets: every bucket of both services and versions, labelled
	// le as the exporter exposes them.
	got = ask(t, src, `http_request_duration_seconds_bucket{service=~"svc-0|svc-4|svc-99", version=~"v1|v2"}[3s]`, now)
	require.Len(t, got, 2*2*(len(latencyBuckets)+1))
	les := map[string]bool{}
	for _, sr := range got {
		les[sr.Labels["le"]] = true
		require.Len(t, sr.Samples, 3)
		want := map[string]string{"svc-0": "127.0.0.1:9100", "svc-4": "127.0.0.1:9102"}[sr.Labels["service"]]
		require.Equal(t, want, sr.Labels["instance"])
	}
	require.True(t, les["+Inf"] && les["0.005"] && les["1"] && les["10"], "le as exposed: %v", les)

	// The errors: code=~"5.." over every service (a regex matcher, not a set).
	got = ask(t, src, `http_requests_total{service=~"svc-[0-9]+", version!="v1", code=~"5.."}[1m]`, now)
	require.Len(t, got, 5, "every service's canary, code 500 only")
	for _, sr := range got {
		require.Equal(t, "500", sr.Labels["code"])
		want := 30 // a target at an offset past 0.4 s into the second has had 30 scrapes since the start
		if s.targets[s.services[s.byName[sr.Labels["service"]]].shard].phase <= 400 {
			want = 31
		}
		require.Len(t, sr.Samples, want, "scrapes only since the source started, 30.4 s ago: the first at or after it")
		require.GreaterOrEqual(t, sr.Samples[0].T, start.UnixMilli())
	}
	got = ask(t, src, `http_request_duration_seconds_count{service!~"svc-0|svc-1", job="bench", instance!="127.0.0.1:9101"}[2s]`, now)
	require.Len(t, got, 2, "svc-4's two versions: svc-2 and svc-3 are of the excluded target")

	// A scrape that has not happened yet has no sample; an instant before the first scrape, none.
	got = ask(t, src, `http_requests_total{service="svc-1"}[2m]`, now.Add(time.Minute))
	require.Len(t, got, 4)
	require.LessOrEqual(t, got[0].Samples[len(got[0].Samples)-1].T, now.UnixMilli())
	require.Greater(t, got[0].Samples[len(got[0].Samples)-1].T, now.Add(-time.Second).UnixMilli())
	require.Empty(t, ask(t, src, `http_requests_total{service="svc-1"}[5s]`, now.Add(time.Minute)), "no scrape yet in the range")
	require.Empty(t, ask(t, src, `http_requests_total{service="svc-1"}[5s]`, start.Add(-time.Second)))
	require.Empty(t, ask(t, src, `http_requests_total{service="svc-5"}[5s]`, now), "no such service")
	require.Empty(t, ask(t, src, `http_requests_total{service="svc-1", pod="p"}[5s]`, now), "no such label")
	require.Len(t, ask(t, src, `http_requests_total{service="svc-1", pod=""}[5s]`, now), 4, "a missing label is empty")

	require.NoError(t, src.Ping(context.Background()), "the daemon's readiness probe, vector(1)")

	// Anything else is refused as Prometheus refuses a bad query: the daemon reads it so.
	resp := src.Query(context.Background(), []compare.Request{{Expr: `sum(rate(http_requests_total[5m]))`, Time: now}})[0]
	require.ErrorIs(t, resp.Err, compare.ErrBadQuery)
	require.Contains(t, resp.Err.Error(), "synthetic source")
	r, err := http.Get(s.URL() + "/api/v1/query?query=" + "x%5B5m%5D%20offset%201m")
	require.NoError(t, err)
	_ = r.Body.Close()
	require.Equal(t, http.StatusBadRequest, r.StatusCode)
	r, err = http.Get(s.URL() + "/api/v1/query_range?query=x")
	require.NoError(t, err)
	_ = r.Body.Close()
	require.Equal(t, http.StatusNotFound, r.StatusCode)
	require.Equal(t, int64(3), s.refused.Load())
}

func TestSyntheticTimestampsAreWrittenAsPrometheusWritesThem(t *testing.T) {
	for ms, want := range map[int64]string{1733000000000: "1733000000", 1733000000123: "1733000000.123",
		1733000000050: "1733000000.050", 1733000000007: "1733000000.007", 1733000000100: "1733000000.100"} {
		require.Equal(t, want, string(appendTimestamp(nil, ms)))
	}
}

// TestSyntheticAnswersLikeTheRealPrometheus scrapes one exporter with a real Prometheus and
// models it with the synthetic source, and asks both the daemon's queries at the same instant:
// the same series (labels), the same number of samples, and values that are the exporter's at
// each sample's time. Only the scrapes' phase differs (Prometheus's offsets are its own).
func TestSyntheticAnswersLikeTheRealPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Prometheus for about 15 seconds")
	}
	binary, err := promproc.Find()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must install prometheus: %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	exp := newExporter(5, 2, 20, 0.005, time.Now().Add(-time.Hour))
	var targets []promproc.Target
	for i := range exp.shards {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		srv := &http.Server{Handler: exp.handler(i), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		targets = append(targets, promproc.Target{Job: "bench", Address: ln.Addr().String()})
	}
	syn := newSynthetic(exp, targets, time.Second)
	require.NoError(t, syn.start())
	t.Cleanup(func() { _ = syn.Close() })
	prom, err := promproc.Start(ctx, promproc.Options{Binary: binary, Dir: t.TempDir(), Targets: targets, ScrapeInterval: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = prom.Close() })
	require.NoError(t, prom.WaitTargetsUp(ctx))
	real, err := compare.NewPrometheus(compare.PrometheusOptions{URL: prom.URL()})
	require.NoError(t, err)
	model, err := compare.NewPrometheus(compare.PrometheusOptions{URL: syn.URL()})
	require.NoError(t, err)

	const rng = 5 * time.Second
	probe := `http_requests_total{version="v1", code="200"}[5s]`
	// At an instant a second ago, Prometheus has every scrape of the range in once the probe,
	// a series of each service (of every target), has five samples each.
	complete := func(series []compare.Series) bool {
		for _, s := range series {
			if len(s.Samples) != 5 {
				return false
			}
		}
		return len(series) == 5
	}
	var at time.Time
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		at = time.Now().Add(-time.Second)
		if at.Sub(time.UnixMilli(syn.started)) > rng+time.Second && complete(ask(t, real, probe, at)) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("Prometheus did not scrape the exporter for 5 s")
		case <-tick.C:
		}
	}
	// Not an instant at which a scrape of either falls on the range's open end: Prometheus
	// 2.x's ranges are closed at both ends, 3.x's (and the synthetic source's) left-open.
	phases := map[int64]bool{}
	for _, tg := range syn.targets {
		phases[tg.phase] = true
	}
	for _, s := range ask(t, real, `http_requests_total[5s]`, at) {
		for _, x := range s.Samples {
			phases[x.T%1000] = true
		}
	}
	for phases[at.UnixMilli()%1000] {
		at = at.Add(-time.Millisecond)
	}

	key := func(l map[string]string) string {
		keys := slices.Sorted(maps.Keys(l))
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "%s=%q,", k, l[k])
		}
		return b.String()
	}
	queries := []string{
		`http_requests_total{service="svc-1", version="v2", code=~"5.."}[5s]`,
		`http_requests_total{service="svc-1", version="v2"}[5s]`,
		`http_request_duration_seconds_bucket{service="svc-4", version="v1"}[5s]`,
		`http_requests_total{service=~"svc-0|svc-2|svc-4", version=~"v1|v2"}[5s]`,
		`http_request_duration_seconds_bucket{service=~"svc-0|svc-1|svc-2|svc-3|svc-4", version=~"v1|v2"}[5s]`,
		`http_request_duration_seconds_count[5s]`,
	}
	for _, q := range queries {
		fromReal, fromModel := ask(t, real, q, at), ask(t, model, q, at)
		require.NotEmpty(t, fromReal, q)
		byKey := map[string]compare.Series{}
		for _, s := range fromReal {
			byKey[key(s.Labels)] = s
		}
		var realKeys, modelKeys []string
		for _, s := range fromModel {
			modelKeys = append(modelKeys, key(s.Labels))
		}
		for k := range byKey {
			realKeys = append(realKeys, k)
		}
		sort.Strings(realKeys)
		sort.Strings(modelKeys)
		require.Equal(t, realKeys, modelKeys, "the same series for %s", q)
		for _, m := range fromModel {
			r := byKey[key(m.Labels)]
			require.Len(t, m.Samples, len(r.Samples), "as many samples of %v for %s", m.Labels, q)
			i := exportedIndex(t, m.Labels)
			for _, x := range m.Samples {
				require.Equal(t, exp.value(i, time.UnixMilli(x.T)), x.V, "the exporter's value at the sample's time")
			}
			for _, x := range r.Samples {
				// Prometheus's sample is what the exporter answered a moment after the scrape's
				// time (its timestamp, aligned to the interval within a few ms).
				ts := time.UnixMilli(x.T)
				require.GreaterOrEqual(t, x.V, exp.value(i, ts.Add(-50*time.Millisecond)), "%v at %d", m.Labels, x.T)
				require.LessOrEqual(t, x.V, exp.value(i, ts.Add(500*time.Millisecond)), "%v at %d", m.Labels, x.T)
			}
		}
	}
}
