package compare

// An integration test of the counts "since the analysis started" against the real Prometheus
// binary: a TSDB with a known history is backfilled with promtool, Prometheus serves it, and
// Comparer.Measure (through the real Prometheus source) must report, at every evaluation
// time, the true increase of the error and request counters and of the histogram buckets per
// side, across a pod restart (counter reset), two pods summed, a scrape gap, an error counter
// born after the start, and histogram buckets that reset too.

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/analyzerd/analyzerd/internal/promproc"
	"github.com/analyzerd/analyzerd/internal/rollout"
)

// The history's clock: seconds from its base. Every stream is scraped on a 15 s grid from 0
// to 1800 (30 minutes); the analysis starts at 307, between two scrapes, so that the results
// do not depend on whether the range selector includes its left edge (Prometheus 2 does,
// Prometheus 3 does not). It is evaluated every 10 s from 367 on, as the daemon would, and
// every second around pod b's crash and pod a's gap, where the scrape phase matters.
const (
	cpScrape            = 15.0
	cpHistoryEnd        = 1800.0
	cpStart             = 307.0
	cpFirstEval         = cpStart + 60
	cpEvalEvery         = 10.0
	cpCrash             = 600.0  // canary pod b dies right after this scrape
	cpRestart           = 632.0  // and comes back, counting from 0,
	cpFirstAfterRestart = 645.0  // first scraped (at 39) here
	cpErrorsBorn        = 700.0  // canary pod b's first 5xx: its error counter appears
	cpGapFrom           = 900.0  // canary pod a is not scraped strictly between cpGapFrom
	cpGapTo             = 1200.0 // and cpGapTo (its counters keep counting)
	cpInstantBoot       = 990.0  // stable pod d restarts instantly after this scrape
	cpBurstBorn         = 1000.0 // service "burst": a new error counter whose first scrape shows a burst
	cpBurst             = 29.5
)

// cpLife is one run of a process: from born its counter counts at the stream's rate, from
// init, until died; it is scraped at died (it dies right after a scrape, so that no event is
// lost to the crash: a real crash loses what happened since the last scrape, which nothing
// can recover). A life born after 0 is fresh: its counter did not exist before, so init
// counts as events at birth (a burst before the first scrape); a life born at 0 existed
// before the history, and init is its past.
type cpLife struct{ born, died, init float64 }

type cpSample struct{ t, v float64 }

type cpStream struct {
	name   string
	labels map[string]string
	rate   float64 // events per second while alive
	lives  []cpLife
	gaps   [][2]float64 // open intervals with no scrape
	points []cpSample
}

func (st *cpStream) scrape() {
	st.points = nil
	for t := 0.0; t <= cpHistoryEnd; t += cpScrape {
		if st.inGap(t) {
			continue
		}
		for _, l := range st.lives { // the first life alive at t: at an instant restart, the old one
			if l.born <= t && t <= l.died {
				st.points = append(st.points, cpSample{t, l.init + st.rate*(t-l.born)})
				break
			}
		}
	}
}

func (st *cpStream) inGap(t float64) bool {
	for _, g := range st.gaps {
		if g[0] < t && t < g[1] {
			return true
		}
	}
	return false
}

// events is the true number of events in [from, to].
func (st *cpStream) events(from, to float64) float64 {
	n := 0.0
	for _, l := range st.lives {
		if lo, hi := max(from, l.born), min(to, l.died); hi > lo {
			n += st.rate * (hi - lo)
		}
		if l.born > 0 && from < l.born && l.born <= to {
			n += l.init
		}
	}
	return n
}

