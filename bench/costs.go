package main

import (
	"cmp"
	"errors"
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// The udp backend pays per system call and per wake-up of a sleeping
// thread; vxlan and host-gw pay neither. Both prices depend on the machine
// (a paravirtualized guest pays dearly for entering its kernel), so the
// report measures them next to the ratios they explain.

const (
	syscallRounds = 5
	syscallCalls  = 200_000
	// wakeRounds exchanges per wake-up measurement, each after wakeIdle
	// of sleep: the benchmark's pings also come 10 ms apart.
	wakeRounds = 100
	wakeIdle   = 10 * time.Millisecond
)

// CallCosts are this machine's prices for what a userspace data path does.
type CallCosts struct {
	// SyscallNs is one getppid(2), the cheapest round trip into the
	// kernel: the median of syscallRounds loops.
	SyscallNs float64 `json:"syscallNs"`
	// WakeSameCPUus and WakeOtherCPUus are the p50 round trips, in µs, of
	// one byte through two pipes between two threads that slept for
	// wakeIdle, pinned to one CPU or to two. 0 when not measured (one CPU,
	// or pinning refused).
	WakeSameCPUus  float64 `json:"wakeSameCPUus,omitempty"`
	WakeOtherCPUus float64 `json:"wakeOtherCPUus,omitempty"`
}

// measureCallCosts takes about 2*wakeRounds*wakeIdle. It changes nothing
// outside this process.
func measureCallCosts() (CallCosts, error) {
	var c CallCosts
	per := make([]float64, syscallRounds)
	for i := range per {
		start := time.Now()
		for range syscallCalls {
			unix.Getppid()
		}
		per[i] = float64(time.Since(start).Nanoseconds()) / syscallCalls
	}
	c.SyscallNs = median(per)
	if runtime.NumCPU() < 2 {
		return c, nil
	}
	var err error
	if c.WakeSameCPUus, err = wakeRoundTrip(0, 0, wakeRounds, wakeIdle); err != nil {
		return c, err
	}
	c.WakeOtherCPUus, err = wakeRoundTrip(0, 1, wakeRounds, wakeIdle)
	return c, err
}

// wakeRoundTrip pins a pinger thread to CPU a and an echoer thread to CPU
// b and returns the p50 of rounds round trips in µs, each after idle. The
// echoer owns ping[0] and pong[1], the pinger the other ends: whichever
// stops first closes its ends, and the other sees end of file.
func wakeRoundTrip(a, b, rounds int, idle time.Duration) (float64, error) {
	var ping, pong [2]int
	if err := unix.Pipe2(ping[:], unix.O_CLOEXEC); err != nil {
		return 0, err
	}
	if err := unix.Pipe2(pong[:], unix.O_CLOEXEC); err != nil {
		unix.Close(ping[0])
		unix.Close(ping[1])
		return 0, err
	}
	ready, echoed := make(chan error, 1), make(chan error, 1)
	go func() {
		defer unix.Close(ping[0])
		defer unix.Close(pong[1])
		runtime.LockOSThread() // never unlocked: the pinned thread exits with the goroutine
		if err := pinThread(b); err != nil {
			ready <- err
			return
		}
		ready <- nil
		echoed <- echo(ping[0], pong[1])
	}()
	err := <-ready
	var rtts []float64
	if err == nil {
		rtts, err = pingThread(a, ping[1], pong[0], rounds, idle)
	}
	unix.Close(ping[1])
	unix.Close(pong[0])
	if err == nil {
		err = <-echoed
	}
	if err != nil {
		return 0, fmt.Errorf("wake-up round trip, CPUs %d and %d: %w", a, b, err)
	}
	return median(rtts), nil
}

// echo writes back every byte it reads until end of file.
func echo(in, out int) error {
	buf := []byte{0}
	for {
		n, err := unix.Read(in, buf)
		if err != nil || n == 0 {
			return err
		}
		if _, err := unix.Write(out, buf); err != nil {
			return err
		}
	}
}

// pingThread runs on its own thread pinned to cpu: rounds times it sleeps
// idle, then times one byte out and back.
func pingThread(cpu, out, in, rounds int, idle time.Duration) ([]float64, error) {
	type result struct {
		rtts []float64
		err  error
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the pinned thread exits with the goroutine
		if err := pinThread(cpu); err != nil {
			res <- result{err: err}
			return
		}
		rtts := make([]float64, 0, rounds)
		buf := []byte{0}
		for range rounds {
			time.Sleep(idle)
			start := time.Now()
			if _, err := unix.Write(out, buf); err != nil {
				res <- result{err: err}
				return
			}
			if n, err := unix.Read(in, buf); err != nil || n == 0 {
				res <- result{err: cmp.Or(err, errors.New("echoer stopped"))}
				return
			}
			rtts = append(rtts, float64(time.Since(start).Nanoseconds())/1e3)
		}
		res <- result{rtts: rtts}
	}()
	r := <-res
	return r.rtts, r.err
}

func pinThread(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	return unix.SchedSetaffinity(0, &set)
}
