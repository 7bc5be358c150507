package compare

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// fakeSource answers each query from a map by its expression and records every batch.
type fakeSource struct {
	mu      sync.Mutex
	answers map[string]Response
	batches [][]Request
	short   int // answer this many fewer requests than asked
}

func (f *fakeSource) Query(_ context.Context, reqs []Request) []Response {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.batches = append(f.batches, append([]Request(nil), reqs...))
	out := make([]Response, 0, len(reqs))
	for _, r := range reqs[:len(reqs)-f.short] {
		resp, ok := f.answers[r.Expr]
		if !ok {
			resp = Response{Err: fmt.Errorf("%w: fake has no answer for %s", ErrBadQuery, r.Expr)}
		}
		out = append(out, resp)
	}
	return out
}

func one(v float64) Response {
	return Response{Series: []Series{{Labels: map[string]string{}, Value: v}}}
}

func none() Response { return Response{Series: []Series{}} }

func failed(err error) Response { return Response{Err: err} }

var (
	at      = time.Date(2026, 11, 25, 14, 3, 10, 0, time.UTC)
	stepAt  = at.Add(-2 * time.Minute) // the step's start in the Measure tests
	startAt = time.Date(2026, 11, 25, 13, 0, 0, 0, time.UTC)
	errorsQ = `req{service={{ arg "service" }}, version={{ var "version" }}, code=~"5.."}`
	totalQ  = `req{service={{ arg "service" }}, version={{ var "version" }}}`
	// bucketsQ selects every pod's bucket series.
	bucketsQ = `lat_bucket{service={{ arg "service" }}, version={{ var "version" }}}`
	cpuQ     = `avg(cpu{service={{ arg "service" }}, version=~{{ varRegex "version" }}})`
)

// ramp is a counter series scraped every 30 s from from-30s to to: v0 until from, then
// growing linearly to v1 at to. Scraped exactly at both edges, its count over (from, to] is
// exactly v1 - v0.
func ramp(labels map[string]string, from, to time.Time, v0, v1 float64) Series {
	s := Series{Labels: labels}
	for t := from.Add(-30 * time.Second); !t.After(to); t = t.Add(30 * time.Second) {
		v := v0
		if t.After(from) {
			v = v0 + (v1-v0)*float64(t.Sub(from))/float64(to.Sub(from))
		}
		s.Samples = append(s.Samples, SampleAt(t, v))
	}
	return s
}

// counted is a one-series range answer counting n over (stepAt, at].
func counted(n float64) Response {
	return Response{Series: []Series{ramp(map[string]string{"pod": "a"}, stepAt, at, 1000, 1000+n)}}
}

// histo is one pod's bucket series over (stepAt, at]: pairs of le and count in the window.
func histo(pairs ...any) Response {
	var r Response
	for i := 0; i < len(pairs); i += 2 {
		r.Series = append(r.Series, ramp(map[string]string{"pod": "a", "le": pairs[i].(string)}, stepAt, at, 0, pairs[i+1].(float64)))
	}
	return r
}

func goldenTemplate(t *testing.T) *Template {
	t.Helper()
	tm, err := CompileTemplate(rollout.Template{
		Name: "t", Interval: 10 * time.Second, BaselineWindow: 10 * time.Minute, MinStepDuration: time.Minute,
		Args: []string{"service"}, Variables: []string{"version"},
		Checks: []rollout.Check{
			{Name: "error-rate", Kind: rollout.KindRatio, Errors: errorsQ, Total: totalQ},
			{Name: "p95", Kind: rollout.KindHistogram, Quantile: 0.95, Buckets: bucketsQ},
			{Name: "p99", Kind: rollout.KindHistogram, Quantile: 0.99, Buckets: bucketsQ},
			{Name: "cpu", Kind: rollout.KindValue, Query: cpuQ},
		},
	})
	require.NoError(t, err)
	return tm
}

func target(tm *Template) Target {
	return Target{
		Template: tm,
		Args:     map[string]string{"service": "checkout"},
		Canary:   Side{Vars: map[string]string{"version": "v2.3.0"}},
		Stable:   Side{Vars: map[string]string{"version": "v2.2.9"}},
		From:     stepAt,
		At:       at,
	}
}

