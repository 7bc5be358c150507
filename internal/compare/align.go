package compare

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// Counter checks (ratio and histogram) are measured from raw samples, not from increase():
//
//   - Each series (a pod's counter, one label set) is read as its samples with their own
//     timestamps. Its count at an instant x lies between its samples around x: at least the
//     value of the last sample at or before x, at most that of the first at or after it;
//     the estimate interpolates linearly between them. A counter that drops has restarted
//     from 0 (a reset): what it counts after the drop is added to what it had. A series that
//     appears after x was either born after it (from 0, the common case: a new pod, a first
//     error) or not scraped before: both lie within the bounds, the estimate takes the first.
//   - The span (from, through] is the same for every series of both sides: through is the
//     newest instant every live series of the check has been scraped at (the oldest of their
//     last samples), so the two sides' counts cover the same real time, whatever each
//     target's scrape interval and offset. A series whose last sample is older than twice its
//     scrape interval has gone (a pod deleted): it counts what it had (its high bound adds up to
//     one more interval at its last rate) and holds nothing back.
//   - Nothing is extrapolated: between two evaluations with no new sample, the counts do not
//     change.
//
// The sequential tests take each side's counts at the bound least favourable to the
// conclusion they draw, so that the residual uncertainty at the span's edges (at most one
// scrape interval of each series) can never make a shared burst look like the canary's.

// lookback is how far before a span's start a series' samples are read, to find its count at
// the start: Prometheus's own staleness bound.
const lookback = 5 * time.Minute

// scrapeGrace is how late a scrape may land (scrape duration, ingestion) before a series is
// taken for gone, on top of two scrape intervals; and how long after a due scrape the next
// evaluation waits for it.
const scrapeGrace = 2 * time.Second

// Spans is what a counter check counts over, for one measurement.
type Spans struct {
	// From is where the counts start (the step's start, or the baseline window's).
	From time.Time
	// At is the evaluation's time: samples after it are not read.
	At time.Time
	// Recent is the length of the recent span that ends where the counts end (0: none).
	Recent time.Duration
	// bounded takes every edge at its bounds, calm or not (for tests of the bounds).
	bounded bool
}

// recentFrom is where the recent span starts when the counts end at through: Recent before
// it, but not before From.
func (s Spans) recentFrom(through time.Time) time.Time {
	rf := through.Add(-s.Recent)
	if rf.Before(s.From) {
		return s.From
	}
	return rf
}

// rangeFor is the range a counter check's selector is read over at At.
func (s Spans) rangeFor() time.Duration {
	return max(s.At.Sub(s.From), 0) + lookback
}

// track is one series' samples as a counter: times, and the count since its first sample
// with resets folded in (cum[0] is the first sample's raw value: what it counted since it
// was born, if it was born within the range).
type track struct {
	t        []int64 // Unix nanoseconds (a third of a time.Time: tracks are built at every evaluation)
	cum      []float64
	interval time.Duration // median gap between samples; 0 with a single sample
	target   string        // the scrape target the series is of (see targetOf); "" unknown
}

// targetOf names the scrape target a series comes from: its pod label, or else its instance
// label ("" when it has neither: the side is then not broken down by target).
func targetOf(labels map[string]string) string {
	if v := labels["pod"]; v != "" {
		return v
	}
	return labels["instance"]
}

func newTrack(samples []Sample, at time.Time) (track, bool) {
	tr := track{t: make([]int64, 0, len(samples)), cum: make([]float64, 0, len(samples))}
	prev := math.NaN()
	atMs, lastMs := at.UnixMilli(), int64(math.MinInt64)
	for _, s := range samples {
		if math.IsNaN(s.V) || math.IsInf(s.V, 0) || s.T > atMs {
			continue
		}
		if s.T <= lastMs {
			continue
		}
		switch {
		case len(tr.cum) == 0:
			tr.cum = append(tr.cum, math.Max(0, s.V))
		case s.V >= prev:
			tr.cum = append(tr.cum, tr.cum[len(tr.cum)-1]+s.V-prev)
		default: // a reset: the counter restarted from 0
			tr.cum = append(tr.cum, tr.cum[len(tr.cum)-1]+math.Max(0, s.V))
		}
		tr.t = append(tr.t, s.T*int64(time.Millisecond))
		prev, lastMs = s.V, s.T
	}
	if len(tr.t) == 0 {
		return tr, false
	}
	if len(tr.t) > 1 {
		var buf [256]int64 // on the stack: tracks are built at every evaluation
		gaps := buf[:0]
		for i := 1; i < len(tr.t); i++ {
			gaps = append(gaps, tr.t[i]-tr.t[i-1])
		}
		slices.Sort(gaps)
		tr.interval = time.Duration(gaps[len(gaps)/2])
	}
	return tr, true
}

