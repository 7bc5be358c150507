package backfill

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var start = time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)

func find(all []*series, pod, name, label, value string) *series {
	for _, s := range all {
		if s.labels["pod"] == pod && s.name == name && s.labels[label] == value {
			return s
		}
	}
	return nil
}

// TestHealthyRecordsWhatItSays: every pod is scraped every 15 s at its own offset; the
// counters only grow, but at a restart; the canary's pods appear a minute before the start
// and take the steps' share of the traffic; the buckets are cumulative.
func TestHealthyRecordsWhatItSays(t *testing.T) {
	d := Healthy("checkout", start)
	all := d.record()
	for _, p := range d.Pods {
		ok := find(all, p.Name, "http_requests_total", "code", "200")
		require.NotNil(t, ok, p.Name)
		for i := 1; i < len(ok.t); i++ {
			require.Equal(t, 15*time.Second, ok.t[i].Sub(ok.t[i-1]), "%s: every 15 s", p.Name)
		}
		require.Equal(t, p.Offset, time.Duration(ok.t[0].UnixNano())%(15*time.Second), "%s: at its offset", p.Name)
		drops := 0
		for i := 1; i < len(ok.v); i++ {
			if ok.v[i] < ok.v[i-1] {
				drops++
				require.False(t, ok.t[i].Before(p.Restart), "%s: a drop only after its restart", p.Name)
				require.Less(t, ok.t[i].Sub(p.Restart), 15*time.Second)
			}
		}
		if p.Restart.IsZero() {
			require.Zero(t, drops, p.Name)
		} else {
			require.Equal(t, 1, drops, "%s: one counter reset", p.Name)
		}
		inf := find(all, p.Name, "http_request_duration_seconds_bucket", "le", "+Inf")
		low := find(all, p.Name, "http_request_duration_seconds_bucket", "le", "0.05")
		require.Equal(t, len(ok.t), len(inf.t))
		for i := range inf.v {
			require.LessOrEqual(t, low.v[i], inf.v[i], "cumulative buckets")
		}
		if p.Version == d.Canary {
			require.Equal(t, start.Add(-time.Minute), ok.t[0].Truncate(15*time.Second), "%s: created for the rollout", p.Name)
		} else {
			require.Equal(t, d.From, ok.t[0].Truncate(15*time.Second))
		}
	}

	// The canary's requests per second over a stretch of each step follow its weight:
	// 4,000 req/s split over 2 canary pods.
	rate := func(pod string, from, to time.Time) float64 {
		s := find(all, pod, "http_request_duration_seconds_bucket", "le", "+Inf")
		var a, b float64
		var ta, tb time.Time
		for i, at := range s.t {
			if ta.IsZero() && !at.Before(from) {
				a, ta = s.v[i], at
			}
			if !at.After(to) {
				b, tb = s.v[i], at
			}
		}
		return (b - a) / tb.Sub(ta).Seconds()
	}
	for _, st := range d.Steps[:3] {
		got := rate("checkout-v2-a", st.At.Add(30*time.Second), st.At.Add(4*time.Minute))
		want := 4000 * float64(st.Weight) / 100 / 2
		require.InEpsilon(t, want, got, 0.05, "weight %d", st.Weight)
	}
	require.Zero(t, rate("checkout-v1-a", d.Steps[3].At.Add(30*time.Second), d.To), "no stable traffic at 100%")
}

func TestBadFailsFromItsSecondStep(t *testing.T) {
	d := Bad("payments", start)
	all := d.record()
	errRate := func(pod string, from, to time.Time) float64 {
		at := func(s *series, x time.Time) float64 {
			v := 0.0
			for i, t := range s.t {
				if !t.After(x) {
					v = s.v[i]
				}
			}
			return v
		}
		bad := find(all, pod, "http_requests_total", "code", "500")
		good := find(all, pod, "http_requests_total", "code", "200")
		e := at(bad, to) - at(bad, from)
		return e / (e + at(good, to) - at(good, from))
	}
	require.Less(t, errRate("payments-v2-a", d.Steps[0].At, d.Steps[1].At), 0.002, "healthy at 10%")
	require.InDelta(t, 0.02, errRate("payments-v2-a", d.Steps[1].At, d.Steps[2].At), 0.003, "2% from the 25% step")
	require.Less(t, errRate("payments-v1-a", d.Steps[1].At, d.Steps[2].At), 0.002, "stable stays healthy")
}

func TestOpenMetrics(t *testing.T) {
	d := Healthy("checkout", start)
	d.To = d.From.Add(20 * time.Second)
	text := OpenMetrics(d)
	require.True(t, strings.HasPrefix(text, "# TYPE http_requests counter\n"))
	require.True(t, strings.HasSuffix(text, "# EOF\n"))
	require.Contains(t, text, "# TYPE http_request_duration_seconds histogram\n")
	// Labels sorted, the value, and the scrape's time in seconds with milliseconds.
	require.Contains(t, text, `http_requests_total{code="200",instance="checkout-v1-a:8080",job="checkout",pod="checkout-v1-a",service="checkout",version="v1"} `)
	require.Regexp(t, `pod="checkout-v1-a",service="checkout",version="v1"\} [0-9]+ `+strconv.FormatInt(d.From.Unix()+1, 10)+`\.200\n`, text,
		"checkout-v1-a at its 1.2 s offset")
}
