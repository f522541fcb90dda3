package hostgw

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/backend"
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
		ulIndex: 2, ulName: "eth0", connected: connected,
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
			if tc.reason != "" {
				if p.state != backend.PeerRefused || !strings.Contains(p.reason, tc.reason) || !strings.Contains(p.reason, tc.sn) {
					t.Fatalf("state %s reason %q; want refused naming the peer and %q", p.state, p.reason, tc.reason)
				}
				return
			}
			if p.state != backend.PeerProgrammed || p.route.Gw != netip.MustParseAddr(tc.gw) || p.route.LinkIndex != 2 || p.route.OnLink {
				t.Fatalf("plan %+v %s (%s), want route via %s dev 2", p.route, p.state, p.reason, tc.gw)
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
	refused := map[netip.Prefix]*plan{sn: {state: backend.PeerRefused, reason: "peer 10.244.4.0/24: off-link"}}
	for range 3 {
		b.updateStatus(nil, refused)
	}
	if n := strings.Count(buf.String(), "level=WARN"); n != 1 {
		t.Fatalf("%d warnings after 3 identical passes, want 1:\n%s", n, buf.String())
	}
	b.updateStatus(nil, map[netip.Prefix]*plan{sn: {state: backend.PeerProgrammed}})
	b.updateStatus(nil, refused)
	if n := strings.Count(buf.String(), "level=WARN"); n != 2 {
		t.Fatalf("%d warnings after refused→programmed→refused, want 2:\n%s", n, buf.String())
	}
	b.updateStatus(nil, nil)
	if ps := b.Peers(); len(ps) != 0 || !strings.Contains(buf.String(), "peer removed") {
		t.Fatalf("after removal Peers = %+v, log:\n%s", ps, buf.String())
	}
}
