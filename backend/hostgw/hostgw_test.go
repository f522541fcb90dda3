package hostgw

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/internal/nl"
	"github.com/weftnet/weft/subnet"
)

func TestPlanPeers(t *testing.T) {
	cfg, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	if err != nil {
		t.Fatal(err)
	}
	connected := []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("192.0.2.7/32")}
	e := env{
		node: backend.PeerNode{Config: cfg, Own: subnet.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24")},
			PublicIP: netip.MustParseAddr("198.18.0.10"), BackendType: "host-gw", Connected: connected},
		families: []backend.Family{backend.IPv4}, ulIndex: 2, ulName: "eth0", connected: connected,
	}
	peers := map[netip.Prefix]subnet.Lease{}
	for _, l := range []struct{ sn, pub, typ string }{
		{"10.244.2.0/24", "198.18.0.11", "host-gw"},
		{"10.244.3.0/24", "192.0.2.7", "host-gw"},
		{"10.244.4.0/24", "203.0.113.9", "host-gw"},
		{"10.244.5.0/24", "198.18.0.12", "vxlan"},
		{"10.244.6.0/24", "198.18.0.10", "host-gw"},
		{"10.244.7.0/24", "", "host-gw"},
		{"10.244.8.0/24", "fd00::8", "host-gw"},
		{"10.245.0.0/24", "198.18.0.13", "host-gw"},
		{"10.244.1.0/24", "198.18.0.10", "host-gw"},
		{"10.244.9.0/24", "198.18.0.255", "host-gw"},
		{"10.244.10.0/24", "224.0.0.1", "host-gw"},
		{"10.244.11.0/24", "10.244.3.3", "host-gw"},
	} {
		lease := subnet.Lease{Subnet: netip.MustParsePrefix(l.sn), Attrs: subnet.LeaseAttrs{BackendType: l.typ}}
		if l.pub != "" {
			lease.Attrs.PublicIP = netip.MustParseAddr(l.pub)
		}
		peers[lease.Subnet] = lease
	}
	plans := planPeers(e, peers)
	for _, tc := range []struct {
		sn, gw, reason string
	}{
		{sn: "10.244.2.0/24", gw: "198.18.0.11"},
		{sn: "10.244.3.0/24", gw: "192.0.2.7"},
		{sn: "10.244.4.0/24", reason: "not on a subnet directly connected to eth0"},
		{sn: "10.244.5.0/24", reason: `backend "vxlan"`},
		{sn: "10.244.6.0/24", reason: "this node's own"},
		{sn: "10.244.7.0/24", reason: "no PublicIP"},
		{sn: "10.244.8.0/24", reason: "not an IPv4 address"},
		{sn: "10.245.0.0/24", reason: "outside the network"},
		{sn: "10.244.1.0/24", reason: "subnet is this node's own"},
		{sn: "10.244.9.0/24", reason: "broadcast address of the underlay subnet 198.18.0.0/24"},
		{sn: "10.244.10.0/24", reason: "multicast"},
		{sn: "10.244.11.0/24", reason: "inside the pod network"},
	} {
		t.Run(tc.sn, func(t *testing.T) {
			p := plans[netip.MustParsePrefix(tc.sn)]
			st := backend.NewPeerStatus(cfg, p.lease, p.v4.out, p.v6.out)
			if tc.reason != "" {
				if st.State != backend.PeerRefused || !strings.Contains(st.Reason, tc.reason) || !strings.Contains(st.Reason, tc.sn) {
					t.Fatalf("state %s reason %q; want refused naming the peer and %q", st.State, st.Reason, tc.reason)
				}
				return
			}
			if st.State != backend.PeerProgrammed || p.v4.route.Gw != netip.MustParseAddr(tc.gw) || p.v4.route.LinkIndex != 2 || p.v4.route.OnLink {
				t.Fatalf("plan %+v %s (%s), want route via %s dev 2", p.v4.route, st.State, st.Reason, tc.gw)
			}
		})
	}
}

