package main

import (
	"runtime"
	"testing"
	"time"
)

func TestWakeRoundTrip(t *testing.T) {
	cpus := [][2]int{{0, 0}}
	if runtime.NumCPU() > 1 {
		cpus = append(cpus, [2]int{0, 1})
	}
	for _, c := range cpus {
		rtt, err := wakeRoundTrip(c[0], c[1], 5, time.Millisecond)
		if err != nil {
			t.Fatalf("CPUs %v: %v", c, err)
		}
		if rtt <= 0 || rtt > 1e6 {
			t.Fatalf("CPUs %v: round trip %v µs", c, rtt)
		}
	}
}

// A CPU that cannot be pinned to is an error on either side, not a hang.
func TestWakeRoundTripUnpinnable(t *testing.T) {
	const offline = 1000 // within the affinity mask, beyond any CPU here
	if runtime.NumCPU() > offline {
		t.Skip("this machine has a CPU", offline)
	}
	for _, c := range [][2]int{{offline, 0}, {0, offline}} {
		done := make(chan error, 1)
		go func() {
			_, err := wakeRoundTrip(c[0], c[1], 5, time.Millisecond)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				t.Fatalf("CPUs %v: no error", c)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("CPUs %v: still running after 10s", c)
		}
	}
}