// TestMeasureRanges: counter checks read their selector's raw samples over the step plus
// the lookback (At - From + 5m); value checks get the step so far as {{ window }}.
func TestMeasureRanges(t *testing.T) {
	tm, err := CompileTemplate(rollout.Template{
		Name: "t", Args: []string{"service"}, Variables: []string{"version"},
		Checks: []rollout.Check{
			{Name: "error-rate", Kind: rollout.KindRatio, Errors: errorsQ, Total: totalQ},
			{Name: "p95", Kind: rollout.KindHistogram, Quantile: 0.95, Buckets: bucketsQ},
			{Name: "cpu", Kind: rollout.KindValue, Query: `avg(avg_over_time(cpu{service={{ arg "service" }}, version={{ var "version" }}}[{{ window }}]))`},
		},
	})
	require.NoError(t, err)
	src := &fakeSource{}
	NewPerRollout(src).Measure(context.Background(), target(tm))
	require.Len(t, src.batches, 1)
	var counted, valued int
	for _, r := range src.batches[0] {
		require.Equal(t, at, r.Time)
		switch {
		case strings.HasPrefix(r.Expr, "avg(avg_over_time(cpu"):
			require.Contains(t, r.Expr, "[120s]", "a value check spans the step")
			valued++
		default:
			require.True(t, strings.HasSuffix(r.Expr, "}[420s]"), "a counter selector reads the step and 5m before it: %s", r.Expr)
			counted++
		}
	}
	require.Equal(t, 6, counted, "errors, total and buckets on each side")
	require.Equal(t, 2, valued)

	// At the step's very start the range is the lookback alone.
	tg := target(tm)
	tg.At = tg.From
	src = &fakeSource{}
	NewPerRollout(src).Measure(context.Background(), tg)
	require.True(t, strings.HasSuffix(src.batches[0][0].Expr, "}[300s]"), src.batches[0][0].Expr)
}

func TestMeasure(t *testing.T) {
	canary := map[string]string{"pod": "a"}
	src := &fakeSource{answers: map[string]Response{
		`req{service="checkout", version="v2.3.0", code=~"5.."}[420s]`: counted(12),
		`req{service="checkout", version="v2.3.0"}[420s]`: {Series: []Series{
			ramp(canary, stepAt, at, 100, 1088), // code 200
			ramp(map[string]string{"pod": "a", "code": "500"}, stepAt, at, 1000, 1012),
		}},
		`req{service="checkout", version="v2.2.9", code=~"5.."}[420s]`: none(),
		`req{service="checkout", version="v2.2.9"}[420s]`:              {Series: []Series{ramp(canary, stepAt, at, 5000, 14000.4)}},
		`lat_bucket{service="checkout", version="v2.3.0"}[420s]`: histo(
			"0.1", 500.0, "0.25", 900.0, "0.5", 980.0, "1", 1000.0, "+Inf", 1000.0),
		`lat_bucket{service="checkout", version="v2.2.9"}[420s]`: histo("+Inf", 0.0, "0.1", 0.0),
		`avg(cpu{service="checkout", version=~"v2\\.3\\.0"})`:    one(0.5),
		`avg(cpu{service="checkout", version=~"v2\\.2\\.9"})`:    none(),
	}}
	got := NewPerRollout(src).Measure(context.Background(), target(goldenTemplate(t)))

	// One batch; each side rendered with its own variables; the two histogram checks share
	// their query, which runs once per side.
	require.Len(t, src.batches, 1)
	var exprs []string
	for _, r := range src.batches[0] {
		exprs = append(exprs, r.Expr)
		require.Equal(t, at, r.Time)
	}
	require.Equal(t, []string{
		`req{service="checkout", version="v2.3.0", code=~"5.."}[420s]`,
		`req{service="checkout", version="v2.3.0"}[420s]`,
		`req{service="checkout", version="v2.2.9", code=~"5.."}[420s]`,
		`req{service="checkout", version="v2.2.9"}[420s]`,
		`lat_bucket{service="checkout", version="v2.3.0"}[420s]`,
		`lat_bucket{service="checkout", version="v2.2.9"}[420s]`,
		`avg(cpu{service="checkout", version=~"v2\\.3\\.0"})`,
		`avg(cpu{service="checkout", version=~"v2\\.2\\.9"})`,
	}, exprs)

	require.Len(t, got, 4)
	er := got[0]
	require.Equal(t, "error-rate", er.Check)
	require.Equal(t, at, er.Through, "every series was scraped at At")
	require.Equal(t, 30*time.Second, er.ScrapeInterval)
	require.Equal(t, at.Add(32*time.Second), er.NextSample, "the next scrape, plus the grace")
	require.Equal(t, rollout.StatusOK, er.Canary.Status, er.Canary.Message)
	require.InDelta(t, 0.012, er.Canary.Value, 1e-12)
	require.Equal(t, int64(1000), er.Canary.Samples)
	require.InDelta(t, 12, er.Canary.Events, 1e-9)
	require.InDelta(t, 1000, er.Canary.Total, 1e-9)
	require.NotNil(t, er.Canary.Counts)
	require.Equal(t, stepAt, er.Canary.Counts.From)
	require.Equal(t, at, er.Canary.Counts.Through)
	requireBounds(t, rollout.Exact(12), er.Canary.Counts.Events, "scraped at both edges: exact")
	requireBounds(t, rollout.Exact(1000), er.Canary.Counts.Total, "scraped at both edges: exact")
	require.Nil(t, er.Canary.Recent, "the template has no recent window")
	require.Equal(t, rollout.StatusOK, er.Stable.Status, er.Stable.Message)
	require.Equal(t, 0.0, er.Stable.Value, "no error series is no errors")
	require.Equal(t, int64(9000), er.Stable.Samples)
	require.InDelta(t, 9000.4, er.Stable.Total, 1e-9)

	require.Equal(t, "p95", got[1].Check)
	// rank 950 in (0.25, 0.5] holding 80: 0.25 + 0.25*(50/80)
	require.Equal(t, rollout.StatusOK, got[1].Canary.Status, got[1].Canary.Message)
	require.InDelta(t, 0.25+0.25*50/80, got[1].Canary.Value, 1e-9)
	require.Equal(t, int64(1000), got[1].Canary.Samples)
	require.Len(t, got[1].Canary.Buckets, 5)
	for i, want := range []rollout.Bucket{{UpperBound: 0.1, Count: 500}, {UpperBound: 0.25, Count: 900}, {UpperBound: 0.5, Count: 980},
		{UpperBound: 1, Count: 1000}, {UpperBound: math.Inf(1), Count: 1000}} {
		require.Equal(t, want.UpperBound, got[1].Canary.Buckets[i].UpperBound, "the counts behind the quantile, sorted")
		require.InDelta(t, want.Count, got[1].Canary.Buckets[i].Count, 1e-9)
	}
	require.Equal(t, rollout.StatusNoData, got[1].Stable.Status)
	require.Equal(t, "no observations in the window", got[1].Stable.Message)

	require.Equal(t, "p99", got[2].Check)
	// rank 990 in (0.5, 1] holding 20: 0.5 + 0.5*(10/20)
	require.InDelta(t, 0.75, got[2].Canary.Value, 1e-9)

	require.Equal(t, "cpu", got[3].Check)
	require.Equal(t, rollout.Reading{Status: rollout.StatusOK, Value: 0.5}, got[3].Canary)
	require.Equal(t, rollout.Reading{Status: rollout.StatusNoData, Message: "no series"}, got[3].Stable)
	require.True(t, got[3].Through.IsZero(), "value checks have no span")
	require.Zero(t, got[3].NextSample)
	for _, m := range got {
		require.Nil(t, m.Baseline, "Measure leaves baselines to the caller")
	}
}

