package vxlan

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/internal/nl/nltest"
	"github.com/weftnet/weft/subnet"
)

// Underlay base octets of the IPv6 tests (of vxlan's 20-29).
const (
	baseDual       = 25
	baseIPv6Only   = 26
	baseDualDirect = 27
)

// v6node is one node of a dual-stack or IPv6-only vxlan test.
type v6node struct {
	*nltest.Node
	cfg   *subnet.Config
	b     *Backend
	lease subnet.Lease
}

func (n *v6node) in(t *testing.T, f func() error) {
	t.Helper()
	(&node{Node: n.Node}).in(t, f)
}

// start builds a fresh Backend (a restarted weftd), Prepare, Configure and
// Sync(peers); it fills n.lease from what Prepare returned.
func (n *v6node) start(t *testing.T, peers func(*v6node) []subnet.Lease) {
	t.Helper()
	n.in(t, func() error {
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		var ul backend.Underlay
		if n.cfg.EnableIPv4 {
			ul.PublicIP = n.PublicIP
		}
		if n.cfg.EnableIPv6 {
			ul.PublicIPv6 = n.PublicIPv6
		}
		ul.Link, ul.Index = "eth0", eth0.Attrs().Index
		bk, err := New(backend.Options{Logger: testLogger(t).With("node", n.PublicIPv6), Underlay: ul, Config: n.cfg})
		if err != nil {
			return err
		}
		n.b = bk.(*Backend)
		attrs, err := n.b.Prepare(context.Background())
		if err != nil {
			return err
		}
		attrs.BackendType = "vxlan"
		n.lease = subnet.Lease{Attrs: attrs}
		if n.cfg.EnableIPv4 {
			n.lease.Subnet = n.Subnet
		}
		if n.cfg.EnableIPv6 {
			n.lease.IPv6Subnet = n.IPv6Subnet
		}
		if err := n.b.Configure(context.Background(), n.lease); err != nil {
			return err
		}
		if peers == nil {
			return nil
		}
		return n.b.Sync(context.Background(), peers(n))
	})
}

