package udp

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/internal/nstest"
	"github.com/weftnet/weft/internal/packettest"
	"github.com/weftnet/weft/subnet"
)

// Underlay third octets of the IPv6 tests (of this package's 60-79).
const (
	baseIPv6     = 65
	baseIPv6Only = 66
)

// TestTunnelIPv6: in a dual-stack network over an IPv4 underlay, IPv6 pods
// reach each other through weft-udp (the route of the IPv6 network, ICMPv6
// errors, TCP with TSO and GRO, no checksum errors), and the receive path
// checks the inner IPv6 source as it does IPv4's: a peer may send only from
// its own IPv6 subnet.
func TestTunnelIPv6(t *testing.T) {
	nodes := labOf(t, baseIPv6, "", true, dualStack)
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
		a.stack = ipv4Only
		a.lease.IPv6Subnet = netip.Prefix{}
		a.start(t, "", b.lease)
		if out := a.ns.MustRun(t, "ip", "-6", "route", "show", "dev", DeviceName, "proto", "87"); strings.TrimSpace(out) != "" {
			t.Fatalf("weft's IPv6 routes on %s after the change:\n%s", DeviceName, out)
		}
		ping(t, a.pod, "10.244.2.2")
	})
}

// TestTunnelIPv6Only: in an IPv6-only network the tunnel runs over the
// IPv6 underlay (the nodes have no IPv4 address at all): pods reach each
// other, the device gets the IPv6 MTU, TCP uses TSO, UDP GSO and GRO over
// IPv6 datagrams without checksum errors, and the receive path keeps its
// checks for IPv6 underlay sources: datagrams only from a peer's
// PublicIPv6 and tunnel port, inner sources only from its IPv6 subnet, no
// IPv4 inside. A Flannel udp lease (IPv4 only) is refused with a reason
// naming it.
func TestTunnelIPv6Only(t *testing.T) {
	nodes := labOf(t, baseIPv6Only, "", true, ipv6Only)
	a, b := nodes[0], nodes[1]

	t.Run("ping", func(t *testing.T) {
		ping(t, a.pod, "fd00:10:244:2::2")
		ping(t, b.pod, "fd00:10:244:1::2")
		ping(t, a.ns, "fd00:10:244:2::2") // node-originated, from <subnet6>::
	})

	t.Run("device, route and socket are IPv6 only", func(t *testing.T) {
		if got, want := a.b.MTU(), 1500-Overhead6; got != want {
			t.Fatalf("MTU %d, want %d (underlay 1500 − %d)", got, want, Overhead6)
		}
		if out := a.ns.MustRun(t, "ip", "link", "show", DeviceName); !strings.Contains(out, "mtu 1452 ") {
			t.Fatalf("%s:\n%s", DeviceName, out)
		}
		want := "fd00:10:244::/56 proto 87 src fd00:10:244:1:: metric 1024"
		if out := a.ns.MustRun(t, "ip", "-6", "route", "show", "dev", DeviceName); !strings.Contains(out, want) {
			t.Fatalf("IPv6 routes of %s:\n%s\nwant %q", DeviceName, out, want)
		}
		if out := a.ns.MustRun(t, "ip", "-4", "addr", "show", "dev", DeviceName); strings.Contains(out, "inet ") {
			t.Fatalf("IPv4 addresses on %s in an IPv6-only network:\n%s", DeviceName, out)
		}
		if out := a.ns.MustRun(t, "ss", "-Hlun", "sport", "=", ":8285"); !strings.Contains(out, "["+a.ip.String()+"]:8285") {
			t.Fatalf("tunnel sockets:\n%s\nwant them bound to [%s]:8285", out, a.ip)
		}
		if ps := a.b.Peers(); len(ps) != 1 || ps[0].State != backend.PeerProgrammed || ps[0].PublicIPv6 != b.ip {
			t.Fatalf("peers %+v", ps)
		}
	})

	t.Run("TCP with offloads", func(t *testing.T) {
		before := b.b.Stats()
		csum := udp6CsumErrors(t, b.ns)
		bps := iperf(t, b.pod, a.pod, "fd00:10:244:2::2")
		s, rs := a.b.Stats(), b.b.Stats()
		t.Logf("IPv6-only pod to pod %.2f Gbit/s; sender GSO sends %d, tso %v; receiver GRO merged %d, drops %v",
			bps/1e9, s.GSOSends, s.TSO, rs.GROMerged-before.GROMerged, rs.Drops)
		if bps <= 0 {
			t.Fatal("no TCP throughput")
		}
		if s.TSO && s.GSO && s.GSOSends == 0 {
			t.Fatal("TSO and GSO are on, but no super-packet went out as a GSO send over IPv6")
		}
		if rs.GRO && rs.GROMerged == before.GROMerged {
			t.Fatal("GRO is on, but no segments from IPv6 datagrams were coalesced")
		}
		if n := tcpInCsumErrors(t, b.pod); n != 0 {
			t.Fatalf("receiving pod counted %d TCP checksum errors", n)
		}
		if n := udp6CsumErrors(t, b.ns); n != csum {
			t.Fatalf("receiving node counted %d UDP/IPv6 checksum errors", n-csum)
		}
	})

	recv := listen(t, b.pod, "udp6", "[fd00:10:244:2::2]:9999")
	target := netip.AddrPortFrom(b.ip, DefaultPort).String()
	peerPort := netip.AddrPortFrom(a.ip, DefaultPort).String() // a's tunnel socket
	inner := func(src string, payload string) []byte {
		return packettest.IPv6UDP(netip.MustParseAddr(src), netip.MustParseAddr("fd00:10:244:2::2"), 4000, 9999, []byte(payload))
	}
	t.Run("datagram from the peer is delivered", func(t *testing.T) {
		sendFrom(t, a.ns, peerPort, target, inner("fd00:10:244:1::2", "legit"))
		if got := recv(); got != "legit" {
			t.Fatalf("pod got %q, want the peer's datagram", got)
		}
	})
	drop := func(t *testing.T, reason string, send func()) {
		t.Helper()
		before := b.b.Stats().Drops[reason]
		send()
		waitFor(t, reason+" drop", 5*time.Second, func() bool { return b.b.Stats().Drops[reason] > before })
		if got := recv(); got != "" {
			t.Fatalf("pod received %q", got)
		}
	}
	for _, tc := range []struct{ name, src string }{
		{"another subnet of the network", "fd00:10:244:5::5"},
		{"outside the network", "2001:db8::5"},
		{"the receiver's own subnet", "fd00:10:244:2::9"},
		{"another node's underlay address", b.ip.String()},
	} {
		t.Run("inner source in "+tc.name+" is dropped", func(t *testing.T) {
			drop(t, "spoofed_source", func() { sendFrom(t, a.ns, peerPort, target, inner(tc.src, "spoof")) })
		})
	}
	t.Run("the peer's own PublicIPv6 as inner source is delivered", func(t *testing.T) {
		sendFrom(t, a.ns, peerPort, target, inner(a.ip.String(), "node"))
		if got := recv(); got != "node" {
			t.Fatalf("pod got %q, want the peer node's datagram", got)
		}
	})
	t.Run("IPv4 inside is dropped", func(t *testing.T) {
		drop(t, "bad_version", func() { sendFrom(t, a.ns, peerPort, target, innerUDP("10.244.1.2", "10.244.2.2", 9999, []byte("v4"))) })
	})
	t.Run("from the peer's address but another port is dropped", func(t *testing.T) {
		drop(t, "wrong_port", func() {
			sendFrom(t, a.ns, netip.AddrPortFrom(a.ip, 8284).String(), target, inner("fd00:10:244:1::2", "port"))
		})
	})
	t.Run("from an unknown node is dropped", func(t *testing.T) {
		attacker := nstest.New(t, "wevil")
		nstest.Link(t, attacker, "eth0", "2001:db8:ee::66/64", b.ns, "evil", "2001:db8:ee::67/64")
		attacker.MustRun(t, "ip", "-6", "route", "add", b.ip.String()+"/128", "via", "2001:db8:ee::67")
		drop(t, "unknown_peer", func() { sendFrom(t, attacker, "[2001:db8:ee::66]:8285", target, inner("fd00:10:244:1::2", "evil")) })
	})
	t.Run("a Flannel udp lease is refused with its reason", func(t *testing.T) {
		// Flannel's udp backend publishes PublicIP only and names no
		// backend type, whatever the network.
		flannel := subnet.Lease{IPv6Subnet: netip.MustParsePrefix("fd00:10:244:7::/64"),
			Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("198.18.66.17")}}
		if err := a.ns.Do(func(ns.NetNS) error { return a.b.Sync(context.Background(), []subnet.Lease{b.lease, flannel}) }); err != nil {
			t.Fatal(err)
		}
		var got *backend.PeerStatus
		for _, ps := range a.b.Peers() {
			if ps.IPv6Subnet == flannel.IPv6Subnet {
				got = &ps
			}
		}
		if got == nil || got.State != backend.PeerRefused || !strings.Contains(got.Reason, "no PublicIPv6") || !strings.Contains(got.Reason, "Flannel udp") {
			t.Fatalf("Flannel lease status %+v, want refused: no PublicIPv6, naming Flannel's udp", got)
		}
		ping(t, a.pod, "fd00:10:244:2::2")
		out, err := a.pod.Run("ping", "-c", "1", "-W", "2", "fd00:10:244:7::2")
		if err == nil || !strings.Contains(out, "Destination unreachable: No route") {
			t.Fatalf("to the refused Flannel node: want ICMPv6 no route, got %v: %s", err, out)
		}
	})
}

