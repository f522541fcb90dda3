package main

import (
	"bytes"
	"fmt"
	"strings"
)

// Targets of the benchmark issue, as numbers.
const (
	targetVXLANRatio  = 0.50 // vxlan / underlay, single stream
	targetHostGWRatio = 0.70 // host-gw / underlay, single stream
	targetUDPRatio    = 0.60 // udp / vxlan, single stream
	targetUDPLatency  = 2.0  // udp ping p50 ≤ 2× vxlan
	// wireguard against udp: both userspace tunnels here, the difference
	// is the cost of encryption.
	targetWireGuardRatio   = 0.50 // wireguard / udp, single stream
	targetWireGuardLatency = 1.5  // wireguard ping p50 ≤ 1.5× udp
	targetCNIAddP50MS      = 15.0
	target1000MS           = 1000.0
	targetRSSMB            = 60.0
	targetConvP99MS        = 100.0

	// Against Flannel in the same run (weft / Flannel).
	targetVsFlannelHostGW = 1.15 // host-gw and vxlan-DirectRouting vs Flannel host-gw, single stream
	targetVsFlannelVXLAN  = 1.10 // vxlan vs Flannel vxlan, single stream
	targetVsFlannelFloor  = 1.0  // every throughput figure vs Flannel's same backend
	targetVsFlannelPing   = 1.0  // ping p50 vs Flannel's same backend: not worse
)

// relativeTargets compares backend a's pod path with backend b's: single
// stream throughput (a ≥ ratio × b) and ping p50 (a ≤ lat × b). A target is
// left unmet-and-unmeasured (Met nil) when either backend has no figure.
func relativeTargets(dp *DataPlane, a, b string, ratio, lat float64) (Target, Target) {
	t := Target{Area: "data plane", Name: fmt.Sprintf("%s single stream ≥ %.0f%% of %s", a, ratio*100, b), Want: fmt.Sprintf("≥ %.0f%%", ratio*100)}
	l := Target{Area: "data plane", Name: fmt.Sprintf("%s ping p50 ≤ %g× %s", a, lat, b), Want: fmt.Sprintf("≤ %g×", lat)}
	ra, rb := dp.backend(a), dp.backend(b)
	if ra == nil || rb == nil || ra.Pod == nil || rb.Pod == nil {
		return t, l
	}
	if rb.Pod.TCP1.MedianGbps > 0 && ra.Pod.TCP1.MedianGbps > 0 {
		r := ra.Pod.TCP1.MedianGbps / rb.Pod.TCP1.MedianGbps
		t.Got = fmt.Sprintf("%.0f%% (%.2f vs %.2f Gbit/s)", r*100, ra.Pod.TCP1.MedianGbps, rb.Pod.TCP1.MedianGbps)
		t.Met = boolp(r >= ratio)
	}
	if ra.Pod.Ping != nil && rb.Pod.Ping != nil && rb.Pod.Ping.RTTms.P50 > 0 {
		r := ra.Pod.Ping.RTTms.P50 / rb.Pod.Ping.RTTms.P50
		l.Got = fmt.Sprintf("%.2f× (%.3f vs %.3f ms)", r, ra.Pod.Ping.RTTms.P50, rb.Pod.Ping.RTTms.P50)
		l.Met = boolp(r <= lat)
	}
	return t, l
}

// referenceNote is weft's figure beside the reference implementation's of
// the same run (throughput, or ping when ping), as a sentence with a
// leading space; "" without reference figures.
func referenceNote(br *BackendRun, ping bool) string {
	if br == nil || br.Pod == nil || br.Reference == nil || br.VsReference == nil {
		return ""
	}
	w, r := br.Pod, br.Reference
	if ping {
		if w.Ping == nil || r.Ping == nil || br.VsReference.PingP50 == 0 {
			return ""
		}
		return fmt.Sprintf(" The reference %s, same lab and run: ping p50 %.3f ms (weft: %s that).", br.ReferenceName, r.Ping.RTTms.P50, times(br.VsReference.PingP50))
	}
	if br.VsReference.TCP1 == 0 {
		return ""
	}
	return fmt.Sprintf(" The reference %s, same lab and run, moved %.2f Gbit/s at %.2f CPU-s per GB (weft: %s that).",
		br.ReferenceName, r.TCP1.MedianGbps, r.DaemonCPUPerGB, times(br.VsReference.TCP1))
}

func (dp *DataPlane) backend(name string) *BackendRun {
	if dp == nil {
		return nil
	}
	for _, b := range dp.Backends {
		if b.Name == name {
			return b
		}
	}
	return nil
}

// peerStats is the medians of a daemon's successful runs with n peers.
type peerStats struct {
	runs                    int
	programMS, removeMS     float64
	fromFirstMS, cpuProgram float64
	cpuRemove, rssLoaded    float64
	rssBefore, rssAfter     float64
	rssFileLoaded           float64
	// programRuns and removeRuns are every run's figure, in order.
	programRuns, removeRuns []float64
}