// TestVXLANIPv6: dual stack and IPv6-only, weft-v6.<VNI> carries the IPv6
// pods over the IPv6 underlay (local PublicIPv6, MTU underlay − 70,
// <subnet>::/128), with a VtepMAC derived from PublicIPv6 published in
// BackendV6Data; per peer the IPv6 route onlink, permanent neighbour and FDB
// entry towards PublicIPv6 (DirectRouting: a plain route via PublicIPv6 on
// the same segment); weft.<VNI> is untouched (dual stack) or absent
// (IPv6-only); pods reach each other in each family; a restart changes
// nothing; a removed peer's IPv6 state goes, also when the removal names
// only its key.
func TestVXLANIPv6(t *testing.T) {
	for _, tc := range []struct {
		name   string
		base   int
		cfg    string
		direct bool
	}{
		{"dual stack", baseDual, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"vxlan"}}`, false},
		{"IPv6 only", baseIPv6Only, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"vxlan"}}`, false},
		{"dual stack DirectRouting", baseDualDirect, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"vxlan","DirectRouting":true}}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := subnet.ParseConfig([]byte(tc.cfg))
			if err != nil {
				t.Fatal(err)
			}
			var nodes []*v6node
			for _, tn := range nltest.DualNodes(t, 3, tc.base) {
				nodes = append(nodes, &v6node{Node: tn, cfg: cfg})
			}
			peers := func(self *v6node) []subnet.Lease {
				var ls []subnet.Lease
				for _, n := range nodes {
					if n != self {
						ls = append(ls, n.lease)
					}
				}
				return ls
			}
			for _, n := range nodes {
				n.start(t, nil)
			}
			for _, n := range nodes {
				n.in(t, func() error { return n.b.Sync(context.Background(), peers(n)) })
			}
			n0, n1, n2 := nodes[0], nodes[1], nodes[2]
			run := func(n *v6node, args ...string) string { return n.NS.MustRun(t, args[0], args[1:]...) }

			// The node's devices and lease data.
			mac6 := VtepMAC(n0.PublicIPv6, 1)
			var d6 BackendData
			if err := json.Unmarshal(n0.lease.Attrs.BackendV6Data, &d6); err != nil || d6.VtepMAC != mac6.String() || d6.VNI != 1 {
				t.Errorf("BackendV6Data %s (%v), want VNI 1 VtepMAC %s", n0.lease.Attrs.BackendV6Data, err, mac6)
			}
			if cfg.EnableIPv4 != (n0.lease.Attrs.BackendData != nil) || n0.lease.Attrs.PublicIPv6 != n0.PublicIPv6 {
				t.Errorf("lease attributes %+v", n0.lease.Attrs)
			}
			link := run(n0, "ip", "-d", "link", "show", "weft-v6.1")
			for _, want := range []string{"mtu 1430", "link/ether " + mac6.String(), "vxlan id 1 local " + n0.PublicIPv6.String() + " dev eth0", "dstport 8472"} {
				if !strings.Contains(link, want) {
					t.Errorf("weft-v6.1 lacks %q:\n%s", want, link)
				}
			}
			if got := run(n0, "ip", "-6", "-o", "addr", "show", "dev", "weft-v6.1", "scope", "global"); !strings.Contains(got, n0.IPv6Subnet.Addr().String()+"/128") {
				t.Errorf("weft-v6.1 addresses %q, want %s/128", got, n0.IPv6Subnet.Addr())
			}
			_, v4err := n0.NS.Run("ip", "link", "show", "weft.1")
			if cfg.EnableIPv4 != (v4err == nil) {
				t.Errorf("weft.1 exists: %v, want %v", v4err == nil, cfg.EnableIPv4)
			}
			if want := 1430; n0.b.MTU() != want {
				t.Errorf("pod MTU %d, want %d (the IPv6 device's)", n0.b.MTU(), want)
			}

			type state6 struct{ route, neigh, fdb string }
			stateFor := func(n, p *v6node) state6 {
				mac := VtepMAC(p.PublicIPv6, 1).String()
				return state6{
					route: strings.TrimSpace(run(n, "ip", "-6", "route", "show", "proto", "87", p.IPv6Subnet.String())),
					neigh: strings.TrimSpace(run(n, "ip", "-6", "neigh", "show", "dev", "weft-v6.1", p.IPv6Subnet.Addr().String())),
					fdb:   grepLine(run(n, "bridge", "fdb", "show", "dev", "weft-v6.1"), mac),
				}
			}
			wantProgrammed6 := func(n, p *v6node) {
				t.Helper()
				st := stateFor(n, p)
				mac := VtepMAC(p.PublicIPv6, 1).String()
				if tc.direct {
					if want := fmt.Sprintf("%s via %s dev eth0", p.IPv6Subnet, p.PublicIPv6); !strings.HasPrefix(st.route, want) || st.neigh != "" || st.fdb != "" {
						t.Errorf("direct-routed peer: %+v, want route %q and no neighbour or fdb", st, want)
					}
					return
				}
				if want := fmt.Sprintf("%s via %s dev weft-v6.1 metric 1024 onlink", p.IPv6Subnet, p.IPv6Subnet.Addr()); !strings.HasPrefix(st.route, want) {
					t.Errorf("route for %s = %q, want %q", p.IPv6Subnet, st.route, want)
				}
				if want := fmt.Sprintf("%s lladdr %s PERMANENT", p.IPv6Subnet.Addr(), mac); st.neigh != want {
					t.Errorf("neighbour = %q, want %q", st.neigh, want)
				}
				if want := fmt.Sprintf("%s dst %s self permanent", mac, p.PublicIPv6); st.fdb != want {
					t.Errorf("fdb = %q, want %q", st.fdb, want)
				}
			}
			wantProgrammed6(n0, n1)
			wantProgrammed6(n0, n2)
			for _, p := range n0.b.Peers() {
				if p.State != backend.PeerProgrammed {
					t.Errorf("peer %+v, want programmed", p)
				}
			}
			nltest.WaitPing(t, n0.Pod, n1.PodIPv6, pingTimeout)
			nltest.WaitPing(t, n2.Pod, n1.PodIPv6, pingTimeout)
			if cfg.EnableIPv4 {
				nltest.WaitPing(t, n0.Pod, n2.PodIP, pingTimeout)
				if !tc.direct {
					(&node{Node: n0.Node}).devIndex(t) // weft.1 is there
					if got := strings.TrimSpace(run(n0, "ip", "route", "show", "proto", "87", n1.Subnet.String())); !strings.HasPrefix(got, fmt.Sprintf("%s via %s dev weft.1 onlink", n1.Subnet, n1.Subnet.Addr())) {
						t.Errorf("IPv4 route %q", got)
					}
				}
			}

			// A restart: same devices, nothing rewritten by the next pass.
			idx := strings.Fields(run(n0, "ip", "-o", "link", "show", "weft-v6.1"))[0]
			n0.start(t, peers)
			if got := strings.Fields(run(n0, "ip", "-o", "link", "show", "weft-v6.1"))[0]; got != idx {
				t.Errorf("weft-v6.1 re-created across a restart: index %s, was %s", got, idx)
			}
			before := n0.b.Repairs()
			n0.in(t, func() error { return n0.b.Sync(context.Background(), peers(n0)) })
			if got := n0.b.Repairs(); got != before {
				t.Errorf("a full pass with nothing to do counted %d repairs", got-before)
			}

			// Removed by its key alone.
			gone := subnet.Lease{Subnet: n2.Subnet}
			if !cfg.EnableIPv4 {
				gone = subnet.Lease{IPv6Subnet: n2.IPv6Subnet}
			}
			n0.in(t, func() error {
				return n0.b.Apply(context.Background(), []subnet.Event{{Type: subnet.EventRemoved, Lease: gone}})
			})
			if st := stateFor(n0, n2); st != (state6{}) {
				t.Errorf("IPv6 state of the removed peer: %+v", st)
			}
			wantProgrammed6(n0, n1)
			nltest.WaitPing(t, n0.Pod, n1.PodIPv6, pingTimeout)
		})
	}
}
