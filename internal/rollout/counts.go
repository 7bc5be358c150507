package rollout

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Bounds is a count that compare could not pin to one instant exactly: the true count at the
// span's edges lies within [Low, High] (each series is known only at its own scrape times),
// and Est is the best estimate (linear between the samples around each edge). When every
// series was scraped exactly at the edges, Low == Est == High.
type Bounds struct {
	Low  float64 `json:"low"`
	Est  float64 `json:"est"`
	High float64 `json:"high"`
}

// Exact is a count known exactly.
func Exact(v float64) Bounds { return Bounds{Low: v, Est: v, High: v} }

// Add is the sum of two counts, bound by bound.
func (b Bounds) Add(o Bounds) Bounds {
	return Bounds{Low: b.Low + o.Low, Est: b.Est + o.Est, High: b.High + o.High}
}

// Sub is b - o: the low bound takes o's high, the high bound o's low (never below 0).
func (b Bounds) Sub(o Bounds) Bounds {
	return Bounds{Low: math.Max(0, b.Low-o.High), Est: math.Max(0, b.Est-o.Est), High: math.Max(0, b.High-o.Low)}
}

// Counts is what a counter check counted on one side over one span of time, (From,
// Through]: both sides of a measurement share the span, so that their counts cover the same
// real time whatever each target's scrape interval and offset.
type Counts struct {
	From    time.Time `json:"from"`
	Through time.Time `json:"through"`
	// Events and Total are a ratio check's errors and requests; Total is also a histogram's
	// observations (its +Inf bucket).
	Events Bounds `json:"events"`
	Total  Bounds `json:"total"`
	// Buckets are a histogram's buckets in order of their upper bound.
	Buckets []BucketCounts `json:"buckets,omitempty"`
	// Live is how many of the side's series were still being scraped (not gone) at the
	// evaluation: 0 when every target of the side stopped reporting (its pods gone).
	Live int `json:"live"`
}

// BucketCounts is one histogram bucket's counts: observations at or below UpperBound, and
// above it (bounded on their own: a pod's buckets are scraped together, so the share above a
// bound is known more tightly than the difference of two bounds would say).
type BucketCounts struct {
	UpperBound float64 `json:"le"`
	Count      Bounds  `json:"count"`
	Slower     Bounds  `json:"slower"`
}

// EstBuckets are the estimated cumulative buckets, as Quantile takes them.
func (c Counts) EstBuckets() []Bucket {
	out := make([]Bucket, 0, len(c.Buckets))
	for _, b := range c.Buckets {
		out = append(out, Bucket{UpperBound: b.UpperBound, Count: b.Count.Est})
	}
	return out
}

// Empty reports whether nothing was counted at all.
func (c Counts) Empty() bool { return c.Total.High <= 0 }

type bucketCountsJSON struct {
	// LE is the upper bound as Prometheus writes it ("+Inf" for the last), since JSON
	// numbers cannot be infinite.
	LE     string `json:"le"`
	Count  Bounds `json:"count"`
	Slower Bounds `json:"slower"`
}

// MarshalJSON encodes the bucket with its bound as Prometheus writes it: {"le": "+Inf", ...}.
func (b BucketCounts) MarshalJSON() ([]byte, error) {
	return json.Marshal(bucketCountsJSON{LE: strconv.FormatFloat(b.UpperBound, 'g', -1, 64), Count: b.Count, Slower: b.Slower})
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (b *BucketCounts) UnmarshalJSON(data []byte) error {
	var raw bucketCountsJSON
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	ub, err := strconv.ParseFloat(raw.LE, 64)
	if err != nil || math.IsNaN(ub) {
		return fmt.Errorf("bucket le %q is not a number", raw.LE)
	}
	b.UpperBound, b.Count, b.Slower = ub, raw.Count, raw.Slower
	return nil
}