// peers summarizes the runs with n peers by daemon (weft when empty); nil
// when none succeeded.
func (c *Control) peers(n int, daemon string) *peerStats {
	if c == nil {
		return nil
	}
	var prog, rem, first, cpuP, cpuR, rssL, rssB, rssA, rssF []float64
	for _, p := range c.Peers {
		d := p.Daemon
		if d == "" {
			d = cniWeft
		}
		if p.Peers != n || p.Error != "" || d != daemon || p.GCPercent != 0 {
			continue
		}
		prog, rem, first = append(prog, p.ProgramMS), append(rem, p.RemoveMS), append(first, p.ProgramFromFirstMS)
		cpuP, cpuR = append(cpuP, p.CPUProgramSec), append(cpuR, p.CPURemoveSec)
		rssL, rssB, rssA = append(rssL, p.Loaded.RSSMB), append(rssB, p.Before.RSSMB), append(rssA, p.After.RSSMB)
		rssF = append(rssF, p.Loaded.RSSFileMB)
	}
	if len(prog) == 0 {
		return nil
	}
	return &peerStats{runs: len(prog), programMS: median(prog), removeMS: median(rem), fromFirstMS: median(first),
		cpuProgram: median(cpuP), cpuRemove: median(cpuR), rssLoaded: median(rssL), rssBefore: median(rssB), rssAfter: median(rssA), rssFileLoaded: median(rssF),
		programRuns: prog, removeRuns: rem}
}

// restarts summarizes a daemon's successful restarts: medians of start →
// subnet file, start → routes back, RSS.
func (c *Control) restarts(daemon string) (file, routes, rss float64, n int) {
	var fs, rs, ms []float64
	for _, r := range c.Restarts {
		if r.Daemon == daemon && r.Error == "" {
			fs, rs, ms = append(fs, r.SubnetFileMS), append(rs, r.RoutesMS), append(ms, r.RSSMB)
		}
	}
	return median(fs), median(rs), median(ms), len(fs)
}

// run returns the run of kind name by weft, or by Flannel when flannel is
// set.
func (c *CNI) run(name string, flannel bool) *CNIRun {
	if c == nil {
		return nil
	}
	impl := cniWeft
	if flannel {
		impl = cniFlannel
	}
	for _, r := range c.Runs {
		if r.Name == name && (r.Impl == impl || r.Impl == "" && !flannel) {
			return r
		}
	}
	return nil
}

func boolp(b bool) *bool { return &b }

// hasProfile reports whether the run holds a profile of area, of a case of
// backend when backend is set (a data plane case is named after its
// backend: "udp (slowest, …): …", "vxlan, weft: …").
func hasProfile(res *Results, area, backend string) bool {
	for _, p := range res.Profiles {
		if p.Area != area || p.Error != "" {
			continue
		}
		if rest, ok := strings.CutPrefix(p.Case, backend); backend == "" || ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, ",")) {
			return true
		}
	}
	return false
}

