package lab

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// TestOptions bound Test.
type TestOptions struct {
	// Attempts per probe (ping -c 1 -W 1 each); default 3.
	Attempts int
	// Workers is how many pings run at once; default 8.
	Workers int
	// Timeout bounds the whole matrix; default 60s.
	Timeout time.Duration
	// SkipNodes leaves out the pod → other node's underlay probes.
	SkipNodes bool
	// FromNodes adds every node as a source: node → pods of the other
	// nodes, from the node's own namespace (the node's stack, as a
	// kubelet's probes or a hostNetwork pod would send).
	FromNodes bool
}

// target is one probe destination: a pod's or a node's (pod false) address
// of one family.
type target struct {
	name, addr, node string
	pod              bool
}

// IPv6Suffix marks a matrix target that is the IPv6 address of a pod or
// node: n1-p1/6, n2/6 (n1-p1 is its IPv4 address).
const IPv6Suffix = "/6"

// Test pings every pod from every other pod, and every other node's underlay
// address from every pod, and returns the matrix. A lab with IPv6 probes each
// family the lab has: the IPv6 targets are named with IPv6Suffix. Each probe
// is `ping -c 1 -W 1` inside the source pod, retried up to Attempts times;
// probes run on a bounded worker pool under one deadline. The error is only
// for a lab that cannot be tested; unreachable pairs are in the matrix
// (Matrix.OK).
func (l *Lab) Test(ctx context.Context, o TestOptions) (*Matrix, error) {
	if o.Attempts <= 0 {
		o.Attempts = 3
	}
	if o.Workers <= 0 {
		o.Workers = 8
	}
	if o.Timeout <= 0 {
		o.Timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	m := &Matrix{Lab: l.Name, Backend: l.Backend}
	var targets []target
	add := func(name, node string, pod bool, v4, v6 netip.Addr) {
		if l.hasIPv4() {
			targets = append(targets, target{name, v4.String(), node, pod})
		}
		if l.hasIPv6() {
			targets = append(targets, target{name + IPv6Suffix, v6.String(), node, pod})
		}
	}
	for _, n := range l.Nodes {
		for _, p := range n.Pods {
			if l.hasIPv4() && !p.IP.IsValid() || l.hasIPv6() && !p.IPv6.IsValid() {
				return nil, fmt.Errorf("pod %s lacks an address of the lab's families %s (was `lab up` interrupted?)", p.Name, l.Families())
			}
			m.Sources = append(m.Sources, p.Name)
			add(p.Name, n.Name, true, p.IP, p.IPv6)
		}
	}
	if !o.SkipNodes {
		for _, n := range l.Nodes {
			add(n.Name, n.Name, false, n.Underlay, n.UnderlayV6)
		}
	}
	if len(m.Sources) == 0 {
		return nil, fmt.Errorf("lab %s has no pods to test (use --pods-per-node)", l.Name)
	}
	for _, t := range targets {
		m.Targets = append(m.Targets, t.name)
	}
	type job struct {
		i        int
		from, ns string
		t        target
	}
	var jobs []job
	if o.FromNodes {
		for _, n := range l.Nodes {
			m.Sources = append(m.Sources, n.Name)
			for _, t := range targets {
				if t.node != n.Name && t.pod { // other nodes' pods
					jobs = append(jobs, job{len(jobs), n.Name, n.NS, t})
				}
			}
		}
	}
	for _, n := range l.Nodes {
		for _, p := range n.Pods {
			for _, t := range targets {
				// A pod does not ping itself, nor its own node's underlay (that
				// is the node's own stack, not the overlay).
				if t.pod && strings.TrimSuffix(t.name, IPv6Suffix) == p.Name || !t.pod && t.node == n.Name {
					continue
				}
				jobs = append(jobs, job{len(jobs), p.Name, p.NS, t})
			}
		}
	}
	m.Probes = make([]Probe, len(jobs))
	start := time.Now()
	ch := make(chan job)
	var wg sync.WaitGroup
	for range min(o.Workers, len(jobs)) {
		wg.Go(func() {
			for j := range ch {
				m.Probes[j.i] = ping(ctx, j.ns, j.from, j.t, o.Attempts)
			}
		})
	}
	for _, j := range jobs {
		ch <- j
	}
	close(ch)
	wg.Wait()
	m.Elapsed = time.Since(start)
	m.finish()
	return m, nil
}

func ping(ctx context.Context, ns, from string, t target, attempts int) Probe {
	p := Probe{From: from, To: t.name, Addr: t.addr}
	for p.Attempts < attempts && ctx.Err() == nil {
		p.Attempts++
		out, err := nsRun(ctx, ns, "ping", "-n", "-q", "-c", "1", "-W", "1", t.addr)
		if err == nil {
			p.OK, p.Error = true, ""
			return p
		}
		p.Error = lastLine(out, err)
	}
	if ctx.Err() != nil && p.Error == "" {
		p.Error = ctx.Err().Error()
	}
	return p
}

func lastLine(out string, err error) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return l
		}
	}
	return err.Error()
}
