package main

import (
	"encoding/json"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr bool
		check   func(*testing.T, *config)
	}{
		{"defaults", nil, false, func(t *testing.T, c *config) {
			if c.quick || !c.profiles || c.iperfDuration != 5*time.Second || c.cniPods != 100 || c.cniParallel != 20 ||
				len(c.peerCounts) != 1 || c.scalePeers != 10000 || c.convSamples != 100 || c.noFlannel {
				t.Errorf("full mode: %+v", c)
			}
			if len(c.areas) != len(allAreas()) || !c.areas["kube"] || !c.wantBackend("udp") {
				t.Errorf("areas %v, udp wanted %v", c.areas, c.wantBackend("udp"))
			}
		}},
		{"quick", []string{"--quick", "--bin-dir", "x"}, false, func(t *testing.T, c *config) {
			if !c.quick || c.profiles || c.iperfDuration != 2*time.Second || c.reps < 3 || c.binDir != "x" {
				t.Errorf("quick mode: %+v", c)
			}
		}},
		{"subset", []string{"--areas", "cni", "--backends", "udp,vxlan"}, false, func(t *testing.T, c *config) {
			if c.areas["dataplane"] || !c.areas["cni"] || !c.wantBackend("vxlan") || c.wantBackend("host-gw") {
				t.Errorf("subset: areas %v backends %v", c.areas, c.backends)
			}
		}},
		{"without Flannel", []string{"--no-flannel"}, false, func(t *testing.T, c *config) {
			if !c.noFlannel {
				t.Errorf("--no-flannel not kept: %+v", c)
			}
		}},
		{"unknown area", []string{"--areas", "disk"}, true, nil},
		{"unknown backend", []string{"--backends", "ipip"}, true, nil},
		{"stray argument", []string{"now"}, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseFlags(tt.args, io.Discard)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

func TestFakePeers(t *testing.T) {
	for _, bits := range []int{24, 26} {
		own := netip.MustParsePrefix("10.1.5.0/" + strconv.Itoa(bits))
		n := 10000
		if bits == 24 {
			n = 5000 // 10.1.0.0 … 10.255.255.0: 65280 /24s
		}
		ps := fakePeers(0, n, bits, own)
		subnets, pubs, macs := map[string]bool{}, map[string]bool{}, map[string]bool{}
		for _, p := range ps {
			if p.sn.Overlaps(own) {
				t.Fatalf("fake peer %s overlaps own subnet", p.sn)
			}
			if p.sn.Bits() != bits || p.sn.Masked() != p.sn || !netip.MustParsePrefix("10.0.0.0/8").Contains(p.sn.Addr()) {
				t.Fatalf("fake peer subnet %s: want an aligned /%d in 10.0.0.0/8", p.sn, bits)
			}
			subnets[p.sn.String()], pubs[p.pub.String()], macs[p.mac.String()] = true, true, true
			if b := p.pub.As4(); b[0] != 198 || b[1] != 18 || b[2] < 64 || b[3] == 0 || b[3] > 250 {
				t.Fatalf("PublicIP %s outside 198.18.64-254.1-250", p.pub)
			}
		}
		if len(subnets) != n || len(pubs) != n || len(macs) != n {
			t.Errorf("/%d: distinct subnets/IPs/MACs = %d/%d/%d, want %d each", bits, len(subnets), len(pubs), len(macs), n)
		}
		v, err := ps[0].value()
		if err != nil || v == "" {
			t.Fatalf("value: %q, %v", v, err)
		}
	}
}

// TestRenderAgain: --render writes the report from a results file without
// measuring (no root, no labs), the targets evaluated by this code.
func TestRenderAgain(t *testing.T) {
	dir := t.TempDir()
	res := &Results{Date: time.Date(2026, 12, 4, 19, 40, 0, 0, time.UTC), Command: "go run ./bench", Commit: "abc1234",
		IPv6: &IPv6Bench{DurationSec: 5, Repetitions: 3, PingCount: 200, Backends: []*IPv6Run{{Name: "host-gw",
			IPv4: &PathResult{TCP1: Series{MedianGbps: 20}}, IPv6: &PathResult{TCP1: Series{MedianGbps: 14}}, TCPRatio: 0.7}}}}
	data, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	in, out := filepath.Join(dir, "results.json"), filepath.Join(dir, "performance.md")
	if err := os.WriteFile(in, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	if rc := run([]string{"--render", in, "--out", out, "--json", ""}, &stderr); rc != 0 {
		t.Fatalf("run = %d: %s", rc, stderr.String())
	}
	md, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"commit `abc1234`", "| ipv6 | host-gw IPv6 pod → pod single stream ≥ 90% of IPv4 | 70% (14.00 vs 20.00 Gbit/s) | NOT met | IPv4 runs with BIG TCP"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if rc := run([]string{"--render", filepath.Join(dir, "missing.json"), "--out", out}, &stderr); rc != 1 {
		t.Errorf("a missing results file: run = %d, want 1", rc)
	}
}