func requireBounds(t *testing.T, want, got rollout.Bounds, msgAndArgs ...any) {
	t.Helper()
	require.InDelta(t, want.Low, got.Low, 1e-9, msgAndArgs...)
	require.InDelta(t, want.Est, got.Est, 1e-9, msgAndArgs...)
	require.InDelta(t, want.High, got.High, 1e-9, msgAndArgs...)
}

func TestMeasureDedupsAcrossSides(t *testing.T) {
	tm := goldenTemplate(t)
	tg := target(tm)
	tg.Stable = tg.Canary // same variables: every query is shared
	src := &fakeSource{answers: map[string]Response{}}
	got := NewPerRollout(src).Measure(context.Background(), tg)
	require.Len(t, src.batches, 1)
	require.Len(t, src.batches[0], 4, "errors, total, buckets, cpu: each once")
	require.Len(t, got, 4)
	for _, m := range got {
		require.Equal(t, m.Canary, m.Stable)
	}

	// Another span is another range: other queries.
	tg.From = tg.From.Add(-time.Minute)
	src = &fakeSource{answers: map[string]Response{}}
	NewPerRollout(src).Measure(context.Background(), tg)
	require.Len(t, src.batches[0], 4)
	require.Contains(t, src.batches[0][0].Expr, "[480s]")
}

func TestMeasureNoChecksNoQuery(t *testing.T) {
	tm, err := CompileTemplate(rollout.Template{Name: "empty"})
	require.NoError(t, err)
	src := &fakeSource{}
	require.Empty(t, NewPerRollout(src).Measure(context.Background(), Target{Template: tm}))
	require.Empty(t, src.batches)
}

