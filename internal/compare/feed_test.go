package compare

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestGrouping(t *testing.T) {
	args, vars := []string{"service"}, []string{"version"}
	for _, tc := range []struct {
		query  string
		labels []string
		sets   [][]string
		want   string
	}{
		{
			query:  `http_requests_total{service={{ arg "service" }}, version = {{ var "version" }}, code=~"5.."}`,
			labels: []string{"service", "version"},
			sets:   [][]string{{"a", "b.c"}, {"v1", "v2"}},
			want:   `http_requests_total{service=~"a|b\\.c", version =~ "v1|v2", code=~"5.."}`,
		},
		{
			query:  `x{version=~{{ varRegex "version" }}}`,
			labels: []string{"version"},
			sets:   [][]string{{"v1+", `q"} or vector(1)`}},
			want:   `x{version=~"v1\\+|q\"\\} or vector\\(1\\)"}`,
		},
	} {
		q, err := Compile(tc.query, args, vars)
		require.NoError(t, err)
		g, ok := q.grouping()
		require.True(t, ok, tc.query)
		require.Equal(t, tc.labels, g.labels)
		require.Equal(t, tc.want, g.render(tc.sets))
		values, err := g.values(Values{Args: map[string]string{"service": "s"}, Vars: map[string]string{"version": "v"}})
		require.NoError(t, err)
		require.Len(t, values, len(tc.labels))
	}
	for _, query := range []string{
		`x{service!={{ arg "service" }}}`,                    // a union of exclusions excludes nothing
		`x{version!~{{ varRegex "version" }}}`,               // likewise
		`x{service="a"}`,                                     // nothing to group by
		`rate(x{service={{ arg "service" }}}[{{ window }}])`, // not a selector
	} {
		q, err := Compile(query, args, vars)
		require.NoError(t, err)
		_, ok := q.grouping()
		require.False(t, ok, query)
	}
}

func TestGroupableValues(t *testing.T) {
	require.True(t, groupable([]string{"checkout", `.*"}`}))
	require.False(t, groupable([]string{"checkout", ""}), "an empty value also matches series without the label")
	require.False(t, groupable([]string{"\xff"}), "not UTF-8")
	require.False(t, groupable([]string{string(make([]byte, maxGroupValue+1))}))
}

// scrapedSource answers every query with one counter series scraped every 5 s from t0,
// growing by 10 a scrape: the samples within the query's range. It counts the queries.
type scrapedSource struct {
	t0      time.Time
	queries int
}

func (s *scrapedSource) Query(_ context.Context, reqs []Request) []Response {
	out := make([]Response, len(reqs))
	for i, r := range reqs {
		s.queries++
		open := strings.LastIndexByte(r.Expr, '[')
		d, err := time.ParseDuration(strings.TrimSuffix(r.Expr[open+1:], "]"))
		if err != nil {
			out[i] = Response{Err: err}
			continue
		}
		var samples []Sample
		for t, v := s.t0, 0.0; !t.After(r.Time); t, v = t.Add(5*time.Second), v+10 {
			if t.After(r.Time.Add(-d)) {
				samples = append(samples, SampleAt(t, v))
			}
		}
		out[i] = Response{Series: []Series{{Labels: map[string]string{"service": "a", "version": "v2"}, Samples: samples}}}
	}
	return out
}

// TestFeedKeepsWhatReadsNeed: a feed holds a side's samples from keepBefore before its step
// (not the whole history), lets the older ones go once the step moves on, and forgets a side
// nobody reads.
func TestFeedKeepsWhatReadsNeed(t *testing.T) {
	q, err := Compile(`x{service={{ arg "service" }}, version={{ var "version" }}}`, []string{"service"}, []string{"version"})
	require.NoError(t, err)
	shape, ok := q.grouping()
	require.True(t, ok)
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	src := &scrapedSource{t0: t0}
	f := newFeed(shape, q.Text())
	values := []string{"a", "v2"}
	ctx := context.Background()
	read := func(from, at time.Time) Response {
		resp, horizon, newer := f.read(ctx, src, values, `x{service="a", version="v2"}`, from, from.Add(-keepBefore), at)
		require.NoError(t, resp.Err)
		require.Equal(t, at, horizon, "each read here refreshes: they are 10 s apart")
		require.Equal(t, horizon.Add(f.refreshAge()), newer, "a read finds newer data once the feed is refreshAge old")
		return resp
	}
	held := func() int {
		return f.tuples[tupleKey(values)].series[labelsKey(map[string]string{"service": "a", "version": "v2"})].samples.len()
	}

	step := t0.Add(30 * time.Minute)
	at := step
	for range 60 { // ten minutes of the step, an evaluation every 10 s
		at = at.Add(10 * time.Second)
		resp := read(step, at)
		require.Len(t, resp.Series, 1)
		first := resp.Series[0].Samples[0].Time()
		require.False(t, first.After(step.Add(-keepBefore)), "the count at the read's start is known")
		require.Equal(t, at, resp.Series[0].Samples[len(resp.Series[0].Samples)-1].Time(), "the newest sample is read")
	}
	require.Equal(t, 60, src.queries, "the first read loads the side, each later one refreshes it")
	// Held: the step so far and keepBefore before it (and one sample before that), not the
	// half hour of history nor lookback.
	require.LessOrEqual(t, held(), int((10*time.Minute+keepBefore)/(5*time.Second))+2)

	// The step moves on: after two keep periods only the new step's samples are held.
	next := at
	for at.Sub(next) <= 2*tupleIdle+time.Minute {
		at = at.Add(10 * time.Second)
		read(next, at)
	}
	require.LessOrEqual(t, held(), int((at.Sub(next)+keepBefore)/(5*time.Second))+2)

	// Nobody reads it any more: forgotten at a refresh after tupleIdle (another side's read
	// refreshes the feed).
	other := []string{"b", "v2"}
	later := at.Add(tupleIdle + time.Minute)
	resp, _, _ := f.read(ctx, src, other, `x{service="b", version="v2"}`, later, later.Add(-keepBefore), later)
	require.NoError(t, resp.Err)
	resp, _, _ = f.read(ctx, src, other, `x{service="b", version="v2"}`, later, later.Add(-keepBefore), later.Add(10*time.Second))
	require.NoError(t, resp.Err)
	require.NotContains(t, f.tuples, tupleKey(values))
}