// udp6CsumErrors is Udp6InCsumErrors of n's /proc/net/snmp6.
func udp6CsumErrors(t *testing.T, n *nstest.NS) int {
	t.Helper()
	for _, line := range strings.Split(n.MustRun(t, "cat", "/proc/net/snmp6"), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "Udp6InCsumErrors" {
			v, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatal("no Udp6InCsumErrors in /proc/net/snmp6")
	return 0
}

// TestNewIPv6Only: an IPv6-only network runs over the IPv6 underlay, so a
// node needs an IPv6 address there; its pod MTU leaves room for the 48
// bytes of an IPv6 and UDP header, and a network with IPv6 refuses a pod
// MTU below IPv6's 1280.
func TestNewIPv6Only(t *testing.T) {
	v6only := `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"udp"}}`
	dual := `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"udp"}}`
	pub4, pub6 := netip.MustParseAddr("198.18.66.11"), netip.MustParseAddr("2001:db8:42::11")
	for _, tc := range []struct {
		name    string
		cfg     string
		ul      backend.Underlay
		mtu     int
		carrier backend.Family
		err     string
	}{
		{"IPv6-only", v6only, backend.Underlay{MTU: 1500, PublicIPv6: pub6}, 1452, backend.IPv6, ""},
		{"IPv6-only, local IPv6 behind a NAT", v6only, backend.Underlay{MTU: 1500, PublicIPv6: pub6, LocalIPv6: netip.MustParseAddr("fd00::11")}, 1452, backend.IPv6, ""},
		{"IPv6-only without an IPv6 underlay address", v6only, backend.Underlay{MTU: 1500, PublicIP: pub4}, 0, 0, "--public-ipv6"},
		{"IPv6-only, pod MTU below 1280", v6only, backend.Underlay{MTU: 1320, PublicIPv6: pub6}, 0, 0, "below IPv6's minimum of 1280"},
		{"dual stack stays on IPv4", dual, backend.Underlay{MTU: 1500, PublicIP: pub4, PublicIPv6: pub6}, 1472, backend.IPv4, ""},
		{"dual stack, pod MTU below 1280", dual, backend.Underlay{MTU: 1300, PublicIP: pub4}, 0, 0, "below IPv6's minimum of 1280"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := subnet.ParseConfig([]byte(tc.cfg))
			if err != nil {
				t.Fatal(err)
			}
			b, err := newBackend(backend.Options{Config: cfg, Underlay: tc.ul})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("New = %v, want an error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b.MTU() != tc.mtu || b.IPv6Carrier() != tc.carrier {
				t.Fatalf("MTU %d, IPv6Carrier %v; want %d, %v", b.MTU(), b.IPv6Carrier(), tc.mtu, tc.carrier)
			}
		})
	}
}
