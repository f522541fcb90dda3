package hostgw

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/internal/nl/nltest"
	"github.com/weftnet/weft/subnet"
)

// Underlay base octets used here (this package owns 30-39 of 20-39).
const (
	baseCluster = 30
	baseRefused = 32 // and 33 for the off-L2 node
	baseCost    = 36 // and 37 for the dual-stack one
)

const pingTimeout = 10 * time.Second

type node struct {
	*nltest.Node
	// cfg is the network (nil: IPv4, nltest.Network); a network with IPv6
	// needs a node of nltest.DualNodes.
	cfg   *subnet.Config
	b     *Backend
	lease subnet.Lease
}

func (n *node) in(t *testing.T, f func() error) {
	t.Helper()
	if err := n.NS.Do(func(ns.NetNS) error { return f() }); err != nil {
		t.Fatal(err)
	}
}

func (n *node) run(t *testing.T, args ...string) string {
	t.Helper()
	return n.NS.MustRun(t, args[0], args[1:]...)
}

// start builds a fresh Backend (a restarted weftd), Prepare, Configure and
// Sync(peers).
func (n *node) start(t *testing.T, peers []subnet.Lease) {
	t.Helper()
	cfg := n.cfg
	if cfg == nil {
		cfg = &subnet.Config{EnableIPv4: true, Network: nltest.Network(), SubnetLen: 24, BackendType: "host-gw"}
	}
	n.lease = subnet.Lease{Subnet: n.Subnet, Attrs: subnet.LeaseAttrs{PublicIP: n.PublicIP, BackendType: "host-gw"}}
	if cfg.EnableIPv6 {
		n.lease = dualLease(cfg, n.Node)
	}
	n.in(t, func() error {
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		log := slog.New(slog.DiscardHandler)
		if testing.Verbose() {
			log = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("node", n.PublicIP)
		}
		ul := backend.Underlay{Link: "eth0", Index: eth0.Attrs().Index, PublicIP: n.lease.Attrs.PublicIP, PublicIPv6: n.lease.Attrs.PublicIPv6}
		bk, err := New(backend.Options{Logger: log, Underlay: ul, Config: cfg})
		if err != nil {
			return err
		}
		n.b = bk.(*Backend)
		ctx := context.Background()
		attrs, err := n.b.Prepare(ctx)
		if err != nil {
			return err
		}
		if attrs.BackendData != nil || attrs.BackendV6Data != nil || attrs.PublicIP != ul.PublicIP || attrs.PublicIPv6 != ul.PublicIPv6 {
			t.Errorf("host-gw lease attributes = %+v, want PublicIP %s, PublicIPv6 %s and no BackendData", attrs, ul.PublicIP, ul.PublicIPv6)
		}
		if err := n.b.Configure(ctx, n.lease); err != nil {
			return err
		}
		return n.b.Sync(ctx, peers)
	})
}

func (n *node) sync(t *testing.T, peers []subnet.Lease) {
	t.Helper()
	n.in(t, func() error { return n.b.Sync(context.Background(), peers) })
}

func (n *node) apply(t *testing.T, evs ...subnet.Event) {
	t.Helper()
	n.in(t, func() error { return n.b.Apply(context.Background(), evs) })
}

func (n *node) route(t *testing.T, p *node) string {
	t.Helper()
	return strings.TrimSpace(n.run(t, "ip", "route", "show", "proto", "87", p.Subnet.String()))
}

func wantRoute(t *testing.T, n, p *node) {
	t.Helper()
	want := fmt.Sprintf("%s via %s dev eth0", p.Subnet, p.PublicIP)
	if got := n.route(t, p); !strings.HasPrefix(got, want) {
		t.Errorf("node %s: route = %q, want %q", n.PublicIP, got, want)
	}
}

func leases(nodes []*node, self *node) []subnet.Lease {
	var ls []subnet.Lease
	for _, n := range nodes {
		if n != self {
			ls = append(ls, subnet.Lease{Subnet: n.Subnet, Attrs: subnet.LeaseAttrs{PublicIP: n.PublicIP, BackendType: "host-gw"}})
		}
	}
	return ls
}

