package compare

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// a0 is the scenarios' clock origin, on a minute.
var a0 = time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)

func sec(s float64) time.Time { return a0.Add(time.Duration(s * float64(time.Second))) }

// proc is one pod's counter series in a scenario: its true events and how it is scraped.
type proc struct {
	labels   map[string]string
	rate     float64      // events per second while alive
	born     float64      // the counter appears here (before the scenario: it existed before)
	init     float64      // its value at born (a burst before its first scrape when born late)
	bursts   [][2]float64 // at, events
	restarts []float64    // the pod restarts right after its scrape at these instants: from 0
	offset   float64      // scraped at offset + k*every
	every    float64
	until    float64 // last scrape; the pod and its events end there (0: never)
}

func (p proc) end() float64 {
	if p.until == 0 {
		return math.Inf(1)
	}
	return p.until
}

// total is every event up to t, across restarts.
func (p proc) total(t float64) float64 {
	if t < p.born {
		return 0
	}
	n := p.init + p.rate*(min(t, p.end())-p.born)
	for _, b := range p.bursts {
		if b[0] <= t && b[0] <= p.end() {
			n += b[1]
		}
	}
	return n
}

// value is what the counter exposes at t.
func (p proc) value(t float64) float64 {
	v := p.total(t)
	for _, r := range p.restarts {
		if r < t {
			v = p.total(t) - p.total(r)
		}
	}
	return v
}

// truth is the true number of events in (from, through].
func (p proc) truth(from, through float64) float64 {
	return max(0, p.total(through)-p.total(from))
}

// series is what Prometheus answers for the range read at `at`: the samples in
// (at - rng, at].
func (p proc) series(at, rng float64) Series {
	s := Series{Labels: p.labels}
	k := math.Ceil((max(p.born, at-rng) - p.offset) / p.every)
	for t := p.offset + k*p.every; t <= min(at, p.end()); t += p.every {
		if t <= at-rng || t < p.born {
			continue
		}
		s.Samples = append(s.Samples, SampleAt(sec(t), p.value(t)))
	}
	return s
}

func answer(ps []proc, at, rng float64) Response {
	r := Response{Series: []Series{}}
	for _, p := range ps {
		if s := p.series(at, rng); len(s.Samples) > 0 {
			r.Series = append(r.Series, s)
		}
	}
	return r
}

// pod is a pod's pair of series: requests (code 200) and errors (code 500), scraped together.
func pod(name string, offset, every, okRate, errRate float64) (ok, errs proc) {
	ok = proc{labels: map[string]string{"pod": name, "code": "200"}, rate: okRate, born: -3600, init: 50000, offset: offset, every: every}
	errs = proc{labels: map[string]string{"pod": name, "code": "500"}, rate: errRate, born: -3600, init: 700, offset: offset, every: every}
	return ok, errs
}

var ratioCheck = rollout.Check{Name: "error-rate", Kind: rollout.KindRatio, Errors: "e", Total: "t"}

// side is one side's series of a ratio check.
type side struct{ ok, errs []proc }

func (s side) responses(at, rng float64) []Response {
	return []Response{answer(s.errs, at, rng), answer(append(append([]proc(nil), s.ok...), s.errs...), at, rng)}
}

func (s side) truth(from, through float64) (events, total float64) {
	for _, p := range s.errs {
		events += p.truth(from, through)
	}
	total = events
	for _, p := range s.ok {
		total += p.truth(from, through)
	}
	return events, total
}

func measureRatio(canary, stable side, from, at float64) rollout.Measurement {
	spans := Spans{From: sec(from), At: sec(at), bounded: true}
	rng := spans.rangeFor().Seconds()
	return MeasureCounters(ratioCheck, canary.responses(at, rng), stable.responses(at, rng), spans)
}

func seconds(t time.Time) float64 { return t.Sub(a0).Seconds() }

