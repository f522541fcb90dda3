package nl

import (
	"errors"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/nstest"
)

// testNode is one namespace with an underlay veth "eth0" 198.18.20.1/24.
func testNode(t *testing.T) *nstest.NS {
	t.Helper()
	a := nstest.New(t, "wnl")
	b := nstest.New(t, "wnlp")
	nstest.Link(t, a, "eth0", "198.18.20.1/24", b, "eth0", "198.18.20.2/24")
	return a
}

func do(t *testing.T, n *nstest.NS, f func() error) {
	t.Helper()
	if err := n.Do(func(ns.NetNS) error { return f() }); err != nil {
		t.Fatal(err)
	}
}

func vxlanLink(t *testing.T, name string, vni, port, dev int) *netlink.Vxlan {
	t.Helper()
	return &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: name},
		VxlanId:      vni,
		Port:         port,
		VtepDevIndex: dev,
		SrcAddr:      net.IPv4(198, 18, 20, 1).To4(),
	}
}

func TestLinkAddrRouteNeighFDB(t *testing.T) {
	n := testNode(t)
	h := New(nil)
	mac := net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
	peerMAC := net.HardwareAddr{0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}
	do(t, n, func() error {
		eth0, err := h.Netlink().LinkByName("eth0")
		if err != nil {
			return err
		}
		compat := func(port int) func(netlink.Link) bool {
			return func(l netlink.Link) bool { return l.(*netlink.Vxlan).Port == port }
		}
		// Create.
		l1, created, err := h.EnsureLink(vxlanLink(t, "wx1", 7, 8472, eth0.Attrs().Index), compat(8472))
		if err != nil || !created {
			t.Fatalf("EnsureLink create: created=%v err=%v", created, err)
		}
		// Compatible: reused, same ifindex.
		l2, created, err := h.EnsureLink(vxlanLink(t, "wx1", 7, 8472, eth0.Attrs().Index), compat(8472))
		if err != nil || created || l2.Attrs().Index != l1.Attrs().Index {
			t.Fatalf("EnsureLink reuse: created=%v idx %d→%d err=%v", created, l1.Attrs().Index, l2.Attrs().Index, err)
		}
		// Incompatible: replaced.
		l3, created, err := h.EnsureLink(vxlanLink(t, "wx1", 7, 4789, eth0.Attrs().Index), compat(4789))
		if err != nil || !created || l3.Attrs().Index == l1.Attrs().Index || l3.(*netlink.Vxlan).Port != 4789 {
			t.Fatalf("EnsureLink replace: created=%v idx %d→%d err=%v", created, l1.Attrs().Index, l3.Attrs().Index, err)
		}
		// State.
		l, err := h.EnsureLinkState(l3, LinkState{MAC: mac, MTU: 1400, Up: true})
		if err != nil {
			return err
		}
		if l.Attrs().HardwareAddr.String() != mac.String() || l.Attrs().MTU != 1400 || l.Attrs().Flags&net.FlagUp == 0 {
			t.Fatalf("EnsureLinkState: got mac %s mtu %d flags %v", l.Attrs().HardwareAddr, l.Attrs().MTU, l.Attrs().Flags)
		}
		idx := l.Attrs().Index

		// Addresses: exact set, host bits kept.
		for _, want := range [][]netip.Prefix{
			{netip.MustParsePrefix("10.244.1.0/32")},
			{netip.MustParsePrefix("10.244.2.0/32"), netip.MustParsePrefix("10.9.0.5/24")},
			{netip.MustParsePrefix("10.244.2.0/32")},
		} {
			if err := h.EnsureAddrs(l, unix.AF_INET, want); err != nil {
				return err
			}
			got, err := h.Addrs(l, unix.AF_INET)
			if err != nil {
				return err
			}
			if len(got) != len(want) {
				t.Fatalf("addresses = %v, want %v", got, want)
			}
			for _, p := range want {
				found := false
				for _, g := range got {
					found = found || g == p
				}
				if !found {
					t.Fatalf("addresses = %v, want %v", got, want)
				}
			}
		}

		// Routes.
		r := Route{Dst: netip.MustParsePrefix("10.244.3.0/24"), Gw: netip.MustParseAddr("10.244.3.0"), LinkIndex: idx, OnLink: true}
		if wrote, err := h.EnsureRoute(r, nil); err != nil || !wrote {
			t.Fatalf("EnsureRoute: wrote=%v err=%v", wrote, err)
		}
		direct := Route{Dst: netip.MustParsePrefix("10.244.4.0/24"), Gw: netip.MustParseAddr("198.18.20.2"), LinkIndex: eth0.Attrs().Index}
		if _, err := h.EnsureRoute(direct, nil); err != nil {
			return err
		}
		return nil
	})
	// A route of someone else's, with another protocol, on the same device.
	n.MustRun(t, "ip", "route", "add", "10.50.0.0/16", "via", "198.18.20.2", "proto", "static")
	do(t, n, func() error {
		eth0, _ := h.Netlink().LinkByName("eth0")
		l, _ := h.Netlink().LinkByName("wx1")
		idx := l.Attrs().Index
		routes, err := h.WeftRoutes(unix.AF_INET)
		if err != nil {
			return err
		}
		if len(routes) != 2 {
			t.Fatalf("WeftRoutes = %v, want the 2 weft routes only", routes)
		}
		got := routes[netip.MustParsePrefix("10.244.3.0/24")]
		want := Route{Dst: netip.MustParsePrefix("10.244.3.0/24"), Gw: netip.MustParseAddr("10.244.3.0"), LinkIndex: idx, OnLink: true}
		if !got.Equal(want) {
			t.Fatalf("listed route %v, want %v", got, want)
		}
		if wrote, err := h.EnsureRoute(want, &got); err != nil || wrote {
			t.Fatalf("EnsureRoute on equal route: wrote=%v err=%v", wrote, err)
		}
		// Changing the gateway replaces (one route per destination).
		moved := Route{Dst: want.Dst, Gw: netip.MustParseAddr("198.18.20.2"), LinkIndex: eth0.Attrs().Index}
		if wrote, err := h.EnsureRoute(moved, &got); err != nil || !wrote {
			t.Fatalf("EnsureRoute change: wrote=%v err=%v", wrote, err)
		}
		routes, _ = h.WeftRoutes(unix.AF_INET)
		if r := routes[want.Dst]; !r.Equal(moved) {
			t.Fatalf("after change route = %v, want %v", r, moved)
		}
		if err := h.DeleteRoute(moved); err != nil {
			return err
		}
		if err := h.DeleteRoute(moved); err != nil {
			t.Fatalf("second DeleteRoute: %v", err)
		}

		// Connected prefixes: eth0's /24 only (weft's routes excluded).
		conn, err := h.ConnectedPrefixes(eth0, unix.AF_INET)
		if err != nil {
			return err
		}
		if len(conn) != 1 || conn[0] != netip.MustParsePrefix("198.18.20.0/24") {
			t.Fatalf("ConnectedPrefixes = %v", conn)
		}

		// Neighbours.
		nip := netip.MustParseAddr("10.244.3.0")
		if wrote, err := h.EnsureNeigh(idx, nip, peerMAC, nil); err != nil || !wrote {
			t.Fatalf("EnsureNeigh: wrote=%v err=%v", wrote, err)
		}
		neighs, err := h.Neighs(idx, unix.AF_INET)
		if err != nil {
			return err
		}
		have, ok := neighs[nip]
		if !ok || !have.Permanent || have.MAC.String() != peerMAC.String() {
			t.Fatalf("Neighs = %v", neighs)
		}
		if wrote, err := h.EnsureNeigh(idx, nip, peerMAC, &have); err != nil || wrote {
			t.Fatalf("EnsureNeigh equal: wrote=%v err=%v", wrote, err)
		}
		if err := h.DeleteNeigh(idx, nip); err != nil {
			return err
		}
		if err := h.DeleteNeigh(idx, nip); err != nil {
			t.Fatalf("second DeleteNeigh: %v", err)
		}
		if neighs, _ := h.Neighs(idx, unix.AF_INET); len(neighs) != 0 {
			t.Fatalf("neighbours after delete: %v", neighs)
		}

		// FDB: add, no-op, change of destination replaces, delete.
		d1, d2 := netip.MustParseAddr("198.18.20.2"), netip.MustParseAddr("198.18.20.3")
		if _, err := h.EnsureFDB(idx, peerMAC, d1, nil); err != nil {
			return err
		}
		fdb, extra, err := h.FDB(idx)
		if err != nil {
			return err
		}
		e, ok := fdb[peerMAC.String()]
		if !ok || e.Dst != d1 || len(extra) != 0 {
			t.Fatalf("FDB = %v extra %v", fdb, extra)
		}
		if wrote, err := h.EnsureFDB(idx, peerMAC, d1, &e); err != nil || wrote {
			t.Fatalf("EnsureFDB equal: wrote=%v err=%v", wrote, err)
		}
		if wrote, err := h.EnsureFDB(idx, peerMAC, d2, &e); err != nil || !wrote {
			t.Fatalf("EnsureFDB change: wrote=%v err=%v", wrote, err)
		}
		fdb, extra, _ = h.FDB(idx)
		if e := fdb[peerMAC.String()]; e.Dst != d2 || len(extra) != 0 || len(fdb) != 1 {
			t.Fatalf("FDB after change = %v extra %v", fdb, extra)
		}
		if err := h.DeleteFDB(fdb[peerMAC.String()]); err != nil {
			return err
		}
		if err := h.DeleteFDB(FDBEntry{MAC: peerMAC, Dst: d2, LinkIndex: idx}); err != nil {
			t.Fatalf("second DeleteFDB: %v", err)
		}
		if fdb, _, _ := h.FDB(idx); len(fdb) != 0 {
			t.Fatalf("FDB after delete = %v", fdb)
		}

		// TX checksum offload.
		for _, on := range []bool{false, true, false} {
			if err := SetTxChecksum("wx1", on); err != nil {
				return err
			}
			got, err := TxChecksum("wx1")
			if err != nil {
				return err
			}
			if got != on {
				t.Fatalf("TxChecksum = %v after SetTxChecksum(%v)", got, on)
			}
		}
		return h.DeleteLink("wx1")
	})
	if out := n.MustRun(t, "ip", "route", "show", "10.50.0.0/16"); !strings.Contains(out, "10.50.0.0/16") {
		t.Fatalf("foreign route disappeared: %q", out)
	}
	if out := n.MustRun(t, "ip", "-o", "link", "show"); strings.Contains(out, "wx1") {
		t.Fatalf("wx1 still present after DeleteLink: %s", out)
	}
}