// evaluate checks every target of the issue against the figures. A target
// whose figure is missing has Met nil. Notes say what limits an unmet one,
// from the figures of the same run.
func evaluate(res *Results) []Target {
	var ts []Target
	dp := res.DataPlane
	// profNote points at the profile of area (of backend's case, when
	// set): a note of one backend does not send the reader to another's.
	profNote := func(area, backend string) string {
		if hasProfile(res, area, backend) {
			return " The " + area + " profile below shows where the time goes."
		}
		return ""
	}
	ratioTarget := func(name string, want float64) Target {
		t := Target{Area: "data plane", Name: fmt.Sprintf("%s single stream ≥ %.0f%% of underlay", name, want*100), Want: fmt.Sprintf("≥ %.0f%%", want*100)}
		b := dp.backend(name)
		if b == nil || b.Pod == nil || b.SingleStreamRatio == 0 {
			return t
		}
		t.Got = fmt.Sprintf("%.0f%% (%.2f Gbit/s)", b.SingleStreamRatio*100, b.Pod.TCP1.MedianGbps)
		t.Met = boolp(b.SingleStreamRatio >= want)
		if !*t.Met {
			if under := b.Underlay; under != nil {
				t.Note = fmt.Sprintf("Kernel CPU per GB: %.2f s on the pod path vs %.2f s on the underlay (veth + bridge hop%s on both nodes, all on %d CPUs shared with iperf3).",
					b.Pod.KernelCPUPerGB, under.KernelCPUPerGB, map[bool]string{true: " + VXLAN encapsulation", false: ""}[strings.HasPrefix(name, "vxlan")], res.Machine.CPUs) + profNote("data plane", name)
			}
		}
		return t
	}
	if dp != nil {
		ts = append(ts, ratioTarget("vxlan", targetVXLANRatio), ratioTarget("host-gw", targetHostGWRatio))
		t, l := relativeTargets(dp, "udp", "vxlan", targetUDPRatio, targetUDPLatency)
		if udp := dp.backend("udp"); t.Met != nil && !*t.Met {
			t.Note = fmt.Sprintf("weftd spent %.2f CPU-s per GB moved (userspace copy, syscalls, TUN and UDP socket work) on top of %.2f s of kernel time; vxlan needs no userspace hop, and on a lab the hop takes CPU from the iperf3 processes%s. Analysis in backend-udp.md.",
				udp.Pod.DaemonCPUPerGB, udp.Pod.KernelCPUPerGB, syscallNote(res.Machine.Costs)) + profNote("data plane", "udp")
		}
		if l.Met != nil && !*l.Met {
			l.Note = "vxlan answers an echo in softirq; udp wakes weftd three times per echo (request out, request in with the reply taken in the same round, reply in), each a scheduler wake-up" + wakeNote(res.Machine.Costs) + ". Analysis in backend-udp.md."
		}
		ts = append(ts, t, l)
		t, l = relativeTargets(dp, "wireguard", "udp", targetWireGuardRatio, targetWireGuardLatency)
		if wg := dp.backend("wireguard"); t.Met != nil && !*t.Met {
			t.Note = fmt.Sprintf("weftd (the embedded wireguard-go) spent %.2f CPU-s per GB moved, encryption included, on top of %.2f s of kernel time.%s Analysis in backends.md (wireguard, where the time goes).",
				wg.Pod.DaemonCPUPerGB, wg.Pod.KernelCPUPerGB, referenceNote(wg, false)) + profNote("data plane", "wireguard")
		}
		if l.Met != nil && !*l.Met {
			l.Note = strings.TrimSpace(referenceNote(dp.backend("wireguard"), true) + " Analysis in backends.md (wireguard, where the time goes).")
		}
		ts = append(ts, t, l)
		ts = append(ts, flannelDataPlaneTargets(dp, res.Profiles)...)
	}
	if c := res.CNI; c != nil {
		t := Target{Area: "cni", Name: fmt.Sprintf("ADD p50 ≤ %.0f ms (%d sequential pods)", targetCNIAddP50MS, c.Pods), Want: fmt.Sprintf("≤ %.0f ms", targetCNIAddP50MS)}
		if r := c.run("sequential", false); r != nil && r.AddMS.N > 0 {
			t.Got = fmt.Sprintf("%.1f ms", r.AddMS.P50)
			t.Met = boolp(r.AddMS.P50 <= targetCNIAddP50MS)
			if !*t.Met {
				t.Note = fmt.Sprintf("Starting the plugin process alone takes %.1f ms (p50 of `weft` VERSION).", c.ExecFloorMS.P50) + profNote("cni", "")
			}
		}
		e := Target{Area: "cni", Name: fmt.Sprintf("no error under %d-way parallel load", c.Parallel), Want: "0 errors"}
		n, errs, first := 0, 0, ""
		for _, r := range c.Runs {
			if r.Concurrency > 1 && r.Impl != cniFlannel {
				n++
				errs += r.AddErrors + r.DelErrors
				if first == "" {
					first = r.FirstError
				}
			}
		}
		if n > 0 {
			e.Got = fmt.Sprintf("%d errors in %d parallel runs", errs, n)
			e.Met = boolp(errs == 0)
			e.Note = first
		}
		ts = append(ts, t, e)
		ts = append(ts, flannelCNITargets(c)...)
	}
	if c := res.Control; c != nil {
		a := Target{Area: "control plane", Name: "200 nodes acquire at once: all hold a lease, no duplicates", Want: "0 errors, 0 duplicates"}
		if c.Acquire != nil {
			a.Got = fmt.Sprintf("%d/%d in %.0f ms, %d errors, %d duplicates", c.Acquire.Nodes-c.Acquire.Errors, c.Acquire.Nodes, c.Acquire.TotalMS, c.Acquire.Errors, c.Acquire.Duplicates)
			a.Met = boolp(c.Acquire.Errors == 0 && c.Acquire.Duplicates == 0 && c.Acquire.Stored == c.Acquire.Nodes)
			a.Note = c.Acquire.FirstError
		}
		ts = append(ts, a)
		ts = append(ts, controlTargets(c, profNote("control plane", ""))...)
		cv := Target{Area: "control plane", Name: "one new lease → kernel state, p99 ≤ 100 ms", Want: "≤ 100 ms"}
		if c.Convergence != nil && c.Convergence.AddMS.N > 0 {
			cv.Got = fmt.Sprintf("p99 %.1f ms (p50 %.1f, %d samples)", c.Convergence.AddMS.P99, c.Convergence.AddMS.P50, c.Convergence.AddMS.N)
			cv.Met = boolp(c.Convergence.AddMS.P99 <= targetConvP99MS && c.Convergence.Errors == 0)
			cv.Note = c.Convergence.FirstError
		}
		ts = append(ts, cv)
	}
	if k := res.Kube; k != nil {
		ts = append(ts, kubeTargets(k)...)
	}
	if x := res.IPv6; x != nil {
		ts = append(ts, ipv6Targets(x, res.DataPlane)...)
	}
	return ts
}