func requireBrackets(t *testing.T, b rollout.Bounds, truth float64, what string) {
	t.Helper()
	const eps = 1e-9
	require.LessOrEqual(t, b.Low, b.Est+eps, "%s: %+v", what, b)
	require.LessOrEqual(t, b.Est, b.High+eps, "%s: %+v", what, b)
	require.LessOrEqual(t, b.Low, truth+eps, "%s: truth %g outside %+v", what, truth, b)
	require.GreaterOrEqual(t, b.High, truth-eps, "%s: truth %g outside %+v", what, truth, b)
}

// TestAlignRatio evaluates scenarios every second and checks, at each evaluation, that both
// sides count over the same (From, Through], that the bounds bracket the true counts, that
// the estimates never decrease, and the Through expected at chosen instants.
func TestAlignRatio(t *testing.T) {
	a, aErr := pod("a", 3, 15, 4, 0.5)  // canary, scraped at :03, :18, :33, :48
	b, bErr := pod("b", 8, 15, 3, 0.25) // canary, at :08, :23, ...
	c, cErr := pod("c", 11, 15, 5, 0.2) // stable, at :11, :26, :41, :56
	d, dErr := pod("d", 0, 15, 2, 0.1)  // stable, at :00, :15, ...
	restarted := b
	restarted.restarts = []float64{63}
	restartedErr := bErr
	restartedErr.restarts = []float64{63}
	bornErr := proc{labels: bErr.labels, rate: 0.25, born: 70, init: 3, offset: 8, every: 15} // first 5xx at 70, 3 at once
	gone, goneErr := b, bErr
	gone.until, goneErr.until = 68, 68 // pod b deleted after its scrape at 68
	slow, slowErr := pod("e", 5, 30, 1, 0.05)

	for _, tc := range []struct {
		name           string
		canary, stable side
		from           float64
		evals          [2]float64          // every second in this span
		through        map[float64]float64 // at -> expected Through
		exact          []float64           // evaluations where every series is scraped at both edges
		interval       time.Duration
	}{
		{"two sides at different offsets", side{[]proc{a}, []proc{aErr}}, side{[]proc{c}, []proc{cErr}}, 7, [2]float64{20, 200},
			map[float64]float64{27: 18, 34: 26, 155: 146, 162: 153}, nil, 15 * time.Second},
		{"exact when scraped at the edges", side{[]proc{d}, []proc{dErr}}, side{[]proc{d}, []proc{dErr}}, 30, [2]float64{31, 200},
			map[float64]float64{120: 120, 134: 120}, []float64{120, 134, 150}, 15 * time.Second},
		{"several pods summed", side{[]proc{a, b}, []proc{aErr, bErr}}, side{[]proc{c, d}, []proc{cErr, dErr}}, 7, [2]float64{20, 200},
			map[float64]float64{100: 86, 110: 98}, nil, 15 * time.Second},
		{"a counter reset mid-window", side{[]proc{a, restarted}, []proc{aErr, restartedErr}}, side{[]proc{c}, []proc{cErr}}, 7, [2]float64{20, 200},
			map[float64]float64{80: 68, 85: 71}, nil, 15 * time.Second},
		{"a series born after From", side{[]proc{a, b}, []proc{aErr, bornErr}}, side{[]proc{c}, []proc{cErr}}, 7, [2]float64{20, 200},
			map[float64]float64{79: 68, 90: 78}, nil, 15 * time.Second},
		{"a pod that vanished", side{[]proc{a, gone}, []proc{aErr, goneErr}}, side{[]proc{c}, []proc{cErr}}, 7, [2]float64{20, 200},
			// b's last sample (68) holds Through back for 2 intervals + 2 s, then it is gone.
			map[float64]float64{90: 68, 100: 68, 101: 93, 150: 138}, nil, 15 * time.Second},
		{"scrape intervals differ", side{[]proc{a}, []proc{aErr}}, side{[]proc{slow}, []proc{slowErr}}, 7, [2]float64{20, 200},
			map[float64]float64{70: 63, 94: 65}, nil, 15 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var prev *rollout.Measurement
			for at := tc.evals[0]; at <= tc.evals[1]; at++ {
				m := measureRatio(tc.canary, tc.stable, tc.from, at)
				require.False(t, m.Through.IsZero(), "at %g", at)
				through := seconds(m.Through)
				require.LessOrEqual(t, through, at)
				if want, ok := tc.through[at]; ok {
					require.Equal(t, want, through, "Through at %g", at)
				}
				require.Equal(t, tc.interval, m.ScrapeInterval, "at %g", at)
				for _, s := range []struct {
					name string
					side side
					r    rollout.Reading
				}{{"canary", tc.canary, m.Canary}, {"stable", tc.stable, m.Stable}} {
					require.NotNil(t, s.r.Counts, "%s at %g: %s", s.name, at, s.r.Message)
					require.Equal(t, sec(tc.from), s.r.Counts.From)
					require.Equal(t, m.Through, s.r.Counts.Through, "both sides count over the same span")
					events, total := s.side.truth(tc.from, through)
					requireBrackets(t, s.r.Counts.Events, events, s.name+" errors")
					requireBrackets(t, s.r.Counts.Total, total, s.name+" requests")
					if through > tc.from {
						require.Equal(t, rollout.StatusOK, s.r.Status, s.r.Message)
						require.InDelta(t, s.r.Counts.Events.Est/s.r.Counts.Total.Est, s.r.Value, 1e-12)
					}
				}
				for _, e := range tc.exact {
					if e == at {
						ce, ct := tc.canary.truth(tc.from, through)
						requireBounds(t, rollout.Exact(ce), m.Canary.Counts.Events, "exact at %g", at)
						requireBounds(t, rollout.Exact(ct), m.Canary.Counts.Total, "exact at %g", at)
					}
				}
				if prev != nil {
					require.False(t, m.Through.Before(prev.Through), "Through went back at %g", at)
					for _, pair := range [][2]rollout.Reading{{prev.Canary, m.Canary}, {prev.Stable, m.Stable}} {
						if pair[0].Counts == nil {
							continue
						}
						require.GreaterOrEqual(t, pair[1].Counts.Total.Est, pair[0].Counts.Total.Est-1e-9, "requests decreased at %g", at)
						require.GreaterOrEqual(t, pair[1].Counts.Events.Est, pair[0].Counts.Events.Est-1e-9, "errors decreased at %g", at)
					}
				}
				prev = &m
			}
		})
	}
}

