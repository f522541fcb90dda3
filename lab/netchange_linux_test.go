package lab

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/subnet"
)

// nets is a pod network per family; a family the lab lacks is the zero
// Prefix.
type nets struct{ v4, v6 netip.Prefix }

// of returns the network of a's family.
func (n nets) of(a netip.Addr) netip.Prefix {
	if a.Unmap().Is4() {
		return n.v4
	}
	return n.v6
}

func (n nets) String() string { return AddrsString(n.v4, n.v6) }

// requireNetworkChange changes the config's pod networks in etcd, as an
// operator resizing or renumbering them would, and checks that every node
// moves to subnets of the new networks and that no node keeps weft's kernel
// state of an old network outside the new one: routes (weft's protocol, any
// device: the vxlan devices, the underlay for host-gw and DirectRouting, the
// udp TUN's route of the whole network, the unreachable routes), permanent
// neighbours, and on vxlan the FDB entries a peer no longer needs. The
// moves, in each family the lab has: the network shrinks to the half
// holding the first node's subnet (that node keeps its subnet, so the kernel
// flushes nothing by itself), then it is renumbered; vxlan switches to
// DirectRouting on the renumbering (the devices' routes, neighbours and FDB
// entries of the old peers go) and moves once more, DirectRouting →
// DirectRouting (the direct routes of the old peers go). Then the pods are
// re-created, as a runtime would after the renumbering, and the matrix must
// pass in the new networks. It runs last in a lab's life.
func requireNetworkChange(t *testing.T, l *Lab, backend string) {
	t.Helper()
	type move struct {
		to     nets
		config string
		// noFDB: every peer is routed directly, so no FDB entry may stay.
		noFDB bool
	}
	var old nets
	if l.hasIPv4() {
		old.v4 = netip.MustParsePrefix(l.Network)
	}
	if l.hasIPv6() {
		old.v6 = netip.MustParsePrefix(l.IPv6Network)
	}
	config := func(to nets, directRouting bool) string {
		var c string
		switch {
		case !to.v6.IsValid():
			c = NetworkConfig(to.v4.String(), backend)
		case !to.v4.IsValid():
			c = NetworkConfigIPv6("", to.v6.String(), backend)
		default:
			c = NetworkConfigIPv6(to.v4.String(), to.v6.String(), backend)
		}
		if directRouting {
			c = strings.Replace(c, `{"Type": "vxlan"}`, `{"Type": "vxlan", "DirectRouting": true}`, 1)
		}
		return c
	}
	// The half holding a node's subnet: that node keeps its subnet and so
	// its addresses, the case where the kernel flushes nothing. The keeper's
	// subnet must not be the half's first, which SubnetMin's default leaves
	// out (a node holding it rightly moves); of three nodes, one is neither
	// family's first.
	halfOf := func(p, sn netip.Prefix) netip.Prefix {
		if !p.IsValid() {
			return p
		}
		return netip.PrefixFrom(sn.Addr(), p.Bits()+1).Masked()
	}
	isFirst := func(p, sn netip.Prefix) bool {
		return p.IsValid() && halfOf(p, sn).Addr() == sn.Masked().Addr()
	}
	var keeper *Node
	for _, n := range l.Nodes {
		if !isFirst(old.v4, n.Subnet) && !isFirst(old.v6, n.IPv6Subnet) {
			keeper = n
			break
		}
	}
	if keeper == nil {
		t.Fatalf("every node holds the first subnet of its half of %s: no node can keep its subnet", old)
	}
	half := nets{halfOf(old.v4, keeper.Subnet), halfOf(old.v6, keeper.IPv6Subnet)}
	renumber := func(v4, v6 string) nets {
		var n nets
		if old.v4.IsValid() {
			n.v4 = netip.MustParsePrefix(v4)
		}
		if old.v6.IsValid() {
			n.v6 = netip.MustParsePrefix(v6)
		}
		return n
	}
	renumbered := renumber("10.245.0.0/16", "fd00:10:245::/56")
	vx := backend == "vxlan"
	moves := []move{
		{to: half, config: config(half, false)},
		{to: renumbered, config: config(renumbered, vx), noFDB: vx},
	}
	if vx {
		third := renumber("10.246.0.0/16", "fd00:10:246::/56")
		moves = append(moves, move{to: third, config: config(third, true), noFDB: true})
	}
	for _, m := range moves {
		before := weftState(t, l)
		if len(before.outside(old, m.to)) == 0 {
			t.Fatalf("before the move to %s no node has weft state of %s outside it, nothing would be tested:\n%s", m.to, old, before)
		}
		began := time.Now()
		if _, err := l.weftctl(t.Context(), m.config, "config", "set", "-"); err != nil {
			t.Fatal(err)
		}
		var subnets []netip.Prefix // every node's, each family
		owner := map[netip.Prefix]string{}
		for _, n := range l.Nodes {
			var f subnet.FileInfo
			if !poll(t.Context(), 60*time.Second, 200*time.Millisecond, func() bool {
				got, err := subnet.ReadFile(n.SubnetFile)
				f = got
				return err == nil && got.Network == m.to.v4 && got.IPv6Network == m.to.v6 &&
					(!m.to.v4.IsValid() || m.to.v4.Contains(got.Subnet.Addr())) &&
					(!m.to.v6.IsValid() || m.to.v6.Contains(got.IPv6Subnet.Addr()))
			}) {
				t.Fatalf("%s did not move to %s within 60s (subnet file %+v); log:\n%s", n.Name, m.to, f, tail(n.Log, 30))
			}
			for _, sn := range []netip.Prefix{f.Subnet.Masked(), f.IPv6Subnet.Masked()} {
				if sn.IsValid() {
					subnets = append(subnets, sn)
					owner[sn] = n.Name
				}
			}
			if n == keeper && m.to == half &&
				(half.v4.IsValid() && f.Subnet.Masked() != keeper.Subnet || half.v6.IsValid() && f.IPv6Subnet.Masked() != keeper.IPv6Subnet) {
				t.Errorf("%s moved from %s to %s although the new networks %s hold it", keeper.Name, keeper.subnetsString(), AddrsString(f.Subnet.Masked(), f.IPv6Subnet.Masked()), half)
			}
		}
		// Each node reaches each peer's new subnets (kernel backends: a
		// route to each), and nothing of the old networks is left.
		var last nodeState
		if !poll(t.Context(), 30*time.Second, 200*time.Millisecond, func() bool {
			last = weftState(t, l)
			if len(last.outside(old, m.to)) > 0 || (m.noFDB && len(last.fdb()) > 0) {
				return false
			}
			if backend == "udp" || backend == "wireguard" {
				return true // peers in userspace or behind one device route
			}
			for _, n := range l.Nodes {
				for _, sn := range subnets {
					if owner[sn] != n.Name && !last.routes(n.Name, sn) {
						return false
					}
				}
			}
			return true
		}) {
			t.Errorf("after the move from %s to %s (%s):\nleft of %s: %v\nfdb: %v\nnew subnets %v\nstate:\n%s",
				old, m.to, m.config, old, last.outside(old, m.to), last.fdb(), subnets, last)
			return
		}
		t.Logf("moved from %s to %s in %v: no weft state of the old networks left", old, m.to, time.Since(began).Round(100*time.Millisecond))
		old = m.to
	}
	// The pods, re-created as a runtime would after the renumbering, take
	// addresses of the new networks (old is the last one now) and reach
	// each other and the nodes.
	for _, n := range l.Nodes {
		pods := slices.Clone(n.Pods)
		for _, p := range pods {
			if err := l.DeletePod(t.Context(), p.Name); err != nil {
				t.Fatal(err)
			}
		}
		added, err := l.AddPods(t.Context(), n.Name, len(pods))
		if err != nil {
			t.Fatalf("pods on %s in %s: %v", n.Name, old, err)
		}
		for _, p := range added {
			if old.v4.IsValid() && !old.v4.Contains(p.IP) || old.v6.IsValid() && !old.v6.Contains(p.IPv6) {
				t.Errorf("pod %s on %s has %s, not addresses of the new networks %s", p.Name, n.Name, AddrsString(p.IP, p.IPv6), old)
			}
		}
	}
	requireMatrix(t, l, "pods re-created in "+old.String())
}