// renderMarkdown renders Documentation/performance.md from res alone.
func renderMarkdown(res *Results) []byte {
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# Performance\n\n")
	p("<!-- Generated by `%s`; do not edit. Re-run `make bench` (as root) to refresh. -->\n\n", res.Command)
	p("Measured on %s, commit `%s`, with\n\n```\n%s\n```\n\n", res.Date.Format("2006-01-02 15:04 MST"), res.Commit, res.Command)
	mode := "full"
	if res.Quick {
		mode = "quick (shorter runs, fewer samples, no profiles)"
	}
	p("Mode: %s; the run took %.0f s. Every figure below comes from that one run (also in `bench/results.json`).\n\n", mode, res.DurationSec)

	m := res.Machine
	p("## Machine\n\n| | |\n|---|---|\n")
	p("| CPUs (nproc) | %d |\n| CPU model | %s |\n| kernel | %s |\n| memory | %d MB |\n| Go | %s |\n| iperf3 | %s |\n| load average (start → end) | %s → %s |\n",
		m.CPUs, m.CPUModel, m.Kernel, m.MemoryMB, m.GoVersion, m.Iperf3, m.LoadStart, m.LoadEnd)
	if c := m.Costs; c != nil {
		// What a userspace data path pays per call and per wake-up, and a
		// kernel one does not: it explains the udp ratios.
		p("| system call (`getppid`, median of %d × %d) | %.2f µs |\n", syscallRounds, syscallCalls, c.SyscallNs/1e3)
		if c.WakeOtherCPUus > 0 {
			p("| thread wake-up round trip after %s idle (pipe, p50 of %d): same CPU / other CPU | %.0f / %.0f µs |\n",
				wakeIdle, wakeRounds, c.WakeSameCPUus, c.WakeOtherCPUus)
		}
	}
	p("\n")
	p("All nodes, pods and the etcd of a lab are network namespaces on this one machine, joined by veth pairs and a bridge: " +
		"\"underlay\" is a veth/bridge path, not a NIC, and sender, receiver, weftd and the kernel's packet processing share the same CPUs. " +
		"Ratios are what carries over to real hardware; absolute figures are this machine's. Other work running on the machine shows in the load average.\n\n")

	p("## Targets\n\n| area | target | measured | status | why / note |\n|---|---|---|---|---|\n")
	for _, t := range res.Targets {
		got := t.Got
		if got == "" {
			got = "—"
		}
		p("| %s | %s | %s | %s | %s |\n", t.Area, t.Name, got, metString(t.Met), cell(t.Note))
	}
	p("\n")

	if dp := res.DataPlane; dp != nil {
		renderDataPlane(p, dp)
	}
	if c := res.CNI; c != nil {
		renderCNI(p, c)
	}
	if c := res.Control; c != nil {
		renderControl(p, c)
	}
	if k := res.Kube; k != nil {
		renderKube(p, k)
	}
	if x := res.IPv6; x != nil {
		renderIPv6(p, x)
	}
	if len(res.Profiles) > 0 {
		renderProfiles(p, res.Profiles)
	}
	if len(res.Errors) > 0 {
		p("## Errors in this run\n\n")
		for _, e := range res.Errors {
			p("- %s\n", cell(e))
		}
		p("\n")
	}
	p("## Reproduce\n\n```\nsudo make bench        # full run, under 15 minutes\nsudo make bench-quick  # under 3 minutes\n```\n\n")
	p("`make bench` runs `go run ./bench --bin-dir bin --out Documentation/performance.md --json bench/results.json`. " +
		"`--areas dataplane,cni,control` and `--backends vxlan,udp,...` narrow a run; `--no-profiles` skips perf; " +
		"`--render bench/results.json` measures nothing and writes this page again from a run's results (after a change to the report). " +
		"The harness only creates namespaces (labs `wb-*`, namespaces `wbench-*`) and removes them on exit, on ^C, and at the start of the next run after a crash.\n")
	return b.Bytes()
}

type printer func(format string, args ...any)

// renderVsReference is weft against each backend's reference
// implementation, for the backends that have one.
func renderVsReference(p printer, dp *DataPlane) {
	var rows []*BackendRun
	for _, br := range dp.Backends {
		if br.VsReference != nil || br.ReferenceNote != "" {
			rows = append(rows, br)
		}
	}
	if len(rows) == 0 {
		return
	}
	p("\n**weft / the reference implementation**, same lab, same run: on two more nodes (n3, n4) that came up as weft nodes, weftd was stopped and the reference program took over its device, with the keys, peers, addresses and routes weftd had set; wireguard's is the wireguard-go command at the version weft embeds, built from the module cache. Above 1× is better for throughput, below 1× for latency and CPU.\n\n")
	p("| backend | reference | TCP 1 stream | TCP 4 streams | UDP Gbit/s | ping p50 | ping p99 | daemon CPU/GB | kernel CPU/GB |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, br := range rows {
		if c := br.VsReference; c != nil {
			p("| %s | %s | **%s** | %s | %s | %s | %s | %s | %s |\n", br.Name, br.ReferenceName, times(c.TCP1), times(c.TCP4), times(c.UDPGbps), times(c.PingP50), times(c.PingP99), times(c.DaemonCPUPerGB), times(c.KernelCPUPerGB))
			continue
		}
		p("| %s | %s | — (%s) | | | | | | |\n", br.Name, br.ReferenceName, cell(br.ReferenceNote))
	}
}