// cpHistory is the backfilled history. Service "checkout": the canary (v2) runs pods a and
// b, the stable side (v1) pods c and d. Service "burst" has a canary only.
func cpHistory() []*cpStream {
	always := []cpLife{{0, math.Inf(1), 0}}
	stream := func(name string, rate float64, lives []cpLife, gaps [][2]float64, labels ...string) *cpStream {
		st := &cpStream{name: name, rate: rate, lives: lives, gaps: gaps, labels: map[string]string{}}
		for i := 0; i < len(labels); i += 2 {
			st.labels[labels[i]] = labels[i+1]
		}
		return st
	}
	from := func(init float64) []cpLife { l := append([]cpLife(nil), always...); l[0].init = init; return l }
	// Pod b dies after the scrape at cpCrash and comes back 32 s later, counting from 0.
	podB := func(init float64) []cpLife {
		return []cpLife{{0, cpCrash, init}, {cpRestart, math.Inf(1), 0}}
	}
	// Pod d restarts instantly: the old process is scraped at cpInstantBoot, then a new one
	// counts from 0 at the same rate.
	podD := func(init float64) []cpLife {
		return []cpLife{{0, cpInstantBoot, init}, {cpInstantBoot, math.Inf(1), 0}}
	}
	gapA := [][2]float64{{cpGapFrom, cpGapTo}}
	const req, bkt = "http_requests_total", "request_duration_seconds_bucket"
	var out []*cpStream
	for _, s := range []*cpStream{
		// Canary pod a: 4 req/s, not scraped for 5 minutes.
		stream(req, 4, from(50000), gapA, "service", "checkout", "version", "v2", "pod", "a", "code", "200"),
		stream(bkt, 2, from(25000), gapA, "service", "checkout", "version", "v2", "pod", "a", "le", "0.1"),
		stream(bkt, 3.5, from(45000), gapA, "service", "checkout", "version", "v2", "pod", "a", "le", "0.5"),
		stream(bkt, 4, from(50000), gapA, "service", "checkout", "version", "v2", "pod", "a", "le", "+Inf"),
		// Canary pod b: 3 req/s, restarts (counter reset); its first errors come after the
		// restart, at 0.25/s: that series appears only then.
		stream(req, 3, podB(80000), nil, "service", "checkout", "version", "v2", "pod", "b", "code", "200"),
		stream(req, 0.25, []cpLife{{cpErrorsBorn, math.Inf(1), 0}}, nil, "service", "checkout", "version", "v2", "pod", "b", "code", "500"),
		stream(bkt, 1, podB(30000), nil, "service", "checkout", "version", "v2", "pod", "b", "le", "0.1"),
		stream(bkt, 2.5, podB(70000), nil, "service", "checkout", "version", "v2", "pod", "b", "le", "0.5"),
		stream(bkt, 3, podB(80000), nil, "service", "checkout", "version", "v2", "pod", "b", "le", "+Inf"),
		// Stable pod c: steady, errors from before the start.
		stream(req, 5, from(123456), nil, "service", "checkout", "version", "v1", "pod", "c", "code", "200"),
		stream(req, 0.125, from(300), nil, "service", "checkout", "version", "v1", "pod", "c", "code", "500"),
		stream(bkt, 4, from(90000), nil, "service", "checkout", "version", "v1", "pod", "c", "le", "0.1"),
		stream(bkt, 5, from(110000), nil, "service", "checkout", "version", "v1", "pod", "c", "le", "0.5"),
		stream(bkt, 5.125, from(123756), nil, "service", "checkout", "version", "v1", "pod", "c", "le", "+Inf"),
		// Stable pod d: steady, restarts instantly.
		stream(req, 2, podD(40000), nil, "service", "checkout", "version", "v1", "pod", "d", "code", "200"),
		stream(bkt, 1.5, podD(30000), nil, "service", "checkout", "version", "v1", "pod", "d", "le", "0.1"),
		stream(bkt, 1.75, podD(36000), nil, "service", "checkout", "version", "v1", "pod", "d", "le", "0.5"),
		stream(bkt, 2, podD(40000), nil, "service", "checkout", "version", "v1", "pod", "d", "le", "+Inf"),
		// Service burst: a new error counter whose first scrape already shows ~30 errors.
		stream(req, 10, from(1000), nil, "service", "burst", "version", "v2", "pod", "e", "code", "200"),
		stream(req, 0.1, []cpLife{{cpBurstBorn, math.Inf(1), cpBurst}}, nil, "service", "burst", "version", "v2", "pod", "e", "code", "500"),
		stream(bkt, 10, from(1000), nil, "service", "burst", "version", "v2", "pod", "e", "le", "+Inf"),
	} {
		s.scrape()
		out = append(out, s)
	}
	return out
}

