package rollout

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// numbers are the floats whose encodings differ in kind: zero, both signs, the edges of
// encoding/json's switch to exponents, subnormals, the extremes, integers and fractions.
var numbers = []float64{
	0, math.Copysign(0, -1), 1, -1, 0.5, 12, 1e-6, 9.99999e-7, 1e-7, -1e-7, 1.5e-9, 1e20, 1e21,
	-1e21, 123456789012345678901234.0, math.SmallestNonzeroFloat64, math.MaxFloat64, -math.MaxFloat64,
	1.0 / 3, 0.005, 0.025, 2.5, 1e-300, 4.9e-5,
}

func TestBucketEncodingIsEncodingJSONs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	values := append([]float64(nil), numbers...)
	for range 2000 {
		values = append(values, math.Float64frombits(rng.Uint64()), rng.NormFloat64()*math.Pow(10, float64(rng.IntN(60)-30)))
	}
	bounds := append(append([]float64(nil), values...), math.Inf(1), math.Inf(-1), math.NaN())
	for i, v := range values {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		le := bounds[(i*7)%len(bounds)]
		leText := strconv.FormatFloat(le, 'g', -1, 64)

		got, err := json.Marshal(Bucket{UpperBound: le, Count: v})
		require.NoError(t, err)
		want, err := json.Marshal(bucketJSON{LE: leText, Count: v})
		require.NoError(t, err)
		require.Equal(t, string(want), string(got), "bucket le %v count %v", le, v)

		bs := Bounds{Low: v, Est: values[(i+1)%len(values)], High: values[(i+2)%len(values)]}
		if math.IsNaN(bs.Est) || math.IsInf(bs.Est, 0) || math.IsNaN(bs.High) || math.IsInf(bs.High, 0) {
			continue
		}
		got, err = json.Marshal(BucketCounts{UpperBound: le, Count: bs, Slower: Bounds{High: v}})
		require.NoError(t, err)
		want, err = json.Marshal(bucketCountsJSON{LE: leText, Count: bs, Slower: Bounds{High: v}})
		require.NoError(t, err)
		require.Equal(t, string(want), string(got), "bucket counts le %v count %v", le, bs)
	}
}

func TestBucketEncodingRefusesWhatJSONCannotHold(t *testing.T) {
	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		_, err := json.Marshal(Bucket{UpperBound: 1, Count: v})
		var unsupported *json.UnsupportedValueError
		require.ErrorAs(t, err, &unsupported, "count %v", v)
		_, err = json.Marshal(BucketCounts{UpperBound: 1, Count: Bounds{High: v}})
		require.ErrorAs(t, err, &unsupported, "count %v", v)
		_, err = json.Marshal(BucketCounts{UpperBound: 1, Slower: Bounds{Low: v}})
		require.ErrorAs(t, err, &unsupported, "slower %v", v)
	}
}
