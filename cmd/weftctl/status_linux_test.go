package main

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weftnet/weft/daemon"
	"github.com/weftnet/weft/internal/nstest"
)

// Underlay base octet of this package's kernel tests (100-109 are
// internal/diagnose's and weftctl's).
const baseProbe = 101

// TestProbeAndDeviceInNamespace runs the pieces of `status` that touch the
// host inside a node namespace: ping(8) started from the namespace thread
// probes a neighbour (reply with an RTT) and an absent address (no reply,
// bounded), and the device and local-address lookups read that namespace.
func TestProbeAndDeviceInNamespace(t *testing.T) {
	nodes, addrs := nstest.Underlay(t, 2, baseProbe)
	node0 := nodes[0]
	node0.MustRun(t, "ip", "link", "add", "wtest0", "type", "bridge")
	node0.MustRun(t, "ip", "addr", "add", "10.244.1.0/32", "dev", "wtest0")
	peer := netip.MustParseAddr(addrs[1])
	absent := netip.MustParseAddr("198.18.101.99")

	err := node0.Do(func(ns.NetNS) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rtt, err := pingOnce(ctx, peer, time.Second)
		if err != nil || rtt <= 0 {
			t.Errorf("ping %s: rtt %s, err %v; want a reply", peer, rtt, err)
		}
		start := time.Now()
		if _, err := pingOnce(ctx, absent, time.Second); err == nil || !strings.Contains(err.Error(), "no reply") {
			t.Errorf("ping %s: err %v, want no reply", absent, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("a lost probe took %s", d)
		}

		own := netip.MustParseAddr(addrs[0])
		if !isLocalAddr(own) || isLocalAddr(peer) {
			t.Errorf("isLocalAddr(%s)=%v isLocalAddr(%s)=%v", own, isLocalAddr(own), peer, isLocalAddr(peer))
		}
		st := daemon.Status{Subnet: netip.MustParsePrefix("10.244.1.0/24"), PublicIP: own}
		if d := findDevice(st); d != "wtest0" {
			t.Errorf("device holding <subnet>.0 = %q, want wtest0", d)
		}
		st.Subnet = netip.MustParsePrefix("10.244.2.0/24") // host-gw: no device holds .0
		if d := findDevice(st); d != "eth0" {
			t.Errorf("device holding PublicIP = %q, want eth0", d)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
