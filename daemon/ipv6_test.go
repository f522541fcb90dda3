package daemon

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/daemon/masq"
	"github.com/weftnet/weft/daemon/masq/masqtest"
	"github.com/weftnet/weft/subnet"
)

// TestIPv6Networks runs two nodes on a dual-stack and on an IPv6-only
// network: each node's lease carries the addresses of the families the
// network enables (as Flannel's: "0.0.0.0" and PublicIPv6 for an IPv6-only
// node), its subnet file names each family's subnet and nothing of the
// others, the masquerade rules cover each family, /status names the IPv6
// side, and the peers (keyed by their IPv6 subnet when they have no IPv4
// one) see each other and drop each other when a lease goes.
func TestIPv6Networks(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		v4           bool
	}{
		{"dual-stack", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"alloc"}}`, true},
		{"ipv6-only", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"alloc"}}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newStore(t, tc.config)
			fake := &masqtest.Fake{}
			ip := func(s string) string {
				if tc.v4 {
					return s
				}
				return ""
			}
			a := startNodeOpts(t, nodeOpts{store: m, ip: ip("198.18.0.1"), ip6: "2001:db8::1", fake: fake})
			b := startNodeOpts(t, nodeOpts{store: m, ip: ip("198.18.0.2"), ip6: "2001:db8::2"})
			waitFor(t, "both nodes ready", func() bool { return a.ready() && b.ready() })

			leases, _, err := m.ListLeases(context.Background())
			if err != nil || len(leases) != 2 {
				t.Fatalf("leases %+v, %v", leases, err)
			}
			for _, l := range leases {
				if l.Subnet.IsValid() != tc.v4 || !l.IPv6Subnet.IsValid() || l.Attrs.PublicIP.IsValid() != tc.v4 || !l.Attrs.PublicIPv6.IsValid() {
					t.Errorf("lease %+v: want an IPv4 side %v and an IPv6 side", l, tc.v4)
				}
			}
			fa, fb := a.subnetFile(t), b.subnetFile(t)
			if fa.Subnet.IsValid() != tc.v4 || fa.Network.IsValid() != tc.v4 || fa.IPv6Network != netip.MustParsePrefix("fd10::/56") ||
				fa.IPv6Subnet.Addr() != fa.IPv6Subnet.Masked().Addr().Next() || fa.IPv6Subnet.Bits() != 64 {
				t.Errorf("subnet file %+v", fa)
			}
			rules, ok := fake.Rules()
			if !ok || rules.IPv6Subnet != fa.IPv6Subnet.Masked() || rules.Network.IsValid() != tc.v4 {
				t.Errorf("masquerade rules %+v", rules)
			}
			st := a.d.Status()
			if st.IPv6Subnet != fa.IPv6Subnet.Masked() || st.IPv6Network != fa.IPv6Network || st.PublicIPv6 != netip.MustParseAddr("2001:db8::1") || st.Network.IsValid() != tc.v4 {
				t.Errorf("status %+v", st)
			}
			bKey := fb.Subnet.Masked()
			if !tc.v4 {
				bKey = fb.IPv6Subnet.Masked()
			}
			waitFor(t, "a sees b as a programmed peer", func() bool {
				ps := a.d.Status().Peers
				return len(ps) == 1 && ps[0].Key() == bKey && ps[0].IPv6Subnet == fb.IPv6Subnet.Masked() &&
					ps[0].PublicIPv6 == netip.MustParseAddr("2001:db8::2") && ps[0].State == backend.PeerProgrammed
			})
			b.shutdown(t)
			if err := m.ReleaseLease(context.Background(), bKey); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "a drops b", func() bool { return len(a.d.Status().Peers) == 0 })
		})
	}
}

// TestIPv6OnlyNodeLeaseJSON: an IPv6-only node's lease is what Flannel
// writes for one, "PublicIP":"0.0.0.0" beside its PublicIPv6.
func TestIPv6OnlyNodeLeaseJSON(t *testing.T) {
	m := newStore(t, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"alloc"}}`)
	a := startNodeOpts(t, nodeOpts{store: m, ip6: "2001:db8::1"})
	waitFor(t, "ready", a.ready)
	leases, _, err := m.ListLeases(context.Background())
	if err != nil || len(leases) != 1 {
		t.Fatalf("leases %+v, %v", leases, err)
	}
	js, err := leases[0].Attrs.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::1","BackendType":"alloc"}`; string(js) != want {
		t.Errorf("lease value %s, want %s", js, want)
	}
	if k := subnet.KeyName(leases[0].Subnet, leases[0].IPv6Subnet); k[:10] != "0.0.0.0-0&" {
		t.Errorf("lease key %s, want Flannel's IPv6-only form 0.0.0.0-0&...", k)
	}
}

// TestIPv6WithoutAddress: a network enabling a family the node's underlay
// has no address of is refused once, saying what to do, and no lease is
// taken.
func TestIPv6WithoutAddress(t *testing.T) {
	for _, tc := range []struct{ name, config, ip, ip6, says string }{
		{"dual-stack without IPv6", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"alloc"}}`,
			"198.18.0.1", "", "has no IPv6 address: add one, or give weftd --public-ipv6"},
		{"IPv4 network without IPv4", `{"Network":"10.244.0.0/16","Backend":{"Type":"alloc"}}`,
			"", "2001:db8::1", "has no IPv4 address: add one, or give weftd --public-ip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newStore(t, tc.config)
			logs := &syncBuffer{}
			a := startNodeOpts(t, nodeOpts{store: m, ip: tc.ip, ip6: tc.ip6, logs: logs})
			waitFor(t, "the refusal", func() bool { return logs.count(tc.says) == 1 })
			if a.ready() {
				t.Error("node ready on a network it cannot serve")
			}
			if leases, _, _ := m.ListLeases(context.Background()); len(leases) != 0 {
				t.Errorf("leases taken: %+v", leases)
			}
		})
	}
}

// TestFilterPeersIPv6: the VXLAN peer filter lets in each peer's IPv6
// underlay address too (weft-v6.<VNI>'s traffic), with its IPv6 subnet as
// inner source; an IPv6-only peer (no PublicIP) adds no IPv4 address.
func TestFilterPeersIPv6(t *testing.T) {
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	dual := subnet.Lease{Subnet: p("10.244.2.0/24"), IPv6Subnet: p("fd10:0:0:2::/64"),
		Attrs: subnet.LeaseAttrs{PublicIP: a("198.18.0.11"), PublicIPv6: a("2001:db8::11")}}
	only := subnet.Lease{IPv6Subnet: p("fd10:0:0:3::/64"), Attrs: subnet.LeaseAttrs{PublicIPv6: a("2001:db8::12")}}
	got := filterPeers(map[netip.Prefix]subnet.Lease{dual.Key(): dual, only.Key(): only})
	want := []masq.FilterPeer{
		{Addr: a("198.18.0.11"), Sources: []netip.Prefix{p("10.244.2.0/24"), p("198.18.0.11/32")}},
		{Addr: a("2001:db8::11"), Sources: []netip.Prefix{p("2001:db8::11/128"), p("fd10:0:0:2::/64")}},
		{Addr: a("2001:db8::12"), Sources: []netip.Prefix{p("2001:db8::12/128"), p("fd10:0:0:3::/64")}},
	}
	if !slices.EqualFunc(got, want, sameFilterPeer) {
		t.Errorf("filterPeers = %+v\nwant %+v", got, want)
	}
}
