package compare

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// bitsOf makes samples comparable bit for bit (NaN is not equal to itself, -0 is to 0).
func bitsOf(ss []Sample) [][2]uint64 {
	out := make([][2]uint64, len(ss))
	for i, s := range ss {
		out[i] = [2]uint64{uint64(s.T), math.Float64bits(s.V)}
	}
	return out
}

func TestChunkGivesBackEverySampleExactly(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	odd := []float64{math.NaN(), math.Copysign(0, -1), 0, math.Inf(1), math.Inf(-1), 0.1, 1e300,
		-1e300, math.MaxFloat64, math.SmallestNonzeroFloat64, maxExactDelta, maxExactDelta + 2, -maxExactDelta}
	for run := range 200 {
		var want []Sample
		t0 := int64(1_790_000_000_000) + rng.Int64N(1e6)
		v := 0.0
		for i := range 1 + rng.IntN(300) {
			t0 += 1 + rng.Int64N(30_000) // scrapes 1 ms to 30 s apart, any jitter
			switch r := rng.IntN(10); {
			case r < 6: // a counter going up
				v += float64(rng.IntN(1000))
			case r == 6: // a reset
				v = float64(rng.IntN(10))
			case r == 7: // a gauge, or a rate
				v = rng.NormFloat64() * 1e3
			default:
				v = odd[(run+i)%len(odd)]
			}
			want = append(want, Sample{T: t0, V: v})
		}
		var c chunk
		// Appended in pieces, as refreshes do.
		for rest := want; len(rest) > 0; {
			k := 1 + rng.IntN(len(rest))
			c.append(rest[:k]...)
			rest = rest[k:]
		}
		require.Equal(t, len(want), c.len())
		require.Equal(t, bitsOf(want), bitsOf(c.appendTo(nil)))
		require.Equal(t, bitsOf(want[len(want)-1:]), bitsOf([]Sample{c.lastSample()}))

		cut := want[rng.IntN(len(want))].T + rng.Int64N(3) - 1
		n := 0
		for _, s := range want {
			if s.T <= cut {
				n++
			}
		}
		require.Equal(t, n, c.through(cut))

		i := rng.IntN(len(want) + 1)
		c.drop(i)
		require.Equal(t, len(want)-i, c.len())
		require.Equal(t, bitsOf(want[i:]), bitsOf(c.appendTo(nil)))
		// Appending after a drop goes on from the newest sample.
		more := Sample{T: t0 + 5000, V: v + 7}
		c.append(more)
		require.Equal(t, bitsOf(append(append([]Sample(nil), want[i:]...), more)), bitsOf(c.appendTo(nil)))
	}
}

// A request counter scraped every 5 s with a few milliseconds of jitter, as the feeds hold
// them, takes a fifth of the room of []Sample.
func TestChunkIsSmallForScrapedCounters(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var c chunk
	t0, v := int64(1_790_000_000_000), 123_456.0
	const n = 720
	for range n {
		t0 += 5000 + rng.Int64N(20) - 10
		v += float64(50 + rng.IntN(100)) // 10 to 30 requests a second
		c.append(Sample{T: t0, V: v})
	}
	perSample := float64(len(c.b)) / n
	t.Logf("%.2f bytes a sample", perSample)
	require.LessOrEqual(t, perSample, 3.2, "a sample of a scraped counter takes about 3 bytes")
}

func BenchmarkChunkDecode(b *testing.B) {
	var c chunk
	t0, v := int64(1_790_000_000_000), 0.0
	for range 144 { // 12 minutes at 5 s
		t0 += 5000
		v += 100
		c.append(Sample{T: t0, V: v})
	}
	buf := make([]Sample, 0, c.len())
	b.ReportAllocs()
	for b.Loop() {
		buf = c.appendTo(buf[:0])
	}
}
