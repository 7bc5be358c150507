package compare

import (
	"math"
	"slices"
	"time"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// Errors often come in bursts on one pod (a bad node, a stalled connection pool, a noisy
// neighbour), on the stable side's pods as on the canary's. Counted as Poisson events, one
// burst on a canary pod is overwhelming evidence against the canary, and a healthy canary is
// rolled back. So compare finds, in the canary's counts, the stretches of one target between
// two of its scrapes that hold far more events than the side's rate elsewhere explains, and
// gives the counts without them too (Counts.Steady): decide rolls back only on what both
// show. A regression of the canary's code raises its rate on every pod all the time, and no
// stretch of it stands out from the rest; a burst on one pod does.

// burstLevel is how unlikely a stretch's events must be, under the side's rate elsewhere, for
// it to be a burst (divided among the stretches and the counted pairs).
const burstLevel = 1e-3

// stretch is one target's counts between two of its scrapes (or the span's edges).
type stretch struct {
	target        string
	from, through time.Time
	pairs         [][2]float64 // estimated (events, all) per event pair
	other         [][2]float64 // the same of the other side over the same time
	rest          [][2]float64 // and of the side's other targets
}

// estAt adds the group's estimated count (track.at's) at each of the instants xs to out.
func (g group) estAt(xs []time.Time, out []float64) {
	for _, tr := range g {
		for k, x := range xs {
			out[k] += tr.at(x).Est
		}
	}
}

// stretches are the side's counts in (from, through] cut at each target's scrapes, as
// estimates (the cuts inside the span are the target's own scrapes, where its counts are
// exact; the span's edges and the other side's counts are interpolated), with the other
// side's over the same times, bound by bound.
func (st sideTracks) stretches(kind rollout.CheckKind, from, through time.Time, other sideTracks) []stretch {
	names := st.targets(kind)
	if len(names) < 2 {
		return nil // a burst is one target's: with one, nothing tells it from the side's own
	}
	var out []stretch
	for _, name := range names {
		sub := st.only(name)
		var times []time.Time
		for _, g := range sub.groups(kind) {
			for _, tr := range g {
				for i, t := range tr.t {
					if t > from.UnixNano() && t < through.UnixNano() {
						times = append(times, tr.time(i))
					}
				}
			}
		}
		slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
		cuts := append([]time.Time{from}, slices.CompactFunc(times, func(a, b time.Time) bool { return a.Equal(b) })...)
		cuts = append(cuts, through)
		at, otherAt := estimates(sub.eventPairs(kind), cuts), estimates(other.eventPairsAt(kind, st.histogram.les), cuts)
		restAt := estimates(st.except(name).eventPairs(kind), cuts)
		for k := 1; k < len(cuts); k++ {
			s := stretch{target: name, from: cuts[k-1], through: cuts[k], pairs: diffs(at, k), other: diffs(otherAt, k), rest: diffs(restAt, k)}
			out = append(out, s)
		}
	}
	return out
}

// estimates are each pair's estimated counts at each of the sorted instants xs.
func estimates(pairs [][2]group, xs []time.Time) [][2][]float64 {
	at := make([][2][]float64, len(pairs))
	for i, p := range pairs {
		for j := range p {
			at[i][j] = make([]float64, len(xs))
			p[j].estAt(xs, at[i][j])
		}
	}
	return at
}

// diffs are each pair's counts between the instants k-1 and k of estimates.
func diffs(at [][2][]float64, k int) [][2]float64 {
	out := make([][2]float64, len(at))
	for i := range at {
		out[i] = [2]float64{max(0, at[i][0][k]-at[i][0][k-1]), max(0, at[i][1][k]-at[i][1][k-1])}
	}
	return out
}

// bursts finds the side's bursts in (from, through] and its counts without them (nil, nil
// when there is none): all is the side's counts over the span, other the other side's
// tracks. A stretch with k events of n is a burst when, under the highest of the side's rate
// over every other stretch, twice the other side's rate over the same time and the rate of
// the side's other targets over the same time (each with one event and one request added,
// so that a first event is not a burst), the Chernoff bound exp(-n KL(k/n || p)) on the
// chance of k or more is below burstLevel divided among the stretches and pairs. So a burst
// is the target's alone: an incident that both sides see at once is not one (see
// the shared degradation), nor a regression of the whole canary that begins mid-step; and a
// side with a single target has none. With the other side counted but idle (no
// requests) nothing is a burst; with no other side at all, the side's own rate elsewhere
// judges.
func (st sideTracks) bursts(kind rollout.CheckKind, all rollout.Counts, e edges, other sideTracks) (*rollout.Counts, []rollout.Burst) {
	from, through := all.From, all.Through
	ss := st.stretches(kind, from, through, other)
	if len(ss) < 2 {
		return nil, nil
	}
	var sums [][2]float64
	for _, s := range ss {
		for len(sums) < len(s.pairs) {
			sums = append(sums, [2]float64{})
		}
		for i, p := range s.pairs {
			sums[i][0] += p[0]
			sums[i][1] += p[1]
		}
	}
	limit := math.Log(float64(len(ss)*max(1, len(sums))) / burstLevel)
	var found []rollout.Burst
	steady := all
	steady.Live, steady.Bursts, steady.Steady = 0, nil, nil
	for _, s := range ss {
		best, bestScore := -1, limit
		var rate float64
		for i, p := range s.pairs {
			k, n := p[0], p[1]
			if n <= 0 || k <= 0 {
				continue
			}
			r := (sums[i][0] - k + 1) / (sums[i][1] - n + 1)
			if i < len(s.other) {
				// Twice the other side's: its counts over the stretch are estimates between
				// its own scrapes, which spread an incident's events over its brackets.
				r = math.Max(r, 2*(s.other[i][0]+1)/(s.other[i][1]+1))
			}
			if i < len(s.rest) {
				// And the side's other targets' at the same time: a change of the whole
				// canary (a regression that begins mid-step) is on every target. (Once,
				// not twice: a change that lasts fills their stretches too.)
				r = math.Max(r, (s.rest[i][0]+1)/(s.rest[i][1]+1))
			}
			if k/n <= r || r >= 1 {
				continue
			}
			if score := n * klBernoulli(math.Min(1, k/n), r); score > bestScore {
				best, bestScore, rate = i, score, r
			}
		}
		if best < 0 {
			continue
		}
		// The stretch's counts, with the span's own edges where it has one.
		ce := edges{from: !s.from.Equal(from) || e.from, through: !s.through.Equal(through) || e.through}
		steady = steady.Minus(st.only(s.target).counts(kind, s.from, s.through, ce))
		b := rollout.Burst{Target: s.target, From: s.from, Through: s.through, Events: s.pairs[best][0], Total: s.pairs[best][1], Rate: rate}
		if n := len(found); n > 0 && found[n-1].Target == b.Target && found[n-1].Through.Equal(b.From) {
			found[n-1].Through = b.Through
			found[n-1].Events += b.Events
			found[n-1].Total += b.Total
			continue
		}
		found = append(found, b)
	}
	if len(found) == 0 {
		return nil, nil
	}
	return &steady, found
}

// klBernoulli is the Kullback-Leibler divergence of Bernoulli(p) from Bernoulli(q).
func klBernoulli(p, q float64) float64 {
	term := func(a, b float64) float64 {
		if a <= 0 {
			return 0
		}
		return a * math.Log(a/b)
	}
	return term(p, q) + term(1-p, 1-q)
}
