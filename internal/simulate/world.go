package simulate

import (
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/analyzerd/analyzerd/internal/compare"
)

// The world is one run's service as Prometheus sees it: each side (canary, stable) is a set
// of pods, each pod a scrape target with its own interval and offset, exposing the
// conventional counters (http_requests_total by code, http_request_duration_seconds_bucket
// by le), whose raw samples are kept as Prometheus stores them. Time is a Duration since the
// analysis started (negative before it); samples carry epoch + that time.

// Sides.
const (
	canarySide = 0
	stableSide = 1
)

// Series of a pod, in the order of pod.series: the two request counters by code, then the
// latency buckets in the order of histogramBounds.
const (
	seriesOK     = 0
	seriesFailed = 1
	seriesBucket = 2
)

// histogramBounds are the bucket bounds of the latency histogram: prometheus.DefBuckets (as
// internal/workload exposes them), then +Inf.
var histogramBounds = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, math.Inf(1)}

// The workload's latency model (internal/workload): log-normal, median 50 ms, sigma 0.2.
const (
	DefaultLatencyMedian = 0.050
	DefaultLatencySpread = 0.2
)

// lookback mirrors compare's: a counter check's range reaches this far before its span.
const lookback = 5 * time.Minute

// window is a stretch of time [From, To).
type window struct{ From, To time.Duration }

func (w window) holds(t time.Duration) bool { return t >= w.From && t < w.To }

// pod is one scrape target.
type pod struct {
	side     int
	interval time.Duration
	offset   time.Duration // scrapes at offset + k*interval
	born     time.Duration // serves and is scraped from here (its counters start at initial)
	died     time.Duration // and until here (math.MaxInt64: never)
	down     []window      // not serving and not scraped (a crash); its counters restart at 0 after
	restarts []time.Duration
	bursts   []window // errors at the scenario's burst rate
	r        *rand.Rand

	// Generated state: the counters as of gen.
	gen      time.Duration
	ok, fail float64
	own      []float64 // observations per bucket (not cumulative)
	series   []compare.Series
}

// world is one run's targets and traffic. It is generated lazily up to the time asked,
// under the weights in force: a weight set at t applies to traffic after t.
type world struct {
	sc      *Scenario
	pods    []*pod
	weights []weightChange
	shares  map[float64][]float64
	healthy float64 // both sides' error rate outside incidents and regressions
	// incident is when the shared incident holds, down when the canary's pods are down.
	incident, down window
}

type weightChange struct {
	at     time.Duration
	weight int
}

// at is the sample time of t.
func at(t time.Duration) time.Time { return epoch.Add(t) }

// worldStart is how far before the analysis the world's samples begin: the baseline window
// and compare's lookback before it.
func worldStart(baselineWindow time.Duration) time.Duration {
	return -(baselineWindow + lookback + time.Minute)
}