// nodeState is, per node, the lines of `ip route`, `ip neigh` and
// `bridge fdb` that are weft's.
type nodeState map[string][]string

// weftState reads every node's routes of weft's protocol (87), its
// permanent neighbours and the FDB of weft's vxlan devices, both families.
func weftState(t *testing.T, l *Lab) nodeState {
	t.Helper()
	s := nodeState{}
	for _, n := range l.Nodes {
		for _, c := range []struct {
			what string
			argv []string
		}{
			{"route", []string{"ip", "-4", "route", "show", "table", "all", "proto", "87"}},
			{"route", []string{"ip", "-6", "route", "show", "table", "all", "proto", "87"}},
			{"neigh", []string{"ip", "-4", "neigh", "show", "nud", "permanent"}},
			{"neigh", []string{"ip", "-6", "neigh", "show", "nud", "permanent"}},
			{"fdb", []string{"bridge", "fdb", "show", "dev", "weft.1"}},
			{"fdb", []string{"bridge", "fdb", "show", "dev", "weft-v6.1"}},
		} {
			out, err := nsRun(t.Context(), n.NS, c.argv...)
			if err != nil && c.what == "fdb" && strings.Contains(out, "Cannot find device") {
				continue // no vxlan device of this family on this backend
			}
			if err != nil {
				t.Fatal(err)
			}
			for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
				if line != "" {
					s[n.Name] = append(s[n.Name], c.what+": "+line)
				}
			}
		}
	}
	return s
}

