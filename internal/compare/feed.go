package compare

import (
	"context"
	"fmt"
	"math/bits"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// A feed serves one counter query (a series selector) to every rollout that reads it. At
// 10,000 live rollouts, one query per rollout per side per evaluation, each reading the whole
// step again, is what Prometheus cannot keep up with; a feed instead:
//
//   - keeps each rollout side's raw samples in memory (by the values its placeholders take:
//     its "tuple"), read once over the step (and lookback before it) when the side is first
//     read: by the side's own query, as Measure did before feeds, or, when many sides are
//     read for the first time at once (every rollout after a restart or a takeover), by a
//     grouped query for many of them (see load);
//   - refreshes every tuple at once with one grouped query: the selector with each
//     placeholder's = made =~ over the union of the live tuples' values, over a range from the
//     last refresh (plus overlap, for samples ingested late) to the evaluation's time, so that
//     what Prometheus reads grows with the series, not with the rollouts nor with how long
//     an analysis has run;
//   - hands each series to its tuple by its labels, exactly: a series whose labels match no
//     tuple is dropped, so that no rollout ever reads another's series, whatever its values.
//
// A refresh is shared: evaluations that find the feed older than refreshAge wait for the
// one refresh in flight rather than each querying. A failed refresh fails the reads that
// waited on it, and reads within refreshAge after it, with its error (no query storm while
// the source is away). Tuples not read for tupleIdle are forgotten (their rollout ended).
type feed struct {
	shape groupShape
	text  string // the query template, for errors

	mu         sync.Mutex
	tuples     map[string]*tuple
	waiting    map[*tuple]bool // the tuples with a read waiting to load them (want set)
	refreshing chan struct{}   // non-nil while a refresh runs; closed when it ends
	loads      int             // first loads in flight (at most maxLoads)
	loadEnded  chan struct{}   // closed when one of them ends, for the reads waiting for a slot
	took       time.Duration   // the last refresh's duration
	failed     error           // the last refresh's error, until failedUntil
	failedAt   time.Time
}

// tuple is one rollout side's series of the feed's query.
type tuple struct {
	values []string
	series map[string]*cached // by their labels (labelsKey)
	// through is the time the newest query that covered the tuple was evaluated at: its
	// samples are complete up to it. ready is false until the first read's own query.
	through time.Time
	ready   bool
	loading *load  // non-nil while a load of it runs
	gen     uint64 // counts its loads: a refresh that began before one leaves it alone
	// want is, while a read waits to load the tuple, how far back it needs samples; own is
	// that read's own query (the selector with the tuple's values).
	want time.Time
	own  string
	// tried counts the loads that read the tuple, and loadErr is the last one's error: a
	// read that waited while a load of its tuple failed fails with it (rather than each
	// waiting read trying again on its own while the source is down).
	tried   uint64
	loadErr error
	// covered is how far back its samples are complete. keep is the earliest time any read
	// needed in the current period (from period on), keepPrev in the one before: samples
	// older than both are dropped.
	covered         time.Time
	keep, keepPrev  time.Time
	period, lastUse time.Time
}

type cached struct {
	key     string    // labelsKey of its labels
	labels  fedLabels // what reads need of them
	samples chunk     // oldest first
}

const (
	// feedOverlap is how far back a refresh reads before the previous one: a sample Prometheus
	// ingested after the previous refresh, with an earlier timestamp (a slow scrape, up to
	// Prometheus's default scrape timeout), is found by the next (samples are kept once, by
	// timestamp).
	feedOverlap = 10 * time.Second
	// minRefreshAge is the least age of a feed's data that makes a read refresh it.
	minRefreshAge = time.Second
	// tupleIdle is how long a tuple nobody reads is kept, and the length of a keep period.
	tupleIdle = 5 * time.Minute
	// keepBefore is how far before a read's From its samples are kept after the first read,
	// at least (keepFrom): enough for the rate before the step's start (calm, over the recent
	// window) and the count at it. The first read reaches lookback back, to find a sample of
	// a series scraped rarely.
	keepBefore = 2 * time.Minute
	// maxGroupValue bounds the length of a value that a grouped query holds: a longer one is
	// read by its side's own query, so that no rollout's values can make the grouped query
	// too long for the others.
	maxGroupValue = 1024
	// maxLoads bounds a feed's first loads in flight, and maxLoadTuples the tuples one of
	// them reads: after a restart, every rollout's sides are read for the first time at
	// once, and thousands of queries, one per side, held Prometheus (and the restart) for
	// tens of seconds.
	maxLoads      = 4
	maxLoadTuples = 256
)

// load is a first load in flight: the tuples it reads wait for done, and find its error.
type load struct {
	done chan struct{}
	err  error
}

// groupable reports whether a side's values may stand in a grouped query: non-empty (an
// empty value also matches series without the label), valid UTF-8, and not too long.
func groupable(values []string) bool {
	for _, v := range values {
		if v == "" || len(v) > maxGroupValue || !utf8.ValidString(v) {
			return false
		}
	}
	return true
}

func newFeed(shape groupShape, text string) *feed {
	return &feed{shape: shape, text: text, tuples: map[string]*tuple{}, waiting: map[*tuple]bool{}}
}

// keepFrom is where a read over spans keeps samples from: keepBefore before From, or the
// recent window and a minute, as calm reads before From, but never more than lookback.
func keepFrom(s Spans) time.Time {
	return s.From.Add(-min(lookback, max(keepBefore, s.Recent+time.Minute)))
}

func tupleKey(values []string) string { return string(appendTupleKey(nil, values)) }

// appendTupleKey appends values' tuple key to b: values joined by a byte valid UTF-8 never
// holds (a grouped query's values are valid UTF-8: groupable).
func appendTupleKey(b []byte, values []string) []byte {
	for i, v := range values {
		if i > 0 {
			b = append(b, 0xff)
		}
		b = append(b, v...)
	}
	return b
}

// refreshAge is how old the feed's data may be when read: minRefreshAge while refreshing
// takes at most a fifth of that, and otherwise five times its last refresh's duration, and at
// least half an overlap (every refresh reads feedOverlap again: at 10,000 rollouts,
// refreshes every two seconds read six times the samples that had come, and took most of the
// decoding). A cheap feed is not stretched: stretched from tens of milliseconds on, as it was,
// a loaded machine's slower queries made the daemon read older data than the backtest and
// plan its evaluations at other times (TestBacktestDecidesWhatTheDaemonDecides, under -race in
// CI).
func (f *feed) refreshAge() time.Duration {
	if 5*f.took <= minRefreshAge {
		return minRefreshAge
	}
	return max(5*f.took, min(feedOverlap/2, 50*f.took))
}

// read returns the side's series with their samples after keep (and each one's last sample at
// or before it), the horizon: the time the data is complete up to, and when a read can find
// newer data (a read refreshes the feed once its data is refreshAge old). own is the side's own
// query (the selector with its values, before the range), which its first read runs over
// (from - lookback, at].
func (f *feed) read(ctx context.Context, src Source, values []string, own string, from, keep, at time.Time) (resp Response, horizon, newer time.Time) {
	v, horizon, newer := f.view(ctx, src, values, own, from, keep, at)
	return v.response(), horizon, newer
}

// view is read's work under the feed's lock: it returns what the tuple holds, to be decoded
// once the lock is released (a refresh's readers come all at once, and each decodes its
// samples).
func (f *feed) view(ctx context.Context, src Source, values []string, own string, from, keep, at time.Time) (v tupleView, horizon, newer time.Time) {
	key := tupleKey(values)
	need := from.Add(-lookback)
	f.mu.Lock()
	defer f.mu.Unlock()
	tp := f.tuples[key]
	if tp == nil {
		tp = &tuple{values: values, series: map[string]*cached{}, period: at}
		f.tuples[key] = tp
	}
	tp.lastUse = at
	if tp.keep.IsZero() || keep.Before(tp.keep) {
		tp.keep = keep
	}
	var (
		waited bool   // for a load of tp: tried is how many had been tried before
		tried  uint64 // when this read began to wait
	)
	for {
		if err := ctx.Err(); err != nil {
			return tupleView{err: fmt.Errorf("%w: %w", ErrUnavailable, err)}, at, time.Time{}
		}
		if cur := f.tuples[key]; cur != tp {
			// Forgotten while this read waited (a refresh far later found it idle), or
			// replaced: read the current one.
			if cur == nil {
				cur = &tuple{values: values, series: map[string]*cached{}, period: at, lastUse: at, keep: keep}
				f.tuples[key] = cur
			}
			tp, waited = cur, false
		}
		switch {
		case tp.loading != nil:
			l := tp.loading
			if err := f.wait(ctx, l.done); err != nil {
				return tupleView{err: err}, at, time.Time{}
			}
			if l.err != nil {
				return tupleView{err: l.err}, at, time.Time{}
			}
		case !tp.ready || tp.covered.After(keep):
			if waited && tp.tried != tried && tp.loadErr != nil {
				return tupleView{err: tp.loadErr}, at, time.Time{} // loaded with others while this read waited, and failed
			}
			if !waited {
				waited, tried = true, tp.tried
			}
			if tp.want.IsZero() || need.Before(tp.want) {
				tp.want, tp.own = need, own
				f.waiting[tp] = true
			}
			if f.loads >= maxLoads {
				if f.loadEnded == nil {
					f.loadEnded = make(chan struct{})
				}
				if err := f.wait(ctx, f.loadEnded); err != nil {
					return tupleView{err: err}, at, time.Time{}
				}
				continue // another load may have read this tuple meanwhile
			}
			if err := f.load(ctx, src, tp, at); err != nil {
				return tupleView{err: err}, at, time.Time{}
			}
		case !tp.through.After(at.Add(-f.refreshAge())):
			if f.refreshing != nil {
				if err := f.wait(ctx, f.refreshing); err != nil {
					return tupleView{err: err}, at, time.Time{}
				}
				continue
			}
			if f.failed != nil && at.Sub(f.failedAt) < f.refreshAge() {
				return tupleView{err: f.failed}, at, time.Time{}
			}
			if err := f.refresh(ctx, src, at); err != nil {
				return tupleView{err: err}, at, time.Time{}
			}
			if !tp.through.After(at.Add(-f.refreshAge())) && f.tuples[key] == tp && tp.ready {
				// Not covered by the refresh (it was loading meanwhile): its data is as fresh
				// as its own query made it.
				return tp.view(keep), tp.through, tp.through.Add(f.refreshAge())
			}
		default:
			return tp.view(keep), tp.through, tp.through.Add(f.refreshAge())
		}
	}
}

// wait waits, unlocked, for ch to close.
func (f *feed) wait(ctx context.Context, ch chan struct{}) error {
	f.mu.Unlock()
	defer f.mu.Lock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
}

// load reads tp's series over (tp.want, at], unlocked, and replaces what the tuple held;
// and with it those of the other tuples waiting for a load whose reach is alike (up to
// maxLoadTuples), with one grouped query: so that the first reads of thousands of sides at
// once cost a few queries, not one each. A load reads at most twice as far back as any of
// its tuples needs (reachClass). A tuple loaded alone is read by its own query.
func (f *feed) load(ctx context.Context, src Source, tp *tuple, at time.Time) error {
	class := reachClass(at.Sub(tp.want))
	loaded := []*tuple{tp}
	for o := range f.waiting { // not every tuple: at a restart, each load looked at 20,000
		if len(loaded) == maxLoadTuples {
			break
		}
		if o != tp && !o.want.IsZero() && o.loading == nil && reachClass(at.Sub(o.want)) == class {
			loaded = append(loaded, o)
		}
	}
	need := tp.want
	for _, o := range loaded {
		if o.want.Before(need) {
			need = o.want
		}
	}
	reach := "[" + FormatDuration(at.Sub(need)) + "]"
	expr := tp.own + reach
	if len(loaded) > 1 {
		expr = f.shape.render(f.valueSets(loaded)) + reach
	}
	l := &load{done: make(chan struct{})}
	for _, o := range loaded {
		o.loading, o.want, o.own = l, time.Time{}, ""
		delete(f.waiting, o)
		o.tried++
	}
	f.loads++
	f.mu.Unlock()
	resp := (&batch{reqs: []Request{{Expr: expr, Time: at}}}).run(ctx, src)[0] // a short answer is unavailable
	f.mu.Lock()
	f.loads--
	for _, o := range loaded {
		o.loading, o.loadErr = nil, resp.Err
	}
	close(l.done)
	if f.loadEnded != nil {
		close(f.loadEnded)
		f.loadEnded = nil
	}
	if resp.Err != nil {
		l.err = resp.Err
		return resp.Err
	}
	byKey := make(map[string]*tuple, len(loaded))
	for _, o := range loaded {
		o.gen++ // a refresh in flight must not extend what this replaced
		o.series = map[string]*cached{}
		o.ready, o.covered, o.through = true, need, at
		byKey[tupleKey(o.values)] = o
	}
	vals := make([]string, len(f.shape.labels))
	for _, s := range resp.Series {
		if len(s.Samples) == 0 {
			continue // no float samples (a native histogram's series, say)
		}
		owner := tp
		if len(loaded) > 1 {
			for i, name := range f.shape.labels {
				vals[i] = s.Labels[name]
			}
			if owner = byKey[tupleKey(vals)]; owner == nil {
				continue // another rollout's values combined: nobody's series
			}
		}
		k := labelsKey(s.Labels)
		owner.series[k] = newCached(k, s)
	}
	return nil
}

// reachClass is the class of loads a reach belongs to: reaches within a factor two of each
// other share one.
func reachClass(reach time.Duration) int { return bits.Len64(uint64(max(reach/time.Second, 1))) }

// valueSets are, per label the feed groups by, the values the tuples take, sorted: the same
// tuples give the same query.
func (f *feed) valueSets(tuples []*tuple) [][]string {
	sets := make([]map[string]bool, len(f.shape.labels))
	for i := range sets {
		sets[i] = map[string]bool{}
	}
	for _, tp := range tuples {
		for i, v := range tp.values {
			sets[i][v] = true
		}
	}
	values := make([][]string, len(sets))
	for i, set := range sets {
		for v := range set {
			values[i] = append(values[i], v)
		}
		slices.Sort(values[i])
	}
	return values
}

// queryUnlocked runs one query with the feed unlocked, *flight set to a channel that reads
// wait on meanwhile and that is closed (and *flight cleared) once the answer is in. It
// returns the answer and how long the query took.
func (f *feed) queryUnlocked(ctx context.Context, src Source, req Request, flight *chan struct{}) (Response, time.Duration) {
	ch := make(chan struct{})
	*flight = ch
	f.mu.Unlock()
	began := time.Now()
	resp := (&batch{reqs: []Request{req}}).run(ctx, src)[0] // a short answer is unavailable
	took := time.Since(began)
	f.mu.Lock()
	*flight = nil
	close(ch)
	return resp, took
}

// refresh reads every ready tuple's new samples with one grouped query at `at`. It runs with
// the lock held but queries without it; reads that come meanwhile wait for it.
func (f *feed) refresh(ctx context.Context, src Source, at time.Time) error {
	var (
		included []*tuple
		gens     []uint64
		oldest   time.Time
	)
	for key, tp := range f.tuples {
		if at.Sub(tp.lastUse) > tupleIdle && tp.loading == nil {
			delete(f.tuples, key) // its rollout ended, or moved to another replica
			delete(f.waiting, tp)
			continue
		}
		if tp.loading != nil || !tp.ready {
			continue
		}
		if at.Sub(tp.through) > lookback {
			tp.ready = false // fallen too far behind for a refresh: its next read loads it again
			continue
		}
		included = append(included, tp)
		gens = append(gens, tp.gen)
		if oldest.IsZero() || tp.through.Before(oldest) {
			oldest = tp.through
		}
	}
	if len(included) == 0 {
		return nil
	}
	expr := f.shape.render(f.valueSets(included)) + "[" + FormatDuration(max(at.Sub(oldest), 0)+feedOverlap) + "]"
	resp, took := f.queryUnlocked(ctx, src, Request{Expr: expr, Time: at}, &f.refreshing)
	if resp.Err != nil {
		// A failure does not set took: one timeout must not hold every read of the feed
		// off for five of them.
		f.failed, f.failedAt = resp.Err, at
		return resp.Err
	}
	f.failed, f.took = nil, took
	byKey := make(map[string]*tuple, len(included))
	kept := included[:0]
	for i, tp := range included {
		if tp.gen != gens[i] || f.tuples[tupleKey(tp.values)] != tp {
			continue // loaded again (or forgotten) meanwhile: what it holds is newer
		}
		byKey[tupleKey(tp.values)] = tp
		kept = append(kept, tp)
	}
	included = kept
	var (
		tk     []byte // a series' tuple key
		keyer  labelKeyer
		values = make([]string, len(f.shape.labels))
	)
	for _, s := range resp.Series {
		for i, l := range f.shape.labels {
			values[i] = s.Labels[l]
		}
		tk = appendTupleKey(tk[:0], values)
		tp := byKey[string(tk)]
		if tp == nil {
			continue // another rollout's values combined: nobody's series
		}
		tp.merge(keyer.key(s.Labels, ""), s)
	}
	for _, tp := range included {
		if at.After(tp.through) {
			tp.through = at
		}
		tp.prune(at)
	}
	return nil
}

func newCached(key string, s Series) *cached {
	c := &cached{key: key, labels: newFedLabels(s.Labels)}
	c.samples.append(s.Samples...)
	return c
}

// merge adds a series' samples newer than those the tuple holds; key is its labelsKey.
func (tp *tuple) merge(key []byte, s Series) {
	if len(s.Samples) == 0 {
		return
	}
	c := tp.series[string(key)]
	if c == nil {
		k := string(key)
		tp.series[k] = newCached(k, s)
		return
	}
	last := c.samples.lastSample().T
	i := sort.Search(len(s.Samples), func(i int) bool { return s.Samples[i].T > last })
	c.samples.append(s.Samples[i:]...)
}

// prune drops the samples no read needs: those before the earliest time read lately (each
// series keeps its last sample before it, its count there), and series with nothing left.
func (tp *tuple) prune(at time.Time) {
	if at.Sub(tp.period) > tupleIdle {
		tp.keepPrev, tp.keep, tp.period = tp.keep, time.Time{}, at
	}
	cut := tp.keep
	if cut.IsZero() || (!tp.keepPrev.IsZero() && tp.keepPrev.Before(cut)) {
		cut = tp.keepPrev
	}
	if cut.IsZero() || !cut.After(tp.covered) {
		return
	}
	cutMs := cut.UnixMilli()
	for k, c := range tp.series {
		i := c.samples.through(cutMs)
		switch {
		case i == c.samples.len() && at.Sub(c.samples.lastSample().Time()) > tupleIdle:
			delete(tp.series, k) // gone long ago (a deleted pod)
		case i > 1:
			c.samples.drop(i - 1)
		}
	}
	tp.covered = cut
}

// tupleView is what a tuple held at a read: its series sorted by their labels (the same
// order at every read: map order is not), each with its samples as they were then, or why
// the read failed. A chunk's bytes are only appended to (past what a view holds) or
// replaced (drop), so a view can be decoded without the feed's lock.
type tupleView struct {
	series []viewed
	from   int64 // Unix milliseconds
	err    error
}

type viewed struct {
	key     string
	labels  *fedLabels
	samples chunk // a copy of the chunk's header
}

// view is the tuple's series as they are, for a response with their samples after from.
func (tp *tuple) view(from time.Time) tupleView {
	v := tupleView{series: make([]viewed, 0, len(tp.series)), from: from.UnixMilli()}
	for _, c := range tp.series {
		v.series = append(v.series, viewed{key: c.key, labels: &c.labels, samples: c.samples})
	}
	slices.SortFunc(v.series, func(a, b viewed) int { return strings.Compare(a.key, b.key) })
	return v
}

// response is the view's series with their samples after from (and the last one at or
// before it), decoded into one buffer of the response's own.
func (v tupleView) response() Response {
	if v.err != nil {
		return Response{Err: v.err}
	}
	out := Response{Series: make([]Series, len(v.series))}
	n := 0
	for _, c := range v.series {
		n += c.samples.len()
	}
	buf := make([]Sample, 0, n)
	for k, c := range v.series {
		start := len(buf)
		buf = c.samples.appendTo(buf)
		samples := buf[start:len(buf):len(buf)]
		i := sort.Search(len(samples), func(i int) bool { return samples[i].T > v.from })
		if i > 0 {
			i--
		}
		out.Series[k] = Series{Samples: samples[i:], fed: c.labels}
	}
	return out
}

// labelsKey is a series' identity: its labels, sorted.
func labelsKey(labels map[string]string) string { return labelsKeyWithout(labels, "") }
