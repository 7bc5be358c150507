package rollout

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
)

// ErrNoInfBucket: a histogram's buckets lack the +Inf bucket that counts every observation.
var ErrNoInfBucket = errors.New("histogram has no +Inf bucket")

// Bucket is one cumulative histogram bucket: Count observations were <= UpperBound.
type Bucket struct {
	UpperBound float64
	Count      float64
}

type bucketJSON struct {
	// LE is the upper bound as Prometheus writes it ("+Inf" for the last), since JSON
	// numbers cannot be infinite.
	LE    string  `json:"le"`
	Count float64 `json:"count"`
}

// MarshalJSON encodes the bucket as {"le": "0.25", "count": 12}.
func (b Bucket) MarshalJSON() ([]byte, error) {
	out := append(make([]byte, 0, 48), `{"le":`...)
	out = append(appendLE(out, b.UpperBound), `,"count":`...)
	out, err := appendNumber(out, b.Count)
	if err != nil {
		return nil, err
	}
	return append(out, '}'), nil
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (b *Bucket) UnmarshalJSON(data []byte) error {
	var raw bucketJSON
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	ub, err := strconv.ParseFloat(raw.LE, 64)
	if err != nil || math.IsNaN(ub) {
		return fmt.Errorf("bucket le %q is not a number", raw.LE)
	}
	b.UpperBound, b.Count = ub, raw.Count
	return nil
}

// SortBuckets returns a copy of buckets sorted by upper bound, with counts made monotonic:
// counts of cumulative buckets computed with increase() over series scraped at different
// times can dip slightly.
func SortBuckets(buckets []Bucket) []Bucket {
	bs := append([]Bucket(nil), buckets...)
	sort.Slice(bs, func(i, j int) bool { return bs[i].UpperBound < bs[j].UpperBound })
	for i := 1; i < len(bs); i++ {
		if bs[i].Count < bs[i-1].Count {
			bs[i].Count = bs[i-1].Count
		}
	}
	return bs
}

// Quantile estimates the q-quantile from cumulative buckets as Prometheus's
// histogram_quantile does: linear interpolation within the bucket that holds the rank, the
// lowest bucket starting at 0, and the highest finite bound when the rank falls in +Inf. It
// returns the estimate and the number of observations (the +Inf bucket's count); the estimate
// is NaN when there are no observations or no finite bucket.
func Quantile(q float64, buckets []Bucket) (value, count float64, err error) {
	bs := SortBuckets(buckets)
	if len(bs) == 0 || !math.IsInf(bs[len(bs)-1].UpperBound, 1) {
		return 0, 0, ErrNoInfBucket
	}
	count = bs[len(bs)-1].Count
	if count <= 0 || len(bs) < 2 {
		return math.NaN(), count, nil
	}
	rank := q * count
	i := sort.Search(len(bs)-1, func(i int) bool { return bs[i].Count >= rank })
	if i == len(bs)-1 {
		return bs[len(bs)-2].UpperBound, count, nil
	}
	if i == 0 && bs[0].UpperBound <= 0 {
		return bs[0].UpperBound, count, nil
	}
	lower, prevCount := 0.0, 0.0
	if i > 0 {
		lower, prevCount = bs[i-1].UpperBound, bs[i-1].Count
	}
	upper := bs[i].UpperBound
	inBucket := bs[i].Count - prevCount
	if inBucket <= 0 {
		return upper, count, nil
	}
	return lower + (upper-lower)*((rank-prevCount)/inBucket), count, nil
}
