package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/weftnet/weft/lab"
)

// The ipv6 area: IPv6 pod → pod beside IPv4 pod → pod on one dual-stack
// lab per backend (weftctl lab up --ipv6), interleaved as the data-plane
// area does, so the IPv6 / IPv4 ratios compare figures taken under the same
// machine load (issue 16 item 7).

// targetIPv6Ratio is the least IPv6 / IPv4 single-stream throughput on
// vxlan and host-gw (and, for latency, the most IPv6 / IPv4 p50 is its
// inverse).
const targetIPv6Ratio = 0.90

// ipv6Backends are the backends the area measures: those that carry IPv6
// (udp in its IPv4 datagrams; wireguard on its own IPv6 device, as Flannel).
func ipv6Backends() []backendSpec {
	return []backendSpec{
		{name: "vxlan", labName: "wb6-vxlan", labBackend: "vxlan", ipv6: true},
		{name: "host-gw", labName: "wb6-hostgw", labBackend: "host-gw", ipv6: true},
		{name: "udp", labName: "wb6-udp", labBackend: "udp", ipv6: true},
		{name: "wireguard", labName: "wb6-wg", labBackend: "wireguard", ipv6: true},
	}
}

// IPv6Bench is the ipv6 area's result.
type IPv6Bench struct {
	DurationSec int        `json:"durationSec"`
	Repetitions int        `json:"repetitions"`
	PingCount   int        `json:"pingCount"`
	Backends    []*IPv6Run `json:"backends"`
}

// IPv6Run is one backend's dual-stack lab: the same two pods over each
// family.
type IPv6Run struct {
	Name   string      `json:"name"`
	Lab    string      `json:"lab"`
	Config string      `json:"config"`
	IPv4   *PathResult `json:"ipv4,omitempty"`
	IPv6   *PathResult `json:"ipv6,omitempty"`
	// TCPRatio is IPv6 / IPv4 single-stream throughput (medians);
	// LatencyRatio IPv6 / IPv4 ping p50. 0 when either is missing.
	TCPRatio     float64 `json:"tcpRatio"`
	LatencyRatio float64 `json:"latencyRatio"`
	// UnderlayIPv4 and UnderlayIPv6 are pings from node to node over the
	// lab's underlay, in the same rounds: the kernel's own IPv6 / IPv4
	// latency, UnderlayLatencyRatio (0 when either is missing).
	UnderlayIPv4         *PathResult `json:"underlayIPv4,omitempty"`
	UnderlayIPv6         *PathResult `json:"underlayIPv6,omitempty"`
	UnderlayLatencyRatio float64     `json:"underlayLatencyRatio,omitempty"`
	Error                string      `json:"error,omitempty"`
}

// runIPv6 measures each backend of ipv6Backends that cfg wants.
func runIPv6(ctx context.Context, cfg *config) *IPv6Bench {
	x := &IPv6Bench{DurationSec: int(cfg.iperfDuration / time.Second), Repetitions: cfg.reps, PingCount: cfg.pingCount}
	for _, spec := range ipv6Backends() {
		if ctx.Err() != nil {
			break
		}
		if !cfg.wantBackend(spec.name) {
			continue
		}
		cfg.logf("ipv6: %s, IPv4 and IPv6 pod → pod on one dual-stack lab", spec.name)
		x.Backends = append(x.Backends, runIPv6Backend(ctx, cfg, spec))
	}
	return x
}