func TestMeasureRenderError(t *testing.T) {
	tg := target(goldenTemplate(t))
	tg.Canary.Vars = map[string]string{} // version missing on the canary side
	src := &fakeSource{answers: map[string]Response{
		`req{service="checkout", version="v2.2.9", code=~"5.."}[420s]`: counted(1),
		`req{service="checkout", version="v2.2.9"}[420s]`:              counted(100),
	}}
	got := NewPerRollout(src).Measure(context.Background(), tg)
	require.Len(t, src.batches[0], 4, "only the stable side's queries are sent")
	for _, m := range got {
		require.Equal(t, rollout.StatusError, m.Canary.Status, m.Check)
		require.Equal(t, `variable "version" is not set`, m.Canary.Message)
	}
	require.Equal(t, rollout.StatusOK, got[0].Stable.Status, got[0].Stable.Message)
	require.InDelta(t, 0.01, got[0].Stable.Value, 1e-12)
	require.Equal(t, int64(100), got[0].Stable.Samples)
	require.Equal(t, at, got[0].Through, "the stable side alone sets the span")
}

func TestMeasureShortAnswerIsUnavailable(t *testing.T) {
	src := &fakeSource{answers: map[string]Response{}, short: 2}
	got := NewPerRollout(src).Measure(context.Background(), target(goldenTemplate(t)))
	// The last two requests (cpu, both sides) got no answer.
	require.Equal(t, rollout.StatusError, got[3].Canary.Status)
	require.Contains(t, got[3].Canary.Message, ErrUnavailable.Error())
	require.Contains(t, got[3].Stable.Message, "no answer")
}

// measureCheck measures one check over (stepAt, at] whose canary queries are answered by
// resps (in query order).
func measureCheck(t *testing.T, c rollout.Check, resps ...Response) rollout.Reading {
	t.Helper()
	tm, err := CompileTemplate(rollout.Template{Name: "t", Variables: []string{"v"}, Checks: []rollout.Check{c}})
	require.NoError(t, err)
	src := &fakeSource{answers: map[string]Response{}}
	spans := Spans{From: stepAt, At: at}
	for i, q := range tm.checks[0].queries {
		expr, err := q.Render(Values{Vars: map[string]string{"v": "canary"}, Window: at.Sub(stepAt)})
		require.NoError(t, err)
		if c.Kind != rollout.KindValue {
			expr += "[" + FormatDuration(spans.rangeFor()) + "]"
		}
		src.answers[expr] = resps[i]
	}
	got := NewPerRollout(src).Measure(context.Background(), Target{
		Template: tm,
		Canary:   Side{Vars: map[string]string{"v": "canary"}},
		Stable:   Side{Vars: map[string]string{"v": "stable"}},
		From:     stepAt, At: at,
	})
	require.Len(t, got, 1)
	return got[0].Canary
}

func nanSeries() Response {
	s := ramp(map[string]string{}, stepAt, at, 0, 0)
	for i := range s.Samples {
		s.Samples[i].V = math.NaN()
	}
	return Response{Series: []Series{s}}
}

