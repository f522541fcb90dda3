package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/weftnet/weft/lab"
)

// backendSpec is one data-plane configuration to measure.
type backendSpec struct {
	name       string // as reported
	labName    string
	labBackend string // what lab.Up is given
	// config, when not empty, replaces the lab's network config after Up
	// (the lab only writes {"Network", "Backend": {"Type"}}); weftd then
	// starts a new generation with it.
	config string
}

func backendSpecs(network string) []backendSpec {
	return []backendSpec{
		{name: "vxlan", labName: "wb-vxlan", labBackend: "vxlan"},
		{name: "host-gw", labName: "wb-hostgw", labBackend: "host-gw"},
		{name: "vxlan-directrouting", labName: "wb-vxlandr", labBackend: "vxlan",
			config: fmt.Sprintf(`{"Network": %q, "Backend": {"Type": "vxlan", "DirectRouting": true}}`, network)},
		{name: "udp", labName: "wb-udp", labBackend: "udp"},
	}
}

// labNetwork is the pod network of the data-plane labs (the lab's default).
const labNetwork = "10.244.0.0/16"

// iperfPort is the iperf3 server port in each destination namespace.
const iperfPort = 5201

// pathSpec names the two ends of a measured path.
type pathSpec struct {
	srcNS, dstNS string
	dst          netip.Addr
	weftdPIDs    []int
}

// runDataPlane measures every backend on its own 2-node lab. Only the
// first lab's underlay is measured in quick mode; otherwise each lab's
// underlay is measured right before its pods, so each ratio compares two
// figures taken a minute apart on the same machine state.
func runDataPlane(ctx context.Context, cfg *config, res *Results) *DataPlane {
	dp := &DataPlane{
		DurationSec: int(cfg.iperfDuration / time.Second),
		Repetitions: cfg.reps,
		UDPRate:     cfg.udpRate,
		PingCount:   cfg.pingCount,
	}
	var ref *PathResult
	for _, spec := range backendSpecs(labNetwork) {
		if ctx.Err() != nil {
			break
		}
		if !cfg.wantBackend(spec.name) {
			continue
		}
		cfg.logf("data plane: %s", spec.name)
		br := runBackend(ctx, cfg, spec, ref == nil || !cfg.quick)
		if br.Underlay != nil && ref == nil {
			ref = br.Underlay
		}
		under := br.Underlay
		if under == nil {
			under = ref
		}
		if under != nil && br.Pod != nil {
			br.SingleStreamRatio = round3(ratio(br.Pod.TCP1.MedianGbps, under.TCP1.MedianGbps))
			br.MultiStreamRatio = round3(ratio(br.Pod.TCP4.MedianGbps, under.TCP4.MedianGbps))
		}
		if br.Error != "" {
			res.Errors = append(res.Errors, fmt.Sprintf("data plane %s: %s", spec.name, br.Error))
		}
		dp.Backends = append(dp.Backends, br)
	}
	return dp
}

// upLab brings up a 2-node lab with one pod per node for spec, applies
// spec.config, and returns it with its teardown (always non-nil, to be
// called even when err is not nil).
func upLab(ctx context.Context, cfg *config, spec backendSpec) (*lab.Lab, func(), error) {
	down := func() {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		if err := lab.Down(cctx, "", spec.labName); err != nil {
			cfg.logf("lab %s down: %v", spec.labName, err)
		}
	}
	l, err := lab.Up(ctx, lab.Options{
		Name:         spec.labName,
		Nodes:        2,
		Backend:      spec.labBackend,
		PodsPerNode:  1,
		BinDir:       cfg.binDir,
		Network:      labNetwork,
		Progress:     cfg.progress,
		ReadyTimeout: 60 * time.Second,
	})
	if err != nil {
		return nil, down, fmt.Errorf("lab up: %w", err)
	}
	if len(l.Nodes) != 2 || len(l.Nodes[0].Pods) != 1 || len(l.Nodes[1].Pods) != 1 {
		return nil, down, fmt.Errorf("lab %s: want 2 nodes with 1 pod each", l.Name)
	}
	if spec.config != "" {
		if err := applyDirectRouting(ctx, cfg, l, spec.config); err != nil {
			return nil, down, err
		}
	}
	return l, down, nil
}

