package compare

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// fakeSource answers each query from a map by its expression and records every batch.
type fakeSource struct {
	answers map[string]Response
	batches [][]Request
	short   int // answer this many fewer requests than asked
}

func (f *fakeSource) Query(_ context.Context, reqs []Request) []Response {
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

func buckets(pairs ...any) Response {
	var r Response
	for i := 0; i < len(pairs); i += 2 {
		r.Series = append(r.Series, Series{Labels: map[string]string{"le": pairs[i].(string)}, Value: pairs[i+1].(float64)})
	}
	return r
}

var (
	at       = time.Date(2026, 11, 25, 14, 3, 10, 0, time.UTC)
	startAt  = time.Date(2026, 11, 25, 13, 0, 0, 0, time.UTC)
	errorsQ  = `sum(increase(req{service={{ arg "service" }}, version={{ var "version" }}, code=~"5.."}[{{ window }}]))`
	totalQ   = `sum(increase(req{service={{ arg "service" }}, version={{ var "version" }}}[{{ window }}]))`
	bucketsQ = `sum by (le) (increase(lat_bucket{service={{ arg "service" }}, version={{ var "version" }}}[{{ window }}]))`
	cpuQ     = `avg(cpu{service={{ arg "service" }}, version=~{{ varRegex "version" }}})`
)

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
		Canary:   Side{Vars: map[string]string{"version": "v2.3.0"}, Window: 30 * time.Second, At: at},
		Stable:   Side{Vars: map[string]string{"version": "v2.2.9"}, Window: 90 * time.Second, At: at},
	}
}

// TestMeasureCountsWindow: ratio and histogram checks count over CountsWindow (since the
// analysis started), value checks over Window (the step so far).
func TestMeasureCountsWindow(t *testing.T) {
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
	tg := target(tm)
	tg.Canary.CountsWindow, tg.Stable.CountsWindow = 5*time.Minute, 5*time.Minute
	New(src).Measure(context.Background(), tg)
	require.Len(t, src.batches, 1)
	var counted, valued int
	for _, r := range src.batches[0] {
		switch {
		case strings.HasPrefix(r.Expr, "avg(avg_over_time(cpu"):
			require.Regexp(t, `\[(30|90)s\]`, r.Expr, "a value check spans the step")
			valued++
		default:
			require.Contains(t, r.Expr, "[300s]", "a count spans the analysis")
			counted++
		}
	}
	require.Equal(t, 6, counted, "errors, total and buckets on each side")
	require.Equal(t, 2, valued)
}