func runIPv6Backend(ctx context.Context, cfg *config, spec backendSpec) *IPv6Run {
	r := &IPv6Run{Name: spec.name, Lab: spec.labName, Config: lab.NetworkConfigIPv6(labNetwork, lab.DefaultIPv6Network, spec.labBackend)}
	l, down, err := upLab(ctx, cfg, spec)
	defer down()
	if err != nil {
		r.Error = err.Error()
		return r
	}
	n1, n2 := l.Nodes[0], l.Nodes[1]
	pa, pb := n1.Pods[0], n2.Pods[0]
	pids := []int{n1.Weftd.PID, n2.Weftd.PID}
	r.IPv4 = &PathResult{From: pa.Name + " " + pa.IP.String(), To: pb.Name + " " + pb.IP.String()}
	r.IPv6 = &PathResult{From: pa.Name + " " + pa.IPv6.String(), To: pb.Name + " " + pb.IPv6.String()}
	r.UnderlayIPv4 = &PathResult{From: n1.Name + " " + n1.Underlay.String(), To: n2.Name + " " + n2.Underlay.String()}
	r.UnderlayIPv6 = &PathResult{From: n1.Name + " " + n1.UnderlayV6.String(), To: n2.Name + " " + n2.UnderlayV6.String()}
	measurePaths(ctx, cfg, []*pathRun{
		{name: "IPv4", res: r.IPv4, tcp1Only: true, spec: pathSpec{srcNS: pa.NS, dstNS: pb.NS, dst: pb.IP, daemonPIDs: pids}},
		{name: "IPv6", res: r.IPv6, tcp1Only: true, spec: pathSpec{srcNS: pa.NS, dstNS: pb.NS, dst: pb.IPv6, daemonPIDs: pids}},
		{name: "ul IPv4", res: r.UnderlayIPv4, pingOnly: true, spec: pathSpec{srcNS: n1.NS, dstNS: n2.NS, dst: n2.Underlay}},
		{name: "ul IPv6", res: r.UnderlayIPv6, pingOnly: true, spec: pathSpec{srcNS: n1.NS, dstNS: n2.NS, dst: n2.UnderlayV6}},
	})
	r.TCPRatio = round3(ratio(r.IPv6.TCP1.MedianGbps, r.IPv4.TCP1.MedianGbps))
	r.LatencyRatio = pingRatio(r.IPv6, r.IPv4)
	r.UnderlayLatencyRatio = pingRatio(r.UnderlayIPv6, r.UnderlayIPv4)
	var errs []string
	for _, p := range []*PathResult{r.IPv4, r.IPv6, r.UnderlayIPv4, r.UnderlayIPv6} {
		errs = append(errs, p.Errors...)
	}
	r.Error = strings.Join(errs, "; ")
	return r
}

// pingRatio is a's ping p50 over b's, 0 when either is missing.
func pingRatio(a, b *PathResult) float64 {
	if a == nil || b == nil || a.Ping == nil || b.Ping == nil {
		return 0
	}
	return round3(ratio(a.Ping.RTTms.P50, b.Ping.RTTms.P50))
}

func (x *IPv6Bench) backend(name string) *IPv6Run {
	for _, r := range x.Backends {
		if r.Name == name && r.Error == "" {
			return r
		}
	}
	return nil
}

// ipv6Targets: on vxlan and host-gw, IPv6 within 10% of IPv4 (throughput,
// and ping p50).
//
// host-gw's IPv4 path has BIG TCP and its IPv6 path cannot (backends.md,
// BIG TCP): an unmet host-gw throughput target says so, with IPv6 against
// the data plane's IPv4 run with BIG TCP off when dp has one.
func ipv6Targets(x *IPv6Bench, dp *DataPlane) []Target {
	var ts []Target
	for _, name := range []string{"vxlan", "host-gw"} {
		t := Target{Area: "ipv6", Name: fmt.Sprintf("%s IPv6 pod → pod single stream ≥ %.0f%% of IPv4", name, targetIPv6Ratio*100),
			Want: fmt.Sprintf("≥ %.0f%%", targetIPv6Ratio*100)}
		l := Target{Area: "ipv6", Name: fmt.Sprintf("%s IPv6 ping p50 ≤ %.0f%% of IPv4's", name, 100/targetIPv6Ratio),
			Want: fmt.Sprintf("≤ %.0f%%", 100/targetIPv6Ratio)}
		if r := x.backend(name); r != nil {
			if r.TCPRatio > 0 {
				t.Got = fmt.Sprintf("%.0f%% (%.2f vs %.2f Gbit/s)", r.TCPRatio*100, r.IPv6.TCP1.MedianGbps, r.IPv4.TCP1.MedianGbps)
				t.Met = boolp(r.TCPRatio >= targetIPv6Ratio)
				if name == "host-gw" && !*t.Met {
					t.Note = bigTCPNote(r, dp.backend(bigTCPOff))
				}
			}
			if r.LatencyRatio > 0 {
				l.Got = fmt.Sprintf("%.0f%% (%.3f vs %.3f ms)", r.LatencyRatio*100, r.IPv6.Ping.RTTms.P50, r.IPv4.Ping.RTTms.P50)
				l.Met = boolp(r.LatencyRatio <= 1/targetIPv6Ratio)
				if !*l.Met && r.UnderlayLatencyRatio > 0 {
					l.Note = fmt.Sprintf("The lab's underlay, node → node in the same rounds: IPv6 p50 %.3f ms against IPv4's %.3f (%.0f%%), the kernel's own echo path without weft.",
						r.UnderlayIPv6.Ping.RTTms.P50, r.UnderlayIPv4.Ping.RTTms.P50, r.UnderlayLatencyRatio*100)
				}
			}
		}
		ts = append(ts, t, l)
	}
	return ts
}

