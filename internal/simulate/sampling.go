package simulate

import (
	"math"
	"math/rand/v2"
)

// poisson draws from Poisson(mean): by multiplication for small means, by Hörmann's
// transformed rejection (PTRS) otherwise.
func poisson(r *rand.Rand, mean float64) float64 {
	switch {
	case mean <= 0:
		return 0
	case mean < 10:
		l, k, p := math.Exp(-mean), 0.0, 1.0
		for {
			p *= r.Float64()
			if p <= l {
				return k
			}
			k++
		}
	}
	slam := math.Sqrt(mean)
	loglam := math.Log(mean)
	b := 0.931 + 2.53*slam
	a := -0.059 + 0.02483*b
	invalpha := 1.1239 + 1.1328/(b-3.4)
	vr := 0.9277 - 3.6224/(b-2)
	for {
		u := r.Float64() - 0.5
		v := r.Float64()
		us := 0.5 - math.Abs(u)
		k := math.Floor((2*a/us+b)*u + mean + 0.43)
		if us >= 0.07 && v <= vr {
			return k
		}
		if k < 0 || (us < 0.013 && v > us) {
			continue
		}
		lg, _ := math.Lgamma(k + 1)
		if math.Log(v)+math.Log(invalpha)-math.Log(a/(us*us)+b) <= -mean+k*loglam-lg {
			return k
		}
	}
}

// binomial draws from Binomial(n, p): exactly for small n, else by its Poisson or normal
// approximation (the simulation's counts are large, its error rates small).
func binomial(r *rand.Rand, n, p float64) float64 {
	switch {
	case n <= 0 || p <= 0:
		return 0
	case p >= 1:
		return n
	case n < 50:
		k := 0.0
		for i := 0.0; i < n; i++ {
			if r.Float64() < p {
				k++
			}
		}
		return k
	case p < 0.05:
		return math.Min(n, poisson(r, n*p))
	case p > 0.95:
		return n - math.Min(n, poisson(r, n*(1-p)))
	}
	k := math.Round(n*p + math.Sqrt(n*p*(1-p))*r.NormFloat64())
	return math.Max(0, math.Min(n, k))
}