func (tr track) last() time.Time { return time.Unix(0, tr.t[len(tr.t)-1]).UTC() }

// time is the track's i-th sample's time.
func (tr track) time(i int) time.Time { return time.Unix(0, tr.t[i]).UTC() }

// at is the series' count at x, with its bounds.
func (tr track) at(x time.Time) rollout.Bounds {
	n := len(tr.t)
	xn := x.UnixNano()
	// The first sample after x.
	i := sort.Search(n, func(i int) bool { return tr.t[i] > xn })
	switch {
	case i == 0:
		// No sample at or before x: born after it (0), or not yet scraped (up to cum[0]).
		return rollout.Bounds{Low: 0, Est: 0, High: tr.cum[0]}
	case tr.t[i-1] == xn:
		return rollout.Exact(tr.cum[i-1])
	case i == n:
		// Not scraped since before x: a pod deleted, or a scrape gap. It counted at least
		// what it had; a deleted pod served until it went, within about a scrape interval, at
		// about its last rate. (A gap longer than that undercounts until the series is
		// scraped again, when the counts catch up.)
		last := tr.cum[n-1]
		b := rollout.Exact(last)
		if n > 1 && tr.interval > 0 {
			rate := (tr.cum[n-1] - tr.cum[n-2]) / float64(tr.t[n-1]-tr.t[n-2])
			b.High = last + rate*float64(min(time.Duration(xn-tr.t[n-1]), tr.interval))
		}
		return b
	}
	lo, hi := tr.cum[i-1], tr.cum[i]
	f := float64(xn-tr.t[i-1]) / float64(tr.t[i]-tr.t[i-1])
	return rollout.Bounds{Low: lo, Est: lo + f*(hi-lo), High: hi}
}

// edges says which of a span's two edges are calm: taken at their estimate rather than at
// their bounds (see calm).
type edges struct {
	from, through bool
	recent        bool // the recent span's start, when it lies after from
}

func (e edges) at(tr track, x time.Time, calm bool) rollout.Bounds {
	b := tr.at(x)
	if calm {
		return rollout.Exact(b.Est)
	}
	return b
}

// between is the series' count in (from, through].
func (tr track) between(from, through time.Time, e edges) rollout.Bounds {
	end, start := e.at(tr, through, e.through), e.at(tr, from, e.from)
	// The two edges are bounded on their own; the count between them is at least
	// end.Low - start.High and at most end.High - start.Low.
	return end.Sub(start)
}

// group is the tracks of one query on one side.
type group []track

func tracksOf(r Response, at time.Time) group {
	g := make(group, 0, len(r.Series))
	for _, s := range r.Series {
		if tr, ok := newTrack(s.Samples, at); ok {
			tr.target = s.target()
			g = append(g, tr)
		}
	}
	return g
}

func (g group) between(from, through time.Time, e edges) rollout.Bounds {
	var sum rollout.Bounds
	for _, tr := range g {
		sum = sum.Add(tr.between(from, through, e))
	}
	return sum
}

// around is the series' samples around x: the last at or before it and the first at or after
// it (x itself where there is none on a side).
func (tr track) around(x time.Time) (lo, hi time.Time) {
	lo, hi = x, x
	xn := x.UnixNano()
	i := sort.Search(len(tr.t), func(i int) bool { return tr.t[i] > xn })
	if i > 0 {
		lo = tr.time(i - 1)
	}
	if i < len(tr.t) && (i == 0 || tr.t[i-1] != xn) {
		hi = tr.time(i)
	}
	return lo, hi
}

// bracket is what the group's series counted between their samples around x: what the
// instant x leaves unknown.
func (g group) bracket(x time.Time) float64 {
	sum := 0.0
	for _, tr := range g {
		b := tr.at(x)
		sum += b.High - b.Low
	}
	return sum
}

// cut is where a check's counts end: the oldest last sample among the live series, the
// shortest scrape interval seen, and when the series that holds the cut is due next.
type cut struct {
	through  time.Time
	interval time.Duration
	next     time.Time
}

