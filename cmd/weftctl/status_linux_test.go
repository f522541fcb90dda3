package main

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

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
	// IPv6 too: the device holds <IPv6 subnet>::, eth0 an IPv6 underlay
	// address (no DAD: usable at once), and the peer one to ping.
	node0.MustRun(t, "ip", "link", "set", "wtest0", "up")
	node0.MustRun(t, "ip", "addr", "add", "fd00:10:244:1::/128", "dev", "wtest0", "nodad")
	node0.MustRun(t, "ip", "addr", "add", "fd00:198:18::10/64", "dev", "eth0", "nodad")
	nodes[1].MustRun(t, "ip", "addr", "add", "fd00:198:18::11/64", "dev", "eth0", "nodad")
	own6, peer6 := netip.MustParseAddr("fd00:198:18::10"), netip.MustParseAddr("fd00:198:18::11")
	peer := netip.MustParseAddr(addrs[1])
	absent := netip.MustParseAddr("198.18.101.99")

	err := node0.Do(func(ns.NetNS) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, to := range []netip.Addr{peer, peer6} {
			rtt, err := pingOnce(ctx, to, time.Second)
			if err != nil || rtt <= 0 {
				t.Errorf("ping %s: rtt %s, err %v; want a reply", to, rtt, err)
			}
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
		for _, tt := range []struct {
			sn   string
			pub  netip.Addr
			want string
		}{
			{"10.244.1.0/24", own, "wtest0"},
			{"10.244.2.0/24", own, "eth0"}, // host-gw: no device holds .0
			{"fd00:10:244:1::/64", own6, "wtest0"},
			{"fd00:10:244:2::/64", own6, "eth0"},
			{"fd00:10:244:2::/64", netip.Addr{}, ""},
		} {
			if d := findDevice(netip.MustParsePrefix(tt.sn), tt.pub); d != tt.want {
				t.Errorf("findDevice(%s, %s) = %q, want %q", tt.sn, tt.pub, d, tt.want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
