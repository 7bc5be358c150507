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

// valueAt is the value of the latest sample at or before t (0 before the first): what an
// instant query sees.
func (st *cpStream) valueAt(t float64) float64 {
	v := 0.0
	for _, p := range st.points {
		if p.t > t {
			break
		}
		v = p.v
	}
	return v
}

func (st *cpStream) window(s, e float64) []cpSample {
	var in []cpSample
	for _, p := range st.points {
		if s <= p.t && p.t <= e {
			in = append(in, p)
		}
	}
	return in
}

// cpExpect is what a sum of increase() over the streams must answer for the window [s, e].
type cpExpect struct {
	truth float64 // events in the window, from the model
	// tol bounds |Prometheus - truth|. Per series, Prometheus returns raw * (S+ds'+de')/S,
	// where raw is the increase between the first and the last sample in the window (resets
	// handled: a drop counts the new value as the increase since the restart), S the time
	// between those samples, and ds', de' how far it extrapolates towards the window's
	// start and end: the actual distance when it is under 1.1 average sample intervals,
	// else half an interval, and towards the start never past the point where the counter
	// would reach zero at the average rate. With raw/S <= rate, the extrapolated events lie
	// in [0, min(rate*ds, first value)] at the start and [0, rate*de] at the end, where
	// ds and de are the distances from the window's edges to the first and last samples;
	// the true events there lie in [0, events(s, first)] and [0, events(last, e)]. So
	// Prometheus is off by at most the larger of each pair: at most about a scrape
	// interval's worth of each series' traffic at each edge, however long the window.
	// A series with fewer than two samples in the window is dropped by increase(): its
	// true events all count in tol.
	tol float64
	// naive is last-minus-first of the sum: sum(counter @ e) - sum(counter @ s), what a
	// query that ignores resets would answer.
	naive float64
	// stale: some series has missed its latest scrape at e (a gap or a dead pod), so its
	// extrapolation to the window's end may have fallen back to half an interval.
	stale bool
	// dip bounds how much the count may have dropped since an earlier evaluation: the only
	// drop is a stale series' extrapolation to the window's end falling back from under 1.1
	// average intervals to half an interval once its last sample is that old, i.e. by under
	// rate * 0.6 * interval; dip sums that over the stale series.
	dip float64
	// rates is the traffic of the series that count, per second: tol is at most two scrape
	// intervals of it while no series is stale.
	rates float64
}