func cutOf(at time.Time, groups ...group) cut {
	var c cut
	for _, g := range groups {
		for _, tr := range g {
			if tr.interval > 0 && (c.interval == 0 || tr.interval < c.interval) {
				c.interval = tr.interval
			}
		}
	}
	for _, g := range groups {
		for _, tr := range g {
			iv := tr.interval
			if iv == 0 {
				iv = c.interval
			}
			if iv == 0 {
				iv = lookback / 2
			}
			if at.Sub(tr.last()) > 2*iv+scrapeGrace {
				continue // gone
			}
			if c.through.IsZero() || tr.last().Before(c.through) {
				c.through, c.next = tr.last(), tr.last().Add(iv+scrapeGrace)
			}
		}
	}
	return c
}

// histogramTracks splits one side's bucket series into the observations (+Inf) of each
// series group and, for each finite bound, the observations at or below it and above it.
// Series of one group (the same labels but le) are scraped together, so the share above a
// bound is derived sample by sample.
type histogramTracks struct {
	les    []float64 // sorted: the last is +Inf
	count  []group   // by les' index: observations <= le (+Inf: all)
	slower []group   // by les' index: observations > le (none for +Inf)
}

// index is le's place in les, or -1.
func (h histogramTracks) index(le float64) int {
	for i, b := range h.les {
		if b == le {
			return i
		}
	}
	return -1
}

// slowerAt is the tracks of the observations above bound le (none when the side lacks it).
func (h histogramTracks) slowerAt(le float64) group {
	if i := h.index(le); i >= 0 && i < len(h.slower) {
		return h.slower[i]
	}
	return nil
}

// all is the tracks of every observation (+Inf's).
func (h histogramTracks) all() group {
	if len(h.count) == 0 {
		return nil
	}
	return h.count[len(h.count)-1]
}

func histogramOf(r Response, at time.Time) (histogramTracks, error) {
	var h histogramTracks
	type member struct {
		group   uint64
		le      float64
		bound   int // le's index in h.les, once they are sorted
		samples []Sample
		target  string
		track   track
		tracked bool
	}
	// Built at every evaluation for every bucket of both sides: one slice for the members
	// (sorted by group below), and each bound's tracks made at their size, rather than maps
	// of slices grown one at a time.
	members := make([]member, 0, len(r.Series))
	for _, s := range r.Series {
		raw, ok := s.le()
		if !ok {
			return h, fmt.Errorf("%w: a histogram series has no le label (select the _bucket series)", ErrBadQuery)
		}
		le, err := strconv.ParseFloat(raw, 64)
		if err != nil || math.IsNaN(le) {
			return h, fmt.Errorf("%w: histogram bucket le=%q is not a number", ErrBadQuery, raw)
		}
		m := member{group: s.groupKey(), le: le, samples: s.Samples, target: s.target()}
		if m.track, m.tracked = newTrack(s.Samples, at); m.tracked {
			m.track.target = m.target
		}
		if !slices.Contains(h.les, le) { // a dozen bounds
			h.les = append(h.les, le)
		}
		members = append(members, m)
	}
	slices.Sort(h.les)
	if len(h.les) == 0 || !math.IsInf(h.les[len(h.les)-1], 1) {
		return h, fmt.Errorf("%w: %w", ErrBadQuery, rollout.ErrNoInfBucket)
	}
	perBound := make([]int, len(h.les))
	for i := range members {
		m := &members[i]
		m.bound = h.index(m.le)
		if m.tracked {
			perBound[m.bound]++
		}
	}
	h.count, h.slower = make([]group, len(h.les)), make([]group, len(h.les))
	for _, m := range members { // in the answer's order
		if m.tracked {
			i := m.bound
			if h.count[i] == nil {
				h.count[i] = make(group, 0, perBound[i])
			}
			h.count[i] = append(h.count[i], m.track)
		}
	}
	// By group, each group's members in the answer's order (the same at every read: a
	// map's order is not).
	slices.SortStableFunc(members, func(a, b member) int { return cmp.Compare(a.group, b.group) })
	groups := 0
	for i := range members {
		if i == 0 || members[i].group != members[i-1].group {
			groups++
		}
	}
	var derived []Sample // one buffer for every group's derived samples
	for start := 0; start < len(members); {
		end := start + 1
		for end < len(members) && members[end].group == members[start].group {
			end++
		}
		var inf []Sample
		for _, m := range members[start:end] {
			if math.IsInf(m.le, 1) {
				inf = m.samples
			}
		}
		for _, m := range members[start:end] {
			if math.IsInf(m.le, 1) {
				continue
			}
			// The samples of the bound and of +Inf scraped together (both oldest first).
			derived = derived[:0]
			j := 0
			for _, s := range m.samples {
				for j < len(inf) && inf[j].T < s.T {
					j++
				}
				if j < len(inf) && inf[j].T == s.T {
					derived = append(derived, Sample{T: s.T, V: math.Max(0, inf[j].V-s.V)})
				}
			}
			if tr, ok := newTrack(derived, at); ok { // newTrack copies what it keeps
				tr.target = m.target
				i := m.bound
				if h.slower[i] == nil {
					h.slower[i] = make(group, 0, groups)
				}
				h.slower[i] = append(h.slower[i], tr)
			}
		}
		start = end
	}
	return h, nil
}