// newWorld lays out one run's pods from its random stream: intervals, offsets, churn,
// crashes, bursts. Every policy's world of a run is laid out the same.
func newWorld(sc *Scenario, opts *Options, seed, scenario, run uint64) *world {
	layout := rand.New(rand.NewPCG(seed^scenario^0x5eed, run))
	w := &world{sc: sc, shares: map[float64][]float64{}, healthy: sc.errorRate()}
	start := worldStart(opts.Template.BaselineWindow)
	w.weights = []weightChange{{math.MinInt64, 0}}
	intervals := sc.Intervals
	if len(intervals) == 0 {
		intervals = []time.Duration{opts.Scrape}
	}
	n := 0
	newPod := func(side int, born time.Duration) *pod {
		iv := intervals[layout.IntN(len(intervals))]
		p := &pod{side: side, interval: iv, offset: time.Duration(layout.Int64N(int64(iv))).Truncate(time.Millisecond),
			born: born, died: math.MaxInt64, gen: born,
			r:   rand.New(rand.NewPCG(seed^scenario^0x9b0d, run<<8|uint64(n))),
			own: make([]float64, len(histogramBounds))}
		name := "stable"
		if side == canarySide {
			name = "canary"
		}
		labels := func(k, v string) map[string]string {
			return map[string]string{"pod": name + "-" + strconv.Itoa(n), k: v}
		}
		p.series = append(p.series, compare.Series{Labels: labels("code", "200")}, compare.Series{Labels: labels("code", "500")})
		for _, le := range histogramBounds {
			p.series = append(p.series, compare.Series{Labels: labels("le", strconv.FormatFloat(le, 'g', -1, 64))})
		}
		n++
		w.pods = append(w.pods, p)
		return p
	}
	for side, count := range []int{sc.canaryPods(), sc.stablePods()} {
		for range count {
			born := -30 * time.Second // the canary is deployed just before it takes traffic
			if side == stableSide {
				born = start
			}
			p := newPod(side, born)
			if side == stableSide {
				// Stable pods have served for hours: their counters do not start at 0.
				uptime := time.Duration(1+layout.IntN(48)) * time.Hour
				p.addMean(w, uptime.Seconds()*sc.totalRPS()/float64(count))
			}
		}
	}
	horizon := sc.Horizon
	if sc.Churn {
		// On each side, one pod restarts (its counters reset) and one is replaced by a new
		// pod (its series end; the new pod's begin at 0), at random times within the first
		// 5 minutes.
		for _, side := range []int{canarySide, stableSide} {
			var mine []*pod
			for _, p := range w.pods {
				if p.side == side {
					mine = append(mine, p)
				}
			}
			p := mine[layout.IntN(len(mine))]
			p.restarts = append(p.restarts, time.Duration(layout.Int64N(int64(5*time.Minute))))
			old := mine[layout.IntN(len(mine))]
			when := time.Duration(layout.Int64N(int64(5 * time.Minute)))
			if when <= old.born {
				when = old.born + time.Second
			}
			old.died = when
			newPod(side, when)
		}
	}
	if in := sc.Incident; in != nil {
		w.incident.From = in.After + time.Duration(layout.Int64N(int64(in.Spread)+1))
		w.incident.To = w.incident.From + in.For
	}
	if d := sc.Down; d != nil {
		w.down.From = d.After + time.Duration(layout.Int64N(int64(d.Spread)+1))
		w.down.To = w.down.From + d.For
		for _, p := range w.pods {
			if p.side == canarySide {
				p.down = append(p.down, w.down)
			}
		}
	}
	if b := sc.Bursts; b != nil {
		for _, p := range w.pods {
			for t := start + expDuration(layout, b.Every); t < horizon; t += b.For + expDuration(layout, b.Every) {
				p.bursts = append(p.bursts, window{t, t + b.For})
			}
		}
	}
	return w
}

func expDuration(r *rand.Rand, mean time.Duration) time.Duration {
	return time.Duration(r.ExpFloat64() * float64(mean))
}

// setWeight makes the canary's share of the traffic weight from t on.
func (w *world) setWeight(t time.Duration, weight int) {
	w.weights = append(w.weights, weightChange{t, weight})
}

func (w *world) weightAt(t time.Duration) int {
	i := len(w.weights) - 1
	for i > 0 && w.weights[i].at > t {
		i--
	}
	return w.weights[i].weight
}

// serving reports whether p serves (and is scraped) at t.
func (p *pod) serving(t time.Duration) bool {
	if t < p.born || t >= p.died {
		return false
	}
	for _, d := range p.down {
		if d.holds(t) {
			return false
		}
	}
	return true
}

// regime is what one pod's traffic is over a stretch of time.
type regime struct {
	rps, errorRate, latency float64 // latency: the median's factor
}