func cpExpectation(streams []*cpStream, s, e float64) cpExpect {
	var x cpExpect
	for _, st := range streams {
		truth := st.events(s, e)
		x.truth += truth
		x.naive += st.valueAt(e) - st.valueAt(s)
		in := st.window(s, e)
		if len(in) < 2 {
			x.tol += truth // at most the rate times the time since its birth: under 2 intervals
			x.rates += st.rate
			continue
		}
		first, last := in[0], in[len(in)-1]
		x.tol += max(st.events(s, first.t), min(st.rate*(first.t-s), first.v)) +
			max(st.events(last.t, e), st.rate*(e-last.t))
		interval := (last.t - first.t) / float64(len(in)-1)
		if e-last.t >= cpScrape {
			x.stale = true
			x.dip += st.rate * 0.6 * interval
		}
		x.rates += st.rate
	}
	return x
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
				Errors: `sum(increase(http_requests_total{service={{ arg "service" }}, version={{ var "version" }}, code=~"5.."}[{{ window }}]))`,
				Total:  `sum(increase(http_requests_total{service={{ arg "service" }}, version={{ var "version" }}}[{{ window }}]))`},
			{Name: "latency", Kind: rollout.KindHistogram, Quantile: 0.9,
				Buckets: `sum by (le) (increase(request_duration_seconds_bucket{service={{ arg "service" }}, version={{ var "version" }}}[{{ window }}]))`},
		},
	})
	require.NoError(t, err)
	cmp := New(source)
	measure := func(service string, e float64) []rollout.Measurement {
		side := func(version string) Side {
			return Side{Vars: map[string]string{"version": version}, Window: 10 * time.Second,
				CountsWindow: time.Duration(e-cpStart) * time.Second, At: ts(e)}
		}
		ms := cmp.Measure(ctx, Target{Template: tm, Args: map[string]string{"service": service},
			Canary: side("v2"), Stable: side("v1")})
		require.Len(t, ms, 2)
		return ms
	}

	// The quantities checked, per side: what each reading field holds and which streams it sums.
	type quantity struct {
		side, name string
		streams    []*cpStream
		read       func(m []rollout.Measurement) float64
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
			}), func(m []rollout.Measurement) float64 { return reading(m, 0, side.name).Events }},
			quantity{side.name, "requests", pick("checkout", side.version, func(st *cpStream) bool {
				return st.name == "http_requests_total"
			}), func(m []rollout.Measurement) float64 { return reading(m, 0, side.name).Total }})
		for _, le := range []string{"0.1", "0.5", "+Inf"} {
			ub, err := strconv.ParseFloat(le, 64)
			require.NoError(t, err)
			quantities = append(quantities, quantity{side.name, "bucket le=" + le, pick("checkout", side.version, func(st *cpStream) bool {
				return st.name == "request_duration_seconds_bucket" && st.labels["le"] == le
			}), func(m []rollout.Measurement) float64 {
				for _, b := range reading(m, 1, side.name).Buckets {
					if b.UpperBound == ub {
						return b.Count
					}
				}
				return math.NaN()
			}})
		}
	}

	// Evaluate every 10 s, as the daemon would, from a minute after the start to the end.
	type point struct {
		e      float64
		got    float64
		expect cpExpect
	}
	series := make([][]point, len(quantities))
	var worst struct {
		share float64 // largest |got - truth| / tol
		where string
	}
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
	for _, e := range evals {
		m := measure("checkout", e)
		for _, r := range []rollout.Reading{m[0].Canary, m[0].Stable, m[1].Canary, m[1].Stable} {
			require.Equal(t, rollout.StatusOK, r.Status, "at %gs: %s", e, r.Message)
		}
		for i, q := range quantities {
			x := cpExpectation(q.streams, cpStart, e)
			series[i] = append(series[i], point{e, q.read(m), x})
		}
		require.InDelta(t, m[0].Canary.Events/m[0].Canary.Total, m[0].Canary.Value, 1e-12)
	}
	require.Len(t, series[0], len(evals))

	t.Run("counts are the true increases since the start", func(t *testing.T) {
		for i, q := range quantities {
			for _, p := range series[i] {
				tol := p.expect.tol
				if q.side == "stable" {
					// The stable pods count at constant rates and are scraped every 15 s, across
					// pod d's instant restart too: the edges are under 1.1 intervals from a
					// sample, Prometheus extrapolates them at the true rate, and the count is
					// exact.
					tol = 1e-9 * max(1, p.expect.truth)
				}
				require.InDelta(t, p.expect.truth, p.got, tol, "%s %s at %gs (naive %g)", q.side, q.name, p.e, p.expect.naive)
				if p.expect.tol > 0 {
					if share := math.Abs(p.got-p.expect.truth) / p.expect.tol; share > worst.share {
						worst.share, worst.where = share, fmt.Sprintf("%s %s at %gs: got %.2f, truth %.2f, tol %.2f", q.side, q.name, p.e, p.got, p.expect.truth, p.expect.tol)
					}
				}
				// While every series is scraped on time, the bound is tight: under two scrape
				// intervals of the traffic, however long the window (under 3% of the counts
				// after 20 minutes).
				if !p.expect.stale {
					require.LessOrEqual(t, p.expect.tol, 2*cpScrape*p.expect.rates+1e-9, "%s %s at %gs", q.side, q.name, p.e)
				}
			}
		}
		t.Logf("largest error relative to its bound: %.2f (%s)", worst.share, worst.where)
		for i, q := range quantities {
			var fresh, stale float64 // largest |got - truth| with every series on time, and with one stale
			for _, p := range series[i] {
				d := math.Abs(p.got - p.expect.truth)
				if p.expect.stale {
					stale = max(stale, d)
				} else {
					fresh = max(fresh, d)
				}
			}
			last := series[i][len(series[i])-1]
			t.Logf("%s %s: |got - truth| <= %.3g on time, <= %.3g with a stale series; at %gs got %.2f, truth %.2f, naive %.2f",
				q.side, q.name, fresh, stale, last.e, last.got, last.expect.truth, last.expect.naive)
		}
	})

	t.Run("a counter reset does not drop the count", func(t *testing.T) {
		for i, q := range quantities {
			if q.side != "canary" || q.name == "errors" {
				continue
			}
			var before, after point // the last evaluation before pod b's crash, the first with its new sample
			for _, p := range series[i] {
				if p.e < cpCrash {
					before = p
				}
				if p.e > cpFirstAfterRestart && after.e == 0 {
					after = p
				}
			}
			require.Greater(t, after.got, before.got, "%s: the count dropped across pod b's restart", q.name)
			for _, p := range series[i] {
				if p.e <= cpFirstAfterRestart {
					continue // until then, the latest sample of pod b is from before the crash
				}
				// Last-minus-first of the sum goes negative after the reset: a count that
				// ignored resets would be tens of thousands off, far outside the bound.
				require.Less(t, p.expect.naive, 0.0, "%s at %gs", q.name, p.e)
				require.Greater(t, math.Abs(p.got-p.expect.naive), 10*p.expect.tol+10000, "%s at %gs", q.name, p.e)
			}
		}
		// Stable pod d's instant restart is exact (checked above); last-minus-first is off by
		// its whole count before the restart.
		for i, q := range quantities {
			if q.side == "stable" && q.name == "requests" {
				last := series[i][len(series[i])-1]
				require.Greater(t, last.got-last.expect.naive, 40000.0)
			}
		}
	})

	t.Run("a scrape gap keeps the increase across it", func(t *testing.T) {
		for i, q := range quantities {
			if q.side != "canary" || q.name == "errors" {
				continue
			}
			var gapStreams []*cpStream
			for _, st := range q.streams {
				if st.labels["pod"] == "a" {
					gapStreams = append(gapStreams, st)
				}
			}
			require.Len(t, gapStreams, 1)
			gap := gapStreams[0]
			for _, p := range series[i] {
				if p.e < cpGapTo+cpScrape {
					continue
				}
				// A count that lost the gap would miss pod a's events in it (1200 requests):
				// the count is within its bound of the truth, which is under half of that.
				lost := gap.events(cpGapFrom, cpGapTo)
				require.Greater(t, lost, 500.0)
				require.Less(t, p.expect.tol, lost/2, "%s at %gs", q.name, p.e)
				require.Greater(t, p.got, p.expect.truth-lost/2, "%s at %gs: the gap's increase is lost", q.name, p.e)
			}
		}
	})

	t.Run("successive counts do not decrease", func(t *testing.T) {
		var biggest struct {
			dip, share float64
			where      string
		}
		for i, q := range quantities {
			for k := 1; k < len(series[i]); k++ {
				prev, cur := series[i][k-1], series[i][k]
				dip := prev.got - cur.got
				tiny := 1e-9 * max(1, prev.got)
				if (!prev.expect.stale && !cur.expect.stale) || q.side == "stable" {
					// Every series scraped on time: the count never goes down.
					require.LessOrEqual(t, dip, tiny, "%s %s from %gs to %gs", q.side, q.name, prev.e, cur.e)
					continue
				}
				// A series that misses scrapes (pod b down, pod a's gap) is extrapolated to
				// the window's end at its average rate for up to 1.1 average intervals, then
				// for half an interval only: the count dips once, by under 0.6 intervals of
				// that series' traffic.
				require.LessOrEqual(t, dip, cur.expect.dip+tiny, "%s %s from %gs to %gs", q.side, q.name, prev.e, cur.e)
				if dip > biggest.dip {
					biggest.dip, biggest.share = dip, dip/prev.got
					biggest.where = fmt.Sprintf("%s %s from %gs to %gs: %.2f -> %.2f (bound %.2f)", q.side, q.name, prev.e, cur.e, prev.got, cur.got, cur.expect.dip)
				}
			}
		}
		t.Logf("largest dip: %.2f (%.3f%% of the count): %s", biggest.dip, 100*biggest.share, biggest.where)
	})

	// A known limit of increase(), not of compare: a series that appears after the start with
	// a value already above zero (its first errors came in a burst between two scrapes) has
	// no earlier sample to subtract from, and Prometheus cannot tell it from a series that
	// existed before the window: the burst is not counted. (Pod b's error counter above was
	// born with 1.25 errors, under its average increase per scrape: increase() extrapolates
	// back to the zero point and counts it.) Client libraries avoid this by initialising
	// error series at 0; Prometheus 2.50+ can also use created timestamps.
	t.Run("a new series' first value is not counted", func(t *testing.T) {
		var errs *cpStream
		for _, st := range streams {
			if st.labels["service"] == "burst" && st.labels["code"] == "500" {
				errs = st
			}
		}
		require.NotNil(t, errs)
		for _, e := range []float64{cpBurstBorn + 3*cpScrape + 2, cpHistoryEnd - 3} {
			got := measure("burst", e)[0].Canary
			require.Equal(t, rollout.StatusOK, got.Status, got.Message)
			in := errs.window(cpStart, e)
			raw := in[len(in)-1].v - in[0].v
			truth := errs.events(cpStart, e)
			require.InDelta(t, cpBurst+errs.rate*(e-cpBurstBorn), truth, 1e-9)
			// Prometheus: the increase from the first sample, plus at most half an interval
			// of extrapolation at the start and under 1.1 intervals at the end.
			require.GreaterOrEqual(t, got.Events, raw, "at %gs", e)
			require.LessOrEqual(t, got.Events, raw+errs.rate*(cpScrape/2+(e-in[len(in)-1].t))+1e-9, "at %gs", e)
			require.Greater(t, truth-got.Events, cpBurst-1, "at %gs: the burst was counted after all", e)
			t.Logf("at %gs: burst errors counted %.2f, truth %.2f", e, got.Events, truth)
		}
	})
}
