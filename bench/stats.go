package bench

import (
	"math/rand/v2"
	"slices"
)

// Median returns the median of xs (the mean of the two middle values for
// an even count), or 0 for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// bootstrapRounds is the number of resamples of a confidence interval.
const bootstrapRounds = 10000

// RatioCI returns median(a)/median(b) and a 95% confidence interval of that
// ratio by the percentile bootstrap, resampling a and b independently
// (benchstat's question: how far could this ratio move with other
// repetitions of the same two measurements). The seed makes it
// reproducible.
func RatioCI(a, b []float64, seed uint64) (ratio, lo, hi float64) {
	if len(a) == 0 || len(b) == 0 {
		return 0, 0, 0
	}
	rng := rand.New(rand.NewPCG(seed, 0xb007))
	rs := make([]float64, bootstrapRounds)
	ra, rb := make([]float64, len(a)), make([]float64, len(b))
	for k := range rs {
		for i := range ra {
			ra[i] = a[rng.IntN(len(a))]
		}
		for i := range rb {
			rb[i] = b[rng.IntN(len(b))]
		}
		rs[k] = Median(ra) / Median(rb)
	}
	slices.Sort(rs)
	return Median(a) / Median(b), rs[bootstrapRounds*25/1000], rs[bootstrapRounds*975/1000-1]
}

// MedianCI returns the median of xs (for example per-round ratios of
// paired measurements) and a 95% percentile-bootstrap confidence interval
// of it.
func MedianCI(xs []float64, seed uint64) (median, lo, hi float64) {
	if len(xs) == 0 {
		return 0, 0, 0
	}
	rng := rand.New(rand.NewPCG(seed, 0xb00b))
	ms := make([]float64, bootstrapRounds)
	r := make([]float64, len(xs))
	for k := range ms {
		for i := range r {
			r[i] = xs[rng.IntN(len(xs))]
		}
		ms[k] = Median(r)
	}
	slices.Sort(ms)
	return Median(xs), ms[bootstrapRounds*25/1000], ms[bootstrapRounds*975/1000-1]
}