// TestAlignCounterReset: the restarted pod's drop is not negative, and the count is what a
// pod that never restarted would have counted.
func TestAlignCounterReset(t *testing.T) {
	a, aErr := pod("a", 3, 15, 4, 0.5)
	restarted, restartedErr := a, aErr
	restarted.restarts, restartedErr.restarts = []float64{63}, []float64{63}
	for _, at := range []float64{64, 79, 80, 120, 200} {
		plain := measureRatio(side{[]proc{a}, []proc{aErr}}, side{[]proc{a}, []proc{aErr}}, 7, at)
		reset := measureRatio(side{[]proc{restarted}, []proc{restartedErr}}, side{[]proc{a}, []proc{aErr}}, 7, at)
		require.Equal(t, plain.Canary, reset.Canary, "at %g", at)
		require.Equal(t, plain.Through, reset.Through)
	}
	// From and Through on scrapes: exact, and not the raw drop (50000+).
	m := measureRatio(side{[]proc{restarted}, []proc{restartedErr}}, side{[]proc{a}, []proc{aErr}}, 3, 80)
	require.Equal(t, sec(78), m.Through)
	requireBounds(t, rollout.Exact(4.5*75), m.Canary.Counts.Total)
	requireBounds(t, rollout.Exact(0.5*75), m.Canary.Counts.Events)
}