// cpOpenMetrics renders the streams as OpenMetrics text with explicit timestamps, one metric
// family after the other, each series' samples in time order.
func cpOpenMetrics(streams []*cpStream, base time.Time) string {
	var b strings.Builder
	for _, fam := range []struct{ typ, family, sample string }{
		{"counter", "http_requests", "http_requests_total"},
		{"histogram", "request_duration_seconds", "request_duration_seconds_bucket"},
	} {
		fmt.Fprintf(&b, "# TYPE %s %s\n", fam.family, fam.typ)
		for _, st := range streams {
			if st.name != fam.sample {
				continue
			}
			names := make([]string, 0, len(st.labels))
			for k := range st.labels {
				names = append(names, k)
			}
			sort.Strings(names)
			pairs := make([]string, len(names))
			for i, k := range names {
				pairs[i] = k + "=" + strconv.Quote(st.labels[k])
			}
			series := st.name + "{" + strings.Join(pairs, ",") + "}"
			for _, p := range st.points {
				fmt.Fprintf(&b, "%s %s %d\n", series, strconv.FormatFloat(p.v, 'f', -1, 64), base.Unix()+int64(p.t))
			}
		}
	}
	b.WriteString("# EOF\n")
	return b.String()
}

// cpTools finds prometheus and promtool (Debian's prometheus package ships both; an upstream
// tarball has them side by side). Without them the test is skipped, except in CI, which
// must install them.
func cpTools(t *testing.T) (promBinary, promtool string) {
	t.Helper()
	missing := func(err error) {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must install prometheus and promtool (`apt-get install -y prometheus`): %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
	promBinary, err := promproc.Find()
	if err != nil {
		missing(err)
	}
	if promtool, err = exec.LookPath(filepath.Join(filepath.Dir(promBinary), "promtool")); err == nil {
		return promBinary, promtool
	}
	if promtool, err = exec.LookPath("promtool"); err != nil {
		missing(fmt.Errorf("promtool not found next to %s or in PATH (it comes with `apt-get install -y prometheus`): %w", promBinary, err))
	}
	return promBinary, promtool
}

// TestCountsSinceStartPrometheus: the counts compare reads through the real Prometheus are
// the true increases since the analysis started, across counter resets and scrape gaps.
func TestCountsSinceStartPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real prometheus binary: skipped with -short")
	}
	promBinary, promtool := cpTools(t)
	// Registered first, so it runs last: after Prometheus has stopped.
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	// The history ends over 4 hours ago (older than the head block's span, which a backfill
	// should not overlap) and its samples straddle a 2-hour block boundary (at 750 s), so
	// that the queries read two backfilled blocks.
	base := time.Now().UTC().Truncate(2 * time.Hour).Add(-4*time.Hour - 750*time.Second)
	ts := func(sec float64) time.Time { return base.Add(time.Duration(sec * float64(time.Second))) }
	streams := cpHistory()

	dir := t.TempDir()
	input := filepath.Join(dir, "history.om")
	require.NoError(t, os.WriteFile(input, []byte(cpOpenMetrics(streams, base)), 0o600))
	dataDir := filepath.Join(dir, "data") // promproc's TSDB directory for Options.Dir
	out, err := exec.CommandContext(ctx, promtool, "tsdb", "create-blocks-from", "openmetrics", input, dataDir).CombinedOutput()
	require.NoError(t, err, "promtool: %s", out)
	t.Logf("promtool:\n%s", out)

	// No scrape targets: the TSDB holds the backfill only. Time retention counts back from the
	// newest block, but make sure it keeps blocks of hours ago.
	prom, err := promproc.Start(ctx, promproc.Options{Binary: promBinary, Dir: dir,
		Args: []string{"--storage.tsdb.retention.time=3650d"}})
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := prom.Close(); err != nil {
			t.Errorf("stopping prometheus: %v", err)
		}
	})
	source, err := NewPrometheus(PrometheusOptions{URL: prom.URL(), Timeout: 30 * time.Second})
	require.NoError(t, err)
	// Ready means the TSDB is open; wait until every backfilled series answers all the same.
	require.Eventually(t, func() bool {
		r := source.Query(ctx, []Request{{Expr: `count(count_over_time({__name__=~"http_requests_total|request_duration_seconds_bucket"}[31m]))`, Time: ts(cpHistoryEnd)}})[0]
		return r.Err == nil && len(r.Series) == 1 && r.Series[0].Value == float64(len(streams))
	}, time.Minute, 50*time.Millisecond, "prometheus does not serve the %d backfilled series", len(streams))

	tm, err := CompileTemplate(rollout.Template{
		Name: "counts", Args: []string{"service"}, Variables: []string{"version"},
		Checks: []rollout.Check{
			{Name: "error-rate", Kind: rollout.KindRatio,
				Errors: `http_requests_total{service={{ arg "service" }}, version={{ var "version" }}, code=~"5.."}`,
				Total:  `http_requests_total{service={{ arg "service" }}, version={{ var "version" }}}`},
			{Name: "latency", Kind: rollout.KindHistogram, Quantile: 0.9,
				Buckets: `request_duration_seconds_bucket{service={{ arg "service" }}, version={{ var "version" }}}`},
		},
	})
	require.NoError(t, err)
	cmp := New(source)
	measure := func(service string, e float64) []rollout.Measurement {
		ms := cmp.Measure(ctx, Target{Template: tm, Args: map[string]string{"service": service},
			Canary: Side{Vars: map[string]string{"version": "v2"}}, Stable: Side{Vars: map[string]string{"version": "v1"}},
			From: ts(cpStart), At: ts(e)})
		require.Len(t, ms, 2)
		return ms
	}
	secs := func(x time.Time) float64 { return x.Sub(base).Seconds() }

	// The quantities checked, per side: which counts they read and which streams they sum.
	type quantity struct {
		side, name string
		streams    []*cpStream
		read       func(m []rollout.Measurement) rollout.Bounds
	}
	pick := func(service, version string, keep func(*cpStream) bool) []*cpStream {
		var out []*cpStream
		for _, st := range streams {
			if st.labels["service"] == service && st.labels["version"] == version && keep(st) {
				out = append(out, st)
			}
		}
		return out
	}
	reading := func(m []rollout.Measurement, i int, side string) rollout.Reading {
		if side == "canary" {
			return m[i].Canary
		}
		return m[i].Stable
	}
	var quantities []quantity
	for _, side := range []struct{ name, version string }{{"canary", "v2"}, {"stable", "v1"}} {
		quantities = append(quantities,
			quantity{side.name, "errors", pick("checkout", side.version, func(st *cpStream) bool {
				return st.name == "http_requests_total" && strings.HasPrefix(st.labels["code"], "5")
			}), func(m []rollout.Measurement) rollout.Bounds { return reading(m, 0, side.name).Counts.Events }},
			quantity{side.name, "requests", pick("checkout", side.version, func(st *cpStream) bool {
				return st.name == "http_requests_total"
			}), func(m []rollout.Measurement) rollout.Bounds { return reading(m, 0, side.name).Counts.Total }})
		for i, le := range []string{"0.1", "0.5", "+Inf"} {
			quantities = append(quantities, quantity{side.name, "bucket le=" + le, pick("checkout", side.version, func(st *cpStream) bool {
				return st.name == "request_duration_seconds_bucket" && st.labels["le"] == le
			}), func(m []rollout.Measurement) rollout.Bounds { return reading(m, 1, side.name).Counts.Buckets[i].Count }})
		}
	}
	truth := func(q quantity, through float64) float64 {
		n := 0.0
		for _, st := range q.streams {
			n += st.events(cpStart, through)
		}
		return n
	}
	// inGapA: canary pod a missed its scrapes long enough to be taken for gone, though it
	// kept counting: its count holds at its last sample (a known limit: see the report).
	inGapA := func(e float64) bool { return e > cpGapFrom+2*cpScrape+2 && e < cpGapTo }

	// Evaluate every 10 s, as the daemon would, from a minute after the start to the end, and
	// every second around pod b's crash and pod a's gap, where the scrape phase matters.
	var evals []float64
	for e := cpFirstEval; e <= cpHistoryEnd; e += cpEvalEvery {
		evals = append(evals, e)
	}
	for _, span := range [][2]float64{{cpCrash - 5, cpFirstAfterRestart + 15}, {cpGapFrom - 5, cpGapFrom + 35}, {cpGapTo - 5, cpGapTo + 20}} {
		for e := span[0]; e <= span[1]; e++ {
			evals = append(evals, e)
		}
	}
	sort.Float64s(evals)
	evals = slices.Compact(evals)
	prev := make([]float64, len(quantities))
	var prevThrough float64
	for _, e := range evals {
		m := measure("checkout", e)
		for _, r := range []rollout.Reading{m[0].Canary, m[0].Stable, m[1].Canary, m[1].Stable} {
			require.Equal(t, rollout.StatusOK, r.Status, "at %gs: %s", e, r.Message)
		}
		through := secs(m[0].Through)
		require.Equal(t, m[0].Through, m[1].Through, "at %gs: both checks see the same scrapes", e)
		// Every stream is scraped on the 15 s grid: Through is the newest grid point every
		// live series has reached, whatever e is; a series that misses scrapes holds it
		// back for two intervals and the grace, then is taken for gone.
		wantThrough := math.Floor(e/cpScrape) * cpScrape
		for _, last := range []float64{cpCrash, cpGapFrom} {
			if e > last && e <= last+2*cpScrape+2 {
				wantThrough = last
			}
		}
		require.Equal(t, wantThrough, through, "at %gs", e)
		require.GreaterOrEqual(t, through, prevThrough)
		prevThrough = through
		require.Equal(t, 15*time.Second, m[0].ScrapeInterval)
		// The next scrape is due 15 s and the grace after Through, but is read no earlier
		// than the feeds refresh: at least a second after the evaluation.
		if want := m[0].Through.Add(17 * time.Second); !m[0].NextSample.Equal(want) {
			require.True(t, m[0].NextSample.After(want) && !m[0].NextSample.Before(ts(e).Add(minRefreshAge)),
				"at %gs: next sample %s, want %s or the feeds' refresh", e, m[0].NextSample, want)
		}
		for i, q := range quantities {
			b, want := q.read(m), truth(q, through)
			// Every series is scraped at Through, and at From's neighbours on a constant rate:
			// the estimate is the truth, with no extrapolation, across pod b's restart, pod
			// d's instant restart, the error series born late and after pod a's gap.
			if q.side == "canary" && inGapA(e) && q.name != "errors" {
				require.Less(t, b.Est, want, "%s %s at %gs", q.side, q.name, e)
			} else {
				require.InDelta(t, want, b.Est, 1e-6*max(1, want), "%s %s at %gs", q.side, q.name, e)
				require.LessOrEqual(t, b.Low, want+1e-6, "%s %s at %gs", q.side, q.name, e)
				require.GreaterOrEqual(t, b.High, want-1e-6, "%s %s at %gs", q.side, q.name, e)
			}
			// From (307) lies between two scrapes: the bounds span one scrape interval of
			// traffic at most, plus the first value of a series born late.
			require.LessOrEqual(t, b.High-b.Low, cpScrape*20+1e-6, "%s %s at %gs", q.side, q.name, e)
			require.GreaterOrEqual(t, b.Est, prev[i]-1e-9, "%s %s at %gs: the count went down", q.side, q.name, e)
			prev[i] = b.Est
		}
		require.InDelta(t, m[0].Canary.Events/m[0].Canary.Total, m[0].Canary.Value, 1e-12)
	}

	t.Run("no new sample, no change", func(t *testing.T) {
		a, b := measure("checkout", 1501), measure("checkout", 1514.5)
		require.Equal(t, a, b)
	})

	// A new series whose first scrape already shows a burst is counted from 0: the burst is
	// in the estimate, and in High; Low leaves it out (it could have existed unscraped).
	t.Run("a new series' first value is counted", func(t *testing.T) {
		var errs *cpStream
		for _, st := range streams {
			if st.labels["service"] == "burst" && st.labels["code"] == "500" {
				errs = st
			}
		}
		require.NotNil(t, errs)
		for _, e := range []float64{cpBurstBorn + 3*cpScrape + 2, cpHistoryEnd - 3} {
			m := measure("burst", e)
			got := m[0].Canary
			require.Equal(t, rollout.StatusOK, got.Status, got.Message)
			require.Equal(t, rollout.StatusNoData, m[0].Stable.Status, "burst has no stable side")
			through := secs(m[0].Through)
			want := errs.events(cpStart, through)
			require.InDelta(t, cpBurst+errs.rate*(through-cpBurstBorn), want, 1e-9)
			require.InDelta(t, want, got.Counts.Events.Est, 1e-9, "at %gs", e)
			require.InDelta(t, want, got.Counts.Events.High, 1e-9, "at %gs", e)
			// At its bound the first value may predate From; a calm edge takes the estimate.
			first := errs.points[slices.IndexFunc(errs.points, func(p cpSample) bool { return p.t > cpBurstBorn })].v
			low := got.Counts.Events.Low
			require.True(t, math.Abs(low-(want-first)) < 1e-9 || math.Abs(low-want) < 1e-9, "at %gs: low %g", e, low)
		}
	})
}