func TestHostGWCluster(t *testing.T) {
	var nodes []*node
	for _, tn := range nltest.Nodes(t, 3, baseCluster) {
		nodes = append(nodes, &node{Node: tn})
	}
	for _, n := range nodes {
		n.start(t, leases(nodes, n))
	}
	n0, n1, n2 := nodes[0], nodes[1], nodes[2]

	t.Run("programmed and ping", func(t *testing.T) {
		wantRoute(t, n0, n1)
		wantRoute(t, n0, n2)
		if got := n0.b.MTU(); got != 1500 {
			t.Errorf("MTU = %d, want the underlay's 1500", got)
		}
		if ps := n0.b.Peers(); len(ps) != 2 || ps[0].State != backend.PeerProgrammed || ps[1].State != backend.PeerProgrammed {
			t.Errorf("Peers = %+v", ps)
		}
		nltest.WaitPing(t, n0.Pod, n1.PodIP, pingTimeout)
		nltest.WaitPing(t, n0.Pod, n2.PodIP, pingTimeout)
		nltest.WaitPing(t, n2.Pod, n1.PodIP, pingTimeout)
	})

	t.Run("drift repaired by Sync", func(t *testing.T) {
		n0.sync(t, leases(nodes, n0))
		before := n0.b.Repairs()
		n0.sync(t, leases(nodes, n0))
		if got := n0.b.Repairs(); got != before {
			t.Errorf("a full pass with nothing to do counted %d repairs", got-before)
		}
		n0.run(t, "ip", "route", "del", n1.Subnet.String())
		if got := n0.route(t, n1); got != "" {
			t.Fatalf("route still there: %q", got)
		}
		n0.sync(t, leases(nodes, n0))
		wantRoute(t, n0, n1)
		if got := n0.b.Repairs(); got != before+1 {
			t.Errorf("repairs went from %d to %d after restoring one route, want +1", before, got)
		}
		nltest.WaitPing(t, n0.Pod, n1.PodIP, pingTimeout)
	})

	t.Run("removed by Apply and Sync", func(t *testing.T) {
		n0.apply(t, subnet.Event{Type: subnet.EventRemoved, Lease: subnet.Lease{Subnet: n2.Subnet}})
		if got := n0.route(t, n2); got != "" {
			t.Errorf("route for removed peer: %q", got)
		}
		wantRoute(t, n0, n1)
		n0.apply(t, subnet.Event{Type: subnet.EventAdded, Lease: leases(nodes, n0)[1]})
		wantRoute(t, n0, n2)
		n0.sync(t, leases(nodes, n0)[:1])
		if got := n0.route(t, n2); got != "" {
			t.Errorf("route for peer dropped by Sync: %q", got)
		}
		if ps := n0.b.Peers(); len(ps) != 1 || ps[0].Subnet != n1.Subnet {
			t.Errorf("Peers = %+v", ps)
		}
		n0.sync(t, leases(nodes, n0))
		wantRoute(t, n0, n2)
	})

	t.Run("changed PublicIP replaces route", func(t *testing.T) {
		ls := leases(nodes, n0)
		ls[0].Attrs.PublicIP = n2.PublicIP // pretend node 1's subnet moved to node 2's address
		n0.apply(t, subnet.Event{Type: subnet.EventAdded, Lease: ls[0]})
		if got, want := n0.route(t, n1), fmt.Sprintf("%s via %s dev eth0", n1.Subnet, n2.PublicIP); !strings.HasPrefix(got, want) {
			t.Errorf("route = %q, want %q", got, want)
		}
		n0.apply(t, subnet.Event{Type: subnet.EventAdded, Lease: leases(nodes, n0)[0]})
		wantRoute(t, n0, n1)
	})

	t.Run("restart loses no pings", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		type result struct {
			sent, got int
			err       error
		}
		done := make(chan result, 1)
		go func() {
			s, g, err := nltest.Ping(ctx, n0.Pod, n1.PodIP, 200, 10*time.Millisecond)
			done <- result{s, g, err}
		}()
		restarts := 0
		var res result
	loop:
		for {
			for _, n := range []*node{n0, n1} {
				n.start(t, leases(nodes, n))
			}
			restarts++
			// Pace the restarts (not a wait for state: the ping's end is).
			select {
			case res = <-done:
				break loop
			case <-time.After(100 * time.Millisecond):
			}
		}
		if res.err != nil {
			t.Fatal(res.err)
		}
		t.Logf("%d restarts during ping: %d/%d received", restarts, res.got, res.sent)
		if res.sent != 200 || res.got != res.sent {
			t.Errorf("lost pings across restart: %d/%d received", res.got, res.sent)
		}
	})

	t.Run("stale routes removed, foreign routes kept", func(t *testing.T) {
		n0.run(t, "ip", "route", "add", "10.244.99.0/24", "via", n1.PublicIP.String(), "proto", "87")
		// A peer route of an earlier pod network (the config's Network
		// changed): weft's, on the underlay, so it goes too.
		n0.run(t, "ip", "route", "add", "10.99.0.0/16", "via", n1.PublicIP.String(), "proto", "87")
		// Someone else's route on the same device (another protocol), and
		// a weft route on another device (another backend's): kept.
		n0.run(t, "ip", "route", "add", "10.244.98.0/24", "via", n1.PublicIP.String(), "proto", "static")
		n0.run(t, "ip", "link", "add", "wdummy", "type", "veth", "peer", "name", "wdummy1")
		n0.run(t, "ip", "link", "set", "wdummy", "up")
		n0.run(t, "ip", "route", "add", "10.98.0.0/16", "dev", "wdummy", "proto", "87")
		n0.start(t, leases(nodes, n0))
		for _, dst := range []string{"10.244.99.0/24", "10.99.0.0/16"} {
			if out := n0.run(t, "ip", "route", "show", dst); out != "" {
				t.Errorf("stale route left: %s", out)
			}
		}
		for _, dst := range []string{"10.244.98.0/24", "10.98.0.0/16"} {
			if out := n0.run(t, "ip", "route", "show", dst); !strings.Contains(out, dst) {
				t.Errorf("foreign route %s deleted", dst)
			}
		}
		if out := n0.run(t, "ip", "route", "show", "default"); out != "" {
			t.Errorf("unexpected default route: %s", out)
		}
		wantRoute(t, n0, n1)
		wantRoute(t, n0, n2)
	})
}