// TestAlignBornLate: a series born after From counts from 0; High includes its first value,
// Low does not (it could have existed before, unscraped).
func TestAlignBornLate(t *testing.T) {
	b, _ := pod("b", 8, 15, 3, 0)
	errs := proc{labels: map[string]string{"pod": "b", "code": "500"}, rate: 0.25, born: 70, init: 3, offset: 8, every: 15}
	s := side{[]proc{b}, []proc{errs}}
	m := measureRatio(s, s, 7, 83)
	require.Equal(t, sec(83), m.Through)
	first := errs.value(83) // 3 at birth, 3.25 since
	require.Equal(t, 6.25, first)
	requireBounds(t, rollout.Bounds{Low: 0, Est: first, High: first}, m.Canary.Counts.Events)
	// Before its first scrape, the series does not exist: no errors, and no NoData either.
	m = measureRatio(s, s, 7, 82)
	requireBounds(t, rollout.Exact(0), m.Canary.Counts.Events)
	require.Equal(t, rollout.StatusOK, m.Canary.Status)
}

// TestAlignSharedBurst: a burst of errors hits both sides at once; at every evaluation, the
// rollback-favourable bounds (canary errors Low, stable errors High) never give the canary
// more of it than the stable side, even when the canary's scrape has seen it and the
// stable's not yet (the estimates do).
func TestAlignSharedBurst(t *testing.T) {
	for _, burstAt := range []float64{20, 28, 31, 40} {
		a, aErr := pod("a", 3, 15, 10, 0)
		c, cErr := pod("c", 11, 15, 10, 0)
		aErr.bursts = [][2]float64{{burstAt, 30}}
		cErr.bursts = [][2]float64{{burstAt, 30}}
		canary, stable := side{[]proc{a}, []proc{aErr}}, side{[]proc{c}, []proc{cErr}}
		var estFavoursStable bool
		for at := 12.0; at <= 120; at++ {
			m := measureRatio(canary, stable, 7, at)
			ce, se := m.Canary.Counts.Events, m.Stable.Counts.Events
			require.LessOrEqual(t, ce.Low, se.High, "burst at %g, at %g: canary %+v stable %+v", burstAt, at, ce, se)
			require.LessOrEqual(t, se.Low, ce.High, "burst at %g, at %g: the other way round", burstAt, at)
			if ce.Est > se.Est {
				estFavoursStable = true
			}
		}
		if burstAt == 28 {
			// Scraped by the canary at 33, not yet by the stable side (26, 41): through 26.
			m := measureRatio(canary, stable, 7, 34)
			require.Equal(t, sec(26), m.Through)
			requireBounds(t, rollout.Bounds{Low: 0, Est: 30 * 8.0 / 15, High: 30}, m.Canary.Counts.Events)
			requireBounds(t, rollout.Exact(0), m.Stable.Counts.Events)
			require.True(t, estFavoursStable, "the estimate alone would give the canary part of the burst")
		}
	}
}

// TestAlignNoNewSample: between two evaluations with no new sample, nothing changes (no
// extrapolation towards At).
func TestAlignNoNewSample(t *testing.T) {
	a, aErr := pod("a", 3, 15, 4, 0.5)
	c, cErr := pod("c", 11, 15, 5, 0.2)
	canary, stable := side{[]proc{a}, []proc{aErr}}, side{[]proc{c}, []proc{cErr}}
	first := measureRatio(canary, stable, 7, 153.5)
	for _, at := range []float64{154, 157, 160.9} { // the next scrapes: stable at 161, canary at 168
		m := measureRatio(canary, stable, 7, at)
		require.Equal(t, first, m, "at %g", at)
	}
	require.NotEqual(t, first.Stable, measureRatio(canary, stable, 7, 161).Stable)
}

func TestAlignNextSample(t *testing.T) {
	a, aErr := pod("a", 3, 15, 4, 0.5)
	slow, slowErr := pod("e", 5, 30, 1, 0.05)
	// The 30 s series holds Through back (65): it is due again at 95, plus the grace.
	m := measureRatio(side{[]proc{a}, []proc{aErr}}, side{[]proc{slow}, []proc{slowErr}}, 7, 94)
	require.Equal(t, sec(65), m.Through)
	require.Equal(t, 15*time.Second, m.ScrapeInterval, "the shortest interval seen")
	require.Equal(t, sec(97), m.NextSample)
	// The 15 s series holds it back (63): due at 78 + grace.
	m = measureRatio(side{[]proc{a}, []proc{aErr}}, side{[]proc{slow}, []proc{slowErr}}, 7, 70)
	require.Equal(t, sec(63), m.Through)
	require.Equal(t, sec(80), m.NextSample)
}

