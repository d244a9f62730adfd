package bench

import (
	"slices"
	"time"
)

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of ds,
// which it sorts in place; 0 for no samples.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	if !slices.IsSorted(ds) {
		slices.Sort(ds)
	}
	rank := int(p/100*float64(len(ds))+0.999999999) - 1
	return ds[min(max(rank, 0), len(ds)-1)]
}

// ms turns a duration into fractional milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// perUnit is the cost per unit of growth from a baseline: (v-base)/n.
func perUnit(v, base float64, n int) float64 {
	if n <= 0 {
		return 0
	}
	return (v - base) / float64(n)
}