func (w *world) regime(p *pod, t time.Duration) regime {
	sc := w.sc
	var side float64
	weight := float64(w.weightAt(t))
	switch {
	case sc.CanaryRPS > 0 && p.side == canarySide:
		side = sc.CanaryRPS
		if t < 0 {
			side = 0
		}
	case sc.CanaryRPS > 0:
		side = sc.StableRPS
		if t < 0 {
			side += sc.CanaryRPS
		}
	case p.side == canarySide:
		side = sc.TotalRPS * weight / 100
	default:
		side = sc.TotalRPS * (100 - weight) / 100
	}
	serving := 0
	for _, q := range w.pods {
		if q.side == p.side && q.serving(t) {
			serving++
		}
	}
	g := regime{errorRate: w.healthy, latency: 1}
	if serving > 0 && p.serving(t) {
		g.rps = side / float64(serving)
	}
	if p.side == canarySide && t >= sc.RegressionAfter {
		if sc.CanaryErrorRate > 0 {
			g.errorRate = sc.CanaryErrorRate
		}
		if sc.CanaryLatency > 0 {
			g.latency = sc.CanaryLatency
		}
	}
	for _, b := range p.bursts {
		if b.holds(t) {
			g.errorRate = math.Max(g.errorRate, sc.Bursts.ErrorRate)
		}
	}
	if in := sc.Incident; in != nil && w.incident.holds(t) {
		g.errorRate = math.Max(g.errorRate, in.ErrorRate)
		if in.Latency > 0 {
			g.latency *= in.Latency
		}
	}
	return g
}

// edges are the instants in (from, to) at which p's regime may change.
func (w *world) edges(p *pod, from, to time.Duration, buf []time.Duration) []time.Duration {
	buf = buf[:0]
	add := func(t time.Duration) {
		if t > from && t < to {
			buf = append(buf, t)
		}
	}
	add(0)
	add(w.sc.RegressionAfter)
	for _, c := range w.weights[1:] {
		add(c.at)
	}
	for _, q := range w.pods {
		if q.side == p.side {
			add(q.born)
			add(q.died)
			for _, d := range q.down {
				add(d.From)
				add(d.To)
			}
		}
	}
	for _, b := range p.bursts {
		add(b.From)
		add(b.To)
	}
	for _, r := range p.restarts {
		add(r)
	}
	if w.sc.Incident != nil {
		add(w.incident.From)
		add(w.incident.To)
	}
	slices.Sort(buf)
	return buf
}

// advance generates every pod's samples up to t.
func (w *world) advance(t time.Duration) {
	var buf []time.Duration
	for _, p := range w.pods {
		for {
			next := p.nextScrape(p.gen)
			if next > t || next >= p.died {
				break
			}
			buf = w.serve(p, p.gen, next, buf)
			p.gen = next
			if p.serving(next) {
				p.scrape(next)
			}
		}
	}
}

// nextScrape is p's first scrape time after t.
func (p *pod) nextScrape(t time.Duration) time.Duration {
	k := (t - p.offset) / p.interval
	s := p.offset + k*p.interval
	for s <= t {
		s += p.interval
	}
	return s
}

// serve adds p's traffic of (from, to], regime by regime; a restart or a crash zeroes its
// counters.
func (w *world) serve(p *pod, from, to time.Duration, buf []time.Duration) []time.Duration {
	buf = w.edges(p, from, to, buf)
	for i := 0; i <= len(buf); i++ {
		end := to
		if i < len(buf) {
			end = buf[i]
		}
		if end > from {
			g := w.regime(p, from)
			if g.rps > 0 {
				p.add(w, g, (end - from).Seconds())
			}
		}
		if i < len(buf) && p.resetAt(end) {
			p.ok, p.fail = 0, 0
			clear(p.own)
		}
		from = end
	}
	if p.resetAt(to) {
		p.ok, p.fail = 0, 0
		clear(p.own)
	}
	return buf
}

// resetAt reports whether p's counters restart at t: a restart, or the end of a crash.
func (p *pod) resetAt(t time.Duration) bool {
	for _, r := range p.restarts {
		if r == t {
			return true
		}
	}
	for _, d := range p.down {
		if d.To == t {
			return true
		}
	}
	return false
}