func TestAlignEmptyAndErrors(t *testing.T) {
	a, aErr := pod("a", 3, 15, 4, 0.5)
	s := side{[]proc{a}, []proc{aErr}}
	spans := Spans{From: sec(7), At: sec(100)}
	rng := spans.rangeFor().Seconds()
	m := MeasureCounters(ratioCheck, s.responses(100, rng), []Response{none(), none()}, spans)
	require.Equal(t, rollout.StatusOK, m.Canary.Status)
	require.Equal(t, rollout.StatusNoData, m.Stable.Status)
	require.Equal(t, sec(93), m.Through, "an empty side holds nothing back")

	m = MeasureCounters(ratioCheck, s.responses(100, rng), []Response{none(), failed(ErrUnavailable)}, spans)
	require.Equal(t, rollout.StatusError, m.Stable.Status)
	require.Equal(t, rollout.StatusOK, m.Canary.Status)

	// Every series stale: no live series, no data.
	spans.At = sec(1000)
	m = MeasureCounters(ratioCheck, s.responses(100, rng), s.responses(100, rng), spans)
	require.True(t, m.Through.IsZero())
	require.Equal(t, rollout.StatusNoData, m.Canary.Status)

	// Through not past From yet.
	spans = Spans{From: sec(95), At: sec(100)}
	m = MeasureCounters(ratioCheck, s.responses(100, rng), s.responses(100, rng), spans)
	require.Equal(t, rollout.StatusNoData, m.Canary.Status)
	require.Contains(t, m.Canary.Message, "no samples since")

	// Recent: the last RecentWindow before Through.
	spans = Spans{From: sec(7), At: sec(100), Recent: 30 * time.Second}
	m = MeasureCounters(ratioCheck, s.responses(100, rng), s.responses(100, rng), spans)
	require.NotNil(t, m.Canary.Recent)
	require.Equal(t, sec(63), m.Canary.Recent.From)
	requireBounds(t, rollout.Exact(4*30+0.5*30), m.Canary.Recent.Total)
}

// bucketProc is a pod's bucket series: le and its events per second, scraped at :00, :15, ...
func bucketProcs(name string, base float64, rates map[string]float64, restarts ...float64) []proc {
	var out []proc
	for le, r := range rates {
		out = append(out, proc{labels: map[string]string{"pod": name, "le": le}, rate: r, born: -3600, init: base * r,
			offset: 0, every: 15, restarts: restarts})
	}
	return out
}