// TestHostGWRefusesOffLink: node 2's PublicIP is on another subnet, reached
// through a gateway; host-gw must refuse it (no route), keep the others.
func TestHostGWRefusesOffLink(t *testing.T) {
	tnodes := nltest.Nodes(t, 3, baseRefused)
	far := netip.MustParseAddr(fmt.Sprintf("198.18.%d.12", baseRefused+1))
	tnodes[2].NS.MustRun(t, "ip", "addr", "add", far.String()+"/32", "dev", "eth0")
	tnodes[0].NS.MustRun(t, "ip", "route", "add", far.String()+"/32", "via", tnodes[2].PublicIP.String())
	tnodes[2].PublicIP = far
	var nodes []*node
	for _, tn := range tnodes {
		nodes = append(nodes, &node{Node: tn})
	}
	n0, n1, n2 := nodes[0], nodes[1], nodes[2]
	n0.start(t, leases(nodes, n0))
	n1.start(t, leases(nodes, n1))

	if got := n0.route(t, n2); got != "" {
		t.Errorf("route for off-link peer: %q", got)
	}
	wantRoute(t, n0, n1)
	ps := n0.b.Peers()
	if len(ps) != 2 {
		t.Fatalf("Peers = %+v", ps)
	}
	if p := ps[1]; p.Subnet != n2.Subnet || p.State != backend.PeerRefused ||
		!strings.Contains(p.Reason, n2.Subnet.String()) || !strings.Contains(p.Reason, far.String()) ||
		!strings.Contains(p.Reason, "directly connected") {
		t.Errorf("off-link peer status = %+v", p)
	}
	if ps[0].State != backend.PeerProgrammed {
		t.Errorf("on-link peer status = %+v", ps[0])
	}
	nltest.WaitPing(t, n0.Pod, n1.PodIP, pingTimeout)

	// Once the underlay reaches it directly, the next Sync accepts it.
	n0.run(t, "ip", "route", "add", far.String()+"/32", "dev", "eth0", "scope", "link", "metric", "10")
	n0.sync(t, leases(nodes, n0))
	if ps := n0.b.Peers(); ps[1].State != backend.PeerProgrammed {
		t.Errorf("after making %s on-link: %+v", far, ps[1])
	}
	wantRoute(t, n0, n2)
}

