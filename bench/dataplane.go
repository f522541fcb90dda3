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
		{name: "wireguard", labName: "wb-wg", labBackend: "wireguard"},
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

// runDataPlane measures every backend on its own 2-node lab, each next to
// that lab's underlay, interleaved, so each ratio compares figures taken
// under the same machine load. In quick mode the underlay only gets the
// single-stream runs (the ratio the targets use).
func runDataPlane(ctx context.Context, cfg *config, res *Results) *DataPlane {
	dp := &DataPlane{
		DurationSec: int(cfg.iperfDuration / time.Second),
		Repetitions: cfg.reps,
		UDPRate:     cfg.udpRate,
		PingCount:   cfg.pingCount,
	}
	for _, spec := range backendSpecs(labNetwork) {
		if ctx.Err() != nil {
			break
		}
		if !cfg.wantBackend(spec.name) {
			continue
		}
		cfg.logf("data plane: %s", spec.name)
		br := runBackend(ctx, cfg, spec)
		if u, p := br.Underlay, br.Pod; u != nil && p != nil {
			br.SingleStreamRatio = round3(ratio(p.TCP1.MedianGbps, u.TCP1.MedianGbps))
			br.MultiStreamRatio = round3(ratio(p.TCP4.MedianGbps, u.TCP4.MedianGbps))
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

// runBackend measures one backend: its pod→pod path and its lab's
// node→node underlay path.
func runBackend(ctx context.Context, cfg *config, spec backendSpec) *BackendRun {
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
	br.Underlay = &PathResult{From: n1.Name + " " + n1.Underlay.String(), To: n2.Name + " " + n2.Underlay.String()}
	paths := []*pathRun{{name: "underlay", res: br.Underlay, tcp1Only: cfg.quick,
		spec: pathSpec{srcNS: n1.NS, dstNS: n2.NS, dst: n2.Underlay, weftdPIDs: pids}}}
	br.Pod = &PathResult{From: p1.Name + " " + p1.IP.String(), To: p2.Name + " " + p2.IP.String()}
	paths = append(paths, &pathRun{name: "pod", res: br.Pod,
		spec: pathSpec{srcNS: p1.NS, dstNS: p2.NS, dst: p2.IP, weftdPIDs: pids}})
	measurePaths(ctx, cfg, paths)
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

// pathRun is one path being measured and its running totals.
type pathRun struct {
	name string
	spec pathSpec
	res  *PathResult
	srv  *iperfServer
	// tcp1Only skips the 4-stream and UDP runs.
	tcp1Only bool
	// over the single-stream runs: bytes moved, weftd and kernel CPU
	moved             int64
	weftdCPU, kernCPU float64
	tcp1, tcp4        []float64
}

func (p *pathRun) fail(what string, err error) {
	p.res.Errors = append(p.res.Errors, fmt.Sprintf("%s %s: %v", p.name, what, err))
}

// measurePaths measures the paths of one lab, interleaved so that each
// ratio compares figures taken under the same machine load: idle ping
// latency of each path, then each repetition of TCP with 1 stream (with CPU
// accounting) on every path in turn, the same with 4 streams, then UDP at
// the fixed offered load. Failures are recorded in the results; what was
// measured stays.
func measurePaths(ctx context.Context, cfg *config, paths []*pathRun) {
	var live []*pathRun
	for _, p := range paths {
		if err := waitReachable(ctx, p.spec.srcNS, p.spec.dst, 30*time.Second); err != nil {
			p.fail("reachability", err)
			continue
		}
		if pr, err := runPing(ctx, p.spec.srcNS, p.spec.dst, cfg.pingCount, cfg.pingInterval); err != nil {
			p.fail("ping", err)
		} else {
			p.res.Ping = &pr
		}
		srv, err := startIperfServer(ctx, p.spec.dstNS, p.spec.dst, iperfPort)
		if err != nil {
			p.fail("iperf3 server", err)
			continue
		}
		p.srv = srv
		defer srv.stop()
		live = append(live, p)
	}
	client := func(p *pathRun, streams int) iperfClient {
		return iperfClient{NS: p.spec.srcNS, Dst: p.spec.dst, Port: iperfPort, Duration: cfg.iperfDuration, Streams: streams}
	}
	for range cfg.reps {
		for _, p := range live {
			if ctx.Err() != nil {
				return
			}
			w0, k0 := cpuOf(p.spec.weftdPIDs), mustKernelCPU()
			r, err := client(p, 1).run(ctx)
			w1, k1 := cpuOf(p.spec.weftdPIDs), mustKernelCPU()
			if err != nil {
				p.fail("tcp 1 stream", err)
				continue
			}
			p.res.TCP1.Runs = append(p.res.TCP1.Runs, r)
			p.tcp1 = append(p.tcp1, r.Gbps)
			p.moved += r.Bytes
			p.weftdCPU += w1 - w0
			p.kernCPU += k1 - k0
		}
	}
	for range cfg.reps {
		for _, p := range live {
			if ctx.Err() != nil {
				return
			}
			if p.tcp1Only {
				continue
			}
			r, err := client(p, 4).run(ctx)
			if err != nil {
				p.fail("tcp 4 streams", err)
				continue
			}
			p.res.TCP4.Runs = append(p.res.TCP4.Runs, r)
			p.tcp4 = append(p.tcp4, r.Gbps)
		}
	}
	for _, p := range live {
		if p.tcp1Only {
			continue
		}
		c := client(p, 1)
		c.UDPRate = cfg.udpRate
		if u, err := c.run(ctx); err != nil {
			p.fail("udp", err)
		} else {
			p.res.UDP = &u
		}
	}
	for _, p := range paths {
		p.res.TCP1.MedianGbps = round3(median(p.tcp1))
		p.res.TCP4.MedianGbps = round3(median(p.tcp4))
		if gb := float64(p.moved) / 1e9; gb > 0 {
			p.res.WeftdCPUPerGB = round3(p.weftdCPU / gb)
			p.res.KernelCPUPerGB = round3(p.kernCPU / gb)
		}
		line := fmt.Sprintf("    %-8s tcp 1 stream %.2f Gbit/s %v", p.name, p.res.TCP1.MedianGbps, roundAll(p.tcp1))
		if !p.tcp1Only {
			line += fmt.Sprintf(", 4 streams %.2f Gbit/s %v", p.res.TCP4.MedianGbps, roundAll(p.tcp4))
		}
		cfg.logf("%s", line)
	}
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
	prof := newProfiler("data plane", what, nil, dataPlaneComms())
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