func TestAlignHistogram(t *testing.T) {
	check := rollout.Check{Name: "latency", Kind: rollout.KindHistogram, Quantile: 0.5, Buckets: "b"}
	podA := bucketProcs("a", 100, map[string]float64{"0.1": 1.0 / 6, "0.5": 0.5, "+Inf": 2.0 / 3})
	podB := bucketProcs("b", 100, map[string]float64{"0.1": 1.0 / 12, "0.5": 1.0 / 6, "+Inf": 1.0 / 3}, 30)
	spans := Spans{From: sec(0), At: sec(60)}
	rng := spans.rangeFor().Seconds()
	resp := answer(append(append([]proc(nil), podA...), podB...), 60, rng)
	m := MeasureCounters(check, []Response{resp}, []Response{resp}, spans)
	require.Equal(t, sec(60), m.Through)
	r := m.Canary
	require.Equal(t, rollout.StatusOK, r.Status, r.Message)
	// Over 60 s: pod a 10, 30, 40; pod b 5, 10, 20 (across its restart).
	c := r.Counts
	requireBounds(t, rollout.Exact(60), c.Total)
	require.Len(t, c.Buckets, 3)
	for i, want := range []struct{ le, count, slower float64 }{{0.1, 15, 45}, {0.5, 40, 20}, {math.Inf(1), 60, 0}} {
		require.Equal(t, want.le, c.Buckets[i].UpperBound)
		requireBounds(t, rollout.Exact(want.count), c.Buckets[i].Count, "le=%g", want.le)
		requireBounds(t, rollout.Exact(want.slower), c.Buckets[i].Slower, "slower than le=%g", want.le)
	}
	// rank 30 in (0.1, 0.5], which holds 25 from 15: 0.1 + 0.4*15/25
	require.InDelta(t, 0.34, r.Value, 1e-9)
	require.Equal(t, int64(60), r.Samples)

	// Between scrapes, Slower is bounded on its own (per pod, from the same scrapes).
	spans = Spans{From: sec(7), At: sec(60)}
	m = MeasureCounters(check, []Response{resp}, []Response{resp}, spans)
	slower := m.Canary.Counts.Buckets[0].Slower
	requireBrackets(t, slower, (2.0/3-1.0/6+1.0/3-1.0/12)*53, "slower than 0.1")
	require.LessOrEqual(t, slower.High-slower.Low, 0.75*15+1e-9, "one scrape interval of the slower share, not of all")

	// Missing +Inf and missing le are bad queries.
	noInf := answer(podA[:0], 60, rng)
	for _, p := range append(append([]proc(nil), podA...), podB...) {
		if p.labels["le"] != "+Inf" {
			noInf.Series = append(noInf.Series, p.series(60, rng))
		}
	}
	noLe := answer([]proc{{labels: map[string]string{"pod": "a"}, rate: 1, born: -3600, every: 15}}, 60, rng)
	for _, bad := range []Response{noInf, noLe} {
		m = MeasureCounters(check, []Response{bad}, []Response{resp}, spans)
		require.Equal(t, rollout.StatusError, m.Canary.Status)
		require.Contains(t, m.Canary.Message, ErrBadQuery.Error())
		require.Equal(t, rollout.StatusOK, m.Stable.Status)
	}
}

func TestNextEvaluation(t *testing.T) {
	now := a0
	tmpl := rollout.Template{Interval: 30 * time.Second, MinInterval: 5 * time.Second}
	at := func(s float64) rollout.Measurement { return rollout.Measurement{NextSample: sec(s)} }
	for _, tc := range []struct {
		name string
		t    rollout.Template
		ms   []rollout.Measurement
		want float64
	}{
		{"no counter check: the interval", tmpl, []rollout.Measurement{{}}, 30},
		{"the earliest next sample", tmpl, []rollout.Measurement{at(17), at(12), {}}, 12},
		{"not sooner than MinInterval", tmpl, []rollout.Measurement{at(2)}, 5},
		{"a next sample already due: MinInterval", tmpl, []rollout.Measurement{at(-10)}, 5},
		{"not later than Interval", tmpl, []rollout.Measurement{at(45)}, 30},
		{"at least a second", rollout.Template{Interval: 30 * time.Second}, []rollout.Measurement{at(0.2)}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, sec(tc.want), NextEvaluation(now, tc.t, tc.ms))
		})
	}
}