// outside returns the route and neighbour lines naming an address or prefix
// of an old network (the destination of a route, the address of a
// neighbour, a gateway) that is not inside the current network of its
// family: a route to a prefix of old wider than cur (the udp TUN's or the
// unreachable route of the old network) is outside.
func (s nodeState) outside(old, cur nets) []string {
	var out []string
	for node, lines := range s {
		for _, line := range lines {
			for _, w := range strings.Fields(line) {
				p, err := netip.ParsePrefix(w)
				if err != nil {
					a, aerr := netip.ParseAddr(w)
					if aerr != nil {
						continue
					}
					p = netip.PrefixFrom(a, a.BitLen())
				}
				o, c := old.of(p.Addr()), cur.of(p.Addr())
				if o.IsValid() && o.Overlaps(p) && !(c.IsValid() && c.Contains(p.Addr()) && p.Bits() >= c.Bits()) {
					out = append(out, node+" "+line)
					break
				}
			}
		}
	}
	return out
}

// fdb returns the FDB lines of the vxlan devices that send to a peer (dst).
func (s nodeState) fdb() []string {
	var out []string
	for node, lines := range s {
		for _, line := range lines {
			if strings.HasPrefix(line, "fdb: ") && strings.Contains(line, " dst ") {
				out = append(out, node+" "+line)
			}
		}
	}
	return out
}

// routes reports whether node has a weft route to exactly sn.
func (s nodeState) routes(node string, sn netip.Prefix) bool {
	for _, line := range s[node] {
		if f := strings.Fields(strings.TrimPrefix(line, "route: ")); strings.HasPrefix(line, "route: ") && len(f) > 0 && f[0] == sn.String() {
			return true
		}
	}
	return false
}

func (s nodeState) String() string {
	var b strings.Builder
	for _, n := range slices.Sorted(maps.Keys(s)) {
		for _, line := range s[n] {
			fmt.Fprintf(&b, "%s %s\n", n, line)
		}
	}
	return b.String()
}
