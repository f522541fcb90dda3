package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

func TestIPv6TargetsAndReport(t *testing.T) {
	path := func(gbps, p50 float64) *PathResult {
		return &PathResult{TCP1: Series{MedianGbps: gbps}, Ping: &PingResult{RTTms: Dist{P50: p50, P99: 2 * p50}}}
	}
	x := &IPv6Bench{DurationSec: 2, Repetitions: 3, PingCount: 50, Backends: []*IPv6Run{
		{Name: "vxlan", IPv4: path(10, 0.1), IPv6: path(9.5, 0.105), TCPRatio: 0.95, LatencyRatio: 1.05},
		{Name: "host-gw", IPv4: path(20, 0.1), IPv6: path(16, 0.2), TCPRatio: 0.8, LatencyRatio: 2,
			UnderlayIPv4: path(0, 0.05), UnderlayIPv6: path(0, 0.06), UnderlayLatencyRatio: 1.2},
		{Name: "udp", Error: "lab up: boom"},
	}}
	got := map[string]string{}
	dp := &DataPlane{Backends: []*BackendRun{{Name: bigTCPOff, Variant: true, Pod: path(17.5, 0.1)}}}
	notes := map[string]string{}
	for _, tg := range ipv6Targets(x, dp) {
		got[tg.Name] = metString(tg.Met) + " " + tg.Got
		notes[tg.Name] = tg.Note
	}
	// The unmet host-gw throughput says why, against IPv4 without BIG TCP.
	if n := notes["host-gw IPv6 pod → pod single stream ≥ 90% of IPv4"]; !strings.Contains(n, "BIG TCP") || !strings.Contains(n, "17.50 Gbit/s, of which IPv6 is 91%") {
		t.Errorf("host-gw throughput note = %q", n)
	}
	// The unmet ping target gives the underlay's own IPv6 / IPv4 latency.
	if n := notes["host-gw IPv6 ping p50 ≤ 111% of IPv4's"]; !strings.Contains(n, "IPv6 p50 0.060 ms against IPv4's 0.050 (120%)") {
		t.Errorf("host-gw ping note = %q", n)
	}
	if n := notes["vxlan IPv6 pod → pod single stream ≥ 90% of IPv4"]; n != "" {
		t.Errorf("met vxlan target has a note: %q", n)
	}
	if tg := ipv6Targets(x, nil)[2]; !strings.Contains(tg.Note, "BIG TCP") || strings.Contains(tg.Note, "of which") {
		t.Errorf("without a data plane run: %q", tg.Note)
	}
	for name, want := range map[string]string{
		"vxlan IPv6 pod → pod single stream ≥ 90% of IPv4":   metString(boolp(true)) + " 95% (9.50 vs 10.00 Gbit/s)",
		"vxlan IPv6 ping p50 ≤ 111% of IPv4's":               metString(boolp(true)) + " 105% (0.105 vs 0.100 ms)",
		"host-gw IPv6 pod → pod single stream ≥ 90% of IPv4": metString(boolp(false)) + " 80% (16.00 vs 20.00 Gbit/s)",
		"host-gw IPv6 ping p50 ≤ 111% of IPv4's":             metString(boolp(false)) + " 200% (0.200 vs 0.100 ms)",
	} {
		if got[name] != want {
			t.Errorf("target %q = %q, want %q (all: %v)", name, got[name], want, got)
		}
	}
	var b bytes.Buffer
	renderIPv6(func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }, x)
	for _, want := range []string{"## IPv6", "| vxlan | 10.00 (", "| **0.95** |", "| udp | error: lab up: boom", "| **2.00** | 1.20 (0.060 / 0.050 ms) |", "| **1.05** | — |"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}