// cell makes s safe inside a Markdown table cell.
func cell(s string) string {
	return strings.NewReplacer("|", "\\|", "\n", " ").Replace(s)
}

func renderDataPlane(p printer, dp *DataPlane) {
	p("## Data plane\n\n")
	p("Each backend gets its own lab (`weftctl lab`, one pod per node): two weft nodes and, where Flannel has the backend, two nodes running the real Flannel (flanneld and the flannel → bridge → host-local CNI chain) on the same etcd, network config and bridge. "+
		"Per path: ping (%d echoes in all, 10 ms apart, in %d rounds, pinned to CPU "+pingCPU+" for every path: a kernel path then answers on that CPU, while on udp and wireguard the echo also crosses to wherever weftd runs and back, so their ping holds those wake-ups) when idle, then iperf3 TCP with 1 and 4 streams (%d s each, %d repetitions, median), "+
		"then UDP at %s offered (%d-byte datagrams, loss measured at the receiver). Every round visits the paths in turn (underlay, weft, Flannel or the backend's reference implementation), so the figures of one backend are taken under the same machine load. "+
		"The underlay reference is node→node over the lab's bridge (quick mode: single stream only). "+
		"Daemon CPU is both nodes' weftd (or flanneld, or the reference program) user+system time over the single-stream runs; kernel CPU is machine-wide system+irq+softirq time over the same runs, so it also holds iperf3's syscalls and any other load.\n\n",
		dp.PingCount, dp.Repetitions, dp.DurationSec, dp.Repetitions, dp.UDPRate, udpLen)
	p("| backend | path | TCP 1 stream, Gbit/s (runs) | TCP 4 streams, Gbit/s | UDP @ %s: Gbit/s, loss | ping p50 / p99, ms | daemon CPU s/GB | kernel CPU s/GB |\n|---|---|---|---|---|---|---|---|\n", dp.UDPRate)
	for _, br := range dp.Backends {
		for _, pr := range []struct {
			name string
			r    *PathResult
		}{{"underlay", br.Underlay}, {"weft pod → pod", br.Pod}, {"Flannel pod → pod", br.Flannel}, {br.ReferenceName + " (reference) pod → pod", br.Reference}} {
			if pr.r == nil {
				continue
			}
			r := pr.r
			udp, ping := "—", "—"
			if r.UDP != nil {
				udp = fmt.Sprintf("%.2f, %.2f%%", r.UDP.Gbps, r.UDP.LostPercent)
			}
			if r.Ping != nil {
				ping = fmt.Sprintf("%.3f / %.3f", r.Ping.RTTms.P50, r.Ping.RTTms.P99)
			}
			p("| %s | %s | **%.2f** (%s) | %.2f | %s | %s | %.3f | %.2f |\n", br.Name, pr.name, r.TCP1.MedianGbps, runsList(r.TCP1), r.TCP4.MedianGbps, udp, ping, r.DaemonCPUPerGB, r.KernelCPUPerGB)
		}
		if br.Error != "" {
			p("| %s | error | %s | | | | | |\n", br.Name, cell(br.Error))
		}
	}
	p("\n**weft / Flannel**, same lab, same run: above 1× is better for throughput, below 1× for latency and CPU.\n\n")
	p("| backend | TCP 1 stream | TCP 4 streams | UDP Gbit/s | ping p50 | ping p99 | daemon CPU/GB | kernel CPU/GB |\n|---|---|---|---|---|---|---|---|\n")
	for _, br := range dp.Backends {
		if c := br.VsFlannel; c != nil {
			p("| %s | **%s** | %s | %s | %s | %s | %s | %s |\n", br.Name, times(c.TCP1), times(c.TCP4), times(c.UDPGbps), times(c.PingP50), times(c.PingP99), times(c.DaemonCPUPerGB), times(c.KernelCPUPerGB))
			continue
		}
		note := br.FlannelNote
		if note == "" {
			note = "no Flannel figures"
		}
		p("| %s | — (%s) | | | | | | |\n", br.Name, cell(note))
	}
	renderVsReference(p, dp)
	p("\n| backend | 1 stream vs underlay | 4 streams vs underlay | 1 stream vs vxlan | ping p50 vs vxlan |\n|---|---|---|---|---|\n")
	vx := dp.backend("vxlan")
	for _, br := range dp.Backends {
		if br.Pod == nil {
			continue
		}
		vsVX, pingVX := "—", "—"
		if vx != nil && vx.Pod != nil && vx.Pod.TCP1.MedianGbps > 0 {
			vsVX = pct(br.Pod.TCP1.MedianGbps / vx.Pod.TCP1.MedianGbps)
			if br.Pod.Ping != nil && vx.Pod.Ping != nil && vx.Pod.Ping.RTTms.P50 > 0 {
				pingVX = fmt.Sprintf("%.2f×", br.Pod.Ping.RTTms.P50/vx.Pod.Ping.RTTms.P50)
			}
		}
		p("| %s | %s | %s | %s | %s |\n", br.Name, pct(br.SingleStreamRatio), pct(br.MultiStreamRatio), vsVX, pingVX)
	}
	p("\nConfigs (weft and Flannel nodes read the same one): ")
	var cfgs []string
	for _, br := range dp.Backends {
		cfgs = append(cfgs, fmt.Sprintf("%s `%s`", br.Name, br.Config))
	}
	p("%s.\n\n", strings.Join(cfgs, "; "))
}