// runBackend measures one backend; underlay says whether to measure the
// lab's node→node path too.
func runBackend(ctx context.Context, cfg *config, spec backendSpec, underlay bool) *BackendRun {
	br := &BackendRun{Name: spec.name, Lab: spec.labName, Config: spec.config}
	if br.Config == "" {
		br.Config = lab.NetworkConfig(labNetwork, spec.labBackend)
	}
	l, down, err := upLab(ctx, cfg, spec)
	defer down()
	if err != nil {
		br.Error = err.Error()
		return br
	}
	n1, n2 := l.Nodes[0], l.Nodes[1]
	p1, p2 := n1.Pods[0], n2.Pods[0]
	pids := []int{n1.Weftd.PID, n2.Weftd.PID}
	if underlay {
		cfg.logf("  underlay %s → %s", n1.Underlay, n2.Underlay)
		br.Underlay = measurePath(ctx, cfg, pathSpec{srcNS: n1.NS, dstNS: n2.NS, dst: n2.Underlay, weftdPIDs: pids})
		br.Underlay.From, br.Underlay.To = n1.Name+" "+n1.Underlay.String(), n2.Name+" "+n2.Underlay.String()
	}
	cfg.logf("  pods %s → %s", p1.IP, p2.IP)
	br.Pod = measurePath(ctx, cfg, pathSpec{srcNS: p1.NS, dstNS: p2.NS, dst: p2.IP, weftdPIDs: pids})
	br.Pod.From, br.Pod.To = p1.Name+" "+p1.IP.String(), p2.Name+" "+p2.IP.String()
	var errs []string
	for _, pr := range []*PathResult{br.Underlay, br.Pod} {
		if pr != nil {
			errs = append(errs, pr.Errors...)
		}
	}
	br.Error = strings.Join(errs, "; ")
	return br
}

// applyDirectRouting writes the DirectRouting config into the lab's etcd
// and waits until both nodes route to each other's subnet straight over
// the underlay (dev eth0 via the peer's address), the sign that their
// weftd runs the new config.
func applyDirectRouting(ctx context.Context, cfg *config, l *lab.Lab, conf string) error {
	cli, err := dialLabEtcd(ctx, l)
	if err != nil {
		return err
	}
	defer cli.Close()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = cli.Put(cctx, configKey, conf)
	cancel()
	if err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	cfg.logf("  config: %s", conf)
	for _, pair := range [][2]*lab.Node{{l.Nodes[0], l.Nodes[1]}, {l.Nodes[1], l.Nodes[0]}} {
		from, to := pair[0], pair[1]
		want := "via " + to.Underlay.String() + " dev eth0"
		_, err := pollUntil(ctx, 60*time.Second, 100*time.Millisecond, func() (bool, error) {
			out, err := nsRun(ctx, from.NS, "ip", "-4", "route", "show", to.Subnet.String())
			return err == nil && strings.Contains(out, want), nil
		})
		if err != nil {
			out, _ := nsRun(ctx, from.NS, "ip", "-4", "route")
			return fmt.Errorf("node %s: no direct route to %s (%s) after the config change: %w; routes: %s",
				from.Name, to.Subnet, want, err, strings.ReplaceAll(strings.TrimSpace(out), "\n", "; "))
		}
	}
	return nil
}

// measurePath runs, in order: idle ping latency, TCP with 1 stream (with
// CPU accounting), TCP with 4 streams, UDP at the fixed offered load.
// Failures are recorded in the result; what was measured stays.
func measurePath(ctx context.Context, cfg *config, p pathSpec) *PathResult {
	r := &PathResult{}
	fail := func(what string, err error) { r.Errors = append(r.Errors, fmt.Sprintf("%s: %v", what, err)) }
	if err := waitReachable(ctx, p.srcNS, p.dst, 30*time.Second); err != nil {
		fail("reachability", err)
		return r
	}
	if pr, err := runPing(ctx, p.srcNS, p.dst, cfg.pingCount, cfg.pingInterval); err != nil {
		fail("ping", err)
	} else {
		r.Ping = &pr
	}
	srv, err := startIperfServer(ctx, p.dstNS, p.dst, iperfPort)
	if err != nil {
		fail("iperf3 server", err)
		return r
	}
	defer srv.stop()
	client := iperfClient{NS: p.srcNS, Dst: p.dst, Port: iperfPort, Duration: cfg.iperfDuration, Streams: 1}

	w0, k0 := cpuOf(p.weftdPIDs), mustKernelCPU()
	var moved int64
	r.TCP1, moved = runSeries(ctx, cfg, client, func(err error) { fail("tcp 1 stream", err) })
	w1, k1 := cpuOf(p.weftdPIDs), mustKernelCPU()
	if gb := float64(moved) / 1e9; gb > 0 {
		r.WeftdCPUPerGB = round3((w1 - w0) / gb)
		r.KernelCPUPerGB = round3((k1 - k0) / gb)
	}
	client.Streams = 4
	r.TCP4, _ = runSeries(ctx, cfg, client, func(err error) { fail("tcp 4 streams", err) })
	client.Streams, client.UDPRate = 1, cfg.udpRate
	if u, err := client.run(ctx); err != nil {
		fail("udp", err)
	} else {
		r.UDP = &u
	}
	return r
}