// TestForeignRoutesAreLeftAlone: a route weft did not install (the
// underlay's connected route, an operator's static route) is never replaced
// by EnsureRoute nor removed by DeleteRoute, and the error says so; weft's
// own route to a destination is still replaced even when the caller did not
// know it was there.
func TestForeignRoutesAreLeftAlone(t *testing.T) {
	n := testNode(t)
	h := New(nil)
	n.MustRun(t, "ip", "route", "add", "10.60.0.0/16", "via", "198.18.20.2", "proto", "static")
	do(t, n, func() error {
		eth0, err := h.Netlink().LinkByName("eth0")
		if err != nil {
			return err
		}
		idx := eth0.Attrs().Index
		for _, dst := range []string{"198.18.20.0/24", "10.60.0.0/16"} { // connected (proto kernel), static
			r := Route{Dst: netip.MustParsePrefix(dst), Gw: netip.MustParseAddr("198.18.20.7"), LinkIndex: idx}
			wrote, err := h.EnsureRoute(r, nil)
			if wrote || !errors.Is(err, ErrForeignRoute) || !strings.Contains(err.Error(), "weft did not install") ||
				!strings.Contains(err.Error(), "dev eth0") {
				t.Errorf("EnsureRoute over %s: wrote=%v err=%v; want ErrForeignRoute naming the route", dst, wrote, err)
			}
			if err := h.DeleteRoute(r); err != nil {
				t.Errorf("DeleteRoute(%s): %v", dst, err)
			}
		}
		// One that forwards exactly as weft's would (Flannel's host-gw
		// route, protocol boot): left alone too, and the error says how to
		// hand it over.
		flannel := Route{Dst: netip.MustParsePrefix("10.63.0.0/24"), Gw: netip.MustParseAddr("198.18.20.9"), LinkIndex: idx}
		if err := h.Netlink().RouteAdd(&netlink.Route{Dst: IPNet(flannel.Dst), Gw: IP(flannel.Gw), LinkIndex: idx}); err != nil {
			return err
		}
		hint := "ip route replace 10.63.0.0/24 via 198.18.20.9 dev eth0 proto 87"
		if wrote, err := h.EnsureRoute(flannel, nil); wrote || !errors.Is(err, ErrForeignRoute) || !strings.Contains(err.Error(), hint) {
			t.Errorf("EnsureRoute over an equal foreign route: wrote=%v err=%v; want ErrForeignRoute saying %q", wrote, err, hint)
		}
		// Ours, unknown to the caller: replaced.
		ours := Route{Dst: netip.MustParsePrefix("10.61.0.0/16"), Gw: netip.MustParseAddr("198.18.20.2"), LinkIndex: idx}
		if _, err := h.EnsureRoute(ours, nil); err != nil {
			return err
		}
		moved := ours
		moved.Gw = netip.MustParseAddr("198.18.20.3")
		if wrote, err := h.EnsureRoute(moved, nil); err != nil || !wrote {
			t.Errorf("EnsureRoute over weft's own route without knowing it: wrote=%v err=%v", wrote, err)
		}
		routes, err := h.WeftRoutes(unix.AF_INET)
		if err != nil {
			return err
		}
		if r := routes[ours.Dst]; !r.Equal(moved) || len(routes) != 1 {
			t.Errorf("weft routes %v, want only %v", routes, moved)
		}
		// A preferred source is part of the route.
		src := Route{Dst: netip.MustParsePrefix("10.62.0.0/16"), LinkIndex: idx, Src: netip.MustParseAddr("198.18.20.1")}
		if _, err := h.EnsureRoute(src, nil); err != nil {
			return err
		}
		routes, _ = h.WeftRoutes(unix.AF_INET)
		if r := routes[src.Dst]; !r.Equal(src) {
			t.Errorf("route with src listed as %v, want %v", r, src)
		}
		return nil
	})
	for _, want := range []string{"198.18.20.0/24 dev eth0 proto kernel", "10.60.0.0/16 via 198.18.20.2 dev eth0 proto static", "10.63.0.0/24 via 198.18.20.9 dev eth0 \n"} {
		if out := n.MustRun(t, "ip", "route", "show"); !strings.Contains(out, want) {
			t.Errorf("route %q changed or gone:\n%s", want, out)
		}
	}
}