func TestMeasure(t *testing.T) {
	src := &fakeSource{answers: map[string]Response{
		`sum(increase(req{service="checkout", version="v2.3.0", code=~"5.."}[30s]))`: one(12),
		`sum(increase(req{service="checkout", version="v2.3.0"}[30s]))`:              one(1000),
		`sum(increase(req{service="checkout", version="v2.2.9", code=~"5.."}[90s]))`: none(),
		`sum(increase(req{service="checkout", version="v2.2.9"}[90s]))`:              one(9000.4),
		`sum by (le) (increase(lat_bucket{service="checkout", version="v2.3.0"}[30s]))`: buckets(
			"0.1", 500.0, "0.25", 900.0, "0.5", 980.0, "1", 1000.0, "+Inf", 1000.0),
		`sum by (le) (increase(lat_bucket{service="checkout", version="v2.2.9"}[90s]))`: buckets(
			"+Inf", 0.0, "0.1", 0.0),
		`avg(cpu{service="checkout", version=~"v2\\.3\\.0"})`: one(0.5),
		`avg(cpu{service="checkout", version=~"v2\\.2\\.9"})`: none(),
	}}
	got := New(src).Measure(context.Background(), target(goldenTemplate(t)))

	// One batch; each side rendered with its own variables and window; the two histogram
	// checks share their query, which runs once per side.
	require.Len(t, src.batches, 1)
	var exprs []string
	for _, r := range src.batches[0] {
		exprs = append(exprs, r.Expr)
		require.Equal(t, at, r.Time)
	}
	require.Equal(t, []string{
		`sum(increase(req{service="checkout", version="v2.3.0", code=~"5.."}[30s]))`,
		`sum(increase(req{service="checkout", version="v2.3.0"}[30s]))`,
		`sum(increase(req{service="checkout", version="v2.2.9", code=~"5.."}[90s]))`,
		`sum(increase(req{service="checkout", version="v2.2.9"}[90s]))`,
		`sum by (le) (increase(lat_bucket{service="checkout", version="v2.3.0"}[30s]))`,
		`sum by (le) (increase(lat_bucket{service="checkout", version="v2.2.9"}[90s]))`,
		`avg(cpu{service="checkout", version=~"v2\\.3\\.0"})`,
		`avg(cpu{service="checkout", version=~"v2\\.2\\.9"})`,
	}, exprs)

	require.Len(t, got, 4)
	require.Equal(t, "error-rate", got[0].Check)
	require.Equal(t, rollout.Reading{Status: rollout.StatusOK, Value: 0.012, Samples: 1000, Events: 12, Total: 1000}, got[0].Canary)
	require.Equal(t, rollout.Reading{Status: rollout.StatusOK, Value: 0, Samples: 9000, Total: 9000.4}, got[0].Stable)

	require.Equal(t, "p95", got[1].Check)
	// rank 950 in (0.25, 0.5] holding 80: 0.25 + 0.25*(50/80)
	require.Equal(t, rollout.StatusOK, got[1].Canary.Status)
	require.InDelta(t, 0.25+0.25*50/80, got[1].Canary.Value, 1e-12)
	require.Equal(t, int64(1000), got[1].Canary.Samples)
	require.Equal(t, []rollout.Bucket{{UpperBound: 0.1, Count: 500}, {UpperBound: 0.25, Count: 900}, {UpperBound: 0.5, Count: 980},
		{UpperBound: 1, Count: 1000}, {UpperBound: math.Inf(1), Count: 1000}}, got[1].Canary.Buckets, "the counts behind the quantile, sorted")
	require.Equal(t, rollout.Reading{Status: rollout.StatusNoData, Message: "no observations in the window"}, got[1].Stable)

	require.Equal(t, "p99", got[2].Check)
	// rank 990 in (0.5, 1] holding 20: 0.5 + 0.5*(10/20)
	require.InDelta(t, 0.75, got[2].Canary.Value, 1e-12)

	require.Equal(t, "cpu", got[3].Check)
	require.Equal(t, rollout.Reading{Status: rollout.StatusOK, Value: 0.5}, got[3].Canary)
	require.Equal(t, rollout.Reading{Status: rollout.StatusNoData, Message: "no series"}, got[3].Stable)
	for _, m := range got {
		require.Nil(t, m.Baseline, "Measure leaves baselines to the caller")
	}
}

func TestMeasureDedupsAcrossSides(t *testing.T) {
	tm := goldenTemplate(t)
	tg := target(tm)
	tg.Stable = tg.Canary // same variables, window and time: every query is shared
	src := &fakeSource{answers: map[string]Response{}}
	got := New(src).Measure(context.Background(), tg)
	require.Len(t, src.batches, 1)
	require.Len(t, src.batches[0], 4, "errors, total, buckets, cpu: each once")
	require.Len(t, got, 4)
	for _, m := range got {
		require.Equal(t, m.Canary, m.Stable)
	}

	// The same expression at another time is another query.
	tg.Stable.At = at.Add(-time.Second)
	src = &fakeSource{answers: map[string]Response{}}
	New(src).Measure(context.Background(), tg)
	require.Len(t, src.batches[0], 8)
}

