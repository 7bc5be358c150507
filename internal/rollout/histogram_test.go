package rollout

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	latency := []Bucket{{0.1, 50}, {0.25, 80}, {0.5, 95}, {1, 100}, {inf, 100}}
	for _, tc := range []struct {
		name      string
		q         float64
		buckets   []Bucket
		want      float64
		wantCount float64
		wantNaN   bool
	}{
		{"median at a bucket's upper bound", 0.5, latency, 0.1, 100, false},
		{"interpolated in the first bucket, from 0", 0.2, latency, 0.04, 100, false},
		{"interpolated in a middle bucket", 0.9, latency, 0.25 + 0.25*(10.0/15), 100, false},
		{"interpolated in the last finite bucket", 0.99, latency, 0.5 + 0.5*(4.0/5), 100, false},
		{"q = 1 is the top of the highest populated bucket", 1, latency, 1, 100, false},
		{"rank in +Inf gives the highest finite bound", 0.5, []Bucket{{0.1, 10}, {0.2, 20}, {inf, 100}}, 0.2, 100, false},
		{"rank in +Inf, p99", 0.99, []Bucket{{0.1, 10}, {1, 98}, {inf, 100}}, 1, 100, false},
		{"unsorted input", 0.9, []Bucket{{inf, 100}, {0.5, 95}, {0.1, 50}, {1, 100}, {0.25, 80}}, 0.25 + 0.25*(10.0/15), 100, false},
		{"non-monotonic buckets are made monotonic", 0.5, []Bucket{{0.1, 60}, {0.2, 50}, {inf, 100}}, 0.1 * 50 / 60, 100, false},
		{"non-monotonic, rank above the dip", 0.7, []Bucket{{0.1, 60}, {0.2, 50}, {inf, 100}}, 0.2, 100, false},
		{"non-monotonic +Inf is raised to the largest count", 0.5, []Bucket{{0.1, 60}, {0.2, 80}, {inf, 70}}, 0.1 * 40 / 60, 80, false},
		{"tiny counts, rank in +Inf", 0.5, []Bucket{{0.1, 0}, {0.2, 0}, {inf, 0.0001}}, 0.2, 0.0001, false},
		{"a first bucket at or below 0 gives its bound", 0.25, []Bucket{{0, 10}, {1, 20}, {inf, 20}}, 0, 20, false},
		{"negative first bucket", 0.1, []Bucket{{-1, 5}, {1, 20}, {inf, 20}}, -1, 20, false},
		{"no observations is NaN with count 0", 0.5, []Bucket{{0.1, 0}, {inf, 0}}, 0, 0, true},
		{"only +Inf is NaN", 0.5, []Bucket{{inf, 7}}, 0, 7, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]Bucket(nil), tc.buckets...)
			got, count, err := Quantile(tc.q, tc.buckets)
			require.NoError(t, err)
			require.Equal(t, in, tc.buckets, "Quantile must not reorder or change its input")
			require.Equal(t, tc.wantCount, count)
			if tc.wantNaN {
				require.True(t, math.IsNaN(got), "got %v", got)
				return
			}
			require.InDelta(t, tc.want, got, 1e-12)
		})
	}

	for name, bs := range map[string][]Bucket{
		"empty":              nil,
		"missing +Inf":       {{0.1, 5}, {1, 10}},
		"only finite, large": {{math.MaxFloat64, 10}},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := Quantile(0.5, bs)
			require.ErrorIs(t, err, ErrNoInfBucket)
		})
	}
}

func TestBucketJSON(t *testing.T) {
	in := []Bucket{{0.25, 12}, {math.Inf(1), 40}}
	data, err := json.Marshal(in)
	require.NoError(t, err)
	require.JSONEq(t, `[{"le":"0.25","count":12},{"le":"+Inf","count":40}]`, string(data))
	var out []Bucket
	require.NoError(t, json.Unmarshal(data, &out))
	require.Equal(t, in, out)
	require.Error(t, json.Unmarshal([]byte(`[{"le":"fast","count":1}]`), &out))
}

// TestReadingWithCountsEncodes: a histogram reading's counts, +Inf bucket included, survive
// JSON (the state store keeps baselines and evidence as JSON).
func TestReadingWithCountsEncodes(t *testing.T) {
	c := &Counts{Total: Exact(10), Buckets: []BucketCounts{
		{UpperBound: 0.1, Count: Bounds{Low: 4, Est: 5, High: 6}, Slower: Exact(5)},
		{UpperBound: math.Inf(1), Count: Exact(10)}}}
	in := Reading{Status: StatusOK, Value: 0.1, Counts: c, Recent: c}
	data, err := json.Marshal(in)
	require.NoError(t, err)
	require.Contains(t, string(data), `"le":"+Inf"`)
	var out Reading
	require.NoError(t, json.Unmarshal(data, &out))
	require.Equal(t, in, out)
	require.Error(t, json.Unmarshal([]byte(`{"le":"slow","count":{},"slower":{}}`), &BucketCounts{}))
}
