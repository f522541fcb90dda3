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

// requireNetworkChange changes the config's Network in etcd, as an operator
// resizing or renumbering the pod network would, and checks that every node
// moves to a subnet of the new network and that no node keeps weft's kernel
// state of the old one outside the new one: routes (weft's protocol, any
// device: the vxlan device, the underlay for host-gw and DirectRouting, the
// udp TUN's route of the whole network, the unreachable route), neighbours,
// and on vxlan the FDB entries a peer no longer needs. The moves: the
// Network shrinks to the half holding the first node's subnet (that node
// keeps its subnet, so the kernel flushes nothing by itself), then it is
// renumbered; vxlan switches
// to DirectRouting on the renumbering (the device's routes, neighbours and
// FDB entries of the old peers go) and moves once more, DirectRouting →
// DirectRouting (the direct routes of the old peers go). Then the pods are
// re-created, as a runtime would after the renumbering, and the matrix must
// pass in the new network. It runs last in a lab's life, and only in IPv4
// labs (the config it writes has no IPv6Network).
func requireNetworkChange(t *testing.T, l *Lab, backend string) {
	t.Helper()
	type move struct {
		network netip.Prefix
		config  string
		// noFDB: every peer is routed directly, so no FDB entry may stay.
		noFDB bool
	}
	old, err := netip.ParsePrefix(l.Network)
	if err != nil {
		t.Fatal(err)
	}
	config := func(network netip.Prefix, directRouting bool) string {
		if directRouting {
			return fmt.Sprintf(`{"Network": %q, "Backend": {"Type": "vxlan", "DirectRouting": true}}`, network)
		}
		return NetworkConfig(network.String(), backend)
	}
	// The half holding the first node's subnet: that node keeps its subnet
	// and so its addresses, the case where the kernel flushes nothing.
	keeper := l.Nodes[0]
	half := netip.PrefixFrom(keeper.Subnet.Addr(), old.Bits()+1).Masked()
	renumbered := netip.MustParsePrefix("10.245.0.0/16")
	vx := backend == "vxlan"
	moves := []move{
		{network: half, config: config(half, false)},
		{network: renumbered, config: config(renumbered, vx), noFDB: vx},
	}
	if vx {
		third := netip.MustParsePrefix("10.246.0.0/16")
		moves = append(moves, move{network: third, config: config(third, true), noFDB: true})
	}
	for _, m := range moves {
		before := weftState(t, l)
		if len(before.outside(old, m.network)) == 0 {
			t.Fatalf("before the move to %s no node has weft state of %s outside it, nothing would be tested:\n%s", m.network, old, before)
		}
		began := time.Now()
		if _, err := l.weftctl(t.Context(), m.config, "config", "set", "-"); err != nil {
			t.Fatal(err)
		}
		subnets := map[string]netip.Prefix{}
		for _, n := range l.Nodes {
			var f subnet.FileInfo
			if !poll(t.Context(), 60*time.Second, 200*time.Millisecond, func() bool {
				got, err := subnet.ReadFile(n.SubnetFile)
				f = got
				return err == nil && got.Network == m.network && m.network.Contains(got.Subnet.Addr())
			}) {
				t.Fatalf("%s did not move to %s within 60s (subnet file %+v); log:\n%s", n.Name, m.network, f, tail(n.Log, 30))
			}
			subnets[n.Name] = f.Subnet.Masked()
		}
		if m.network == half && subnets[keeper.Name] != keeper.Subnet {
			t.Errorf("%s moved from %s to %s although the new network %s holds it", keeper.Name, keeper.Subnet, subnets[keeper.Name], half)
		}
		// Each node reaches each peer's new subnet (kernel backends: a
		// route to it), and nothing of the old network's peers is left.
		var last nodeState
		if !poll(t.Context(), 30*time.Second, 200*time.Millisecond, func() bool {
			last = weftState(t, l)
			if len(last.outside(old, m.network)) > 0 || (m.noFDB && len(last.fdb()) > 0) {
				return false
			}
			if backend == "udp" || backend == "wireguard" {
				return true // peers in userspace or behind one device route
			}
			for _, n := range l.Nodes {
				for peer, sn := range subnets {
					if peer != n.Name && !last.routes(n.Name, sn) {
						return false
					}
				}
			}
			return true
		}) {
			t.Errorf("after the move from %s to %s (%s):\nleft of %s: %v\nfdb: %v\nnew subnets %v\nstate:\n%s",
				old, m.network, m.config, old, last.outside(old, m.network), last.fdb(), subnets, last)
			return
		}
		t.Logf("moved from %s to %s in %v: no weft state of the old network left", old, m.network, time.Since(began).Round(100*time.Millisecond))
		old = m.network
	}
	// The pods, re-created as a runtime would after the renumbering, take
	// addresses of the new network (old is the last one now) and reach each
	// other and the nodes.
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
			if !old.Contains(p.IP) {
				t.Errorf("pod %s on %s has %s, not an address of the new network %s", p.Name, n.Name, p.IP, old)
			}
		}
	}
	requireMatrix(t, l, "pods re-created in "+old.String())
}

// nodeState is, per node, the lines of `ip route`, `ip neigh` and
// `bridge fdb` that are weft's.
type nodeState map[string][]string

// weftState reads every node's routes of weft's protocol (87), its IPv4
// neighbours and the FDB of weft's vxlan device.
func weftState(t *testing.T, l *Lab) nodeState {
	t.Helper()
	s := nodeState{}
	for _, n := range l.Nodes {
		for _, c := range []struct {
			what string
			argv []string
		}{
			{"route", []string{"ip", "-4", "route", "show", "table", "all", "proto", "87"}},
			{"neigh", []string{"ip", "-4", "neigh", "show", "nud", "permanent"}},
			{"fdb", []string{"bridge", "fdb", "show", "dev", "weft.1"}},
		} {
			out, err := nsRun(t.Context(), n.NS, c.argv...)
			if err != nil && c.what == "fdb" && strings.Contains(out, "Cannot find device") {
				continue // no vxlan device on this backend
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
// of old (the destination of a route, the address of a neighbour, a gateway)
// that is not inside cur: a route to a prefix of old wider than cur (the
// udp TUN's or the unreachable route of the old network) is outside.
func (s nodeState) outside(old, cur netip.Prefix) []string {
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
				if old.Overlaps(p) && !(cur.Contains(p.Addr()) && p.Bits() >= cur.Bits()) {
					out = append(out, node+" "+line)
					break
				}
			}
		}
	}
	return out
}

// fdb returns the FDB lines of the vxlan device that send to a peer (dst).
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