func TestRatioReadings(t *testing.T) {
	check := rollout.Check{Name: "r", Kind: rollout.KindRatio,
		Errors: `errs{v={{ var "v" }}}`, Total: `reqs{v={{ var "v" }}}`}
	unreachable := fmt.Errorf("%w: dial tcp: connection refused", ErrUnavailable)
	twoPods := Response{Series: []Series{
		ramp(map[string]string{"pod": "a"}, stepAt, at, 7, 60),
		ramp(map[string]string{"pod": "b"}, stepAt, at, 1e6, 1e6+47),
	}}
	for _, tc := range []struct {
		name         string
		errs, total  Response
		want         rollout.Reading
		wantContains []string // for error readings
	}{
		{"errors over total", counted(5), counted(100), rollout.Reading{Status: rollout.StatusOK, Value: 0.05, Samples: 100, Events: 5, Total: 100}, nil},
		{"no error series with requests is no errors", none(), counted(100), rollout.Reading{Status: rollout.StatusOK, Value: 0, Samples: 100, Total: 100}, nil},
		{"nil error series with requests is no errors", Response{}, counted(100), rollout.Reading{Status: rollout.StatusOK, Value: 0, Samples: 100, Total: 100}, nil},
		{"NaN error samples count as none", nanSeries(), counted(100), rollout.Reading{Status: rollout.StatusOK, Value: 0, Samples: 100, Total: 100}, nil},
		{"series are summed", counted(1), twoPods, rollout.Reading{Status: rollout.StatusOK, Value: 0.01, Samples: 100, Events: 1, Total: 100}, nil},
		{"samples are the rounded total", counted(1), counted(1830.6), rollout.Reading{Status: rollout.StatusOK, Value: 1 / 1830.6, Samples: 1831, Events: 1, Total: 1830.6}, nil},
		{"total zero is no data", counted(0), counted(0), rollout.Reading{Status: rollout.StatusNoData, Message: "no requests in the window"}, nil},
		{"total zero with errors is no data", counted(3), counted(0), rollout.Reading{Status: rollout.StatusNoData, Message: "no requests in the window"}, nil},
		{"no total series is no data", none(), none(), rollout.Reading{Status: rollout.StatusNoData, Message: "no request series"}, nil},
		{"only NaN total samples is no data", counted(1), nanSeries(), rollout.Reading{Status: rollout.StatusNoData, Message: "no request series"}, nil},
		{"total source error keeps its message", counted(1), failed(unreachable),
			rollout.Reading{Status: rollout.StatusError}, []string{unreachable.Error()}},
		{"errors source error keeps its message", failed(unreachable), counted(100),
			rollout.Reading{Status: rollout.StatusError}, []string{unreachable.Error()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := measureCheck(t, check, tc.errs, tc.total)
			if tc.want.Status != rollout.StatusError {
				require.Equal(t, tc.want.Status, got.Status, got.Message)
				require.InDelta(t, tc.want.Value, got.Value, 1e-12)
				require.Equal(t, tc.want.Samples, got.Samples)
				require.Equal(t, tc.want.Message, got.Message)
				require.InDelta(t, tc.want.Events, got.Events, 1e-9, "the error count behind the value")
				require.InDelta(t, tc.want.Total, got.Total, 1e-9, "the request count behind the value")
				return
			}
			require.Equal(t, rollout.StatusError, got.Status)
			require.Nil(t, got.Counts)
			for _, s := range tc.wantContains {
				require.Contains(t, got.Message, s)
			}
		})
	}
}

func TestSingle(t *testing.T) {
	_, _, err := single(Response{Series: []Series{{Value: 1}, {Value: 2}}})
	require.ErrorIs(t, err, ErrBadQuery)
	v, ok, err := single(one(3))
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, 3.0, v)
	for _, r := range []Response{none(), one(math.NaN()), one(math.Inf(-1))} {
		_, ok, err := single(r)
		require.NoError(t, err)
		require.False(t, ok)
	}
}

func TestHistogramReadings(t *testing.T) {
	check := rollout.Check{Name: "h", Kind: rollout.KindHistogram, Quantile: 0.5, Buckets: `b{v={{ var "v" }}}`}
	withNaN := histo("0.1", 50.0, "0.15", 0.0, "0.2", 100.0, "+Inf", 100.0)
	for i := range withNaN.Series[1].Samples {
		withNaN.Series[1].Samples[i].V = math.NaN()
	}
	twoPods := histo("0.1", 10.0, "+Inf", 20.0)
	for _, s := range histo("0.1", 5.0, "+Inf", 80.0).Series {
		s.Labels = map[string]string{"pod": "b", "le": s.Labels["le"]}
		twoPods.Series = append(twoPods.Series, s)
	}
	for _, tc := range []struct {
		name         string
		resp         Response
		want         rollout.Reading
		wantContains []string
	}{
		{"interpolated", histo("0.1", 50.0, "0.2", 100.0, "+Inf", 100.0),
			rollout.Reading{Status: rollout.StatusOK, Value: 0.1, Samples: 100}, nil},
		{"series in any order", histo("+Inf", 100.0, "0.2", 100.0, "0.1", 20.0),
			rollout.Reading{Status: rollout.StatusOK, Value: 0.1 + 0.1*30/80, Samples: 100}, nil},
		{"NaN samples are skipped", withNaN,
			rollout.Reading{Status: rollout.StatusOK, Value: 0.1, Samples: 100}, nil},
		{"pods are summed per bound", twoPods, // 15 of 100 at or below 0.1: the median is in +Inf
			rollout.Reading{Status: rollout.StatusOK, Value: 0.1, Samples: 100}, nil},
		{"no series is no data", none(),
			rollout.Reading{Status: rollout.StatusNoData, Message: "no histogram series"}, nil},
		{"no observations is no data", histo("0.1", 0.0, "+Inf", 0.0),
			rollout.Reading{Status: rollout.StatusNoData, Message: "no observations in the window"}, nil},
		{"a series without le is a bad query", Response{Series: []Series{ramp(map[string]string{"pod": "a"}, stepAt, at, 0, 1)}},
			rollout.Reading{Status: rollout.StatusError}, []string{ErrBadQuery.Error(), "le label"}},
		{"an le that is not a number is a bad query", histo("fast", 1.0, "+Inf", 1.0),
			rollout.Reading{Status: rollout.StatusError}, []string{ErrBadQuery.Error(), `le="fast"`}},
		{"an le of NaN is a bad query", histo("NaN", 1.0, "+Inf", 1.0),
			rollout.Reading{Status: rollout.StatusError}, []string{ErrBadQuery.Error(), `le="NaN"`}},
		{"missing +Inf bucket is a bad query", histo("0.1", 50.0, "0.2", 100.0),
			rollout.Reading{Status: rollout.StatusError}, []string{ErrBadQuery.Error(), "+Inf"}},
		{"only the +Inf bucket gives no quantile", histo("+Inf", 100.0),
			rollout.Reading{Status: rollout.StatusError}, []string{ErrBadQuery.Error(), "finite bucket"}},
		{"source error keeps its message", failed(fmt.Errorf("%w: server error: 503", ErrUnavailable)),
			rollout.Reading{Status: rollout.StatusError}, []string{"metrics source unavailable: server error: 503"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := measureCheck(t, check, tc.resp)
			if tc.want.Status != rollout.StatusError {
				require.Equal(t, tc.want.Status, got.Status, got.Message)
				require.InDelta(t, tc.want.Value, got.Value, 1e-9)
				require.Equal(t, tc.want.Samples, got.Samples)
				require.Equal(t, tc.want.Message, got.Message)
				return
			}
			require.Equal(t, rollout.StatusError, got.Status)
			for _, s := range tc.wantContains {
				require.Contains(t, got.Message, s)
			}
		})
	}
}