// bigTCPOff names the data plane's host-gw run with weftd --big-tcp=false.
const bigTCPOff = "host-gw, BIG TCP off"

func bigTCPNote(r *IPv6Run, off *BackendRun) string {
	n := "IPv4 runs with BIG TCP (GSO packets of up to 192 KiB on the bridge and pod veths), IPv6 at 64 KiB: forwarded IPv6 BIG TCP crawls on this kernel (backends.md, BIG TCP)."
	if off != nil && off.Pod != nil && off.Pod.TCP1.MedianGbps > 0 {
		n += fmt.Sprintf(" IPv4 with BIG TCP off (data plane, %q): %.2f Gbit/s, of which IPv6 is %.0f%%.",
			bigTCPOff, off.Pod.TCP1.MedianGbps, 100*r.IPv6.TCP1.MedianGbps/off.Pod.TCP1.MedianGbps)
	}
	return n
}

func renderIPv6(p printer, x *IPv6Bench) {
	p("## IPv6\n\n")
	p("Per backend, one dual-stack lab (`weftctl lab up --ipv6`: the underlay gets fd00:198:19:X::/64 beside its IPv4 /24, the network %s with IPv6Network %s, one pod per node with an address of each family); "+
		"the same two pods are measured over IPv4 and over IPv6, interleaved: ping (%d echoes in all, in %d rounds, pinned to CPU "+pingCPU+"), then iperf3 TCP with 1 stream (%d s, %d repetitions, median). "+
		"vxlan carries IPv6 on its own device weft-v6.<VNI> over the IPv6 underlay, host-gw routes via the peer's IPv6 underlay address, udp carries IPv6 pods in its IPv4 datagrams, wireguard carries them on its own device weft-wg-v6 over the IPv6 underlay (its default Mode, as Flannel). "+
		"The nodes also ping each other over the underlay, by each family in the same rounds: the kernel's own IPv6 / IPv4 latency, without weft. Ratios are IPv6 / IPv4 of one run.\n\n", labNetwork, lab.DefaultIPv6Network, x.PingCount, x.Repetitions, x.DurationSec, x.Repetitions)
	p("| backend | IPv4 TCP 1 stream, Gbit/s (runs) | IPv6 TCP 1 stream, Gbit/s (runs) | IPv6 / IPv4 | IPv4 ping p50 / p99, ms | IPv6 ping p50 / p99, ms | IPv6 / IPv4 p50 | underlay IPv6 / IPv4 p50 |\n|---|---|---|---|---|---|---|---|\n")
	ping := func(r *PathResult) string {
		if r == nil || r.Ping == nil {
			return "—"
		}
		return fmt.Sprintf("%.3f / %.3f", r.Ping.RTTms.P50, r.Ping.RTTms.P99)
	}
	for _, r := range x.Backends {
		if r.IPv4 == nil || r.IPv6 == nil {
			p("| %s | error: %s | | | | | | |\n", r.Name, cell(r.Error))
			continue
		}
		underlay := "—"
		if r.UnderlayLatencyRatio > 0 {
			underlay = fmt.Sprintf("%.2f (%.3f / %.3f ms)", r.UnderlayLatencyRatio, r.UnderlayIPv6.Ping.RTTms.P50, r.UnderlayIPv4.Ping.RTTms.P50)
		}
		p("| %s | %.2f (%s) | %.2f (%s) | **%.2f** | %s | %s | **%.2f** | %s |\n", r.Name, r.IPv4.TCP1.MedianGbps, runsList(r.IPv4.TCP1),
			r.IPv6.TCP1.MedianGbps, runsList(r.IPv6.TCP1), r.TCPRatio, ping(r.IPv4), ping(r.IPv6), r.LatencyRatio, underlay)
		if r.Error != "" {
			p("| %s | error | %s | | | | | |\n", r.Name, cell(r.Error))
		}
	}
	p("\n")
}