// TestCalmEdges: an edge whose samples around it hold what the pooled rate beside it
// explains is taken at its estimate; one where a burst both sides share begins or ends is
// taken at its bounds, so that the burst, seen by one side's scrape first, never favours the
// canary's side.
func TestCalmEdges(t *testing.T) {
	measure := func(canary, stable side, from, at float64) rollout.Measurement {
		spans := Spans{From: sec(from), At: sec(at), Recent: time.Minute}
		rng := spans.rangeFor().Seconds()
		return MeasureCounters(ratioCheck, canary.responses(at, rng), stable.responses(at, rng), spans)
	}
	// Steady traffic: both edges calm, the counts are their estimates.
	a, aErr := pod("a", 3, 15, 10, 0.5)
	c, cErr := pod("c", 11, 15, 10, 0.5)
	steady := measure(side{[]proc{a}, []proc{aErr}}, side{[]proc{c}, []proc{cErr}}, 7, 150)
	for _, r := range []rollout.Reading{steady.Canary, steady.Stable} {
		require.Equal(t, r.Counts.Events.Low, r.Counts.Events.High, "steady: calm edges: %+v", r.Counts.Events)
		require.Equal(t, r.Counts.Total.Low, r.Counts.Total.High)
	}

	// The step's first scrapes: with a sample after From on every series but nothing counted
	// after those yet, the start is judged by the rate before it, and already counts.
	early := measure(side{[]proc{a}, []proc{aErr}}, side{[]proc{c}, []proc{cErr}}, 7, 19)
	require.Equal(t, sec(11), early.Through, "the oldest of the first samples after From")
	for _, r := range []rollout.Reading{early.Canary, early.Stable} {
		require.Equal(t, r.Counts.Events.Low, r.Counts.Events.High, "early: a calm start: %+v", r.Counts.Events)
		require.Positive(t, r.Counts.Total.Low, "early: the first scrapes count")
	}
	// An incident both sides share soon after From (from 20 s to 60 s, 50 errors a second
	// on each pod): the rate before the start explains its bracket, which stays calm.
	aInc, cInc := aErr, cErr
	for at := 20.0; at < 60; at++ {
		aInc.bursts = append(aInc.bursts, [2]float64{at, 50})
		cInc.bursts = append(cInc.bursts, [2]float64{at, 50})
	}
	later := measure(side{[]proc{a}, []proc{aInc}}, side{[]proc{c}, []proc{cInc}}, 7, 150)
	require.Equal(t, later.Canary.Counts.Total.Low, later.Canary.Counts.Total.High, "an incident after the start: calm edges: %+v", later.Canary.Counts.Total)
	// A burst both sides share just before From: the rate before the start does not explain
	// the bracket around it, which is taken at its bounds.
	bErr := cErr
	bErr.bursts = [][2]float64{{5, 300}}
	aBurst := aErr
	aBurst.bursts = [][2]float64{{5, 300}}
	early = measure(side{[]proc{a}, []proc{aBurst}}, side{[]proc{c}, []proc{bErr}}, 7, 19)
	require.Less(t, early.Canary.Counts.Events.Low, early.Canary.Counts.Events.High, "a burst at the start: bounds")

	// A burst both sides share, at every moment around the newest samples: the edge it
	// falls in is taken at its bounds, never favouring the canary.
	for _, burstAt := range []float64{120, 128, 131, 140} {
		a, aErr := pod("a", 3, 15, 10, 0.05)
		c, cErr := pod("c", 11, 15, 10, 0.05)
		aErr.bursts = [][2]float64{{burstAt, 300}}
		cErr.bursts = [][2]float64{{burstAt, 300}}
		canary, stable := side{[]proc{a}, []proc{aErr}}, side{[]proc{c}, []proc{cErr}}
		// The first scrape that sees the burst (offsets 3 and 11, every 15 s).
		seenAt := math.Inf(1)
		for _, offset := range []float64{3, 11} {
			seenAt = math.Min(seenAt, offset+15*math.Ceil((burstAt-offset)/15))
		}
		checked := 0
		for at := 100.0; at <= 200; at++ {
			m := measure(canary, stable, 7, at)
			ce, se := m.Canary.Counts.Events, m.Stable.Counts.Events
			require.LessOrEqual(t, ce.Low, se.High+1e-9, "burst at %g, at %g: canary %+v stable %+v", burstAt, at, ce, se)
			require.LessOrEqual(t, se.Low, ce.High+1e-9, "burst at %g, at %g: the other way round", burstAt, at)
			if through := seconds(m.Through); at >= seenAt && through < burstAt {
				checked++
				// One side's scrape has seen the burst, the span does not reach it yet: the
				// edge is taken at its bounds.
				require.True(t, ce.Low < ce.High || se.Low < se.High, "burst at %g, at %g: the edge is taken at its bounds: %+v %+v", burstAt, at, ce, se)
			}
		}
		require.Positive(t, checked, "burst at %g: the span lagged the burst at some evaluation", burstAt)
	}
}