func TestValueReadings(t *testing.T) {
	check := rollout.Check{Name: "v", Kind: rollout.KindValue, Query: `avg(cpu{v={{ var "v" }}})`}
	for _, tc := range []struct {
		name         string
		resp         Response
		want         rollout.Reading
		wantContains []string
	}{
		{"one series", one(0.42), rollout.Reading{Status: rollout.StatusOK, Value: 0.42}, nil},
		{"negative", one(-3), rollout.Reading{Status: rollout.StatusOK, Value: -3}, nil},
		{"no series is no data", none(), rollout.Reading{Status: rollout.StatusNoData, Message: "no series"}, nil},
		{"NaN is no data", one(math.NaN()), rollout.Reading{Status: rollout.StatusNoData, Message: "no series"}, nil},
		{"+Inf is no data", one(math.Inf(1)), rollout.Reading{Status: rollout.StatusNoData, Message: "no series"}, nil},
		{"-Inf is no data", one(math.Inf(-1)), rollout.Reading{Status: rollout.StatusNoData, Message: "no series"}, nil},
		{"two series is a bad query", Response{Series: []Series{{Value: 1}, {Value: 2}}},
			rollout.Reading{Status: rollout.StatusError}, []string{ErrBadQuery.Error(), "2 series", "sum"}},
		{"source error keeps its message", failed(fmt.Errorf("%w: parse error at char 3", ErrBadQuery)),
			rollout.Reading{Status: rollout.StatusError, Message: "query rejected by the metrics source: parse error at char 3"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := measureCheck(t, check, tc.resp)
			if tc.wantContains == nil {
				require.Equal(t, tc.want, got)
				return
			}
			require.Equal(t, rollout.StatusError, got.Status)
			for _, s := range tc.wantContains {
				require.Contains(t, got.Message, s)
			}
		})
	}
}

