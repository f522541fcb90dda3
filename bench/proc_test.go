package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    float64
		wantErr bool
	}{
		{"plain", "123 (weftd) S 1 123 123 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1000 0 0", 3.0, false},
		{"comm with spaces and parens", "9 (a) b (c)) R 1 9 9 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 5 0 0", 0.1, false},
		{"short", "1 (x) S 1 2", 0, true},
		{"no paren", "1 x S", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("cpu = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseStatusRSS(t *testing.T) {
	got, err := parseStatusRSS([]byte("Name:\tweftd\nVmPeak:\t 9000 kB\nVmRSS:\t   20480 kB\n"))
	if err != nil || got != 20 {
		t.Errorf("rss = %v, %v; want 20", got, err)
	}
	if _, err := parseStatusRSS([]byte("Name:\tx\n")); err == nil {
		t.Error("no VmRSS: want an error")
	}
}

func TestParseKernelCPU(t *testing.T) {
	got, err := parseKernelCPU([]byte("cpu  100 5 200 9000 10 30 70 0 0 0\ncpu0 1 2 3\n"))
	if err != nil || got != 3 {
		t.Errorf("kernel cpu = %v, %v; want 3", got, err)
	}
	if _, err := parseKernelCPU([]byte("intr 1 2\n")); err == nil {
		t.Error("bad first line: want an error")
	}
}

func TestProcUsageSelf(t *testing.T) {
	u, err := procUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if u.RSSMB <= 0 {
		t.Errorf("own RSS = %v MB, want > 0", u.RSSMB)
	}
}

// weftd's default --gc-percent, which the memory notes state, is weftd's.
func TestGCPercentInStep(t *testing.T) {
	src, err := os.ReadFile("../cmd/weftd/main.go")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("const defaultGCPercent = %d\n", weftdDefaultGCPercent); !strings.Contains(string(src), want) {
		t.Errorf("cmd/weftd/main.go lacks %q: change weftdDefaultGCPercent with it", want)
	}
}
