package udp

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/internal/nstest"
	"github.com/weftnet/weft/internal/packettest"
	"github.com/weftnet/weft/subnet"
)

// Underlay third octet of the IPv6 tests (of this package's 60-79).
const baseIPv6 = 65

// TestTunnelIPv6: in a dual-stack network over an IPv4 underlay, IPv6 pods
// reach each other through weft-udp (the route of the IPv6 network, ICMPv6
// errors, TCP with TSO and GRO, no checksum errors), and the receive path
// checks the inner IPv6 source as it does IPv4's: a peer may send only from
// its own IPv6 subnet.
func TestTunnelIPv6(t *testing.T) {
	nodes := labOf(t, baseIPv6, "", true, true)
	a, b := nodes[0], nodes[1]

	t.Run("ping both families", func(t *testing.T) {
		ping(t, a.pod, "fd00:10:244:2::2")
		ping(t, b.pod, "fd00:10:244:1::2")
		ping(t, a.ns, "fd00:10:244:2::2") // node-originated, from <subnet6>::
		ping(t, a.pod, "10.244.2.2")
	})

	t.Run("IPv6 network route is weft's, via weft-udp", func(t *testing.T) {
		want := "fd00:10:244::/56 proto 87 src fd00:10:244:1:: metric 1024"
		if out := a.ns.MustRun(t, "ip", "-6", "route", "show", "dev", DeviceName); !strings.Contains(out, want) {
			t.Fatalf("IPv6 routes of %s:\n%s\nwant %q", DeviceName, out, want)
		}
		if out := a.ns.MustRun(t, "ip", "-6", "addr", "show", "dev", DeviceName); !strings.Contains(out, "fd00:10:244:1::/128") {
			t.Fatalf("addresses of %s:\n%s", DeviceName, out)
		}
		// Configure again (a restart, a full pass): nothing changes.
		if err := a.ns.Do(func(ns.NetNS) error { return a.b.Configure(context.Background(), a.lease) }); err != nil {
			t.Fatal(err)
		}
		if out := a.ns.MustRun(t, "ip", "-6", "route", "show", "dev", DeviceName); strings.Count(out, "fd00:10:244::/56") != 1 {
			t.Fatalf("after a second Configure:\n%s", out)
		}
	})

	t.Run("no peer gets ICMPv6 no route", func(t *testing.T) {
		out, err := a.pod.Run("ping", "-c", "1", "-W", "2", "fd00:10:244:9::2")
		if err == nil || !strings.Contains(out, "Destination unreachable: No route") {
			t.Fatalf("want ICMPv6 destination unreachable (no route), got %v: %s", err, out)
		}
	})

	t.Run("TCP with offloads", func(t *testing.T) {
		before := b.b.Stats()
		bps := iperf(t, b.pod, a.pod, "fd00:10:244:2::2")
		s, rs := a.b.Stats(), b.b.Stats()
		t.Logf("IPv6 pod to pod %.2f Gbit/s; sender GSO sends %d, tso %v; receiver GRO merged %d, drops %v",
			bps/1e9, s.GSOSends, s.TSO, rs.GROMerged-before.GROMerged, rs.Drops)
		if bps <= 0 {
			t.Fatal("no IPv6 TCP throughput")
		}
		if s.TSO && s.GSO && s.GSOSends == 0 {
			t.Fatal("TSO and GSO are on, but no IPv6 super-packet went out as a GSO send")
		}
		if rs.GRO && rs.GROMerged == before.GROMerged {
			t.Fatal("GRO is on, but no IPv6 segments were coalesced")
		}
		if n := tcpInCsumErrors(t, b.pod); n != 0 {
			t.Fatalf("receiving pod counted %d TCP checksum errors", n)
		}
	})

	// A listener in b's pod, to see which crafted datagrams get through.
	recv := listen(t, b.pod, "udp6", "[fd00:10:244:2::2]:9999")
	target := netip.AddrPortFrom(b.ip, DefaultPort).String()
	peerPort := netip.AddrPortFrom(a.ip, DefaultPort).String() // a's tunnel socket
	inner := func(src string, payload string) []byte {
		return packettest.IPv6UDP(netip.MustParseAddr(src), netip.MustParseAddr("fd00:10:244:2::2"), 4000, 9999, []byte(payload))
	}
	t.Run("IPv6 datagram from a peer is delivered", func(t *testing.T) {
		sendFrom(t, a.ns, peerPort, target, inner("fd00:10:244:1::2", "legit"))
		if got := recv(); got != "legit" {
			t.Fatalf("pod got %q, want the peer's datagram", got)
		}
	})
	for _, tc := range []struct{ name, src string }{
		{"another subnet of the network", "fd00:10:244:5::5"},
		{"outside the network", "2001:db8::5"},
		{"the receiver's own subnet", "fd00:10:244:2::9"},
	} {
		t.Run("inner IPv6 source in "+tc.name+" is dropped", func(t *testing.T) {
			before := b.b.Stats().Drops["spoofed_source"]
			sendFrom(t, a.ns, peerPort, target, inner(tc.src, "spoof"))
			waitFor(t, "spoofed_source drop", 5*time.Second, func() bool { return b.b.Stats().Drops["spoofed_source"] > before })
			if got := recv(); got != "" {
				t.Fatalf("pod received %q with a spoofed inner source", got)
			}
		})
	}
	t.Run("IPv6 datagram from an unknown node is dropped", func(t *testing.T) {
		attacker := nstest.New(t, "wevil")
		nstest.Link(t, attacker, "eth0", "198.18.65.66/24", b.ns, "evil", "")
		b.ns.MustRun(t, "ip", "addr", "add", "198.18.65.67/32", "dev", "evil")
		b.ns.MustRun(t, "ip", "route", "add", "198.18.65.66/32", "dev", "evil")
		before := b.b.Stats().Drops["unknown_peer"]
		sendFrom(t, attacker, ":8285", target, inner("fd00:10:244:1::2", "evil"))
		waitFor(t, "unknown_peer drop", 5*time.Second, func() bool { return b.b.Stats().Drops["unknown_peer"] > before })
		if got := recv(); got != "" {
			t.Fatalf("pod received %q from a non-peer", got)
		}
	})
	t.Run("peer status names the IPv6 subnet", func(t *testing.T) {
		ps := a.b.Peers()
		if len(ps) != 1 || ps[0].State != backend.PeerProgrammed || ps[0].IPv6Subnet != b.lease.IPv6Subnet {
			t.Fatalf("peers %+v", ps)
		}
	})
	t.Run("IPv6 route goes when the network drops IPv6", func(t *testing.T) {
		a.halt()
		a.dual = false
		a.lease.IPv6Subnet = netip.Prefix{}
		a.start(t, "", b.lease)
		if out := a.ns.MustRun(t, "ip", "-6", "route", "show", "dev", DeviceName, "proto", "87"); strings.TrimSpace(out) != "" {
			t.Fatalf("weft's IPv6 routes on %s after the change:\n%s", DeviceName, out)
		}
		ping(t, a.pod, "10.244.2.2")
	})
}

// TestRefusesIPv6Only: an IPv6-only network has no IPv4 underlay address
// in its leases, which udp's datagrams need: New says so and what to do.
func TestRefusesIPv6Only(t *testing.T) {
	cfg, err := subnet.ParseConfig([]byte(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"udp"}}`))
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(backend.Options{Config: cfg, Underlay: backend.Underlay{MTU: 1500, PublicIPv6: netip.MustParseAddr("fd00:198:19::11")}})
	if err == nil || !strings.Contains(err.Error(), "IPv6-only") || !strings.Contains(err.Error(), "vxlan or host-gw") {
		t.Fatalf("New = %v, want a refusal of the IPv6-only network naming the way out", err)
	}
}
