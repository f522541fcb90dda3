package main

import (
	"math"
	"slices"
	"time"
)

// Dist summarises a sample of values (milliseconds, Gbit/s, ...).
type Dist struct {
	N    int     `json:"n"`
	Min  float64 `json:"min"`
	P50  float64 `json:"p50"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// summarize returns the distribution of vs; the zero Dist for no values.
// Percentiles use the nearest-rank method, so p99 of 100 samples is the
// 99th smallest, a value that was actually observed.
func summarize(vs []float64) Dist {
	if len(vs) == 0 {
		return Dist{}
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	sum := 0.0
	for _, v := range s {
		sum += v
	}
	return Dist{
		N:    len(s),
		Min:  s[0],
		P50:  percentile(s, 50),
		P95:  percentile(s, 95),
		P99:  percentile(s, 99),
		Max:  s[len(s)-1],
		Mean: sum / float64(len(s)),
	}
}

// percentile is the nearest-rank percentile p (0..100] of sorted s.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}

// median is the middle value (the mean of the two middle ones for an even
// count); 0 for none.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// ms converts a duration to float milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ratio is a/b, or 0 when b is 0 (a figure that was not measured).
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// round3 keeps three decimals, so the JSON stays readable.
func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