// times renders a ratio as "1.23×", or "—" when it was not measured.
func times(r float64) string {
	if r == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", r)
}

func runsList(s Series) string {
	var parts []string
	for _, r := range s.Runs {
		parts = append(parts, fmt.Sprintf("%.2f", r.Gbps))
	}
	return strings.Join(parts, ", ")
}

func pct(r float64) string {
	if r == 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f%%", r*100)
}

func renderCNI(p printer, c *CNI) {
	p("## CNI\n\n")
	p("The plugins called the way a runtime calls them: libcni execs `bin/weft` (and `bin/portmap` when chained, with one hostPort mapping per pod) on a thread inside a node namespace with a subnet file; "+
		"Flannel's chain (the `flannel` plugin delegating to `bridge` and `host-local`, with kube-flannel's conflist) is called the same way in a second node namespace with the same subnet file. "+
		"Each of the %d pods is a namespace of its own. All pods are added, then all deleted; parallel runs keep %d calls in flight. "+
		"Each run alternates weft and Flannel %d time(s), latencies pooled. "+
		"The floor is the network plugin answering VERSION (process start alone): weft p50 %.1f ms, p99 %.1f ms", c.Pods, c.Parallel, max(1, c.Rounds), c.ExecFloorMS.P50, c.ExecFloorMS.P99)
	if f := c.FlannelExecFloorMS; f != nil {
		p("; flannel p50 %.1f ms, p99 %.1f ms", f.P50, f.P99)
	}
	p(".\n\n")
	p("| run | plugins | in flight | ADD p50 / p95 / p99, ms | DEL p50 / p95 / p99, ms | errors (ADD/DEL) | distinct IPs | wall, s |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range c.Runs {
		p("| %s | %s | %d | %.1f / %.1f / %.1f | %.1f / %.1f / %.1f | %d / %d | %d | %.1f |\n", r.Name, r.Plugins, r.Concurrency,
			r.AddMS.P50, r.AddMS.P95, r.AddMS.P99, r.DelMS.P50, r.DelMS.P95, r.DelMS.P99, r.AddErrors, r.DelErrors, r.UniqueIPs, r.WallSec)
	}
	if c.FlannelExecFloorMS != nil {
		p("\n**weft / Flannel**, same run (below 1× is faster):\n\n| run | ADD p50 | ADD p95 | ADD p99 | DEL p50 | DEL p95 | DEL p99 | wall |\n|---|---|---|---|---|---|---|---|\n")
		for _, r := range c.Runs {
			f := c.run(r.Name, true)
			if r.Impl == cniFlannel || f == nil {
				continue
			}
			p("| %s | **%s** | %s | %s | **%s** | %s | %s | %s |\n", r.Name, times(ratio(r.AddMS.P50, f.AddMS.P50)), times(ratio(r.AddMS.P95, f.AddMS.P95)), times(ratio(r.AddMS.P99, f.AddMS.P99)),
				times(ratio(r.DelMS.P50, f.DelMS.P50)), times(ratio(r.DelMS.P95, f.DelMS.P95)), times(ratio(r.DelMS.P99, f.DelMS.P99)), times(ratio(r.WallSec, f.WallSec)))
		}
	}
	for _, r := range c.Runs {
		if r.FirstError != "" {
			p("\nFirst error of %s (%s): %s\n", r.Name, r.Plugins, cell(r.FirstError))
		}
	}
	p("\n")
}

// renderHeapTop shows a heap profile's top functions (heapTop), if any.
func renderHeapTop(p printer, with string, top []string) {
	if len(top) > 0 {
		p("weftd's heap in use with %s programmed, by function (`go %s`, from its `--pprof` heap profile):\n\n```\n%s\n```\n\n", with, strings.Join(heapTopArgs, " "), strings.Join(top, "\n"))
	}
}

