package hostgw

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
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
)

const pingTimeout = 10 * time.Second

type node struct {
	*nltest.Node
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
	n.lease = subnet.Lease{Subnet: n.Subnet, Attrs: subnet.LeaseAttrs{PublicIP: n.PublicIP, BackendType: "host-gw"}}
	n.in(t, func() error {
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		log := slog.New(slog.DiscardHandler)
		if testing.Verbose() {
			log = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("node", n.PublicIP)
		}
		bk, err := New(backend.Options{
			Logger:   log,
			Underlay: backend.Underlay{Link: "eth0", Index: eth0.Attrs().Index, PublicIP: n.PublicIP},
			Config:   &subnet.Config{EnableIPv4: true, Network: nltest.Network(), SubnetLen: 24, BackendType: "host-gw"},
		})
		if err != nil {
			return err
		}
		n.b = bk.(*Backend)
		ctx := context.Background()
		attrs, err := n.b.Prepare(ctx)
		if err != nil {
			return err
		}
		if attrs.BackendData != nil || attrs.BackendV6Data != nil || attrs.PublicIP != n.PublicIP {
			t.Errorf("host-gw lease attributes = %+v, want PublicIP %s and no BackendData", attrs, n.PublicIP)
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