// groupKey identifies a series' group: its labels but le, hashed (FNV-1a, 64 bits: the few
// hundred groups of one side's answer do not collide in practice), so that a feed keeps 8
// bytes of it per series rather than the labels again.
func groupKey(labels map[string]string) uint64 {
	var k labelKeyer
	h := uint64(14695981039346656037)
	for _, c := range k.key(labels, "le") {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return h
}

// labelsKeyWithout is a series' labels, sorted, but the label named skip, as one string.
func labelsKeyWithout(labels map[string]string, skip string) string {
	var k labelKeyer
	return string(k.key(labels, skip))
}

// labelKeyer writes series' label keys (see labelsKeyWithout) into buffers it reuses: a
// refresh looks up a million series by their keys, and only a new series keeps its key.
type labelKeyer struct {
	names []string
	buf   []byte
}

// key is labels' key, but the label named skip: valid until the next call.
func (k *labelKeyer) key(labels map[string]string, skip string) []byte {
	k.names = k.names[:0]
	for n := range labels {
		if n != skip {
			k.names = append(k.names, n)
		}
	}
	slices.Sort(k.names)
	k.buf = k.buf[:0]
	for _, n := range k.names {
		k.buf = append(k.buf, n...)
		k.buf = append(k.buf, 0)
		k.buf = append(k.buf, labels[n]...)
		k.buf = append(k.buf, 0)
	}
	return k.buf
}

func (h histogramTracks) groups() []group {
	return slices.Clone(h.count)
}

func (h histogramTracks) counts(from, through time.Time, e edges) rollout.Counts {
	c := rollout.Counts{From: from, Through: through, Buckets: make([]rollout.BucketCounts, 0, len(h.les))}
	for i, le := range h.les {
		b := rollout.BucketCounts{UpperBound: le, Count: h.count[i].between(from, through, e)}
		if math.IsInf(le, 1) {
			c.Total = b.Count
		} else {
			b.Slower = h.slower[i].between(from, through, e)
		}
		c.Buckets = append(c.Buckets, b)
	}
	return c
}

// only is the group's tracks of one target.
func (g group) only(target string) group { return g.which(target, true) }

// which is the group's tracks of one target (in) or of every other (not in).
func (g group) which(target string, in bool) group {
	var out group
	for _, tr := range g {
		if (tr.target == target) == in {
			out = append(out, tr)
		}
	}
	return out
}

// sideTracks is one side's tracks of a counter check.
type sideTracks struct {
	ratio     [2]group // errors, total
	histogram histogramTracks
	err       error // a response failed or is malformed
	empty     bool  // the source answered, but no series
}

func sideOf(kind rollout.CheckKind, resps []Response, at time.Time) sideTracks {
	var st sideTracks
	for _, r := range resps {
		if r.Err != nil {
			st.err = r.Err
			return st
		}
	}
	switch kind {
	case rollout.KindRatio:
		st.ratio = [2]group{tracksOf(resps[0], at), tracksOf(resps[1], at)}
		st.empty = len(st.ratio[1]) == 0
	case rollout.KindHistogram:
		if len(resps[0].Series) == 0 {
			st.empty = true
			return st
		}
		st.histogram, st.err = histogramOf(resps[0], at)
	}
	return st
}

// targets are the side's scrape targets that its series name, in order (a series that names
// none is counted, never searched for bursts).
func (st sideTracks) targets(kind rollout.CheckKind) []string {
	seen := map[string]bool{}
	var out []string
	for _, g := range st.groups(kind) {
		for _, tr := range g {
			if tr.target != "" && !seen[tr.target] {
				seen[tr.target] = true
				out = append(out, tr.target)
			}
		}
	}
	slices.Sort(out)
	return out
}

// only is the side's tracks of one target.
func (st sideTracks) only(target string) sideTracks { return st.which(target, true) }

// except is the side's tracks of every target but one.
func (st sideTracks) except(target string) sideTracks { return st.which(target, false) }

func (st sideTracks) which(target string, in bool) sideTracks {
	out := st
	out.ratio = [2]group{st.ratio[0].which(target, in), st.ratio[1].which(target, in)}
	out.histogram.count = make([]group, len(st.histogram.count))
	for i, g := range st.histogram.count {
		out.histogram.count[i] = g.which(target, in)
	}
	out.histogram.slower = make([]group, len(st.histogram.slower))
	for i, g := range st.histogram.slower {
		out.histogram.slower[i] = g.which(target, in)
	}
	return out
}

func (st sideTracks) groups(kind rollout.CheckKind) []group {
	if st.err != nil || st.empty {
		return nil
	}
	if kind == rollout.KindRatio {
		return st.ratio[:]
	}
	return st.histogram.groups()
}

func (st sideTracks) counts(kind rollout.CheckKind, from, through time.Time, e edges) rollout.Counts {
	if kind == rollout.KindHistogram {
		if st.empty {
			return rollout.Counts{From: from, Through: through}
		}
		return st.histogram.counts(from, through, e)
	}
	return rollout.Counts{From: from, Through: through,
		Events: st.ratio[0].between(from, through, e), Total: st.ratio[1].between(from, through, e)}
}

// eventPairsAt are eventPairs at the finite bounds les (a histogram's; a bound the side
// does not have is an empty pair), so that two sides' pairs line up bound by bound.
func (st sideTracks) eventPairsAt(kind rollout.CheckKind, les []float64) [][2]group {
	if st.err != nil || st.empty || kind == rollout.KindRatio {
		return st.eventPairs(kind)
	}
	out := make([][2]group, 0, len(les))
	for _, le := range les {
		if !math.IsInf(le, 1) {
			out = append(out, [2]group{st.histogram.slowerAt(le), st.histogram.all()})
		}
	}
	return out
}

// eventPairs are the side's counted series in pairs (events, all): a ratio check's errors
// and requests, or each finite bound's slower observations and all observations.
func (st sideTracks) eventPairs(kind rollout.CheckKind) [][2]group {
	if st.err != nil || st.empty {
		return nil
	}
	if kind == rollout.KindRatio {
		return [][2]group{st.ratio}
	}
	out := make([][2]group, 0, len(st.histogram.les))
	for i, le := range st.histogram.les {
		if !math.IsInf(le, 1) {
			out = append(out, [2]group{st.histogram.slower[i], st.histogram.all()})
		}
	}
	return out
}

// The kinds of edge calm judges.
type edgeKind int

const (
	spanEnd   edgeKind = iota // judged by the rate before it
	spanStart                 // by the rate before it (strictly) or after it (loosely)
)

// calm reports whether the events the series counted between their samples around x, both
// sides pooled, are what the pooled rate next to x explains (see explains): no burst begins or ends
// within a scrape interval of x. A calm edge is taken at its estimate (linear between the
// samples, exact for a steady rate); an edge where the rate jumps is taken at its bounds, so
// that a burst both sides share, seen by one side's scrape and not yet by the other's, can
// never count as the canary's. The test is two-sided (a burst that ends is as misleading as
// one that begins). The reference span lies within inner of the samples around x, and not
// after limit (the counts' end). pairs are the sides' eventPairs, side after side.
func calm(pairs [][2]group, sides int, x time.Time, inner time.Duration, at edgeKind, limit time.Time) bool {
	if len(pairs) == 0 {
		return true
	}
	// The reference span lies beside the samples around x, never overlapping them.
	first, last := x, x
	for _, p := range pairs {
		for _, g := range p {
			for _, tr := range g {
				lo, hi := tr.around(x)
				if lo.Before(first) {
					first = lo
				}
				if hi.After(last) {
					last = hi
				}
			}
		}
	}
	if at == spanEnd {
		return explains(pairs, sides, x, first.Add(-inner), first, true)
	}
	refThrough := last.Add(inner)
	if refThrough.After(limit) {
		refThrough = limit
	}
	// A start (the step's, the recent span's): calm when the rate before it explains the
	// bracket strictly (within the Poisson slack alone: at the step's start the weight
	// changed, so the canary's requests in the bracket are mostly after it, and a rate that
	// changed within the bracket would be misplaced by the estimate), or the rate after it,
	// once counted, loosely. The rate before serves the step's first scrapes, and a start
	// followed closely by an incident (which the rate after it would hold). Neither sees a
	// rate that changes late in the bracket: an incident that ends a few seconds after the
	// start passes for calm by the rate before it (see the README's limits).
	if explains(pairs, sides, x, first.Add(-inner), first, false) {
		return true
	}
	return explains(pairs, sides, x, last, refThrough, true)
}

// explains reports whether the events the pairs counted between their samples around x,
// both sides pooled, are what their pooled rate over (refFrom, refThrough] explains: within
// the Poisson slack, and, when loose, within a factor 2 beside it. False when there is
// nothing to judge by. The test looks only at both sides pooled, never at the canary's
// share.
func explains(pairs [][2]group, sides int, x, refFrom, refThrough time.Time, loose bool) bool {
	if !refThrough.After(refFrom) {
		return false
	}
	e := edges{from: true, through: true}
	// The sides' pairs line up bound by bound (ratio: one pair a side).
	n := len(pairs) / max(1, sides)
	for i := 0; i < n; i++ {
		var kEdge, nEdge, kRef, nRef float64
		for j := i; j < len(pairs); j += n {
			kEdge += pairs[j][0].bracket(x)
			nEdge += pairs[j][1].bracket(x)
			kRef += pairs[j][0].between(refFrom, refThrough, e).Est
			nRef += pairs[j][1].between(refFrom, refThrough, e).Est
		}
		if nEdge <= 0 {
			continue
		}
		if nRef <= 0 {
			if kEdge > 0 {
				return false
			}
			continue
		}
		lambda := kRef / nRef * nEdge
		slack := 4*math.Sqrt(lambda) + 5
		hi, lo := lambda+slack, lambda-slack
		if loose {
			hi, lo = 2*lambda+slack, lambda/2-slack
		}
		if kEdge > hi || kEdge < lo {
			return false
		}
	}
	return true
}

// MeasureCounters turns one counter check's answers into its measurement: canary and
// stable hold each query's answer in the check's order (ratio: errors, total; histogram:
// buckets), each a range vector of raw samples reaching at least lookback before
// spans.From. Both sides are counted over the same span (spans.From, through]. The
// simulator measures through this function too, so that it judges what the daemon judges.
func MeasureCounters(c rollout.Check, canary, stable []Response, spans Spans) rollout.Measurement {
	m := rollout.Measurement{Check: c.Name}
	cs, ss := sideOf(c.Kind, canary, spans.At), sideOf(c.Kind, stable, spans.At)
	k := cutOf(spans.At, append(cs.groups(c.Kind), ss.groups(c.Kind)...)...)
	m.Through, m.ScrapeInterval, m.NextSample = k.through, k.interval, k.next
	var e edges
	if k.through.After(spans.From) && !spans.bounded {
		// Each edge is judged against the rate beside it over a recent window's length (see
		// calm for which side of it).
		ref := spans.Recent
		if ref <= 0 {
			ref = time.Minute
		}
		pairs := append(cs.eventPairs(c.Kind), ss.eventPairs(c.Kind)...)
		e.from = calm(pairs, 2, spans.From, ref, spanStart, k.through)
		e.through = calm(pairs, 2, k.through, ref, spanEnd, k.through)
		if rf := spans.recentFrom(k.through); rf.After(spans.From) {
			// The recent span's start is judged as the step's is: an incident that ends
			// there, seen by each pod at its own scrape, must not stay in one side's
			// recent counts more than in the other's.
			e.recent = calm(pairs, 2, rf, ref, spanStart, k.through)
		}
	}
	m.Canary = counterReading(c, cs, spans, k.through, e, &ss)
	m.Stable = counterReading(c, ss, spans, k.through, e, nil)
	for _, side := range []struct {
		r  *rollout.Reading
		st sideTracks
	}{{&m.Canary, cs}, {&m.Stable, ss}} {
		if side.r.Counts != nil {
			side.r.Counts.Live = side.st.live(c.Kind, spans.At, k.interval)
			if side.r.Counts.Steady != nil {
				side.r.Counts.Steady.Live = side.r.Counts.Live
			}
		}
	}
	return m
}

// live counts the side's series that are still scraped at `at` (the rule of cutOf).
func (st sideTracks) live(kind rollout.CheckKind, at time.Time, interval time.Duration) int {
	n := 0
	for _, g := range st.groups(kind) {
		for _, tr := range g {
			iv := tr.interval
			if iv == 0 {
				iv = interval
			}
			if iv == 0 {
				iv = lookback / 2
			}
			if at.Sub(tr.last()) <= 2*iv+scrapeGrace {
				n++
			}
		}
	}
	return n
}

// counterReading is one side's reading of a counter check. With other (the stable side's
// tracks, for the canary's reading) it looks for bursts in its counts (see bursts).
func counterReading(c rollout.Check, st sideTracks, spans Spans, through time.Time, e edges, other *sideTracks) rollout.Reading {
	switch {
	case st.err != nil:
		return errorReading(st.err)
	case st.empty:
		if c.Kind == rollout.KindRatio {
			return noData("no request series")
		}
		return noData("no histogram series")
	case through.IsZero():
		return noData("no live series: every series' last sample is stale")
	}
	from := spans.From
	counts := st.counts(c.Kind, from, through, e)
	if other != nil {
		counts.Steady, counts.Bursts = st.bursts(c.Kind, counts, e, *other)
	}
	r := rollout.Reading{Counts: &counts}
	if spans.Recent > 0 {
		rf := spans.recentFrom(through)
		re := edges{from: e.from, through: e.through}
		if rf.After(from) {
			re.from = e.recent
		}
		recent := st.counts(c.Kind, rf, through, re)
		if other != nil {
			recent.Steady, recent.Bursts = st.bursts(c.Kind, recent, re, *other)
		}
		r.Recent = &recent
	}
	if !through.After(from) {
		r.Status, r.Message = rollout.StatusNoData, "no samples since "+from.UTC().Format(time.RFC3339)+" yet"
		return r
	}
	switch c.Kind {
	case rollout.KindRatio:
		if counts.Total.Est <= 0 {
			r.Status, r.Message = rollout.StatusNoData, "no requests in the window"
			return r
		}
		r.Status, r.Value = rollout.StatusOK, counts.Events.Est/counts.Total.Est
		r.Events, r.Total = counts.Events.Est, counts.Total.Est
		r.Samples = int64(math.Round(counts.Total.Est))
	case rollout.KindHistogram:
		buckets := counts.EstBuckets()
		q, n, err := rollout.Quantile(c.Quantile, buckets)
		switch {
		case err != nil:
			return errorReading(fmt.Errorf("%w: %w", ErrBadQuery, err))
		case n <= 0:
			r.Status, r.Message = rollout.StatusNoData, "no observations in the window"
			return r
		case math.IsNaN(q):
			return errorReading(fmt.Errorf("%w: histogram has no finite bucket to estimate a quantile from", ErrBadQuery))
		}
		r.Status, r.Value, r.Samples = rollout.StatusOK, q, int64(math.Round(n))
		r.Buckets = rollout.SortBuckets(buckets)
	}
	return r
}

// NextEvaluation is when a rollout's next evaluation is due after one at now: as soon as new
// samples can have arrived (the next scrape of the series each counter check waits for), at
// least t.MinInterval (1s when unset; never more than t.Interval) and at most t.Interval
// after now. The sequential tests are valid
// however often they look, so evaluations follow the data rather than a fixed clock. The
// analyzer schedules by it, and the simulator too.
func NextEvaluation(now time.Time, t rollout.Template, ms []rollout.Measurement) time.Time {
	next := now.Add(t.Interval)
	for _, m := range ms {
		if !m.NextSample.IsZero() && m.NextSample.Before(next) {
			next = m.NextSample
		}
	}
	least := t.MinInterval
	if least <= 0 {
		least = time.Second
	}
	if l := now.Add(min(least, t.Interval)); next.Before(l) {
		next = l
	}
	return next
}