// TestPlanPeersIPv6: in a dual-stack network each family is planned on its
// own (IPv6 subnet via PublicIPv6, directly connected) and a peer is
// programmed only when both are; in an IPv6-only one the IPv6 route alone.
func TestPlanPeersIPv6(t *testing.T) {
	dual, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"host-gw"}}`))
	if err != nil {
		t.Fatal(err)
	}
	only, err := subnet.ParseConfig([]byte(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"host-gw"}}`))
	if err != nil {
		t.Fatal(err)
	}
	connected := []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("2001:db8::/64")}
	pfx, addr := netip.MustParsePrefix, netip.MustParseAddr
	own := subnet.Lease{Subnet: pfx("10.244.1.0/24"), IPv6Subnet: pfx("fd10:0:0:1::/64")}
	lease := func(sn, sn6, pub, pub6 string) subnet.Lease {
		l := subnet.Lease{Attrs: subnet.LeaseAttrs{BackendType: "host-gw"}}
		if sn != "" {
			l.Subnet, l.Attrs.PublicIP = pfx(sn), addr(pub)
		}
		if sn6 != "" {
			l.IPv6Subnet = pfx(sn6)
		}
		if pub6 != "" {
			l.Attrs.PublicIPv6 = addr(pub6)
		}
		return l
	}
	for _, tc := range []struct {
		name     string
		cfg      *subnet.Config
		l        subnet.Lease
		gw4, gw6 string // the routes' gateways; empty: that family not programmed
		reason   string // the status reason when not programmed
	}{
		{name: "dual stack", cfg: dual, l: lease("10.244.2.0/24", "fd10:0:0:2::/64", "198.18.0.11", "2001:db8::11"),
			gw4: "198.18.0.11", gw6: "2001:db8::11"},
		{name: "dual stack, IPv6 underlay off-link", cfg: dual, l: lease("10.244.3.0/24", "fd10:0:0:3::/64", "198.18.0.12", "2001:db8:1::12"),
			gw4: "198.18.0.12", reason: "IPv6: PublicIPv6 2001:db8:1::12 is not on a subnet directly connected to eth0"},
		{name: "dual stack, no IPv6 subnet", cfg: dual, l: lease("10.244.4.0/24", "", "198.18.0.13", "2001:db8::13"),
			gw4: "198.18.0.13", reason: "IPv6: lease has no IPv6 subnet"},
		{name: "dual stack, no PublicIPv6", cfg: dual, l: lease("10.244.5.0/24", "fd10:0:0:5::/64", "198.18.0.14", ""),
			gw4: "198.18.0.14", reason: "IPv6: no PublicIPv6"},
		{name: "IPv6 only", cfg: only, l: lease("", "fd10:0:0:2::/64", "", "2001:db8::11"), gw6: "2001:db8::11"},
		{name: "IPv6 only, subnet-router anycast", cfg: only, l: lease("", "fd10:0:0:6::/64", "", "2001:db8::"),
			reason: "subnet-router anycast address"},
		{name: "IPv6 only, off-link", cfg: only, l: lease("", "fd10:0:0:7::/64", "", "2001:db8:2::7"),
			reason: "not on a subnet directly connected to eth0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := env{
				node: backend.PeerNode{Config: tc.cfg, Own: own, PublicIP: addr("198.18.0.10"), PublicIPv6: addr("2001:db8::10"),
					BackendType: "host-gw", Connected: connected},
				ulIndex: 2, ulName: "eth0", connected: connected,
			}
			if tc.cfg.EnableIPv4 {
				e.families = append(e.families, backend.IPv4)
			}
			e.families = append(e.families, backend.IPv6)
			p := planPeers(e, map[netip.Prefix]subnet.Lease{tc.l.Key(): tc.l})[tc.l.Key()]
			for _, f := range []struct {
				fp   famPlan
				gw   string
				dst  netip.Prefix
				name string
			}{{p.v4, tc.gw4, tc.l.Subnet, "IPv4"}, {p.v6, tc.gw6, tc.l.IPv6Subnet, "IPv6"}} {
				if f.gw == "" {
					if f.fp.out.State == backend.PeerProgrammed {
						t.Errorf("%s programmed (%s), want not", f.name, f.fp.route)
					}
					continue
				}
				want := nl.Route{Dst: f.dst, Gw: addr(f.gw), LinkIndex: 2}
				if f.fp.out.State != backend.PeerProgrammed || !f.fp.route.Equal(want) {
					t.Errorf("%s: %s %q route %s, want programmed %s", f.name, f.fp.out.State, f.fp.out.Reason, f.fp.route, want)
				}
			}
			st := backend.NewPeerStatus(tc.cfg, p.lease, p.v4.out, p.v6.out)
			if tc.reason == "" && st.State != backend.PeerProgrammed || tc.reason != "" && (st.State != backend.PeerRefused || !strings.Contains(st.Reason, tc.reason)) {
				t.Errorf("status %s %q, want reason %q", st.State, st.Reason, tc.reason)
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(backend.Options{Underlay: backend.Underlay{Link: "eth0"}}); err == nil {
		t.Error("missing PublicIP accepted")
	}
	if _, err := New(backend.Options{Underlay: backend.Underlay{PublicIP: netip.MustParseAddr("198.18.0.1")}}); err == nil {
		t.Error("missing link accepted")
	}
	// Behind a NAT (PublicIP not the interface's): peers could not route
	// to it as a next hop. Flannel refuses too.
	nat := backend.Underlay{Link: "eth0", Index: 2, PublicIP: netip.MustParseAddr("203.0.113.5"), LocalIP: netip.MustParseAddr("198.18.0.1")}
	if _, err := New(backend.Options{Underlay: nat}); err == nil || !strings.Contains(err.Error(), "behind a NAT") {
		t.Errorf("a node behind a NAT: %v, want a refusal saying so", err)
	}
	nat.LocalIP = nat.PublicIP
	if _, err := New(backend.Options{Underlay: nat}); err != nil && strings.Contains(err.Error(), "NAT") {
		t.Errorf("LocalIP equal to PublicIP refused as NAT: %v", err)
	}
}

// TestRefusalLoggedOncePerChange: repeated passes with the same outcome log
// nothing new; a change of state logs again.
func TestRefusalLoggedOncePerChange(t *testing.T) {
	var buf strings.Builder
	b := &Backend{status: backend.NewStatusBook(slog.New(slog.NewTextHandler(&buf, nil)))}
	sn := netip.MustParsePrefix("10.244.4.0/24")
	lease := subnet.Lease{Subnet: sn, Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("203.0.113.4")}}
	refused := map[netip.Prefix]*plan{sn: {lease: lease, v4: famPlan{out: backend.Outcome(backend.PeerRefused, "off-link")}}}
	for range 3 {
		b.updateStatus(nil, refused)
	}
	if n := strings.Count(buf.String(), "level=WARN"); n != 1 {
		t.Fatalf("%d warnings after 3 identical passes, want 1:\n%s", n, buf.String())
	}
	b.updateStatus(nil, map[netip.Prefix]*plan{sn: {lease: lease, v4: famPlan{out: backend.Outcome(backend.PeerProgrammed, "")}}})
	b.updateStatus(nil, refused)
	if n := strings.Count(buf.String(), "level=WARN"); n != 2 {
		t.Fatalf("%d warnings after refused→programmed→refused, want 2:\n%s", n, buf.String())
	}
	b.updateStatus(nil, nil)
	if ps := b.Peers(); len(ps) != 0 || !strings.Contains(buf.String(), "peer removed") {
		t.Fatalf("after removal Peers = %+v, log:\n%s", ps, buf.String())
	}
}