// TestHostGWIncrementalCost is the regression guard of the incremental
// pass, in each family set: among 100 programmed peers, a batch costs the
// netlink requests of its change and nothing more (no dump, no write for a
// route already right; a route per family of a peer), and leaves nothing
// for the next full pass to repair.
func TestHostGWIncrementalCost(t *testing.T) {
	for _, tc := range []struct {
		name string
		base int
		cfg  string
		fams uint64 // routes per peer
	}{
		{"IPv4", baseCost, `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`, 1},
		{"dual stack", baseCost + 1, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"host-gw"}}`, 2},
		{"IPv6 only", baseCost + 2, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"host-gw"}}`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := subnet.ParseConfig([]byte(tc.cfg))
			if err != nil {
				t.Fatal(err)
			}
			nd := &node{Node: nltest.DualNodes(t, 1, tc.base)[0], cfg: cfg}
			// peer i at underlay host h; v6 picks the i-th IPv6 subnet
			// (dual stack: a lease can move to another one).
			peer := func(i, h, v6 int) subnet.Lease {
				l := subnet.Lease{Attrs: subnet.LeaseAttrs{BackendType: "host-gw"}}
				if cfg.EnableIPv4 {
					l.Subnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(2 + i), 0}), 24)
					l.Attrs.PublicIP = netip.AddrFrom4([4]byte{198, 18, byte(tc.base), byte(h)})
				}
				if cfg.EnableIPv6 {
					l.IPv6Subnet = netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x10, 7: byte(2 + v6)}), 64)
					l.Attrs.PublicIPv6 = netip.MustParseAddr(fmt.Sprintf("2001:db8:%x::%x", tc.base, h))
				}
				return l
			}
			var peers []subnet.Lease
			for i := range 100 {
				peers = append(peers, peer(i, 100+i, i))
			}
			nd.start(t, peers)
			added := func(l subnet.Lease) subnet.Event { return subnet.Event{Type: subnet.EventAdded, Lease: l} }
			removed := func(l subnet.Lease) subnet.Event {
				return subnet.Event{Type: subnet.EventRemoved, Lease: subnet.Lease{Subnet: l.Subnet, IPv6Subnet: l.Key()}}
			}
			if cfg.EnableIPv4 {
				removed = func(l subnet.Lease) subnet.Event { // by its key alone
					return subnet.Event{Type: subnet.EventRemoved, Lease: subnet.Lease{Subnet: l.Subnet}}
				}
			}
			var batch []subnet.Event
			for _, l := range peers[50:80] {
				batch = append(batch, removed(l))
			}
			steps := []struct {
				name   string
				events []subnet.Event
				want   uint64 // netlink requests
			}{
				{"new peer: its routes", []subnet.Event{added(peer(200, 90, 200))}, tc.fams},
				{"the same lease again", []subnet.Event{added(peer(200, 90, 200))}, 0},
				{"new PublicIP: the routes replaced", []subnet.Event{added(peer(200, 91, 200))}, tc.fams},
				{"peer removed", []subnet.Event{removed(peer(200, 91, 200))}, tc.fams},
				{"30 removed in one batch", batch, 30 * tc.fams},
				{"a removal of an unknown subnet", []subnet.Event{removed(peer(201, 92, 201))}, 0},
			}
			if cfg.EnableIPv4 && cfg.EnableIPv6 {
				steps = append(steps, struct {
					name   string
					events []subnet.Event
					want   uint64
				}{"IPv6 subnet moved: new route, old one deleted", []subnet.Event{added(peer(0, 100, 150))}, 2})
			}
			for _, st := range steps {
				before := nd.b.h.Requests()
				nd.apply(t, st.events...)
				if got := nd.b.h.Requests() - before; got != st.want {
					t.Errorf("%s: %d netlink requests, want %d", st.name, got, st.want)
				}
			}
			// One socket for the backend's life, as vxlan's.
			if n := nd.b.h.SocketsOpened(); n != 0 {
				t.Errorf("%d netlink requests opened a socket of their own, want 0", n)
			}
			if out := nd.run(t, "ip", "-4", "route", "show", "proto", "87"); cfg.EnableIPv4 && strings.Count(out, "\n") != 70 {
				t.Errorf("%d weft IPv4 routes, want 70:\n%s", strings.Count(out, "\n"), out)
			}
			if out := nd.run(t, "ip", "-6", "route", "show", "proto", "87"); cfg.EnableIPv6 && strings.Count(out, "\n") != 70 {
				t.Errorf("%d weft IPv6 routes, want 70:\n%s", strings.Count(out, "\n"), out)
			}
			rest := append(slices.Clone(peers[:50]), peers[80:]...)
			if cfg.EnableIPv4 && cfg.EnableIPv6 {
				rest[0] = peer(0, 100, 150)
			}
			repairs := nd.b.Repairs()
			nd.sync(t, rest)
			if n := nd.b.Repairs() - repairs; n != 0 {
				t.Errorf("the full pass after the incremental ones repaired %d routes, want 0", n)
			}
		})
	}
}
