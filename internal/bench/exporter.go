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

// versions are each service's two sides: stable, then canary.
var versions = [...]string{"v1", "v2"}

// exportedSeries is one of the series the exporter exposes of each version of each service:
// its family (the # TYPE line's name and type), its name, and its label besides service and
// version (none for _sum and _count).
type exportedSeries struct {
	family, familyType string
	name               string
	label, value       string
	kind               seriesKind
	bucket             int // the index in latencyBuckets of a finite bucket
}

type seriesKind int

const (
	answered seriesKind = iota // requests answered 200
	failed                     // requests answered 500
	finiteBucket
	infBucket
	latencySum
	latencyCount
)

// exported are the series of one version of one service, in the order exposition writes
// them within their family: the request counters by code, then the latency histogram's
// buckets (le), +Inf, _sum and _count.
var exported = func() []exportedSeries {
	const counter, histogram = "http_requests_total", "http_request_duration_seconds"
	out := []exportedSeries{
		{family: counter, familyType: "counter", name: counter, label: "code", value: "200", kind: answered},
		{family: counter, familyType: "counter", name: counter, label: "code", value: "500", kind: failed},
	}
	for i, le := range latencyBuckets {
		out = append(out, exportedSeries{family: histogram, familyType: "histogram", name: histogram + "_bucket",
			label: "le", value: strconv.FormatFloat(le, 'g', -1, 64), kind: finiteBucket, bucket: i})
	}
	return append(out,
		exportedSeries{family: histogram, familyType: "histogram", name: histogram + "_bucket", label: "le", value: "+Inf", kind: infBucket},
		exportedSeries{family: histogram, familyType: "histogram", name: histogram + "_sum", kind: latencySum},
		exportedSeries{family: histogram, familyType: "histogram", name: histogram + "_count", kind: latencyCount},
	)
}()

// value is what the exporter exposes at t for exported[i], of any service and version (they
// are all alike): the counters of a fixed request rate since the exporter's start, a fixed
// share of them failed, the latency distribution's share of them in each bucket.
func (e *exporter) value(i int, t time.Time) float64 {
	elapsed := max(t.Sub(e.start).Seconds(), 0)
	requests := math.Floor(e.rate * elapsed)
	switch s := exported[i]; s.kind {
	case answered:
		return requests - math.Floor(e.errors*requests)
	case failed:
		return math.Floor(e.errors * requests)
	case finiteBucket:
		return math.Floor(requests * latencyShare[s.bucket])
	case latencySum:
		return requests * meanLatency
	default: // +Inf, _count
		return requests
	}
}

// exposition is a shard's metrics at t, in the text format.
func (e *exporter) exposition(shard int, t time.Time) []byte {
	b := make([]byte, 0, 2600*len(e.shards[shard]))
	for first := 0; first < len(exported); {
		family := exported[first].family
		end := first
		for end < len(exported) && exported[end].family == family {
			end++
		}
		b = append(b, "# TYPE "+family+" "+exported[first].familyType+"\n"...)
		for _, s := range e.shards[shard] {
			for _, v := range versions {
				for i := first; i < end; i++ {
					b = series(b, exported[i].name, s, v, exported[i].label, exported[i].value, e.value(i, t))
				}
			}
		}
		first = end
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