// TestEnsureUnreachable: weft's unreachable routes for the pod network are
// kept exactly as asked, below (in preference) any route to the same prefix,
// and an unreachable route that is not weft's is left alone. In each family
// (IPv6: weft's routes have metric 1024, still ahead of the unreachable one).
func TestEnsureUnreachable(t *testing.T) {
	for _, tc := range []struct {
		name                        string
		family                      int
		ipFlag                      string
		addr                        string // eth0's address of the family, if the node lacks one
		network, inside, moved, foe string
	}{
		{name: "ipv4", family: unix.AF_INET, ipFlag: "-4",
			network: "10.244.0.0/16", inside: "10.244.9.9", moved: "10.50.0.0/16", foe: "10.70.0.0/16"},
		{name: "ipv6", family: unix.AF_INET6, ipFlag: "-6", addr: "2001:db8:20::1/64",
			network: "fd10::/48", inside: "fd10:0:0:9::9", moved: "fd50::/48", foe: "fd70::/48"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := testNode(t)
			if tc.addr != "" {
				n.MustRun(t, "ip", "addr", "add", tc.addr, "dev", "eth0", "nodad")
			}
			h := New(nil)
			n.MustRun(t, "ip", tc.ipFlag, "route", "add", "unreachable", tc.foe, "proto", "static")
			ensure := func(dsts ...string) bool {
				t.Helper()
				var ps []netip.Prefix
				for _, d := range dsts {
					ps = append(ps, netip.MustParsePrefix(d))
				}
				var changed bool
				do(t, n, func() error {
					var err error
					changed, err = h.EnsureUnreachable(tc.family, ps)
					return err
				})
				return changed
			}
			unreachables := func() string {
				return n.MustRun(t, "ip", tc.ipFlag, "route", "show", "type", "unreachable")
			}
			if !ensure(tc.network) || ensure(tc.network) {
				t.Error("EnsureUnreachable: want a change, then none")
			}
			if out, err := n.Run("ip", tc.ipFlag, "route", "get", tc.inside); err == nil || !strings.Contains(out, "No route to host") {
				t.Errorf("route get into the pod network: %v: %s", err, out)
			}
			// A weft route to the same prefix (udp's device route) wins over it.
			do(t, n, func() error {
				eth0, err := h.Netlink().LinkByName("eth0")
				if err != nil {
					return err
				}
				_, err = h.EnsureRoute(Route{Dst: netip.MustParsePrefix(tc.network), LinkIndex: eth0.Attrs().Index}, nil)
				return err
			})
			if out := n.MustRun(t, "ip", tc.ipFlag, "route", "get", tc.inside); !strings.Contains(out, "dev eth0") {
				t.Errorf("route get with a device route to the network too: %s", out)
			}
			if !ensure(tc.moved) {
				t.Error("moving the network changed nothing")
			}
			out := unreachables()
			weftMoved := regexp.MustCompile(regexp.QuoteMeta(tc.moved) + `( dev lo)? proto 87 metric 4242`)
			if strings.Contains(out, tc.network) || !weftMoved.MatchString(out) || !strings.Contains(out, tc.foe) {
				t.Errorf("unreachable routes after the move:\n%s", out)
			}
			ensure()
			if out := unreachables(); strings.Contains(out, "proto 87") || !strings.Contains(out, tc.foe) {
				t.Errorf("unreachable routes after removal:\n%s", out)
			}
		})
	}
}