func renderControl(p printer, c *Control) {
	p("## Control plane\n\n")
	if a := c.Acquire; a != nil {
		p("**Lease acquisition.** %d simulated nodes, each with its own etcd client (connected first), call `AcquireLease` at the same instant against one embedded etcd on loopback; network 10.244.0.0/16 with /24 subnets (254 candidates). weft's lease store alone: no Flannel figure (it would take %d flanneld processes).\n\n", a.Nodes, a.Nodes)
		p("| nodes | all hold a lease after | per node p50 / p95 / p99 / max, ms | errors | duplicate subnets | leases stored |\n|---|---|---|---|---|---|\n")
		p("| %d | %.0f ms | %.1f / %.1f / %.1f / %.1f | %d | %d | %d |\n\n", a.Nodes, a.TotalMS, a.PerNodeMS.P50, a.PerNodeMS.P95, a.PerNodeMS.P99, a.PerNodeMS.Max, a.Errors, a.Duplicates, a.Stored)
	}
	if len(c.Peers) > 0 {
		p("**Peer programming.** A vxlan lab with pod network `%s` runs a weft node (weftd) and a Flannel node (flanneld), each on its own etcd prefix, so a write reaches one daemon: they are measured in turn, never competing for the CPUs. "+
			"N fake peer leases (Flannel JSON, distinct PublicIPs and VtepMACs) are written into one daemon's network, 100 per transaction, bound to one etcd lease; "+
			"the harness polls that node's kernel over netlink every 10 ms until it holds every route, neighbour and FDB entry on its VXLAN device (`weft.1`, `flannel.1`), then revokes the etcd lease (all keys deleted in one revision) and waits until all of it is gone.\n\n", cpNetwork)
		p("| daemon | peers | write, ms | programmed after last write, ms | after first write, ms | removed, ms | RSS before / with peers / after, MB | CPU program / remove, s |\n|---|---|---|---|---|---|---|---|\n")
		for _, r := range c.Peers {
			d := r.Daemon
			if r.GCPercent != 0 {
				d += fmt.Sprintf(" `--gc-percent=%d`", r.GCPercent)
			}
			if r.Error != "" {
				p("| %s | %d | error: %s | | | | | |\n", d, r.Peers, cell(r.Error))
				continue
			}
			p("| %s | %d | %.0f | **%.0f** | %.0f | %.0f | %.1f / %.1f / %.1f | %.2f / %.2f |\n", d, r.Peers, r.WriteMS, r.ProgramMS, r.ProgramFromFirstMS, r.RemoveMS,
				r.Before.RSSMB, r.Loaded.RSSMB, r.After.RSSMB, r.CPUProgramSec, r.CPURemoveSec)
		}
		p("\n")
		for _, r := range c.Peers {
			renderHeapTop(p, fmt.Sprintf("%d peers", r.Peers), r.HeapTop)
		}
		renderPeerComparison(p, c)
	}
	if len(c.Restarts) > 0 {
		p("**Restart.** With %d peers in its network and programmed, the daemon is stopped (SIGTERM), its VXLAN device (and so every route, neighbour and FDB entry) and its subnet file are deleted, and it is started again; the lease is still in etcd. Timed from the start: the subnet file written, and every peer programmed again.\n\n", c.Restarts[0].Peers)
		p("| daemon | start → subnet file, ms | start → %d peers back, ms | RSS after, MB |\n|---|---|---|---|\n", c.Restarts[0].Peers)
		for _, r := range c.Restarts {
			if r.Error != "" {
				p("| %s | error: %s | | |\n", r.Daemon, cell(r.Error))
				continue
			}
			p("| %s | %.0f | %.0f | %.1f |\n", r.Daemon, r.SubnetFileMS, r.RoutesMS, r.RSSMB)
		}
		wf, wr, wm, wn := c.restarts(cniWeft)
		ff, fr, fm, fn := c.restarts(cniFlannel)
		if wn > 0 && fn > 0 {
			p("| **weft / Flannel** (medians) | **%s** | **%s** | %s |\n", times(ratio(wf, ff)), times(ratio(wr, fr)), times(ratio(wm, fm)))
		}
		p("\n")
	}
	cvs := []*Convergence{c.Convergence, c.FlannelConvergence}
	if c.Convergence != nil {
		p("**Convergence.** One lease at a time, into weft's network and Flannel's in turn: put → the kernel holds its route, neighbour and FDB entry; delete → all three gone (polled every 1 ms; the time includes the etcd write).\n\n")
		p("| daemon | samples | add p50 / p95 / p99 / max, ms | remove p50 / p95 / p99 / max, ms | errors |\n|---|---|---|---|---|\n")
		for _, cv := range cvs {
			if cv == nil {
				continue
			}
			d := cv.Daemon
			if d == "" {
				d = cniWeft
			}
			p("| %s | %d | %.1f / %.1f / %.1f / %.1f | %.1f / %.1f / %.1f / %.1f | %d |\n", d, cv.AddMS.N, cv.AddMS.P50, cv.AddMS.P95, cv.AddMS.P99, cv.AddMS.Max,
				cv.RemoveMS.P50, cv.RemoveMS.P95, cv.RemoveMS.P99, cv.RemoveMS.Max, cv.Errors)
		}
		if w, f := c.Convergence, c.FlannelConvergence; f != nil {
			p("| **weft / Flannel** | | %s / %s / %s / %s | %s / %s / %s / %s | |\n",
				times(ratio(w.AddMS.P50, f.AddMS.P50)), times(ratio(w.AddMS.P95, f.AddMS.P95)), times(ratio(w.AddMS.P99, f.AddMS.P99)), times(ratio(w.AddMS.Max, f.AddMS.Max)),
				times(ratio(w.RemoveMS.P50, f.RemoveMS.P50)), times(ratio(w.RemoveMS.P95, f.RemoveMS.P95)), times(ratio(w.RemoveMS.P99, f.RemoveMS.P99)), times(ratio(w.RemoveMS.Max, f.RemoveMS.Max)))
		}
		p("\n")
		for _, cv := range cvs {
			if cv != nil && cv.FirstError != "" {
				p("First error (%s): %s\n\n", cv.Daemon, cell(cv.FirstError))
			}
		}
	}
}