// runSeries repeats the client cfg.reps times and returns the runs, their
// median and the bytes moved.
func runSeries(ctx context.Context, cfg *config, c iperfClient, fail func(error)) (Series, int64) {
	var s Series
	var gbps []float64
	var moved int64
	for range cfg.reps {
		if ctx.Err() != nil {
			break
		}
		r, err := c.run(ctx)
		if err != nil {
			fail(err)
			continue
		}
		s.Runs = append(s.Runs, r)
		gbps = append(gbps, r.Gbps)
		moved += r.Bytes
	}
	s.MedianGbps = round3(median(gbps))
	cfg.logf("    tcp -P %d: %.2f Gbit/s median of %v", c.Streams, s.MedianGbps, roundAll(gbps))
	return s, moved
}

func roundAll(vs []float64) []float64 {
	out := make([]float64, len(vs))
	for i, v := range vs {
		out[i] = round3(v)
	}
	return out
}

func mustKernelCPU() float64 {
	v, _ := kernelCPU() // /proc/stat is always there; 0 only skews one figure
	return v
}

// profileDataPlane brings the lab of the slowest backend (lowest pod→pod
// single-stream median) up again and records one single-stream run with
// machine-wide perf: the work is split between iperf3, weftd (udp) and the
// kernel's softirq processing, which runs in whatever context it lands.
func profileDataPlane(ctx context.Context, cfg *config, dp *DataPlane) Profile {
	var slow *BackendRun
	for _, br := range dp.Backends {
		if br.Pod == nil || br.Pod.TCP1.MedianGbps == 0 {
			continue
		}
		if slow == nil || br.Pod.TCP1.MedianGbps < slow.Pod.TCP1.MedianGbps {
			slow = br
		}
	}
	if slow == nil {
		return Profile{Area: "data plane", Error: "no backend was measured"}
	}
	var spec backendSpec
	for _, s := range backendSpecs(labNetwork) {
		if s.name == slow.Name {
			spec = s
		}
	}
	what := fmt.Sprintf("%s (slowest, %.2f Gbit/s): pod→pod iperf3 TCP, 1 stream, %s", slow.Name, slow.Pod.TCP1.MedianGbps, cfg.iperfDuration)
	cfg.logf("data plane: profiling %s", what)
	prof := newProfiler("data plane", what, nil)
	fail := func(err error) Profile {
		r := prof.result()
		r.Error = err.Error()
		return r
	}
	l, down, err := upLab(ctx, cfg, spec)
	defer down()
	if err != nil {
		return fail(err)
	}
	p1, p2 := l.Nodes[0].Pods[0], l.Nodes[1].Pods[0]
	if err := waitReachable(ctx, p1.NS, p2.IP, 30*time.Second); err != nil {
		return fail(err)
	}
	srv, err := startIperfServer(ctx, p2.NS, p2.IP, iperfPort)
	if err != nil {
		return fail(err)
	}
	defer srv.stop()
	if err := prof.start(ctx); err != nil {
		return prof.result()
	}
	_, err = iperfClient{NS: p1.NS, Dst: p2.IP, Port: iperfPort, Duration: cfg.iperfDuration, Streams: 1}.run(ctx)
	prof.stop(ctx)
	if err != nil {
		return fail(err)
	}
	return prof.result()
}