// TestHandleAt proves a Handle over netlink.NewHandleAt works in that
// namespace from the test goroutine (no ns.Do).
func TestHandleAt(t *testing.T) {
	n := testNode(t)
	nsh, err := netns.GetFromPath(n.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	nh, err := netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	h := New(nh)
	eth0, err := h.Netlink().LinkByName("eth0")
	if err != nil {
		t.Fatalf("eth0 not visible through handle: %v", err)
	}
	r := Route{Dst: netip.MustParsePrefix("10.244.8.0/24"), Gw: netip.MustParseAddr("198.18.20.2"), LinkIndex: eth0.Attrs().Index}
	if _, err := h.EnsureRoute(r, nil); err != nil {
		t.Fatal(err)
	}
	out := n.MustRun(t, "ip", "route", "show", "proto", "87")
	if !strings.Contains(out, "10.244.8.0/24 via 198.18.20.2 dev eth0") {
		t.Fatalf("route not in namespace with proto 87: %q", out)
	}
}

// TestEnsureAddrsBothFamilies manages IPv4 and IPv6 addresses with one call
// (AF_UNSPEC): the set is exact in both families, the kernel's link-local
// address stays, and IPv6 addresses are usable at once (IFA_F_NODAD: never
// tentative, even on a bridge whose hairpin port would echo DAD probes).
func TestEnsureAddrsBothFamilies(t *testing.T) {
	n := testNode(t)
	n.MustRun(t, "ip", "link", "add", "wbr", "type", "bridge")
	n.MustRun(t, "ip", "link", "set", "wbr", "up")
	h := New(nil)
	p := netip.MustParsePrefix
	for _, want := range [][]netip.Prefix{
		{p("10.244.1.1/24"), p("fd10:0:0:1::1/64")},
		{p("10.244.2.1/24"), p("fd10:0:0:2::1/64")},
		{p("fd10:0:0:2::1/64")}, // IPv6 only: the IPv4 gateway goes
		{p("10.244.2.1/24")},    // IPv4 only: the IPv6 gateway goes
	} {
		do(t, n, func() error {
			l, err := h.Netlink().LinkByName("wbr")
			if err != nil {
				return err
			}
			if err := h.EnsureAddrs(l, unix.AF_UNSPEC, want); err != nil {
				return err
			}
			got, err := h.Addrs(l, unix.AF_UNSPEC)
			if err != nil {
				return err
			}
			if len(got) != len(want) || !containsAll(got, want) {
				t.Fatalf("addresses = %v, want %v", got, want)
			}
			return nil
		})
		if out := n.MustRun(t, "ip", "-6", "addr", "show", "dev", "wbr", "scope", "global"); strings.Contains(out, "tentative") {
			t.Errorf("an IPv6 address is tentative (DAD ran): %s", out)
		}
	}
	if out := n.MustRun(t, "ip", "-6", "addr", "show", "dev", "wbr", "scope", "link"); !strings.Contains(out, "fe80::") {
		t.Errorf("the link-local address was removed: %q", out)
	}
}

func containsAll(have, want []netip.Prefix) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}