// renderPeerComparison is the medians of weft's and Flannel's runs at each
// peer count both ran, and their ratio.
func renderPeerComparison(p printer, c *Control) {
	seen := map[int]bool{}
	var rows []string
	for _, r := range c.Peers {
		if seen[r.Peers] {
			continue
		}
		seen[r.Peers] = true
		w, f := c.peers(r.Peers, cniWeft), c.peers(r.Peers, cniFlannel)
		if w == nil || f == nil {
			continue
		}
		for _, fig := range []struct {
			name string
			w, f float64
			unit string
		}{
			{"programmed after the last write", w.programMS, f.programMS, "ms"},
			{"programmed after the first write", w.fromFirstMS, f.fromFirstMS, "ms"},
			{"all removed", w.removeMS, f.removeMS, "ms"},
			{"RSS idle", w.rssBefore, f.rssBefore, "MB"},
			{"RSS with peers", w.rssLoaded, f.rssLoaded, "MB"},
			{"CPU to program", w.cpuProgram, f.cpuProgram, "s"},
			{"CPU to remove", w.cpuRemove, f.cpuRemove, "s"},
		} {
			rows = append(rows, fmt.Sprintf("| %d | %s | %.1f %s | %.1f %s | **%s** |\n", r.Peers, fig.name, fig.w, fig.unit, fig.f, fig.unit, times(ratio(fig.w, fig.f))))
		}
	}
	if len(rows) == 0 {
		return
	}
	p("Medians of each daemon's runs, and **weft / Flannel** (below 1× is faster or smaller):\n\n| peers | figure | weft | Flannel | weft / Flannel |\n|---|---|---|---|---|\n")
	for _, r := range rows {
		p("%s", r)
	}
	p("\n")
}

func renderProfiles(p printer, profs []Profile) {
	p("## Profiles\n\n")
	p("perf samples (%d Hz per CPU, no call graphs) of the slowest case of each area, and of a vxlan stream by weft and by Flannel (both the kernel's VXLAN path). `[k]` is kernel code, `[.]` user code; percentages are of the samples counted (all of them unless a list of commands is given).\n\n", perfFreq)
	for _, pr := range profs {
		p("### %s: %s\n\n", pr.Area, pr.Case)
		if pr.Error != "" {
			p("No profile: %s\n\n", cell(pr.Error))
			continue
		}
		p("`%s` — %s.", pr.Command, pr.Samples)
		if len(pr.Comms) > 0 {
			p(" Machine-wide recording, reduced to the commands of the case (%s): percentages are of their samples, other work on the machine is left out.", strings.Join(pr.Comms, ", "))
		}
		p("\n\n")
		p("%s\n\n", pr.Note)
		p("| %% | command |\n|---|---|\n")
		for _, s := range pr.ByComm {
			p("| %.1f | %s |\n", s.Percent, cell(s.What))
		}
		p("\n| %% | command, object, symbol |\n|---|---|\n")
		for _, s := range pr.BySym {
			p("| %.1f | `%s` |\n", s.Percent, strings.ReplaceAll(s.What, "`", "'"))
		}
		p("\n")
	}
}

// profileNote says, from the samples alone, where the time went: the
// commands that took most of it and the hottest symbols.
func profileNote(pr Profile) string {
	var comms, syms []string
	for _, s := range top(pr.ByComm, 3) {
		comms = append(comms, fmt.Sprintf("%s %.0f%%", s.What, s.Percent))
	}
	for _, s := range top(pr.BySym, 3) {
		syms = append(syms, fmt.Sprintf("`%s` %.1f%%", strings.ReplaceAll(s.What, "`", "'"), s.Percent))
	}
	if len(comms) == 0 {
		return "No samples."
	}
	kernel := 0.0
	for _, s := range pr.BySym {
		if strings.Contains(s.What, "[k]") {
			kernel += s.Percent
		}
	}
	return fmt.Sprintf("Where the time goes: %s. Hottest symbols: %s; kernel symbols make up %.0f%% of the listed samples.",
		strings.Join(comms, ", "), strings.Join(syms, ", "), kernel)
}

// syscallNote and wakeNote quote the machine's call costs (see Machine)
// where they explain a udp figure.
func syscallNote(c *CallCosts) string {
	if c == nil {
		return ""
	}
	return fmt.Sprintf("; a system call costs %.2f µs on this machine", c.SyscallNs/1e3)
}

func wakeNote(c *CallCosts) string {
	if c == nil || c.WakeOtherCPUus == 0 {
		return ""
	}
	return fmt.Sprintf(" (on this machine a wake-up round trip after %s idle takes %.0f µs on one CPU, %.0f µs across two)", wakeIdle, c.WakeSameCPUus, c.WakeOtherCPUus)
}