// add draws d seconds of traffic under g.
func (p *pod) add(w *world, g regime, d float64) {
	n := poisson(p.r, g.rps*d)
	if n == 0 {
		return
	}
	e := binomial(p.r, n, g.errorRate)
	p.fail += e
	p.ok += n - e
	shares := w.sharesOf(g.latency)
	// The requests spread over the buckets as a multinomial, drawn as successive binomials.
	left, rest := n, 1.0
	for i, s := range shares {
		var k float64
		if i == len(shares)-1 || rest <= 0 {
			k = left
		} else {
			k = binomial(p.r, left, math.Min(1, s/rest))
		}
		p.own[i] += k
		left -= k
		rest -= s
		if left <= 0 {
			break
		}
	}
}

// addMean adds n requests at their expected shares (a long-running pod's history).
func (p *pod) addMean(w *world, n float64) {
	n = math.Round(n)
	e := math.Round(n * w.healthy)
	p.ok, p.fail = n-e, e
	for i, s := range w.sharesOf(1) {
		p.own[i] += math.Round(n * s)
	}
}

// scrape appends the counters' values at t to p's series.
func (p *pod) scrape(t time.Duration) {
	ts := at(t)
	p.series[seriesOK].Samples = append(p.series[seriesOK].Samples, compare.SampleAt(ts, p.ok))
	p.series[seriesFailed].Samples = append(p.series[seriesFailed].Samples, compare.SampleAt(ts, p.fail))
	cum := 0.0
	for i, c := range p.own {
		cum += c
		p.series[seriesBucket+i].Samples = append(p.series[seriesBucket+i].Samples, compare.SampleAt(ts, cum))
	}
}

// sharesOf are the probabilities of a latency falling in each bucket's own range, the
// median scaled by factor.
func (w *world) sharesOf(factor float64) []float64 {
	if s, ok := w.shares[factor]; ok {
		return s
	}
	median := DefaultLatencyMedian * factor
	out := make([]float64, len(histogramBounds))
	prev := 0.0
	for i, ub := range histogramBounds {
		cdf := 1.0
		if !math.IsInf(ub, 1) {
			cdf = 0.5 * math.Erfc(-(math.Log(ub)-math.Log(median))/(DefaultLatencySpread*math.Sqrt2))
		}
		out[i] = cdf - prev
		prev = cdf
	}
	w.shares[factor] = out
	return out
}

// window returns the range vector's samples of s at t: those in (t-r, t].
func windowOf(s compare.Series, t time.Time, r time.Duration) compare.Series {
	from := t.Add(-r)
	i, _ := slices.BinarySearchFunc(s.Samples, from, func(x compare.Sample, from time.Time) int {
		if x.Time().After(from) {
			return 1
		}
		return -1
	})
	j, _ := slices.BinarySearchFunc(s.Samples, t, func(x compare.Sample, t time.Time) int {
		if x.Time().After(t) {
			return 1
		}
		return -1
	})
	return compare.Series{Labels: s.Labels, Samples: s.Samples[i:j]}
}

// selectSeries answers selector[r] at t for one side's series of the given kinds, as
// Prometheus does: one series per label set with samples in the range, raw values, oldest
// first.
func (w *world) selectSeries(side int, t time.Duration, r time.Duration, kinds ...int) compare.Response {
	var out compare.Response
	ts := at(t)
	for _, p := range w.pods {
		if p.side != side {
			continue
		}
		for _, k := range kinds {
			if s := windowOf(p.series[k], ts, r); len(s.Samples) > 0 {
				out.Series = append(out.Series, s)
			}
		}
	}
	return out
}

var (
	errorSeries  = []int{seriesFailed}
	totalSeries  = []int{seriesOK, seriesFailed}
	bucketSeries = func() []int {
		out := make([]int, len(histogramBounds))
		for i := range out {
			out[i] = seriesBucket + i
		}
		return out
	}()
)