func TestMeasureNoChecksNoQuery(t *testing.T) {
	tm, err := CompileTemplate(rollout.Template{Name: "empty"})
	require.NoError(t, err)
	src := &fakeSource{}
	require.Empty(t, New(src).Measure(context.Background(), Target{Template: tm}))
	require.Empty(t, src.batches)
}

func TestMeasureRenderError(t *testing.T) {
	tg := target(goldenTemplate(t))
	tg.Canary.Vars = map[string]string{} // version missing on the canary side
	src := &fakeSource{answers: map[string]Response{
		`sum(increase(req{service="checkout", version="v2.2.9", code=~"5.."}[90s]))`: one(1),
		`sum(increase(req{service="checkout", version="v2.2.9"}[90s]))`:              one(100),
	}}
	got := New(src).Measure(context.Background(), tg)
	require.Len(t, src.batches[0], 4, "only the stable side's queries are sent")
	for _, m := range got {
		require.Equal(t, rollout.StatusError, m.Canary.Status, m.Check)
		require.Equal(t, `variable "version" is not set`, m.Canary.Message)
	}
	require.Equal(t, rollout.Reading{Status: rollout.StatusOK, Value: 0.01, Samples: 100, Events: 1, Total: 100}, got[0].Stable)
}

func TestMeasureShortAnswerIsUnavailable(t *testing.T) {
	src := &fakeSource{answers: map[string]Response{}, short: 2}
	got := New(src).Measure(context.Background(), target(goldenTemplate(t)))
	// The last two requests (cpu, both sides) got no answer.
	require.Equal(t, rollout.StatusError, got[3].Canary.Status)
	require.Contains(t, got[3].Canary.Message, ErrUnavailable.Error())
	require.Contains(t, got[3].Stable.Message, "no answer")
}

// measureSide measures one check whose canary queries are answered by resp (in query order).
func measureCheck(t *testing.T, c rollout.Check, resps ...Response) rollout.Reading {
	t.Helper()
	tm, err := CompileTemplate(rollout.Template{Name: "t", Variables: []string{"v"}, Checks: []rollout.Check{c}})
	require.NoError(t, err)
	src := &fakeSource{answers: map[string]Response{}}
	i := 0
	for _, q := range tm.checks[0].queries {
		expr, err := q.Render(Values{Vars: map[string]string{"v": "canary"}, Window: time.Minute})
		require.NoError(t, err)
		src.answers[expr] = resps[i]
		i++
	}
	got := New(src).Measure(context.Background(), Target{
		Template: tm,
		Canary:   Side{Vars: map[string]string{"v": "canary"}, Window: time.Minute, At: at},
		Stable:   Side{Vars: map[string]string{"v": "stable"}, Window: time.Minute, At: at},
	})
	require.Len(t, got, 1)
	return got[0].Canary
}

