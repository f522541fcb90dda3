package main

import (
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	var hundred []float64
	for i := 100; i >= 1; i-- { // reversed: summarize must sort
		hundred = append(hundred, float64(i))
	}
	tests := []struct {
		name string
		in   []float64
		want Dist
	}{
		{"empty", nil, Dist{}},
		{"one", []float64{7}, Dist{N: 1, Min: 7, P50: 7, P95: 7, P99: 7, Max: 7, Mean: 7}},
		{"hundred", hundred, Dist{N: 100, Min: 1, P50: 50, P95: 95, P99: 99, Max: 100, Mean: 50.5}},
		{"ten", []float64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}, Dist{N: 10, Min: 1, P50: 5, P95: 10, P99: 10, Max: 10, Mean: 5.5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := summarize(tt.in); got != tt.want {
				t.Errorf("summarize = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tt := range tests {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestRatioAndMS(t *testing.T) {
	if got := ratio(1, 0); got != 0 {
		t.Errorf("ratio(1, 0) = %v, want 0", got)
	}
	if got := ratio(3, 4); got != 0.75 {
		t.Errorf("ratio(3, 4) = %v, want 0.75", got)
	}
	if got := ms(1500 * time.Microsecond); got != 1.5 {
		t.Errorf("ms(1.5ms) = %v", got)
	}
}
