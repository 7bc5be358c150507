package simulate

import (
	"math"
	"math/rand/v2"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// Traffic is one side's synthetic service: Poisson requests, a share of them errors, and
// log-normal latencies, as the e2e tests' workload serves them.
type Traffic struct {
	// RPS is the mean number of requests per second.
	RPS float64
	// ErrorRate is the share of requests that fail.
	ErrorRate float64
	// LatencyMedian (seconds) and LatencySpread (the sigma of its logarithm) shape the
	// log-normal latency distribution.
	LatencyMedian float64
	LatencySpread float64
}

// Latency defaults: those of the e2e workload (internal/workload).
const (
	DefaultLatencyMedian = 0.050
	DefaultLatencySpread = 0.2
)

// histogramBounds are the bucket bounds of the latency histogram (prometheus.DefBuckets),
// then +Inf.
var histogramBounds = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, math.Inf(1)}

// counter is one side's counters, as a scrape reads them.
type counter struct {
	requests, errors float64
	buckets          []float64 // cumulative, one per histogramBounds
}

func newCounter() counter { return counter{buckets: make([]float64, len(histogramBounds))} }

func (c counter) clone() counter {
	c.buckets = append([]float64(nil), c.buckets...)
	return c
}

// shares are the probabilities of a latency falling in each bucket's own range.
func (t Traffic) shares() []float64 {
	out := make([]float64, len(histogramBounds))
	prev := 0.0
	for i, ub := range histogramBounds {
		cdf := 1.0
		if !math.IsInf(ub, 1) {
			cdf = 0.5 * math.Erfc(-(math.Log(ub)-math.Log(t.LatencyMedian))/(t.LatencySpread*math.Sqrt2))
		}
		out[i] = cdf - prev
		prev = cdf
	}
	return out
}

// serve adds the traffic of d seconds to c.
func (t Traffic) serve(r *rand.Rand, c *counter, shares []float64, d float64) {
	n := poisson(r, t.RPS*d)
	c.requests += n
	c.errors += binomial(r, n, t.ErrorRate)
	// The requests spread over the buckets as a multinomial, drawn as successive binomials.
	left, rest := n, 1.0
	cum := 0.0
	for i, p := range shares {
		var k float64
		if i == len(shares)-1 || rest <= 0 {
			k = left
		} else {
			k = binomial(r, left, math.Min(1, p/rest))
		}
		left -= k
		rest -= p
		cum += k
		c.buckets[i] += cum
	}
}

// since is the counts of c gathered after base, as the readings compare makes.
func (c counter) since(base counter) (ratio, histogram rollout.Reading) {
	requests, errors := c.requests-base.requests, c.errors-base.errors
	if requests <= 0 {
		ratio = rollout.Reading{Status: rollout.StatusNoData, Message: "no requests in the window"}
		histogram = rollout.Reading{Status: rollout.StatusNoData, Message: "no observations in the window"}
		return ratio, histogram
	}
	ratio = rollout.Reading{Status: rollout.StatusOK, Value: errors / requests, Samples: int64(requests), Events: errors, Total: requests}
	buckets := make([]rollout.Bucket, len(histogramBounds))
	for i, ub := range histogramBounds {
		buckets[i] = rollout.Bucket{UpperBound: ub, Count: c.buckets[i] - base.buckets[i]}
	}
	histogram = rollout.Reading{Status: rollout.StatusOK, Samples: int64(requests), Buckets: buckets}
	return ratio, histogram
}

// quantile is a histogram reading with its value set to the q-quantile, as compare reads it.
func quantile(r rollout.Reading, q float64) rollout.Reading {
	if !r.OK() {
		return r
	}
	v, _, err := rollout.Quantile(q, r.Buckets)
	if err != nil || math.IsNaN(v) {
		return rollout.Reading{Status: rollout.StatusNoData, Message: "no quantile"}
	}
	r.Value = v
	return r
}

// poisson draws from Poisson(mean): by multiplication for small means, by Hörmann's
// transformed rejection (PTRS) otherwise.
func poisson(r *rand.Rand, mean float64) float64 {
	switch {
	case mean <= 0:
		return 0
	case mean < 10:
		l, k, p := math.Exp(-mean), 0.0, 1.0
		for {
			p *= r.Float64()
			if p <= l {
				return k
			}
			k++
		}
	}
	slam := math.Sqrt(mean)
	loglam := math.Log(mean)
	b := 0.931 + 2.53*slam
	a := -0.059 + 0.02483*b
	invalpha := 1.1239 + 1.1328/(b-3.4)
	vr := 0.9277 - 3.6224/(b-2)
	for {
		u := r.Float64() - 0.5
		v := r.Float64()
		us := 0.5 - math.Abs(u)
		k := math.Floor((2*a/us+b)*u + mean + 0.43)
		if us >= 0.07 && v <= vr {
			return k
		}
		if k < 0 || (us < 0.013 && v > us) {
			continue
		}
		lg, _ := math.Lgamma(k + 1)
		if math.Log(v)+math.Log(invalpha)-math.Log(a/(us*us)+b) <= -mean+k*loglam-lg {
			return k
		}
	}
}

// binomial draws from Binomial(n, p): exactly for small n, else by its Poisson or normal
// approximation (the simulation's counts are large, its error rates small).
func binomial(r *rand.Rand, n, p float64) float64 {
	switch {
	case n <= 0 || p <= 0:
		return 0
	case p >= 1:
		return n
	case n < 50:
		k := 0.0
		for i := 0.0; i < n; i++ {
			if r.Float64() < p {
				k++
			}
		}
		return k
	case p < 0.05:
		return math.Min(n, poisson(r, n*p))
	case p > 0.95:
		return n - math.Min(n, poisson(r, n*(1-p)))
	}
	k := math.Round(n*p + math.Sqrt(n*p*(1-p))*r.NormFloat64())
	return math.Max(0, math.Min(n, k))
}

// scraped is one side's counters as its scrapes read them: a scrape at phase + k*interval.
type scraped struct {
	t        Traffic
	outage   *Outage
	r        *rand.Rand
	shares   []float64
	phase    float64
	interval float64
	c        counter
	last     float64
	scrapes  []counter
}

func newScraped(t Traffic, o *Outage, r *rand.Rand, phase, interval float64) *scraped {
	return &scraped{t: t, outage: o, r: r, shares: t.shares(), phase: phase, interval: interval, c: newCounter()}
}

// at is what the last scrape at or before t read (nothing before the first).
func (s *scraped) at(t float64) counter {
	k := int(math.Floor((t - s.phase) / s.interval))
	if k < 0 {
		return newCounter()
	}
	for len(s.scrapes) <= k {
		next := s.phase + float64(len(s.scrapes))*s.interval
		s.serve(s.last, next)
		s.last = next
		s.scrapes = append(s.scrapes, s.c.clone())
	}
	return s.scrapes[k]
}

// serve adds the traffic of (from, to], the outage's share of it at the outage's error rate.
func (s *scraped) serve(from, to float64) {
	if s.outage == nil {
		s.t.serve(s.r, &s.c, s.shares, to-from)
		return
	}
	start, end := s.outage.At.Seconds(), (s.outage.At + s.outage.For).Seconds()
	down := s.t
	down.ErrorRate = s.outage.ErrorRate
	for _, piece := range []struct {
		from, to float64
		t        Traffic
	}{
		{from, math.Min(to, start), s.t},
		{math.Max(from, start), math.Min(to, end), down},
		{math.Max(from, end), to, s.t},
	} {
		if piece.to > piece.from {
			piece.t.serve(s.r, &s.c, s.shares, piece.to-piece.from)
		}
	}
}