func TestRatioReadings(t *testing.T) {
	check := rollout.Check{Name: "r", Kind: rollout.KindRatio,
		Errors: `sum(errs{v={{ var "v" }}})`, Total: `sum(reqs{v={{ var "v" }}})`}
	unreachable := fmt.Errorf("%w: dial tcp: connection refused", ErrUnavailable)
	for _, tc := range []struct {
		name         string
		errs, total  Response
		want         rollout.Reading
		wantContains []string // for error readings
	}{
		{"errors over total", one(5), one(100), rollout.Reading{Status: rollout.StatusOK, Value: 0.05, Samples: 100, Events: 5, Total: 100}, nil},
		{"no error series with requests is no errors", none(), one(100), rollout.Reading{Status: rollout.StatusOK, Value: 0, Samples: 100, Total: 100}, nil},
		{"nil error series with requests is no errors", Response{}, one(100), rollout.Reading{Status: rollout.StatusOK, Value: 0, Samples: 100, Total: 100}, nil},
		{"negative errors count as none", one(-1), one(100), rollout.Reading{Status: rollout.StatusOK, Value: 0, Samples: 100, Total: 100}, nil},
		{"NaN errors count as none", one(math.NaN()), one(100), rollout.Reading{Status: rollout.StatusOK, Value: 0, Samples: 100, Total: 100}, nil},
		{"samples are the rounded total", one(1), one(1830.6), rollout.Reading{Status: rollout.StatusOK, Value: 1 / 1830.6, Samples: 1831, Events: 1, Total: 1830.6}, nil},
		{"total zero is no data", one(0), one(0), rollout.Reading{Status: rollout.StatusNoData, Message: "no requests in the window"}, nil},
		{"total zero with errors is no data", one(3), one(0), rollout.Reading{Status: rollout.StatusNoData, Message: "no requests in the window"}, nil},
		{"no total series is no data", none(), none(), rollout.Reading{Status: rollout.StatusNoData, Message: "no requests in the window"}, nil},
		{"negative total is no data", one(1), one(-5), rollout.Reading{Status: rollout.StatusNoData, Message: "no requests in the window"}, nil},
		{"NaN total is no data", one(1), one(math.NaN()), rollout.Reading{Status: rollout.StatusNoData, Message: "no requests in the window"}, nil},
		{"infinite total is no data", one(1), one(math.Inf(1)), rollout.Reading{Status: rollout.StatusNoData, Message: "no requests in the window"}, nil},
		{"two total series is a bad query", one(1), Response{Series: []Series{{Value: 1}, {Value: 2}}},
			rollout.Reading{Status: rollout.StatusError}, []string{"total: ", ErrBadQuery.Error(), "2 series"}},
		{"two error series is a bad query", Response{Series: []Series{{Value: 1}, {Value: 2}, {Value: 3}}}, one(100),
			rollout.Reading{Status: rollout.StatusError}, []string{"errors: ", ErrBadQuery.Error(), "3 series"}},
		{"total source error keeps its message", one(1), failed(unreachable),
			rollout.Reading{Status: rollout.StatusError}, []string{unreachable.Error()}},
		{"errors source error keeps its message", failed(unreachable), one(100),
			rollout.Reading{Status: rollout.StatusError}, []string{unreachable.Error()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := measureCheck(t, check, tc.errs, tc.total)
			if tc.want.Status != rollout.StatusError {
				require.Equal(t, tc.want.Status, got.Status, got.Message)
				require.InDelta(t, tc.want.Value, got.Value, 1e-15)
				require.Equal(t, tc.want.Samples, got.Samples)
				require.Equal(t, tc.want.Message, got.Message)
				require.Equal(t, tc.want.Events, got.Events, "the error count behind the value")
				require.Equal(t, tc.want.Total, got.Total, "the request count behind the value")
				return
			}
			require.Equal(t, rollout.StatusError, got.Status)
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
	check := rollout.Check{Name: "h", Kind: rollout.KindHistogram, Quantile: 0.5, Buckets: `sum by (le) (b{v={{ var "v" }}})`}
	for _, tc := range []struct {
		name         string
		resp         Response
		want         rollout.Reading
		wantContains []string
	}{
		{"interpolated", buckets("0.1", 50.0, "0.2", 100.0, "+Inf", 100.0),
			rollout.Reading{Status: rollout.StatusOK, Value: 0.1, Samples: 100}, nil},
		{"series in any order", buckets("+Inf", 100.0, "0.2", 100.0, "0.1", 20.0),
			rollout.Reading{Status: rollout.StatusOK, Value: 0.1 + 0.1*30/80, Samples: 100}, nil},
		{"NaN buckets are skipped", buckets("0.1", 50.0, "0.15", math.NaN(), "0.2", 100.0, "+Inf", 100.0),
			rollout.Reading{Status: rollout.StatusOK, Value: 0.1, Samples: 100}, nil},
		{"no series is no data", none(),
			rollout.Reading{Status: rollout.StatusNoData, Message: "no histogram series"}, nil},
		{"no observations is no data", buckets("0.1", 0.0, "+Inf", 0.0),
			rollout.Reading{Status: rollout.StatusNoData, Message: "no observations in the window"}, nil},
		{"a series without le is a bad query", Response{Series: []Series{{Labels: map[string]string{"pod": "a"}, Value: 1}}},
			rollout.Reading{Status: rollout.StatusError}, []string{ErrBadQuery.Error(), "le label"}},
		{"an le that is not a number is a bad query", buckets("fast", 1.0, "+Inf", 1.0),
			rollout.Reading{Status: rollout.StatusError}, []string{ErrBadQuery.Error(), `le="fast"`}},
		{"an le of NaN is a bad query", buckets("NaN", 1.0, "+Inf", 1.0),
			rollout.Reading{Status: rollout.StatusError}, []string{ErrBadQuery.Error(), `le="NaN"`}},
		{"missing +Inf bucket is a bad query", buckets("0.1", 50.0, "0.2", 100.0),
			rollout.Reading{Status: rollout.StatusError}, []string{ErrBadQuery.Error(), "+Inf"}},
		{"only the +Inf bucket gives no quantile", buckets("+Inf", 100.0),
			rollout.Reading{Status: rollout.StatusError}, []string{ErrBadQuery.Error(), "finite bucket"}},
		{"several series per le (not aggregated) is a bad query",
			buckets("0.1", 10.0, "+Inf", 20.0, "0.1", 5.0, "+Inf", 8.0),
			rollout.Reading{Status: rollout.StatusError}, []string{ErrBadQuery.Error(), `le="0.1"`}},
		{"le spelled two ways is one bucket twice", buckets("1", 10.0, "1.0", 10.0, "+Inf", 20.0),
			rollout.Reading{Status: rollout.StatusError}, []string{ErrBadQuery.Error()}},
		{"source error keeps its message", failed(fmt.Errorf("%w: server error: 503", ErrUnavailable)),
			rollout.Reading{Status: rollout.StatusError}, []string{"metrics source unavailable: server error: 503"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := measureCheck(t, check, tc.resp)
			if tc.want.Status != rollout.StatusError {
				require.Equal(t, tc.want.Status, got.Status, got.Message)
				require.InDelta(t, tc.want.Value, got.Value, 1e-12)
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
	answers := map[string]Response{
		`sum(increase(req{service="checkout", version="v2.2.9", code=~"5.."}[600s]))`:    one(3),
		`sum(increase(req{service="checkout", version="v2.2.9"}[600s]))`:                 one(1000),
		`sum by (le) (increase(lat_bucket{service="checkout", version="v2.2.9"}[600s]))`: buckets("0.1", 0.0, "+Inf", 0.0),
		`avg(cpu{service="checkout", version=~"v2\\.2\\.9"})`:                            one(0.3),
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
	require.Equal(t, map[string]rollout.Reading{
		"error-rate": {Status: rollout.StatusOK, Value: 0.003, Samples: 1000, Events: 3, Total: 1000},
		"p95":        {Status: rollout.StatusNoData, Message: "no observations in the window"},
		"p99":        {Status: rollout.StatusNoData, Message: "no observations in the window"},
		"cpu":        {Status: rollout.StatusOK, Value: 0.3},
	}, got)

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

// A template that skipped validation must not panic Measure.
func TestMeasureInvalidCheckDoesNotPanic(t *testing.T) {
	tm, err := CompileTemplate(rollout.Template{Name: "t", Checks: []rollout.Check{
		{Name: "ratio-without-total", Kind: rollout.KindRatio, Errors: `x`},
		{Name: "value-without-query", Kind: rollout.KindValue},
	}})
	require.NoError(t, err)
	got := New(&fakeSource{answers: map[string]Response{"x": one(1)}}).Measure(context.Background(), Target{Template: tm})
	require.Len(t, got, 2)
	for _, m := range got {
		require.Equal(t, rollout.StatusError, m.Canary.Status, m.Check)
	}
}
