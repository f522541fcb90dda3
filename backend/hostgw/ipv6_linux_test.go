package hostgw

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/internal/nl/nltest"
	"github.com/weftnet/weft/subnet"
)

// Underlay base octets of the IPv6 tests (of host-gw's 30-39).
const (
	baseDual   = 34
	baseIPv6   = 35
	network6Of = "fd10::/56" // nltest.Network6
)

// dualLease is n's lease in a network of cfg's families.
func dualLease(cfg *subnet.Config, n *nltest.Node) subnet.Lease {
	l := subnet.Lease{IPv6Subnet: n.IPv6Subnet, Attrs: subnet.LeaseAttrs{PublicIPv6: n.PublicIPv6, BackendType: "host-gw"}}
	if cfg.EnableIPv4 {
		l.Subnet, l.Attrs.PublicIP = n.Subnet, n.PublicIP
	}
	return l
}

func dualPeers(cfg *subnet.Config, nodes []*nltest.Node, self *nltest.Node) []subnet.Lease {
	var ls []subnet.Lease
	for _, n := range nodes {
		if n != self {
			ls = append(ls, dualLease(cfg, n))
		}
	}
	return ls
}

// TestHostGWIPv6: in a dual-stack and in an IPv6-only network, each node
// routes its peers' IPv6 subnets via their PublicIPv6 on the underlay (and,
// dual stack, their IPv4 subnets as before); pods reach each other in each
// family; a removed peer's IPv6 route goes, also when the removal names
// only its IPv4 key; a full pass deletes stale IPv6 routes of weft's and
// keeps everyone else's.
func TestHostGWIPv6(t *testing.T) {
	for _, tc := range []struct {
		name string
		base int
		cfg  string
	}{
		{"dual stack", baseDual, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"` + network6Of + `","Backend":{"Type":"host-gw"}}`},
		{"IPv6 only", baseIPv6, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"` + network6Of + `","Backend":{"Type":"host-gw"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := subnet.ParseConfig([]byte(tc.cfg))
			if err != nil {
				t.Fatal(err)
			}
			nodes := nltest.DualNodes(t, 3, tc.base)
			bks := make([]*Backend, len(nodes))
			do := func(i int, f func(b *Backend) error) {
				t.Helper()
				if err := nodes[i].NS.Do(func(ns.NetNS) error { return f(bks[i]) }); err != nil {
					t.Fatal(err)
				}
			}
			start := func(i int) {
				t.Helper()
				n := nodes[i]
				if err := n.NS.Do(func(ns.NetNS) error {
					eth0, err := netlink.LinkByName("eth0")
					if err != nil {
						return err
					}
					log := slog.New(slog.DiscardHandler)
					if testing.Verbose() {
						log = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("node", n.PublicIPv6)
					}
					ul := backend.Underlay{Link: "eth0", Index: eth0.Attrs().Index, PublicIPv6: n.PublicIPv6}
					if cfg.EnableIPv4 {
						ul.PublicIP = n.PublicIP
					}
					bk, err := New(backend.Options{Logger: log, Underlay: ul, Config: cfg})
					if err != nil {
						return err
					}
					bks[i] = bk.(*Backend)
					ctx := context.Background()
					attrs, err := bks[i].Prepare(ctx)
					if err != nil {
						return err
					}
					if attrs.PublicIPv6 != n.PublicIPv6 || attrs.PublicIP != ul.PublicIP || attrs.BackendData != nil {
						t.Errorf("lease attributes %+v, want PublicIP %s PublicIPv6 %s, no BackendData", attrs, ul.PublicIP, n.PublicIPv6)
					}
					if err := bks[i].Configure(ctx, dualLease(cfg, n)); err != nil {
						return err
					}
					return bks[i].Sync(ctx, dualPeers(cfg, nodes, n))
				}); err != nil {
					t.Fatal(err)
				}
			}
			for i := range nodes {
				start(i)
			}
			n0, n1, n2 := nodes[0], nodes[1], nodes[2]
			route6 := func(n, p *nltest.Node) string {
				return strings.TrimSpace(n.NS.MustRun(t, "ip", "-6", "route", "show", "proto", "87", p.IPv6Subnet.String()))
			}
			wantRoute6 := func(n, p *nltest.Node) {
				t.Helper()
				if got, want := route6(n, p), fmt.Sprintf("%s via %s dev eth0", p.IPv6Subnet, p.PublicIPv6); !strings.HasPrefix(got, want) {
					t.Errorf("route = %q, want %q", got, want)
				}
			}
			wantRoute6(n0, n1)
			wantRoute6(n0, n2)
			if got := strings.TrimSpace(n0.NS.MustRun(t, "ip", "-4", "route", "show", "proto", "87")); cfg.EnableIPv4 != (got != "") {
				t.Errorf("IPv4 routes %q with EnableIPv4 %v", got, cfg.EnableIPv4)
			}
			for _, p := range bks[0].Peers() {
				if p.State != backend.PeerProgrammed || p.IPv6Subnet == (netip.Prefix{}) {
					t.Errorf("peer %+v, want programmed with its IPv6 subnet", p)
				}
			}
			nltest.WaitPing(t, n0.Pod, n1.PodIPv6, pingTimeout)
			nltest.WaitPing(t, n2.Pod, n1.PodIPv6, pingTimeout)
			if cfg.EnableIPv4 {
				nltest.WaitPing(t, n0.Pod, n2.PodIP, pingTimeout)
			}

			// A full pass with nothing to do writes nothing.
			before := bks[0].Repairs()
			do(0, func(b *Backend) error { return b.Sync(context.Background(), dualPeers(cfg, nodes, n0)) })
			if got := bks[0].Repairs(); got != before {
				t.Errorf("a full pass with nothing to do counted %d repairs", got-before)
			}

			// Removed by its key alone (the IPv4 subnet of a dual-stack lease).
			gone := subnet.Lease{Subnet: n2.Subnet}
			if !cfg.EnableIPv4 {
				gone = subnet.Lease{IPv6Subnet: n2.IPv6Subnet}
			}
			do(0, func(b *Backend) error {
				return b.Apply(context.Background(), []subnet.Event{{Type: subnet.EventRemoved, Lease: gone}})
			})
			if got := route6(n0, n2); got != "" {
				t.Errorf("IPv6 route of the removed peer: %q", got)
			}
			wantRoute6(n0, n1)

			// Stale and foreign IPv6 routes.
			stale := "fd10:0:0:99::/64"
			foreign := "fd10:0:0:98::/64"
			n0.NS.MustRun(t, "ip", "-6", "route", "add", stale, "via", n1.PublicIPv6.String(), "dev", "eth0", "proto", "87")
			n0.NS.MustRun(t, "ip", "-6", "route", "add", foreign, "via", n1.PublicIPv6.String(), "dev", "eth0", "proto", "static")
			start(0) // a restart: new backend, full pass
			if out := n0.NS.MustRun(t, "ip", "-6", "route", "show", stale); out != "" {
				t.Errorf("stale route left: %s", out)
			}
			if out := n0.NS.MustRun(t, "ip", "-6", "route", "show", foreign); !strings.Contains(out, "fd10:0:0:98::/64") {
				t.Errorf("foreign route %s deleted", foreign)
			}
			wantRoute6(n0, n1)
			wantRoute6(n0, n2)
			nltest.WaitPing(t, n0.Pod, n2.PodIPv6, pingTimeout)
		})
	}
}