func TestCaptureBaseline(t *testing.T) {
	tm := goldenTemplate(t)
	stable := map[string]string{"version": "v2.2.9"}
	args := map[string]string{"service": "checkout"}
	from := startAt.Add(-10 * time.Minute)
	pod := map[string]string{"pod": "c"}
	answers := map[string]Response{
		// The baseline window (10m) and the lookback (5m).
		`req{service="checkout", version="v2.2.9", code=~"5.."}[900s]`: {Series: []Series{ramp(pod, from, startAt, 40, 43)}},
		`req{service="checkout", version="v2.2.9"}[900s]`:              {Series: []Series{ramp(pod, from, startAt, 5000, 6000)}},
		`lat_bucket{service="checkout", version="v2.2.9"}[900s]`: {Series: []Series{
			ramp(map[string]string{"pod": "c", "le": "0.1"}, from, startAt, 7, 7),
			ramp(map[string]string{"pod": "c", "le": "+Inf"}, from, startAt, 9, 9)}},
		`avg(cpu{service="checkout", version=~"v2\\.2\\.9"})`: one(0.3),
	}
	src := &fakeSource{answers: answers}
	got, err := New(src).CaptureBaseline(context.Background(), tm, args, stable, startAt)
	require.NoError(t, err, "no data is a valid baseline")
	require.Len(t, src.batches, 1)
	require.Len(t, src.batches[0], 4, "stable side only, baseline window, histogram query once")
	for _, r := range src.batches[0] {
		require.Equal(t, startAt, r.Time, "the baseline ends at the given time")
		require.True(t, strings.Contains(r.Expr, `"v2.2.9"`) || strings.Contains(r.Expr, `"v2\\.2\\.9"`), r.Expr)
	}
	require.Len(t, got, 4)
	er := got["error-rate"]
	require.Equal(t, rollout.StatusOK, er.Status, er.Message)
	require.InDelta(t, 0.003, er.Value, 1e-12)
	require.Equal(t, int64(1000), er.Samples)
	require.NotNil(t, er.Counts)
	require.Equal(t, from, er.Counts.From, "the baseline counts the window before the start")
	require.Equal(t, startAt, er.Counts.Through)
	requireBounds(t, rollout.Exact(3), er.Counts.Events)
	for _, name := range []string{"p95", "p99"} {
		require.Equal(t, rollout.StatusNoData, got[name].Status, name)
		require.Equal(t, "no observations in the window", got[name].Message, name)
	}
	require.Equal(t, rollout.Reading{Status: rollout.StatusOK, Value: 0.3}, got["cpu"])

	// A reading that failed makes the capture fail, naming the check, so it is tried again.
	answers[`avg(cpu{service="checkout", version=~"v2\\.2\\.9"})`] = failed(fmt.Errorf("%w: timeout", ErrUnavailable))
	got, err = New(&fakeSource{answers: answers}).CaptureBaseline(context.Background(), tm, args, stable, startAt)
	require.Error(t, err)
	require.Nil(t, got)
	require.Contains(t, err.Error(), "capture baseline")
	require.Contains(t, err.Error(), "cpu: metrics source unavailable: timeout")
	require.NotContains(t, err.Error(), "error-rate")

	// A missing variable is a failed reading too.
	_, err = New(&fakeSource{answers: answers}).CaptureBaseline(context.Background(), tm, args, map[string]string{}, startAt)
	require.ErrorContains(t, err, `variable "version" is not set`)
}

func TestCompileTemplate(t *testing.T) {
	_, err := CompileTemplate(rollout.Template{
		Name: "t", Args: []string{"service"},
		Checks: []rollout.Check{
			{Name: "a", Kind: rollout.KindRatio, Errors: `x{s={{ arg "service" }}}`, Total: `x{s={{ arg "team" }}}`},
			{Name: "b", Kind: rollout.KindValue, Query: `x{s="{{ arg "service" }}"}`},
		},
	})
	require.Error(t, err)
	require.Contains(t, err.Error(), `checks[0] (a).total: placeholder {{arg "team"}} names argument "team"`)
	require.Contains(t, err.Error(), `checks[1] (b).query: placeholder`)
	var joined interface{ Unwrap() []error }
	require.True(t, errors.As(err, &joined))
	require.Len(t, joined.Unwrap(), 2)
}

