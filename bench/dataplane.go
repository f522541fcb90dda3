package main

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/weftnet/weft/lab"
)

// backendSpec is one data-plane configuration to measure.
type backendSpec struct {
	name       string // as reported
	labName    string
	labBackend string // what lab.Up is given
	// config, when not empty, is the lab's network config instead of
	// {"Network", "Backend": {"Type"}}.
	config string
	// direct: peers must be routed straight over the underlay (vxlan
	// DirectRouting); checked on every node before measuring.
	direct bool
	// noFlannel, when set, says why the lab has no Flannel nodes to
	// compare with.
	noFlannel string
	// ipv6: a dual-stack lab (lab.Options.IPv6), without Flannel nodes.
	ipv6 bool
	// base, for a variant of a backend (a weft feature turned off, to
	// measure it with and without in the same run), is the backend's name:
	// --backends base selects both. weftdArgs turn the feature off.
	base      string
	weftdArgs []string
	// reference: the lab also runs the backend's reference implementation
	// on two more nodes (reference.go).
	reference bool
}

// selector is the --backends name that selects spec.
func (spec backendSpec) selector() string { return cmp.Or(spec.base, spec.name) }

func backendSpecs(network string) []backendSpec {
	return []backendSpec{
		{name: "vxlan", labName: "wb-vxlan", labBackend: "vxlan"},
		{name: "host-gw", labName: "wb-hostgw", labBackend: "host-gw"},
		// BIG TCP is what host-gw gains over Flannel host-gw (vxlan's
		// device caps GSO at 64 KiB, so it has none there to turn off).
		{name: bigTCPOff, labName: "wb-hostgw-nobig", labBackend: "host-gw", base: "host-gw", weftdArgs: []string{"--big-tcp=false"}},
		{name: "vxlan-directrouting", labName: "wb-vxlandr", labBackend: "vxlan", direct: true,
			config: fmt.Sprintf(`{"Network": %q, "Backend": {"Type": "vxlan", "DirectRouting": true}}`, network)},
		{name: "udp", labName: "wb-udp", labBackend: "udp"},
		{name: "wireguard", labName: "wb-wg", labBackend: "wireguard", reference: true,
			noFlannel: "Flannel's wireguard backend needs the kernel's WireGuard, which this machine lacks"},
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
	// daemonPIDs are the weftd (or flanneld) processes whose CPU the path
	// costs.
	daemonPIDs []int
}

// runDataPlane measures every backend on its own lab, each next to that
// lab's underlay and, where Flannel has the backend, next to two Flannel
// nodes of the same lab, interleaved, so each ratio compares figures taken
// under the same machine load. In quick mode the underlay only gets the
// single-stream runs (the ratio the targets use).
func runDataPlane(ctx context.Context, cfg *config, res *Results) *DataPlane {
	dp := &DataPlane{
		DurationSec: int(cfg.iperfDuration / time.Second),
		Repetitions: cfg.reps,
		UDPRate:     cfg.udpRate,
		PingCount:   cfg.pingCount,
	}
	if cfg.wantBackend("wireguard") {
		dir, err := os.MkdirTemp("", "wbench-ref-")
		if err == nil {
			defer os.RemoveAll(dir)
			cfg.reference, err = buildReference(ctx, dir)
		}
		if err != nil {
			cfg.referenceErr = err
			cfg.logf("data plane: no reference wireguard-go: %v", err)
		}
	}
	for _, spec := range backendSpecs(labNetwork) {
		if ctx.Err() != nil {
			break
		}
		if !cfg.wantBackend(spec.selector()) {
			continue
		}
		cfg.logf("data plane: %s", spec.name)
		br := runBackend(ctx, cfg, spec)
		br.ratios()
		if br.Error != "" {
			res.Errors = append(res.Errors, fmt.Sprintf("data plane %s: %s", spec.name, br.Error))
		}
		dp.Backends = append(dp.Backends, br)
	}
	return dp
}

// ratios fills the ratios of br from its medians.
func (br *BackendRun) ratios() {
	if u, p := br.Underlay, br.Pod; u != nil && p != nil {
		br.SingleStreamRatio = round3(ratio(p.TCP1.MedianGbps, u.TCP1.MedianGbps))
		br.MultiStreamRatio = round3(ratio(p.TCP4.MedianGbps, u.TCP4.MedianGbps))
	}
	if p, f := br.Pod, br.Flannel; p != nil && f != nil {
		br.VsFlannel = comparePaths(p, f)
	}
	if p, r := br.Pod, br.Reference; p != nil && r != nil {
		br.VsReference = comparePaths(p, r)
	}
}

// withFlannel reports whether spec's lab runs Flannel nodes beside weft's.
func (spec backendSpec) withFlannel(cfg *config) bool {
	return spec.noFlannel == "" && cfg.flannelBinDir != ""
}

// withReference reports whether spec's lab runs its reference
// implementation on n3, n4.
func (spec backendSpec) withReference(cfg *config) bool {
	return spec.reference && cfg.reference.bin != ""
}

// upLab brings up spec's lab, one pod per node: two weft nodes (n1, n2)
// and, with Flannel, two Flannel nodes (n3, n4) on the same etcd and
// network config; with a reference implementation, n3 and n4 are weft
// nodes for runBackend to hand to it. It returns the lab with its teardown (always non-nil, to
// be called even when err is not nil).
func upLab(ctx context.Context, cfg *config, spec backendSpec) (*lab.Lab, func(), error) {
	down := func() {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		if err := lab.Down(cctx, "", spec.labName); err != nil {
			cfg.logf("lab %s down: %v", spec.labName, err)
		}
	}
	o := lab.Options{
		Name:         spec.labName,
		Nodes:        2,
		Backend:      spec.labBackend,
		Config:       spec.config,
		PodsPerNode:  1,
		BinDir:       cfg.binDir,
		Network:      labNetwork,
		Progress:     cfg.progress,
		ReadyTimeout: 60 * time.Second,
		WeftdArgs:    spec.weftdArgs,
	}
	if spec.withFlannel(cfg) && !spec.ipv6 {
		o.Nodes, o.FlannelNodes, o.FlannelBinDir = 4, []string{"n3", "n4"}, cfg.flannelBinDir
	}
	if spec.withReference(cfg) {
		o.Nodes = 4 // n3, n4: weft nodes until swapToReference
	}
	o.IPv6 = spec.ipv6
	l, err := lab.Up(ctx, o)
	if err != nil {
		return nil, down, fmt.Errorf("lab up: %w", err)
	}
	if len(l.Nodes) != o.Nodes {
		return nil, down, fmt.Errorf("lab %s: want %d nodes, got %d", l.Name, o.Nodes, len(l.Nodes))
	}
	for _, n := range l.Nodes {
		if len(n.Pods) != 1 {
			return nil, down, fmt.Errorf("lab %s: node %s has %d pods, want 1", l.Name, n.Name, len(n.Pods))
		}
	}
	if spec.direct {
		for i := 0; i+1 < len(l.Nodes); i += 2 {
			if err := waitDirectRoutes(ctx, l.Nodes[i], l.Nodes[i+1]); err != nil {
				return nil, down, err
			}
		}
	}
	return l, down, nil
}

// runBackend measures one backend: its lab's node→node underlay path,
// weft's pod→pod path and, when the lab has them, Flannel's.
func runBackend(ctx context.Context, cfg *config, spec backendSpec) *BackendRun {
	br := &BackendRun{Name: spec.name, Lab: spec.labName, Config: spec.config, FlannelNote: spec.noFlannel, Variant: spec.base != ""}
	if br.Config == "" {
		br.Config = lab.NetworkConfig(labNetwork, spec.labBackend)
	}
	if spec.noFlannel == "" && cfg.flannelBinDir == "" {
		br.FlannelNote = "run without Flannel (--no-flannel)"
	}
	l, down, err := upLab(ctx, cfg, spec)
	defer down()
	if err != nil {
		br.Error = err.Error()
		return br
	}
	n1, n2 := l.Nodes[0], l.Nodes[1]
	br.Underlay = &PathResult{From: n1.Name + " " + n1.Underlay.String(), To: n2.Name + " " + n2.Underlay.String()}
	paths := []*pathRun{{name: "underlay", res: br.Underlay, tcp1Only: cfg.quick,
		spec: pathSpec{srcNS: n1.NS, dstNS: n2.NS, dst: n2.Underlay, daemonPIDs: []int{n1.Weftd.PID, n2.Weftd.PID}}}}
	podPath := func(a, b *lab.Node, pid func(*lab.Node) int) (*PathResult, *pathRun) {
		pa, pb := a.Pods[0], b.Pods[0]
		r := &PathResult{From: pa.Name + " " + pa.IP.String(), To: pb.Name + " " + pb.IP.String()}
		return r, &pathRun{res: r, spec: pathSpec{srcNS: pa.NS, dstNS: pb.NS, dst: pb.IP, daemonPIDs: []int{pid(a), pid(b)}}}
	}
	var pr *pathRun
	br.Pod, pr = podPath(n1, n2, func(n *lab.Node) int { return n.Weftd.PID })
	pr.name = "pod"
	paths = append(paths, pr)
	if spec.withFlannel(cfg) {
		br.Flannel, pr = podPath(l.Nodes[2], l.Nodes[3], func(n *lab.Node) int { return n.Flanneld.PID })
		pr.name = "flannel"
		paths = append(paths, pr)
	}
	switch {
	case spec.withReference(cfg):
		br.ReferenceName = cfg.reference.name
		refs := map[*lab.Node]*proc{}
		defer stopReferences(refs)
		var err error
		for _, n := range l.Nodes[2:4] {
			if refs[n], err = swapToReference(ctx, l, n, cfg.reference); err != nil {
				delete(refs, n)
				break
			}
		}
		if err != nil {
			br.ReferenceNote = err.Error()
			break
		}
		br.Reference, pr = podPath(l.Nodes[2], l.Nodes[3], func(n *lab.Node) int { return refs[n].pid() })
		pr.name = "reference"
		paths = append(paths, pr)
	case spec.reference && cfg.referenceErr != nil:
		br.ReferenceNote = "not built: " + cfg.referenceErr.Error()
	}
	measurePaths(ctx, cfg, paths)
	var errs []string
	for _, pr := range []*PathResult{br.Underlay, br.Pod, br.Flannel, br.Reference} {
		if pr != nil {
			errs = append(errs, pr.Errors...)
		}
	}
	br.Error = strings.Join(errs, "; ")
	return br
}

// waitDirectRoutes waits until nodes a and b route to each other's subnet
// straight over the underlay (dev eth0 via the peer's address), the sign
// that their daemons run the DirectRouting config.
func waitDirectRoutes(ctx context.Context, a, b *lab.Node) error {
	for _, pair := range [][2]*lab.Node{{a, b}, {b, a}} {
		from, to := pair[0], pair[1]
		want := "via " + to.Underlay.String() + " dev eth0"
		_, err := pollUntil(ctx, 60*time.Second, 100*time.Millisecond, func() (bool, error) {
			out, err := nsRun(ctx, from.NS, "ip", "-4", "route", "show", to.Subnet.String())
			return err == nil && strings.Contains(out, want), nil
		})
		if err != nil {
			out, _ := nsRun(ctx, from.NS, "ip", "-4", "route")
			return fmt.Errorf("node %s (%s): no direct route to %s (%s): %w; routes: %s",
				from.Name, from.DaemonName(), to.Subnet, want, err, strings.ReplaceAll(strings.TrimSpace(out), "\n", "; "))
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
	// tcp1Only skips the 4-stream and UDP runs; pingOnly every iperf3
	// run (a latency reference for other paths).
	tcp1Only, pingOnly bool
	// over the single-stream runs: bytes moved, daemon and kernel CPU
	moved              int64
	daemonCPU, kernCPU float64
	tcp1, tcp4         []float64
}

func (p *pathRun) fail(what string, err error) {
	p.res.Errors = append(p.res.Errors, fmt.Sprintf("%s %s: %v", p.name, what, err))
}

// measurePaths measures the paths of one lab, interleaved so that each
// ratio compares figures taken under the same machine load: each
// repetition of idle ping latency (pooled), then of TCP with 1 stream (with
// CPU accounting), on every path in turn, the same with 4 streams, then UDP
// at the fixed offered load. Failures are recorded in the results; what was
// measured stays.
func measurePaths(ctx context.Context, cfg *config, paths []*pathRun) {
	var live []*pathRun
	for _, p := range paths {
		if err := waitReachable(ctx, p.spec.srcNS, p.spec.dst, 30*time.Second); err != nil {
			p.fail("reachability", err)
			continue
		}
		if !p.pingOnly {
			srv, err := startIperfServer(ctx, p.spec.dstNS, p.spec.dst, iperfPort)
			if err != nil {
				p.fail("iperf3 server", err)
				continue
			}
			p.srv = srv
			defer srv.stop()
		}
		live = append(live, p)
	}
	perRep := max(1, cfg.pingCount/cfg.reps)
	for range cfg.reps {
		for _, p := range live {
			if ctx.Err() != nil {
				return
			}
			pr, err := runPing(ctx, p.spec.srcNS, p.spec.dst, perRep, cfg.pingInterval)
			if err != nil {
				p.fail("ping", err)
				continue
			}
			if p.res.Ping == nil {
				p.res.Ping = &PingResult{}
			}
			p.res.Ping.add(pr)
		}
	}
	client := func(p *pathRun, streams int) iperfClient {
		return iperfClient{NS: p.spec.srcNS, Dst: p.spec.dst, Port: iperfPort, Duration: cfg.iperfDuration, Streams: streams}
	}
	for range cfg.reps {
		for _, p := range live {
			if ctx.Err() != nil {
				return
			}
			if p.pingOnly {
				continue
			}
			w0, k0 := cpuOf(p.spec.daemonPIDs), mustKernelCPU()
			r, err := client(p, 1).run(ctx)
			w1, k1 := cpuOf(p.spec.daemonPIDs), mustKernelCPU()
			if err != nil {
				p.fail("tcp 1 stream", err)
				continue
			}
			p.res.TCP1.Runs = append(p.res.TCP1.Runs, r)
			p.tcp1 = append(p.tcp1, r.Gbps)
			p.moved += r.Bytes
			p.daemonCPU += w1 - w0
			p.kernCPU += k1 - k0
		}
	}
	for range cfg.reps {
		for _, p := range live {
			if ctx.Err() != nil {
				return
			}
			if p.tcp1Only || p.pingOnly {
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
		if p.tcp1Only || p.pingOnly {
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
			p.res.DaemonCPUPerGB = round3(p.daemonCPU / gb)
			p.res.KernelCPUPerGB = round3(p.kernCPU / gb)
		}
		line := fmt.Sprintf("    %-8s tcp 1 stream %.2f Gbit/s %v", p.name, p.res.TCP1.MedianGbps, roundAll(p.tcp1))
		switch {
		case p.pingOnly && p.res.Ping != nil:
			line = fmt.Sprintf("    %-8s ping p50 %.3f ms", p.name, p.res.Ping.RTTms.P50)
		case !p.tcp1Only:
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
	what := fmt.Sprintf("%s (slowest, %.2f Gbit/s): pod→pod iperf3 TCP, 1 stream, %s", slow.Name, slow.Pod.TCP1.MedianGbps, cfg.iperfDuration)
	return profilePairs(ctx, cfg, specNamed(slow.Name), []string{what})[0]
}

// profileVXLANPaths profiles a single stream over weft's vxlan and over
// Flannel's in one lab, one after the other: both are the kernel's VXLAN
// path, and the profiles show where each spends its time. None without
// Flannel.
func profileVXLANPaths(ctx context.Context, cfg *config) []Profile {
	spec := specNamed("vxlan")
	if !spec.withFlannel(cfg) {
		return nil
	}
	return profilePairs(ctx, cfg, spec, []string{
		fmt.Sprintf("vxlan, weft: pod→pod iperf3 TCP, 1 stream, %s", cfg.iperfDuration),
		fmt.Sprintf("vxlan, Flannel: pod→pod iperf3 TCP, 1 stream, %s", cfg.iperfDuration),
	})
}

func specNamed(name string) backendSpec {
	for _, s := range backendSpecs(labNetwork) {
		if s.name == name {
			return s
		}
	}
	return backendSpec{}
}

// profilePairs brings spec's lab up and records, for each case in turn, a
// single-stream run between the pods of the lab's node pairs (n1→n2, then
// n3→n4: weft's, then Flannel's) with machine-wide perf.
func profilePairs(ctx context.Context, cfg *config, spec backendSpec, cases []string) []Profile {
	out := make([]Profile, len(cases))
	profs := make([]*profiler, len(cases))
	for i, what := range cases {
		profs[i] = newProfiler("data plane", what, nil, dataPlaneComms())
	}
	failFrom := func(i int, err error) []Profile {
		for j := i; j < len(cases); j++ {
			out[j] = profs[j].result()
			out[j].Error = err.Error()
		}
		return out
	}
	l, down, err := upLab(ctx, cfg, spec)
	defer down()
	if err != nil {
		return failFrom(0, err)
	}
	for i, prof := range profs {
		if 2*i+1 >= len(l.Nodes) {
			return failFrom(i, fmt.Errorf("lab %s has no node pair %d", l.Name, i+1))
		}
		cfg.logf("data plane: profiling %s", cases[i])
		p1, p2 := l.Nodes[2*i].Pods[0], l.Nodes[2*i+1].Pods[0]
		if err := waitReachable(ctx, p1.NS, p2.IP, 30*time.Second); err != nil {
			return failFrom(i, err)
		}
		srv, err := startIperfServer(ctx, p2.NS, p2.IP, iperfPort)
		if err != nil {
			return failFrom(i, err)
		}
		if err := prof.start(ctx); err != nil {
			srv.stop()
			out[i] = prof.result()
			continue
		}
		_, err = iperfClient{NS: p1.NS, Dst: p2.IP, Port: iperfPort, Duration: cfg.iperfDuration, Streams: 1}.run(ctx)
		prof.stop(ctx)
		srv.stop()
		out[i] = prof.result()
		if err != nil {
			out[i].Error = err.Error()
		}
	}
	return out
}

// comparePaths divides weft's figures by Flannel's.
func comparePaths(w, f *PathResult) *Comparison {
	c := &Comparison{
		TCP1:           round3(ratio(w.TCP1.MedianGbps, f.TCP1.MedianGbps)),
		TCP4:           round3(ratio(w.TCP4.MedianGbps, f.TCP4.MedianGbps)),
		DaemonCPUPerGB: round3(ratio(w.DaemonCPUPerGB, f.DaemonCPUPerGB)),
		KernelCPUPerGB: round3(ratio(w.KernelCPUPerGB, f.KernelCPUPerGB)),
	}
	if w.UDP != nil && f.UDP != nil {
		c.UDPGbps = round3(ratio(w.UDP.Gbps, f.UDP.Gbps))
	}
	if w.Ping != nil && f.Ping != nil {
		c.PingP50 = round3(ratio(w.Ping.RTTms.P50, f.Ping.RTTms.P50))
		c.PingP99 = round3(ratio(w.Ping.RTTms.P99, f.Ping.RTTms.P99))
	}
	return c
}
