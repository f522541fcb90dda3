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
	targetUDPRatio    = 0.50 // udp / vxlan, single stream
	targetUDPLatency  = 2.0  // udp ping p50 ≤ 2× vxlan
	// wireguard against udp: both userspace tunnels here, the difference
	// is the cost of encryption.
	targetWireGuardRatio   = 0.50 // wireguard / udp, single stream
	targetWireGuardLatency = 1.5  // wireguard ping p50 ≤ 1.5× udp
	targetCNIAddP50MS      = 15.0
	target1000MS           = 1000.0
	target5000MS           = 5000.0
	targetRSSMB            = 60.0
	targetConvP99MS        = 100.0
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

func (c *Control) peers(n int) *PeerRun {
	if c == nil {
		return nil
	}
	for _, p := range c.Peers {
		if p.Peers == n && p.Error == "" {
			return p
		}
	}
	return nil
}

func (c *CNI) run(name string) *CNIRun {
	if c == nil {
		return nil
	}
	for _, r := range c.Runs {
		if r.Name == name {
			return r
		}
	}
	return nil
}

func boolp(b bool) *bool { return &b }

func hasProfile(res *Results, area string) bool {
	for _, p := range res.Profiles {
		if p.Area == area && p.Error == "" {
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
	profNote := func(area string) string {
		if hasProfile(res, area) {
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
					b.Pod.KernelCPUPerGB, under.KernelCPUPerGB, map[bool]string{true: " + VXLAN encapsulation", false: ""}[strings.HasPrefix(name, "vxlan")], res.Machine.CPUs) + profNote("data plane")
			}
		}
		return t
	}
	if dp != nil {
		ts = append(ts, ratioTarget("vxlan", targetVXLANRatio), ratioTarget("host-gw", targetHostGWRatio))
		t, l := relativeTargets(dp, "udp", "vxlan", targetUDPRatio, targetUDPLatency)
		if udp := dp.backend("udp"); t.Met != nil && !*t.Met {
			t.Note = fmt.Sprintf("weftd spent %.2f CPU-s per GB moved (userspace copy, syscalls, TUN and UDP socket work) on top of %.2f s of kernel time; vxlan needs no userspace hop, and on a lab the hop takes CPU from the iperf3 processes%s. Analysis in backend-udp.md.",
				udp.Pod.WeftdCPUPerGB, udp.Pod.KernelCPUPerGB, syscallNote(res.Machine.Costs)) + profNote("data plane")
		}
		if l.Met != nil && !*l.Met {
			l.Note = "vxlan answers an echo in softirq; udp wakes weftd three times per echo (request out, request in with the reply taken in the same round, reply in), each a scheduler wake-up" + wakeNote(res.Machine.Costs) + ". Analysis in backend-udp.md."
		}
		ts = append(ts, t, l)
		t, l = relativeTargets(dp, "wireguard", "udp", targetWireGuardRatio, targetWireGuardLatency)
		if wg := dp.backend("wireguard"); t.Met != nil && !*t.Met {
			t.Note = fmt.Sprintf("weftd (the embedded wireguard-go) spent %.2f CPU-s per GB moved, encryption included, on top of %.2f s of kernel time. Analysis in backends.md (wireguard, where the time goes).",
				wg.Pod.WeftdCPUPerGB, wg.Pod.KernelCPUPerGB) + profNote("data plane")
		}
		if l.Met != nil && !*l.Met {
			l.Note = "Analysis in backends.md (wireguard, where the time goes)."
		}
		ts = append(ts, t, l)
	}
	if c := res.CNI; c != nil {
		t := Target{Area: "cni", Name: fmt.Sprintf("ADD p50 ≤ %.0f ms (%d sequential pods)", targetCNIAddP50MS, c.Pods), Want: fmt.Sprintf("≤ %.0f ms", targetCNIAddP50MS)}
		if r := c.run("sequential"); r != nil && r.AddMS.N > 0 {
			t.Got = fmt.Sprintf("%.1f ms", r.AddMS.P50)
			t.Met = boolp(r.AddMS.P50 <= targetCNIAddP50MS)
			if !*t.Met {
				t.Note = fmt.Sprintf("Starting the plugin process alone takes %.1f ms (p50 of `weft` VERSION).", c.ExecFloorMS.P50) + profNote("cni")
			}
		}
		e := Target{Area: "cni", Name: fmt.Sprintf("no error under %d-way parallel load", c.Parallel), Want: "0 errors"}
		n, errs, first := 0, 0, ""
		for _, r := range c.Runs {
			if r.Concurrency > 1 {
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
	}
	if c := res.Control; c != nil {
		a := Target{Area: "control plane", Name: "200 nodes acquire at once: all hold a lease, no duplicates", Want: "0 errors, 0 duplicates"}
		if c.Acquire != nil {
			a.Got = fmt.Sprintf("%d/%d in %.0f ms, %d errors, %d duplicates", c.Acquire.Nodes-c.Acquire.Errors, c.Acquire.Nodes, c.Acquire.TotalMS, c.Acquire.Errors, c.Acquire.Duplicates)
			a.Met = boolp(c.Acquire.Errors == 0 && c.Acquire.Duplicates == 0 && c.Acquire.Stored == c.Acquire.Nodes)
			a.Note = c.Acquire.FirstError
		}
		ts = append(ts, a)
		for _, pt := range []struct {
			n    int
			want float64
		}{{1000, target1000MS}, {5000, target5000MS}} {
			t := Target{Area: "control plane", Name: fmt.Sprintf("%d peers programmed ≤ %.0f s after the last write", pt.n, pt.want/1000), Want: fmt.Sprintf("≤ %.0f ms", pt.want)}
			if p := c.peers(pt.n); p != nil {
				t.Got = fmt.Sprintf("%.0f ms", p.ProgramMS)
				t.Met = boolp(p.ProgramMS <= pt.want)
				if !*t.Met {
					t.Note = fmt.Sprintf("weftd used %.2f CPU-s to program %d peers (%.0f ms from the first write).", p.CPUProgramSec, pt.n, p.ProgramFromFirstMS) + profNote("control plane")
				}
			}
			ts = append(ts, t)
		}
		r := Target{Area: "control plane", Name: "weftd RSS at 5000 peers ≤ 60 MB", Want: "≤ 60 MB"}
		if p := c.peers(5000); p != nil {
			r.Got = fmt.Sprintf("%.1f MB", p.Loaded.RSSMB)
			r.Met = boolp(p.Loaded.RSSMB <= targetRSSMB)
		}
		cv := Target{Area: "control plane", Name: "one new lease → kernel state, p99 ≤ 100 ms", Want: "≤ 100 ms"}
		if c.Convergence != nil && c.Convergence.AddMS.N > 0 {
			cv.Got = fmt.Sprintf("p99 %.1f ms (p50 %.1f, %d samples)", c.Convergence.AddMS.P99, c.Convergence.AddMS.P50, c.Convergence.AddMS.N)
			cv.Met = boolp(c.Convergence.AddMS.P99 <= targetConvP99MS && c.Convergence.Errors == 0)
			cv.Note = c.Convergence.FirstError
		}
		ts = append(ts, r, cv)
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
		"`--areas dataplane,cni,control` and `--backends vxlan,udp,...` narrow a run; `--no-profiles` skips perf. " +
		"The harness only creates namespaces (labs `wb-*`, namespaces `wbench-*`) and removes them on exit, on ^C, and at the start of the next run after a crash.\n")
	return b.Bytes()
}

type printer func(format string, args ...any)

// cell makes s safe inside a Markdown table cell.
func cell(s string) string {
	return strings.NewReplacer("|", "\\|", "\n", " ").Replace(s)
}

func renderDataPlane(p printer, dp *DataPlane) {
	p("## Data plane\n\n")
	p("Each backend gets its own 2-node lab (`weftctl lab`, one pod per node). Per path: ping (%d echoes, 10 ms apart) when idle, then iperf3 TCP with 1 and 4 streams (%d s each, %d repetitions, median), "+
		"then UDP at %s offered (%d-byte datagrams, loss measured at the receiver). The underlay reference is node→node over the same lab's bridge, measured in the same lab, each repetition right before the pods' (quick mode: single stream only). "+
		"weftd CPU is both nodes' weftd (user+system) over the single-stream runs; kernel CPU is machine-wide system+irq+softirq time over the same runs, so it also holds iperf3's syscalls and any other load.\n\n",
		dp.PingCount, dp.DurationSec, dp.Repetitions, dp.UDPRate, udpLen)
	p("| backend | path | TCP 1 stream, Gbit/s (runs) | TCP 4 streams, Gbit/s | UDP @ %s: Gbit/s, loss | ping p50 / p99, ms | weftd CPU s/GB | kernel CPU s/GB |\n|---|---|---|---|---|---|---|---|\n", dp.UDPRate)
	for _, br := range dp.Backends {
		for _, pr := range []struct {
			name string
			r    *PathResult
		}{{"underlay", br.Underlay}, {"pod → pod", br.Pod}} {
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
			p("| %s | %s | **%.2f** (%s) | %.2f | %s | %s | %.3f | %.2f |\n", br.Name, pr.name, r.TCP1.MedianGbps, runsList(r.TCP1), r.TCP4.MedianGbps, udp, ping, r.WeftdCPUPerGB, r.KernelCPUPerGB)
		}
		if br.Error != "" {
			p("| %s | error | %s | | | | | |\n", br.Name, cell(br.Error))
		}
	}
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
	p("\nConfigs: ")
	var cfgs []string
	for _, br := range dp.Backends {
		cfgs = append(cfgs, fmt.Sprintf("%s `%s`", br.Name, br.Config))
	}
	p("%s.\n\n", strings.Join(cfgs, "; "))
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
	p("The `weft` plugin called the way a runtime calls it: libcni execs `bin/weft` (and `bin/portmap` when chained, with one hostPort mapping per pod) on a thread inside a node namespace with a subnet file; "+
		"each of the %d pods is a namespace of its own. All pods are added, then all deleted; parallel runs keep %d calls in flight. "+
		"The floor is `weft` answering VERSION (process start alone): p50 %.1f ms, p99 %.1f ms.\n\n", c.Pods, c.Parallel, c.ExecFloorMS.P50, c.ExecFloorMS.P99)
	p("| run | plugins | in flight | ADD p50 / p95 / p99, ms | DEL p50 / p95 / p99, ms | errors (ADD/DEL) | distinct IPs | wall, s |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range c.Runs {
		p("| %s | %s | %d | %.1f / %.1f / %.1f | %.1f / %.1f / %.1f | %d / %d | %d | %.1f |\n", r.Name, r.Plugins, r.Concurrency,
			r.AddMS.P50, r.AddMS.P95, r.AddMS.P99, r.DelMS.P50, r.DelMS.P95, r.DelMS.P99, r.AddErrors, r.DelErrors, r.UniqueIPs, r.WallSec)
	}
	for _, r := range c.Runs {
		if r.FirstError != "" {
			p("\nFirst error of %s: %s\n", r.Name, cell(r.FirstError))
		}
	}
	p("\n")
}

func renderControl(p printer, c *Control) {
	p("## Control plane\n\n")
	if a := c.Acquire; a != nil {
		p("**Lease acquisition.** %d simulated nodes, each with its own etcd client (connected first), call `AcquireLease` at the same instant against one embedded etcd on loopback; network 10.244.0.0/16 with /24 subnets (254 candidates).\n\n", a.Nodes)
		p("| nodes | all hold a lease after | per node p50 / p95 / p99 / max, ms | errors | duplicate subnets | leases stored |\n|---|---|---|---|---|---|\n")
		p("| %d | %.0f ms | %.1f / %.1f / %.1f / %.1f | %d | %d | %d |\n\n", a.Nodes, a.TotalMS, a.PerNodeMS.P50, a.PerNodeMS.P95, a.PerNodeMS.P99, a.PerNodeMS.Max, a.Errors, a.Duplicates, a.Stored)
	}
	if len(c.Peers) > 0 {
		p("**Peer programming.** A 1-node vxlan lab (pod network 10.0.0.0/8) runs a real weftd. N fake peer leases (Flannel JSON, distinct PublicIPs and VtepMACs) are written into its etcd, 100 per transaction, bound to one etcd lease; " +
			"the harness polls the node's kernel over netlink every 10 ms until it holds every route, neighbour and FDB entry on `weft.1`, then revokes the etcd lease (all keys deleted in one revision) and waits until all of it is gone.\n\n")
		p("| peers | write, ms | programmed after last write, ms | after first write, ms | removed, ms | weftd RSS before / with peers / after, MB | weftd CPU program / remove, s |\n|---|---|---|---|---|---|---|\n")
		for _, r := range c.Peers {
			if r.Error != "" {
				p("| %d | error: %s | | | | | |\n", r.Peers, cell(r.Error))
				continue
			}
			p("| %d | %.0f | **%.0f** | %.0f | %.0f | %.1f / %.1f / %.1f | %.2f / %.2f |\n", r.Peers, r.WriteMS, r.ProgramMS, r.ProgramFromFirstMS, r.RemoveMS,
				r.Before.RSSMB, r.Loaded.RSSMB, r.After.RSSMB, r.CPUProgramSec, r.CPURemoveSec)
		}
		p("\n")
	}
	if cv := c.Convergence; cv != nil {
		p("**Convergence.** One lease at a time on the same node: put → the kernel holds its route, neighbour and FDB entry; delete → all three gone (polled every 1 ms; the time includes the etcd write).\n\n")
		p("| samples | add p50 / p95 / p99 / max, ms | remove p50 / p95 / p99 / max, ms | errors |\n|---|---|---|---|\n")
		p("| %d | %.1f / %.1f / %.1f / %.1f | %.1f / %.1f / %.1f / %.1f | %d |\n\n", cv.AddMS.N, cv.AddMS.P50, cv.AddMS.P95, cv.AddMS.P99, cv.AddMS.Max,
			cv.RemoveMS.P50, cv.RemoveMS.P95, cv.RemoveMS.P99, cv.RemoveMS.Max, cv.Errors)
		if cv.FirstError != "" {
			p("First error: %s\n\n", cell(cv.FirstError))
		}
	}
}

func renderProfiles(p printer, profs []Profile) {
	p("## Profiles\n\n")
	p("perf samples (%d Hz per CPU, no call graphs) of the slowest case of each area. `[k]` is kernel code, `[.]` user code; percentages are of the samples counted (all of them unless a list of commands is given).\n\n", perfFreq)
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
