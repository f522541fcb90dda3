package backend

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/subnet"
)

func mustConfig(t *testing.T, js string) *subnet.Config {
	t.Helper()
	c, err := subnet.ParseConfig([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCheckPeer is every rule of CheckPeer, for both families.
func TestCheckPeer(t *testing.T) {
	vx := mustConfig(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`)
	udp := mustConfig(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}`)
	dual := mustConfig(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"vxlan"}}`)
	v6only := mustConfig(t, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"vxlan"}}`)
	dualUDP := mustConfig(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"udp"}}`)
	v6onlyUDP := mustConfig(t, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"udp"}}`)
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	own := subnet.Lease{Subnet: p("10.244.1.0/24"), IPv6Subnet: p("fd10:0:0:1::/64")}
	node := func(c *subnet.Config) PeerNode {
		n := PeerNode{Config: c, Own: own, PublicIP: a("198.18.0.10"), PublicIPv6: a("2001:db8::10"),
			Connected: []netip.Prefix{p("198.18.0.0/24"), p("192.0.2.7/32")}}
		if !c.EnableIPv6 {
			n.Own.IPv6Subnet = netip.Prefix{}
		}
		return n
	}
	// lease is a good vxlan peer on 10.244.2.0/24 (and fd10:0:0:2::/64 for
	// the IPv6 cases), changed by edit.
	lease := func(edit func(*subnet.Lease)) subnet.Lease {
		l := subnet.Lease{Subnet: p("10.244.2.0/24"), IPv6Subnet: p("fd10:0:0:2::/64"), Attrs: subnet.LeaseAttrs{
			PublicIP: a("198.18.0.11"), PublicIPv6: a("2001:db8::11"), BackendType: "vxlan"}}
		if edit != nil {
			edit(&l)
		}
		return l
	}
	v4only := func(edit func(*subnet.Lease)) subnet.Lease {
		return lease(func(l *subnet.Lease) {
			l.IPv6Subnet, l.Attrs.PublicIPv6 = netip.Prefix{}, netip.Addr{}
			if edit != nil {
				edit(l)
			}
		})
	}
	pub := func(ip string) func(*subnet.Lease) {
		return func(l *subnet.Lease) { l.Attrs.PublicIP = a(ip) }
	}
	pub6 := func(ip string) func(*subnet.Lease) {
		return func(l *subnet.Lease) { l.Attrs.PublicIPv6 = a(ip) }
	}
	sn := func(s string) func(*subnet.Lease) {
		return func(l *subnet.Lease) { l.Subnet = p(s) }
	}
	sn6 := func(s string) func(*subnet.Lease) {
		return func(l *subnet.Lease) { l.IPv6Subnet = p(s) }
	}

	for _, tc := range []struct {
		name   string
		node   PeerNode
		lease  subnet.Lease
		own    bool
		v4, v6 string // "" usable, "-" family not enabled, else a part of the reason
	}{
		{name: "good", node: node(vx), lease: v4only(nil), v6: "-"},
		{name: "own lease", node: node(vx), lease: v4only(sn("10.244.1.0/24")), own: true},
		{name: "no config", node: PeerNode{}, lease: v4only(nil), v4: "no network config", v6: "-"},

		// Backend type.
		{name: "other backend", node: node(vx), lease: v4only(func(l *subnet.Lease) { l.Attrs.BackendType = "host-gw" }),
			v4: `backend "host-gw", this network uses "vxlan"`, v6: "-"},
		{name: "no backend type in a vxlan network", node: node(vx), lease: v4only(func(l *subnet.Lease) { l.Attrs.BackendType = "" }),
			v4: "lease names no backend", v6: "-"},
		{name: "Flannel udp lease (no backend type)", node: node(udp), lease: v4only(func(l *subnet.Lease) { l.Attrs.BackendType = "" }), v6: "-"},
		{name: "udp lease", node: node(udp), lease: v4only(func(l *subnet.Lease) { l.Attrs.BackendType = "udp" }), v6: "-"},
		{name: "expected type overrides the config", node: func() PeerNode { n := node(vx); n.BackendType = "udp"; return n }(),
			lease: v4only(nil), v4: `this network uses "udp"`, v6: "-"},

		// Subnet.
		{name: "no subnet", node: node(vx), lease: v4only(func(l *subnet.Lease) { l.Subnet = netip.Prefix{} }), v4: "no IPv4 subnet", v6: "-"},
		{name: "IPv6 subnet in the IPv4 slot", node: node(vx), lease: v4only(sn("fd10::/24")), v4: "not an IPv4 prefix", v6: "-"},
		{name: "host bits", node: node(vx), lease: v4only(sn("10.244.2.7/24")), v4: "host bits", v6: "-"},
		{name: "outside the network", node: node(vx), lease: v4only(sn("10.245.0.0/24")), v4: "outside the network 10.244.0.0/16", v6: "-"},
		{name: "wider than the network", node: node(vx), lease: v4only(sn("10.0.0.0/8")), v4: "outside the network", v6: "-"},
		{name: "longer than SubnetLen", node: node(vx), lease: v4only(sn("10.244.2.128/25")), v4: "subnet length /25, this network hands out /24", v6: "-"},
		{name: "shorter than SubnetLen", node: node(vx), lease: v4only(sn("10.244.0.0/23")), v4: "subnet length /23", v6: "-"},
		{name: "next to own in a /25 network", node: func() PeerNode {
			n := node(mustConfig(t, `{"Network":"10.244.0.0/16","SubnetLen":25,"Backend":{"Type":"vxlan"}}`))
			n.Own.Subnet = p("10.244.1.0/25")
			return n
		}(), lease: v4only(sn("10.244.1.128/25")), v4: "", v6: "-"},
		{name: "overlaps own (own of another length)", node: func() PeerNode { n := node(vx); n.Own.Subnet = p("10.244.0.0/23"); return n }(),
			lease: v4only(sn("10.244.1.0/24")), v4: "overlaps this node's subnet 10.244.0.0/23", v6: "-"},

		// PublicIP.
		{name: "no PublicIP", node: node(vx), lease: v4only(func(l *subnet.Lease) { l.Attrs.PublicIP = netip.Addr{} }), v4: "no PublicIP", v6: "-"},
		{name: "IPv6 PublicIP", node: node(vx), lease: v4only(pub("2001:db8::9")), v4: "not an IPv4 address", v6: "-"},
		{name: "mapped PublicIP is IPv4", node: node(vx), lease: v4only(pub("::ffff:198.18.0.11")), v6: "-"},
		{name: "unspecified", node: node(vx), lease: v4only(pub("0.0.0.0")), v4: "0.0.0.0 is unspecified", v6: "-"},
		{name: "this network", node: node(vx), lease: v4only(pub("0.1.2.3")), v4: "unspecified", v6: "-"},
		{name: "loopback", node: node(vx), lease: v4only(pub("127.0.0.1")), v4: "127.0.0.1 is loopback", v6: "-"},
		{name: "loopback /8", node: node(vx), lease: v4only(pub("127.3.2.1")), v4: "loopback", v6: "-"},
		{name: "multicast", node: node(vx), lease: v4only(pub("224.0.0.1")), v4: "224.0.0.1 is multicast", v6: "-"},
		{name: "multicast (admin scope)", node: node(vx), lease: v4only(pub("239.1.1.1")), v4: "multicast", v6: "-"},
		{name: "limited broadcast", node: node(vx), lease: v4only(pub("255.255.255.255")), v4: "is the broadcast address", v6: "-"},
		{name: "directed broadcast", node: node(vx), lease: v4only(pub("198.18.0.255")), v4: "broadcast address of the underlay subnet 198.18.0.0/24", v6: "-"},
		{name: "a /32 connected prefix has no broadcast", node: node(vx), lease: v4only(pub("192.0.2.7")), v6: "-"},
		{name: "directed broadcast unknown", node: func() PeerNode { n := node(vx); n.Connected = nil; return n }(), lease: v4only(pub("198.18.0.255")), v6: "-"},
		{name: "link-local", node: node(vx), lease: v4only(pub("169.254.169.254")), v4: "169.254.169.254 is link-local", v6: "-"},
		{name: "inside the pod network", node: node(vx), lease: v4only(pub("10.244.3.4")), v4: "10.244.3.4 is inside the pod network", v6: "-"},
		{name: "this node's own", node: node(vx), lease: v4only(pub("198.18.0.10")), v4: "198.18.0.10 is this node's own", v6: "-"},
		{name: "public unicast", node: node(vx), lease: v4only(pub("203.0.113.5")), v6: "-"},

		// IPv6: the same rules on the IPv6 half.
		{name: "dual: good", node: node(dual), lease: lease(nil)},
		{name: "dual: v4-only lease", node: node(dual), lease: v4only(nil), v6: "no IPv6 subnet"},
		{name: "dual: backend wrong in both", node: node(dual), lease: lease(func(l *subnet.Lease) { l.Attrs.BackendType = "udp" }),
			v4: `backend "udp"`, v6: `backend "udp"`},
		{name: "dual: IPv4 subnet in the IPv6 slot", node: node(dual), lease: lease(sn6("10.244.9.0/24")), v6: "not an IPv6 prefix"},
		{name: "dual: v6 outside", node: node(dual), lease: lease(sn6("fd11:0:0:2::/64")), v6: "outside the network fd10::/56"},
		{name: "dual: v6 length", node: node(dual), lease: lease(sn6("fd10:0:0:2::/80")), v6: "subnet length /80, this network hands out /64"},
		{name: "dual: v6 host bits", node: node(dual), lease: lease(sn6("fd10:0:0:2::1/64")), v6: "host bits"},
		{name: "dual: no PublicIPv6", node: node(dual), lease: lease(func(l *subnet.Lease) { l.Attrs.PublicIPv6 = netip.Addr{} }), v6: "no PublicIPv6"},
		{name: "dual: mapped PublicIPv6", node: node(dual), lease: lease(pub6("::ffff:198.18.0.11")), v6: "not an IPv6 address"},
		{name: "dual: v6 unspecified", node: node(dual), lease: lease(pub6("::")), v6: ":: is unspecified"},
		{name: "dual: v6 loopback", node: node(dual), lease: lease(pub6("::1")), v6: "loopback"},
		{name: "dual: v6 multicast", node: node(dual), lease: lease(pub6("ff02::1")), v6: "multicast"},
		{name: "dual: v6 link-local", node: node(dual), lease: lease(pub6("fe80::1")), v6: "link-local"},
		{name: "dual: v6 in the pod network", node: node(dual), lease: lease(pub6("fd10:0:0:9::1")), v6: "inside the pod network"},
		{name: "dual: v6 own", node: node(dual), lease: lease(pub6("2001:db8::10")), v6: "this node's own"},
		{name: "dual: own key", node: node(dual), lease: lease(func(l *subnet.Lease) { l.Subnet, l.IPv6Subnet = own.Subnet, own.IPv6Subnet }), own: true},
		{name: "dual: v6 overlaps own", node: node(dual), lease: lease(sn6("fd10:0:0:1::/64")), v6: "overlaps this node's subnet"},
		{name: "v6-only: good", node: node(v6only), lease: lease(func(l *subnet.Lease) { l.Subnet, l.Attrs.PublicIP = netip.Prefix{}, netip.Addr{} }), v4: "-"},
		{name: "v6-only: no PublicIPv6", node: node(v6only), lease: lease(func(l *subnet.Lease) { l.Subnet, l.Attrs.PublicIPv6 = netip.Prefix{}, netip.Addr{} }),
			v4: "-", v6: "no PublicIPv6"},
		{name: "dual: this node has no PublicIPv6", node: func() PeerNode { n := node(dual); n.PublicIPv6 = netip.Addr{}; return n }(),
			lease: lease(nil), v6: "this node has no PublicIPv6 to reach IPv6 peers over; give weftd --public-ipv6"},
		{name: "this node has no PublicIP", node: func() PeerNode { n := node(vx); n.PublicIP = netip.Addr{}; return n }(),
			lease: v4only(nil), v4: "this node has no PublicIP to reach IPv4 peers over; give weftd --public-ip", v6: "-"},
		{name: "dual: v6 subnet-router anycast", node: func() PeerNode {
			n := node(dual)
			n.Connected = append(n.Connected, p("2001:db8::/64"))
			return n
		}(), lease: lease(pub6("2001:db8::")), v6: "2001:db8:: is the subnet-router anycast address of the underlay subnet 2001:db8::/64"},
		{name: "dual: v6 anycast of a /127 is a host", node: func() PeerNode {
			n := node(dual)
			n.Connected = append(n.Connected, p("2001:db8:1::/127"))
			return n
		}(), lease: lease(pub6("2001:db8:1::"))},
		{name: "dual: v6 address of another subnet's zero ID", node: func() PeerNode {
			n := node(dual)
			n.Connected = append(n.Connected, p("2001:db8::/64"))
			return n
		}(), lease: lease(pub6("2001:db8:5::"))},

		// IPv6 carried over the IPv4 underlay (udp): the IPv6 subnet is
		// reached at PublicIP, and the underlay rules apply to it.
		{name: "v6 over v4: good without PublicIPv6", node: func() PeerNode { n := node(dualUDP); n.IPv6Carrier = IPv4; n.PublicIPv6 = netip.Addr{}; return n }(),
			lease: lease(func(l *subnet.Lease) { l.Attrs.BackendType, l.Attrs.PublicIPv6 = "udp", netip.Addr{} })},
		{name: "v6 over v4: bad PublicIP refuses both", node: func() PeerNode { n := node(dualUDP); n.IPv6Carrier = IPv4; return n }(),
			lease: lease(func(l *subnet.Lease) { l.Attrs.BackendType, l.Attrs.PublicIP = "udp", a("127.0.0.1") }), v4: "PublicIP 127.0.0.1 is loopback", v6: "PublicIP 127.0.0.1 is loopback"},
		{name: "v6 over v4: a bad PublicIPv6 does not matter", node: func() PeerNode { n := node(dualUDP); n.IPv6Carrier = IPv4; return n }(),
			lease: lease(func(l *subnet.Lease) { l.Attrs.BackendType, l.Attrs.PublicIPv6 = "udp", a("::1") })},
		{name: "v6 over v4: PublicIP inside the IPv4 network", node: func() PeerNode { n := node(dualUDP); n.IPv6Carrier = IPv4; return n }(),
			lease: lease(func(l *subnet.Lease) { l.Attrs.BackendType = "udp"; l.Attrs.PublicIP = a("10.244.9.9") }), v4: "inside the pod network", v6: "PublicIP 10.244.9.9 is inside the pod network"},
		{name: "v6-only over v4: reached at PublicIP", node: func() PeerNode {
			n := node(v6onlyUDP)
			n.IPv6Carrier = IPv4
			return n
		}(), lease: lease(func(l *subnet.Lease) {
			l.Subnet, l.Attrs.PublicIPv6, l.Attrs.BackendType = netip.Prefix{}, netip.Addr{}, "udp"
		}), v4: "-"},
		// Flannel's udp lease (no backend type: IPv4 only) in networks
		// with IPv6: the reason names Flannel.
		{name: "dual udp: Flannel udp lease is an IPv4 peer only", node: func() PeerNode { n := node(dualUDP); n.IPv6Carrier = IPv4; return n }(),
			lease: v4only(func(l *subnet.Lease) { l.Attrs.BackendType = "" }), v6: "lease has no IPv6 subnet (a Flannel udp node carries IPv4 pods only"},
		{name: "v6-only udp: Flannel udp lease without PublicIPv6", node: node(v6onlyUDP),
			lease: lease(func(l *subnet.Lease) {
				l.Subnet, l.Attrs.BackendType, l.Attrs.PublicIPv6 = netip.Prefix{}, "", netip.Addr{}
			}),
			v4: "-", v6: "no PublicIPv6 (a Flannel udp node carries IPv4 pods only"},
		{name: "v6-only udp: Flannel udp lease with only an IPv4 subnet", node: node(v6onlyUDP),
			lease: v4only(func(l *subnet.Lease) { l.Attrs.BackendType = "" }), v4: "-", v6: "lease has no IPv6 subnet (a Flannel udp node"},
		{name: "v6-only udp: over IPv6, good", node: node(v6onlyUDP),
			lease: lease(func(l *subnet.Lease) {
				l.Subnet, l.Attrs.BackendType, l.Attrs.PublicIP = netip.Prefix{}, "udp", netip.Addr{}
			}), v4: "-"},
		{name: "v6-only over v4: no PublicIP", node: func() PeerNode {
			n := node(v6onlyUDP)
			n.IPv6Carrier = IPv4
			return n
		}(), lease: lease(func(l *subnet.Lease) {
			l.Subnet, l.Attrs.PublicIP, l.Attrs.BackendType = netip.Prefix{}, netip.Addr{}, "udp"
		}), v4: "-", v6: "no PublicIP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := CheckPeer(tc.node, tc.lease)
			if v.Own != tc.own {
				t.Fatalf("Own = %v, want %v (%+v)", v.Own, tc.own, v)
			}
			if tc.own {
				if v.Usable() || v.Reason() != "" {
					t.Fatalf("own lease: Usable %v Reason %q, want neither", v.Usable(), v.Reason())
				}
				return
			}
			for _, f := range []struct {
				fam  Family
				want string
			}{{IPv4, tc.v4}, {IPv6, tc.v6}} {
				fv := v.Family(f.fam)
				switch f.want {
				case "-":
					if fv.Enabled || fv.Usable || fv.Reason != "" {
						t.Errorf("%s: %+v, want not enabled", f.fam, fv)
					}
				case "":
					if !fv.Enabled || !fv.Usable || fv.Reason != "" {
						t.Errorf("%s: %+v, want usable", f.fam, fv)
					}
				default:
					if !fv.Enabled || fv.Usable || !strings.Contains(fv.Reason, f.want) {
						t.Errorf("%s: %+v, want refused with a reason containing %q", f.fam, fv, f.want)
					}
				}
			}
			usable := tc.v4 == "" || tc.v6 == ""
			if v.Usable() != usable || (v.Reason() == "") != usable {
				t.Errorf("Usable() = %v, Reason() = %q; want usable %v", v.Usable(), v.Reason(), usable)
			}
		})
	}
}

func TestPeerVerdictReason(t *testing.T) {
	for _, tc := range []struct {
		v    PeerVerdict
		want string
	}{
		{PeerVerdict{V4: FamilyVerdict{Enabled: true, Reason: "x"}}, "x"},
		{PeerVerdict{V6: FamilyVerdict{Enabled: true, Reason: "y"}}, "y"},
		{PeerVerdict{V4: FamilyVerdict{Enabled: true, Reason: "x"}, V6: FamilyVerdict{Enabled: true, Reason: "x"}}, "x"},
		{PeerVerdict{V4: FamilyVerdict{Enabled: true, Reason: "x"}, V6: FamilyVerdict{Enabled: true, Reason: "y"}}, "IPv4: x; IPv6: y"},
		{PeerVerdict{V4: FamilyVerdict{Enabled: true, Usable: true}, V6: FamilyVerdict{Enabled: true, Reason: "y"}}, ""},
		{PeerVerdict{}, "the network enables no address family"},
	} {
		if got := tc.v.Reason(); got != tc.want {
			t.Errorf("%+v: Reason() = %q, want %q", tc.v, got, tc.want)
		}
	}
}
