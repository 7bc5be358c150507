package workload

import (
	"math"
	"math/rand/v2"
)

// poisson draws from a Poisson distribution of mean lambda: by multiplying uniforms (Knuth)
// for small means, by transformed rejection with squeeze (Hörmann's PTRS, 1993) for large
// ones, so that the cost stays bounded whatever the mean.
func poisson(r *rand.Rand, lambda float64) uint64 {
	switch {
	case !(lambda > 0): // also NaN
		return 0
	case lambda < 10:
		limit := math.Exp(-lambda)
		var k uint64
		for p := r.Float64(); p > limit; p *= r.Float64() {
			k++
		}
		return k
	}
	slam := math.Sqrt(lambda)
	loglam := math.Log(lambda)
	b := 0.931 + 2.53*slam
	a := -0.059 + 0.02483*b
	invalpha := 1.1239 + 1.1328/(b-3.4)
	vr := 0.9277 - 3.6224/(b-2)
	for {
		u := r.Float64() - 0.5
		v := r.Float64()
		us := 0.5 - math.Abs(u)
		k := math.Floor((2*a/us+b)*u + lambda + 0.43)
		if k >= 0 && us >= 0.07 && v <= vr {
			return uint64(k)
		}
		if k < 0 || (us < 0.013 && v > us) {
			continue
		}
		lg, _ := math.Lgamma(k + 1)
		if math.Log(v)+math.Log(invalpha)-math.Log(a/(us*us)+b) <= -lambda+k*loglam-lg {
			return uint64(k)
		}
	}
}
