package bench

import (
	"math"
	"net/http"
	"strconv"
	"time"
)

// exporter is a synthetic exporter of many services, cheap enough to serve 10,000 of them:
// each service has a stable (v1) and a canary (v2) version with the conventional HTTP
// metrics the shipped template reads, http_requests_total{service, version, code} and
// http_request_duration_seconds{service, version} (client_golang's default buckets), their
// counters growing at a fixed request rate with a fixed error share and latency
// distribution, the same on both versions (a healthy canary). The services are split into
// shards, one scrape target each, so that Prometheus scrapes them at their own offsets.
type exporter struct {
	shards [][]string // service names by shard
	start  time.Time
	rate   float64 // requests per second per version
	errors float64 // share of requests answered 500
	now    func() time.Time
}

// latencyBuckets are client_golang's default buckets; latencyShare[i] is the share of
// requests at or below latencyBuckets[i]: log-normal, median 50 ms, sigma 0.6.
var latencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

var latencyShare = func() []float64 {
	out := make([]float64, len(latencyBuckets))
	for i, le := range latencyBuckets {
		out[i] = 0.5 * math.Erfc(-(math.Log(le)-math.Log(0.05))/(0.6*math.Sqrt2))
	}
	return out
}()

// meanLatency is the distribution's mean, for the _sum series.
var meanLatency = 0.05 * math.Exp(0.6*0.6/2)

func newExporter(services, perShard int, rate, errors float64, start time.Time) *exporter {
	e := &exporter{start: start, rate: rate, errors: errors, now: time.Now}
	for i := 0; i < services; i += perShard {
		var shard []string
		for j := i; j < min(i+perShard, services); j++ {
			shard = append(shard, serviceName(j))
		}
		e.shards = append(e.shards, shard)
	}
	return e
}

func serviceName(i int) string { return "svc-" + strconv.Itoa(i) }

// handler serves one shard's exposition.
func (e *exporter) handler(shard int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write(e.exposition(shard, e.now()))
	})
}

// exposition is a shard's metrics at t, in the text format.
func (e *exporter) exposition(shard int, t time.Time) []byte {
	elapsed := max(t.Sub(e.start).Seconds(), 0)
	requests := math.Floor(e.rate * elapsed)
	failed := math.Floor(e.errors * requests)
	b := make([]byte, 0, 2600*len(e.shards[shard]))
	b = append(b, "# TYPE http_requests_total counter\n"...)
	for _, s := range e.shards[shard] {
		for _, v := range [...]string{"v1", "v2"} {
			b = series(b, "http_requests_total", s, v, "code", "200", requests-failed)
			b = series(b, "http_requests_total", s, v, "code", "500", failed)
		}
	}
	b = append(b, "# TYPE http_request_duration_seconds histogram\n"...)
	for _, s := range e.shards[shard] {
		for _, v := range [...]string{"v1", "v2"} {
			for i, le := range latencyBuckets {
				b = series(b, "http_request_duration_seconds_bucket", s, v, "le", strconv.FormatFloat(le, 'g', -1, 64), math.Floor(requests*latencyShare[i]))
			}
			b = series(b, "http_request_duration_seconds_bucket", s, v, "le", "+Inf", requests)
			b = series(b, "http_request_duration_seconds_sum", s, v, "", "", requests*meanLatency)
			b = series(b, "http_request_duration_seconds_count", s, v, "", "", requests)
		}
	}
	return b
}

func series(b []byte, name, service, version, label, value string, v float64) []byte {
	b = append(b, name...)
	b = append(b, `{service="`...)
	b = append(b, service...)
	b = append(b, `",version="`...)
	b = append(b, version...)
	if label != "" {
		b = append(b, `",`...)
		b = append(b, label...)
		b = append(b, `="`...)
		b = append(b, value...)
	}
	b = append(b, `"} `...)
	b = strconv.AppendFloat(b, v, 'f', -1, 64)
	return append(b, '\n')
}
