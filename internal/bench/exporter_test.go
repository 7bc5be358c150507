package bench

import (
	"bytes"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

func TestExporterExposition(t *testing.T) {
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	e := newExporter(5, 2, 20, 0.005, start)
	require.Len(t, e.shards, 3, "5 services, 2 per shard")
	require.Equal(t, []string{"svc-4"}, e.shards[2])

	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(e.exposition(0, start.Add(100*time.Second))))
	require.NoError(t, err)
	requests := families["http_requests_total"]
	require.Len(t, requests.Metric, 2*2*2, "2 services x 2 versions x 2 codes")
	var total, failed float64
	for _, m := range requests.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["service"] != "svc-0" || labels["version"] != "v2" {
			continue
		}
		total += m.Counter.GetValue()
		if labels["code"] == "500" {
			failed += m.Counter.GetValue()
		}
	}
	require.InDelta(t, 2000, total, 1, "20 req/s for 100 s")
	require.InDelta(t, 10, failed, 1, "0.5% of them")

	hist := families["http_request_duration_seconds"]
	require.Len(t, hist.Metric, 2*2)
	h := hist.Metric[0].Histogram
	require.InDelta(t, 2000, float64(h.GetSampleCount()), 1)
	var prev uint64
	for _, b := range h.Bucket {
		require.GreaterOrEqual(t, b.GetCumulativeCount(), prev, "buckets are cumulative")
		prev = b.GetCumulativeCount()
	}
	// The median is 50 ms: about half the requests are at or below the 0.05 bucket.
	for _, b := range h.Bucket {
		if b.GetUpperBound() == 0.05 {
			require.InDelta(t, 1000, float64(b.GetCumulativeCount()), 2)
		}
	}
}