// TestCompileTemplateCounterSelectors: ratio and histogram checks read raw samples of a
// series selector; the old increase() queries are rejected, value checks keep any query.
func TestCompileTemplateCounterSelectors(t *testing.T) {
	compile := func(c rollout.Check) error {
		_, err := CompileTemplate(rollout.Template{Name: "t", Args: []string{"service"}, Variables: []string{"version"},
			Checks: []rollout.Check{c}})
		return err
	}
	oldErrors := `sum(increase(req{service={{ arg "service" }}, code=~"5.."}[{{ window }}]))`
	oldTotal := `sum(increase(req{service={{ arg "service" }}}[{{ window }}]))`
	oldBuckets := `sum by (le) (increase(lat_bucket{service={{ arg "service" }}}[{{ window }}]))`
	for _, tc := range []struct {
		name   string
		check  rollout.Check
		fields []string // rejected fields
	}{
		{"ratio with increase()", rollout.Check{Name: "r", Kind: rollout.KindRatio, Errors: oldErrors, Total: oldTotal},
			[]string{"checks[0] (r).errors", "checks[0] (r).total"}},
		{"ratio with one selector", rollout.Check{Name: "r", Kind: rollout.KindRatio, Errors: errorsQ, Total: oldTotal},
			[]string{"checks[0] (r).total"}},
		{"histogram with increase()", rollout.Check{Name: "h", Kind: rollout.KindHistogram, Quantile: 0.9, Buckets: oldBuckets},
			[]string{"checks[0] (h).buckets"}},
		{"histogram with a range", rollout.Check{Name: "h", Kind: rollout.KindHistogram, Quantile: 0.9,
			Buckets: `lat_bucket{service={{ arg "service" }}}[{{ window }}]`}, []string{"checks[0] (h).buckets"}},
		{"histogram with a rate", rollout.Check{Name: "h", Kind: rollout.KindHistogram, Quantile: 0.9,
			Buckets: `rate(lat_bucket{service={{ arg "service" }}}[5m])`}, []string{"checks[0] (h).buckets"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := compile(tc.check)
			require.Error(t, err)
			require.Contains(t, err.Error(), "series selector")
			for _, f := range tc.fields {
				require.Contains(t, err.Error(), f)
			}
			var joined interface{ Unwrap() []error }
			require.True(t, errors.As(err, &joined))
			require.Len(t, joined.Unwrap(), len(tc.fields))
		})
	}
	for _, c := range []rollout.Check{
		{Name: "r", Kind: rollout.KindRatio, Errors: errorsQ, Total: totalQ},
		{Name: "r", Kind: rollout.KindRatio, Errors: `{__name__="req", code=~"5.."}`, Total: `req`},
		{Name: "h", Kind: rollout.KindHistogram, Quantile: 0.9, Buckets: bucketsQ},
		{Name: "v", Kind: rollout.KindValue, Query: oldTotal},
	} {
		require.NoError(t, compile(c), "%s %s", c.Kind, c.Name)
	}
}

// A template that skipped validation must not panic Measure.
func TestMeasureInvalidCheckDoesNotPanic(t *testing.T) {
	tm, err := CompileTemplate(rollout.Template{Name: "t", Checks: []rollout.Check{
		{Name: "ratio-without-total", Kind: rollout.KindRatio, Errors: `x`},
		{Name: "value-without-query", Kind: rollout.KindValue},
	}})
	require.NoError(t, err)
	got := NewPerRollout(&fakeSource{answers: map[string]Response{"x[300s]": counted(1)}}).Measure(context.Background(), Target{Template: tm, From: at, At: at})
	require.Len(t, got, 2)
	for _, m := range got {
		require.Equal(t, rollout.StatusError, m.Canary.Status, m.Check)
	}
}

// TestFedAndBatchedQueriesShareNoSlot: a check whose query is read from a feed and a later
// check whose own query renders the same request (a literal where the first has a
// placeholder) both get their answers: dropping the first's request from the batch does not
// drop it for the second.
func TestFedAndBatchedQueriesShareNoSlot(t *testing.T) {
	tm, err := CompileTemplate(rollout.Template{
		Name: "t", Args: []string{"service"}, Variables: []string{"version"},
		Checks: []rollout.Check{
			{Name: "fed", Kind: rollout.KindRatio, Errors: `x{service={{ arg "service" }}}`, Total: `y{service={{ arg "service" }}}`},
			{Name: "literal", Kind: rollout.KindRatio, Errors: `x{service="checkout"}`, Total: `y{service="checkout"}`},
		},
	})
	require.NoError(t, err)
	series := func(n float64) Response {
		return Response{Series: []Series{{Labels: map[string]string{"service": "checkout", "pod": "a"},
			Samples: []Sample{SampleAt(at.Add(-30*time.Second), 0), SampleAt(at.Add(-20*time.Second), 0), SampleAt(at, n)}}}}
	}
	// The feed's first read of a side and the batch read the same range: the step and
	// lookback before it.
	src := &fakeSource{answers: map[string]Response{
		`x{service="checkout"}[320s]`: series(5), `y{service="checkout"}[320s]`: series(500),
	}}
	got := New(src).Measure(context.Background(), Target{Template: tm, Args: map[string]string{"service": "checkout"},
		Canary: Side{Vars: map[string]string{"version": "v2"}}, Stable: Side{Vars: map[string]string{"version": "v1"}},
		From: at.Add(-20 * time.Second), At: at})
	require.Len(t, got, 2)
	for _, m := range got {
		require.Equal(t, rollout.StatusOK, m.Canary.Status, "%s: %s", m.Check, m.Canary.Message)
		require.InDelta(t, 5, m.Canary.Counts.Events.Est, 1e-9, m.Check)
		require.InDelta(t, 500, m.Canary.Counts.Total.Est, 1e-9, m.Check)
	}
}
