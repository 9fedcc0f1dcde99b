package bench

import (
	"math/bits"
	"time"
)

// histSub is the number of sub-buckets per power of two: values are kept
// to within 1/64 (1.6%).
const (
	histSubBits = 6
	histSub     = 1 << histSubBits
	histLen     = 64 * histSub
)

// Histogram counts durations in log-linear buckets. It is not safe for
// concurrent use: give each goroutine its own and Merge them.
type Histogram struct {
	counts [histLen]uint64
	n      uint64
}

func histIndex(v uint64) int {
	if v < 2*histSub {
		return int(v)
	}
	e := bits.Len64(v) - histSubBits - 1 // v >> e is in [histSub, 2*histSub)
	return e*histSub + int(v>>e)
}

// histValue returns the lower bound of bucket i.
func histValue(i int) uint64 {
	if i < 2*histSub {
		return uint64(i)
	}
	e := i/histSub - 1
	return uint64(i%histSub+histSub) << e
}

// Record adds one duration; a negative one counts as 0.
func (h *Histogram) Record(d time.Duration) {
	h.counts[histIndex(uint64(max(d, 0)))]++
	h.n++
}

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// Count returns the number of durations recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Quantile returns the q-quantile (nearest rank, 0 < q <= 1) to within
// 1.6%, or 0 for an empty histogram.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.999999)
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(histValue(i))
		}
	}
	return time.Duration(histValue(histLen - 1))
}
