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
	// Bursts are stretches of one scrape target's counts out of line with the rest of the
	// side's (errors in a burst on one pod), and Steady the counts without them; both only
	// on the canary's side, when it has any. Decide judges a rollback with and without them.
	Bursts []Burst `json:"bursts,omitempty"`
	Steady *Counts `json:"steady,omitempty"`
}

// Burst is a stretch of one scrape target's counts, between two of its scrapes, that holds far
// more events than the side's rate elsewhere explains.
type Burst struct {
	Target  string    `json:"target"`
	From    time.Time `json:"from"`
	Through time.Time `json:"through"`
	// Events and Total are what the stretch counted (a histogram's: its slower requests at
	// the bucket where it stands out most).
	Events float64 `json:"events"`
	Total  float64 `json:"total"`
	// Rate is the rate it was judged against: the higher of the side's rate elsewhere and
	// twice the other side's at the same time.
	Rate float64 `json:"rate"`
}

// Minus is c without o, a part of it over the same span (a burst's counts), bound by bound
// (see Bounds.Sub), bucket by bucket. Live, Bursts and Steady are not kept.
func (c Counts) Minus(o Counts) Counts {
	out := Counts{From: c.From, Through: c.Through, Events: c.Events.Sub(o.Events), Total: c.Total.Sub(o.Total)}
	out.Buckets = make([]BucketCounts, len(c.Buckets))
	for i, b := range c.Buckets {
		out.Buckets[i] = BucketCounts{UpperBound: b.UpperBound, Count: b.Count, Slower: b.Slower}
		for _, ob := range o.Buckets {
			if ob.UpperBound == b.UpperBound {
				out.Buckets[i].Count = b.Count.Sub(ob.Count)
				out.Buckets[i].Slower = b.Slower.Sub(ob.Slower)
			}
		}
	}
	if len(out.Buckets) == 0 {
		out.Buckets = nil
	}
	return out
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
	out := append(make([]byte, 0, 160), `{"le":`...)
	out = append(appendLE(out, b.UpperBound), `,"count":`...)
	out, err := appendBounds(out, b.Count)
	if err != nil {
		return nil, err
	}
	out = append(out, `,"slower":`...)
	if out, err = appendBounds(out, b.Slower); err != nil {
		return nil, err
	}
	return append(out, '}'), nil
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
