package reliability

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/lab"
)

// rssKiB reads a process's resident set size.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.Atoi(strings.Fields(v)[0])
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no VmRSS for %d", pid)
	return 0
}

// TestSoak runs a 3-node lab for -soak (2m; `make soak`: 30m) with
// continuous pings between pods on different nodes and pod churn (a pod
// added on a random node, reached from another node, deleted, in a loop).
// Measured at start (after one warm-up cycle) and end: weftd RSS and
// goroutines on every node (flat: at most +10 goroutines and +50% RSS),
// ping loss (zero), errors in the logs (none), churn cycles done.
func TestSoak(t *testing.T) {
	t.Parallel()
	d := *soakFlag
	l := up(t, lab.Options{Name: labName("sk"), Nodes: 3, PodsPerNode: 1, Backend: "vxlan"})
	const interval = 100 * time.Millisecond
	pings := []*pinger{
		startPing(t, l, "n1-p1", l.Node("n2").Pods[0].IP, interval, d),
		startPing(t, l, "n2-p1", l.Node("n3").Pods[0].IP, interval, d),
		startPing(t, l, "n3-p1", l.Node("n1").Pods[0].IP, interval, d),
	}
	start := time.Now()
	type sample struct {
		rss        int
		goroutines float64
	}
	measure := func() map[string]sample {
		out := map[string]sample{}
		for _, n := range l.Nodes {
			out[n.Name] = sample{rssKiB(t, n.Weftd.PID), metric(t, l, n.Name, "go_goroutines")}
		}
		return out
	}
	var first map[string]sample
	cycles, failed := 0, 0
	for i := 0; time.Since(start) < d-5*time.Second; i++ {
		node := l.Nodes[i%len(l.Nodes)]
		other := l.Nodes[(i+1)%len(l.Nodes)]
		pods, err := l.AddPods(t.Context(), node.Name, 1)
		if err != nil {
			t.Fatalf("churn add: %v", err)
		}
		if !lab.Poll(t.Context(), 10*time.Second, 100*time.Millisecond, func() bool { return pingOnce(t.Context(), l, other.Pods[0].Name, pods[0].IP) }) {
			failed++
			t.Errorf("churn cycle %d: %s not reached from %s", i, pods[0].Name, other.Pods[0].Name)
		}
		if err := l.DeletePod(t.Context(), pods[0].Name); err != nil {
			t.Fatalf("churn delete: %v", err)
		}
		cycles++
		if first == nil {
			first = measure() // after one warm-up cycle: every code path ran once
		}
	}
	var lost, sent int
	for _, p := range pings {
		st := p.Wait(t)
		lost += st.Lost()
		sent += st.Sent
	}
	last := measure()
	var errs []string
	var summary []string
	for _, n := range l.Nodes {
		errs = append(errs, grepLines(logSince(t, l, n.Name, 0), "level=ERROR")...)
		a, b := first[n.Name], last[n.Name]
		summary = append(summary, fmt.Sprintf("%s RSS %d→%d KiB goroutines %v→%v", n.Name, a.rss, b.rss, a.goroutines, b.goroutines))
		if b.goroutines > a.goroutines+10 {
			t.Errorf("%s: goroutines grew %v → %v", n.Name, a.goroutines, b.goroutines)
		}
		if float64(b.rss) > 1.5*float64(a.rss) {
			t.Errorf("%s: RSS grew %d → %d KiB", n.Name, a.rss, b.rss)
		}
		if !l.WeftdAlive(n.Name) {
			t.Errorf("weftd on %s died", n.Name)
		}
	}
	record(t, "soak %v, 3 nodes vxlan: %d pod churn cycles (%d unreachable); pings %d sent, %d lost; %s; %d error lines",
		d, cycles, failed, sent, lost, strings.Join(summary, "; "), len(errs))
	for _, e := range errs {
		t.Errorf("error logged: %s", e)
	}
	if lost != 0 {
		t.Errorf("lost %d pings", lost)
	}
}
