package main

import (
	"io"
	"net/netip"
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
			if c.quick || !c.profiles || c.iperfDuration != 5*time.Second || c.cniPods != 100 || len(c.peerCounts) != 2 || c.convSamples != 100 {
				t.Errorf("full mode: %+v", c)
			}
			if len(c.areas) != 3 || !c.wantBackend("udp") {
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
	own := netip.MustParsePrefix("10.1.5.0/24")
	ps := fakePeers(0, 5000, own)
	subnets, pubs, macs := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, p := range ps {
		if p.sn.Overlaps(own) {
			t.Fatalf("fake peer %s overlaps own subnet", p.sn)
		}
		subnets[p.sn.String()], pubs[p.pub.String()], macs[p.mac.String()] = true, true, true
		if b := p.pub.As4(); b[0] != 198 || b[1] != 18 || b[2] < 80 || b[2] > 99 {
			t.Fatalf("PublicIP %s outside 198.18.80-99.x", p.pub)
		}
	}
	if len(subnets) != 5000 || len(pubs) != 5000 || len(macs) != 5000 {
		t.Errorf("distinct subnets/IPs/MACs = %d/%d/%d, want 5000 each", len(subnets), len(pubs), len(macs))
	}
	v, err := ps[0].value()
	if err != nil || v == "" {
		t.Fatalf("value: %q, %v", v, err)
	}
}