// failingSource answers every query with err once open is closed, counting them.
type failingSource struct {
	open    chan struct{}
	err     error
	queries atomic.Int64
}

func (s *failingSource) Query(ctx context.Context, reqs []Request) []Response {
	s.queries.Add(int64(len(reqs)))
	<-s.open
	out := make([]Response, len(reqs))
	for i := range out {
		out[i] = Response{Err: s.err}
	}
	return out
}

// TestFailedFirstLoadFailsItsReads: when the source fails while many sides are read for the
// first time at once, every read gets the source's error (none waits for ever, none reads
// nothing as if there were no data), and the loads that fail hold no tuple: the next read
// loads again.
func TestFailedFirstLoadFailsItsReads(t *testing.T) {
	q, err := Compile(`x{service={{ arg "service" }}}`, []string{"service"}, nil)
	require.NoError(t, err)
	shape, ok := q.grouping()
	require.True(t, ok)
	f := newFeed(shape, q.Text())
	down := fmt.Errorf("%w: connection refused", ErrUnavailable)
	src := &failingSource{open: make(chan struct{}), err: down}
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

	const sides = 2*maxLoads + 3 // more than can load at once
	errs := make(chan error, sides)
	for i := range sides {
		go func() {
			svc := fmt.Sprintf("svc-%d", i)
			resp, _, _ := f.read(context.Background(), src, []string{svc}, `x{service="`+svc+`"}`, at.Add(-time.Minute), at.Add(-3*time.Minute), at)
			errs <- resp.Err
		}()
	}
	require.Eventually(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		n := 0
		for _, tp := range f.tuples {
			if tp.loading != nil || !tp.want.IsZero() {
				n++
			}
		}
		return n == sides
	}, time.Minute, time.Millisecond)
	close(src.open)
	for range sides {
		require.ErrorIs(t, <-errs, ErrUnavailable)
	}
	require.LessOrEqual(t, src.queries.Load(), int64(maxLoads+1), "the sides that waited for a slot were loaded together")
	f.mu.Lock()
	for key, tp := range f.tuples {
		require.False(t, tp.ready, "%s holds nothing", key)
		require.Nil(t, tp.loading, key)
		require.True(t, tp.want.IsZero(), key)
	}
	f.mu.Unlock()

	// The source is back: the next read loads its side.
	ok2 := &scrapedSource{t0: at.Add(-time.Hour)}
	resp, _, _ := f.read(context.Background(), ok2, []string{"svc-0"}, `x{service="svc-0"}`, at.Add(-time.Minute), at.Add(-3*time.Minute), at.Add(time.Second))
	require.NoError(t, resp.Err)
	require.Len(t, resp.Series, 1)
	require.Equal(t, 1, ok2.queries)
}

// TestRefreshAgeGrowsWithItsCost: a feed whose refresh takes up to a fifth of a second is
// refreshed every second; one whose refresh costs more waits half an overlap (each refresh
// reads the overlap again), and one whose refresh is slow five times its duration.
func TestRefreshAgeGrowsWithItsCost(t *testing.T) {
	for took, want := range map[time.Duration]time.Duration{
		0:                      time.Second,
		10 * time.Millisecond:  time.Second,
		50 * time.Millisecond:  time.Second,
		200 * time.Millisecond: time.Second,
		300 * time.Millisecond: 5 * time.Second,
		500 * time.Millisecond: 5 * time.Second,
		2 * time.Second:        10 * time.Second,
	} {
		f := newFeed(groupShape{}, "")
		f.took = took
		require.Equal(t, want, f.refreshAge(), "refresh took %s", took)
	}
}
