package masq

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/nstest"
	"github.com/weftnet/weft/internal/packettest"
)

// dropCount returns the packet counter of the IPv4 drop rule of the peer
// filter in n.
func dropCount(t *testing.T, n *nstest.NS) uint64 {
	t.Helper()
	return ruleCount(t, n, "weft-peer-drop", unix.NFPROTO_IPV4)
}

// TestPeerFilter: node 0 filters UDP port 8472; a datagram from a non-peer
// is dropped (counted, never delivered), one from a peer is delivered; the
// peer set is replaced atomically, and removing the filter lets everyone in.
func TestPeerFilter(t *testing.T) {
	t.Parallel()
	const port = 8472
	nodes, addrs := nstest.Underlay(t, 3, 42)
	for _, n := range nodes[1:] { // resolve neighbours before counting anything
		n.MustRun(t, "ping", "-c", "1", "-W", "2", addrs[0])
	}
	m, err := NewNFTables(testLogger(t), Options{NetNS: nodes[0]})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	var l *net.UDPConn
	if err := nodes[0].Do(func(ns.NetNS) error {
		var err error
		l, err = net.ListenUDP("udp4", &net.UDPAddr{Port: port})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })

	// send sends a VXLAN datagram whose inner packet comes from the
	// sender's own address (always one of its allowed sources) and carries
	// the sender's address as payload.
	send := func(from int) {
		t.Helper()
		a := netip.MustParseAddr(addrs[from])
		sendVXLAN(t, nodes[from], addrs[0], packettest.VXLAN(1, vxMAC, 0x0800,
			packettest.IPv4UDP(a, netip.MustParseAddr("10.244.9.9"), 40000, 9999, []byte(addrs[from]))))
	}
	// waitDrops polls until the drop counter reaches want.
	waitDrops := func(want uint64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			got := dropCount(t, nodes[0])
			if got == want {
				return
			}
			if got > want || time.Now().After(deadline) {
				t.Fatalf("drop counter = %d, want %d", got, want)
			}
		}
	}
	// recv returns the next delivered datagram's payload (the sender).
	recv := func() string {
		t.Helper()
		buf := make([]byte, 128)
		if err := l.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, _, err := l.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no datagram delivered: %v", err)
		}
		return string(buf[innerPayload:n])
	}
	// check: a datagram from the non-peer is dropped (counter reaches
	// wantDrops before the peer sends), then the peer's is the first one
	// delivered.
	check := func(peer, nonPeer int, wantDrops uint64) {
		t.Helper()
		send(nonPeer)
		waitDrops(wantDrops)
		send(peer)
		if got := recv(); got != addrs[peer] {
			t.Fatalf("delivered a datagram from %s, want only the peer %s", got, addrs[peer])
		}
	}

	if err := m.EnsurePeerFilter(ctx, port, []FilterPeer{self(addrs[1]), self(addrs[1])}); err != nil {
		t.Fatalf("EnsurePeerFilter: %v", err)
	}
	check(1, 2, 1)

	// Restart (a new Manager) with the same peers: one rule pair per
	// family, one element.
	m2, err := NewNFTables(testLogger(t), Options{NetNS: nodes[0]})
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.EnsurePeerFilter(ctx, port, []FilterPeer{self(addrs[1])}); err != nil {
		t.Fatalf("EnsurePeerFilter again: %v", err)
	}
	out := nodes[0].MustRun(t, "nft", "list", "chain", "inet", DefaultTable, nftInput)
	if c := strings.Count(out, "weft-peer-"); c != 4 {
		t.Errorf("peer filter chain has %d rules, want 4:\n%s", c, out)
	}

	// The peer set changes: node 2 in, node 1 out.
	if err := m.EnsurePeerFilter(ctx, port, []FilterPeer{self(addrs[2])}); err != nil {
		t.Fatalf("EnsurePeerFilter with new peers: %v", err)
	}
	set := nodes[0].MustRun(t, "nft", "list", "set", "inet", DefaultTable, nftPeers4)
	if !strings.Contains(set, addrs[2]) || strings.Contains(set, addrs[1]) {
		t.Errorf("peer set after the change:\n%s", set)
	}
	check(2, 1, 1) // the counter was reset by the rewrite of the chain

	// The masquerade rules and the peer filter live side by side.
	if err := m.Ensure(ctx, rulesFor("10.244.0.0/16", "10.244.3.0/24")); err != nil {
		t.Fatal(err)
	}
	check(2, 1, 2)

	if err := m.RemovePeerFilter(ctx); err != nil {
		t.Fatalf("RemovePeerFilter: %v", err)
	}
	if err := m.RemovePeerFilter(ctx); err != nil {
		t.Fatalf("RemovePeerFilter twice: %v", err)
	}
	send(1)
	if got := recv(); got != addrs[1] {
		t.Fatalf("after RemovePeerFilter: got a datagram from %s, want %s", got, addrs[1])
	}
	if out := nodes[0].MustRun(t, "nft", "list", "table", "inet", DefaultTable); !strings.Contains(out, "weft-masq") || strings.Contains(out, "peer") {
		t.Errorf("RemovePeerFilter should leave the masquerade rules and nothing of the filter:\n%s", out)
	}
}

// vxMAC is the inner destination MAC of the datagrams the tests send.
var vxMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}

// innerPayload and innerPayload6 are where the inner UDP payload starts in
// a VXLAN datagram's UDP payload: VXLAN 8, Ethernet 14, IPv4 20 (IPv6 40),
// UDP 8.
const (
	innerPayload  = 8 + 14 + 20 + 8
	innerPayload6 = 8 + 14 + 40 + 8
)

// self is a filter peer whose only inner source is its own address.
func self(a string) FilterPeer {
	ip := netip.MustParseAddr(a)
	return FilterPeer{Addr: ip, Sources: []netip.Prefix{netip.PrefixFrom(ip, 32)}}
}

// sendVXLAN sends payload in a UDP datagram from n to to:8472.
func sendVXLAN(t *testing.T, n *nstest.NS, to string, payload []byte) {
	t.Helper()
	if err := n.Do(func(ns.NetNS) error {
		c, err := net.Dial("udp", net.JoinHostPort(to, "8472"))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(payload)
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// ruleCount is the packet counter of the rule commented comment in n's
// peer filter, of one family (NFPROTO_IPV4, NFPROTO_IPV6; 0: the first
// such rule whatever its family).
func ruleCount(t *testing.T, n *nstest.NS, comment string, family byte) uint64 {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(n.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	table := &nftables.Table{Name: DefaultTable, Family: nftables.TableFamilyINet}
	rules, err := c.GetRules(table, &nftables.Chain{Name: nftInput, Table: table})
	if err != nil {
		t.Fatalf("list peer filter rules: %v", err)
	}
	for _, r := range rules {
		if got, _ := userdata.GetString(r.UserData, userdata.TypeComment); got != comment {
			continue
		}
		var fam byte
		var packets uint64
		counted := false
		for _, e := range r.Exprs {
			switch e := e.(type) {
			case *expr.Cmp:
				if fam == 0 && len(e.Data) == 1 {
					fam = e.Data[0] // the rule's first match is its family
				}
			case *expr.Counter:
				packets, counted = e.Packets, true
			}
		}
		if counted && (family == 0 || fam == family) {
			return packets
		}
	}
	t.Fatalf("no rule %q of family %d with a counter in the peer filter", comment, family)
	return 0
}

// TestPeerFilterInnerSource: a peer's VXLAN datagram is delivered only when
// its inner IPv4 source is one the peer may use (its pod subnet, its own
// address); one spoofing another node's pods, one carrying something other
// than IPv4, and a truncated one are dropped and counted.
func TestPeerFilterInnerSource(t *testing.T) {
	t.Parallel()
	nodes, addrs := nstest.Underlay(t, 2, 43)
	nodes[1].MustRun(t, "ping", "-c", "1", "-W", "2", addrs[0])
	m, err := NewNFTables(testLogger(t), Options{NetNS: nodes[0]})
	if err != nil {
		t.Fatal(err)
	}
	peer := netip.MustParseAddr(addrs[1])
	podNet := netip.MustParsePrefix("10.244.2.0/24")
	if err := m.EnsurePeerFilter(t.Context(), 8472, []FilterPeer{{Addr: peer,
		Sources: []netip.Prefix{podNet, netip.PrefixFrom(peer, 32), netip.MustParsePrefix("10.244.2.128/25")}}}); err != nil {
		t.Fatalf("EnsurePeerFilter: %v", err)
	}
	dst := netip.MustParseAddr("10.244.1.5")
	inner := func(src string) []byte {
		return packettest.VXLAN(1, vxMAC, 0x0800, packettest.IPv4UDP(netip.MustParseAddr(src), dst, 40000, 9999, []byte(src)))
	}
	checkInnerSources(t, nodes[0], nodes[1], addrs[0], unix.NFPROTO_IPV4, []innerCase{
		{"pod of the peer", inner("10.244.2.77"), true},
		{"the peer's host", inner(addrs[1]), true},
		{"spoofing another node's pod", inner("10.244.3.77"), false},
		{"spoofing this node's pod", inner("10.244.1.9"), false},
		{"not IPv4 inside", packettest.VXLAN(1, vxMAC, 0x0806, make([]byte, 28)), false},
		{"truncated", inner("10.244.2.77")[:30], false},
	})
}

// innerCase is a datagram of the inner-source tests and whether the
// filter must let it through.
type innerCase struct {
	name    string
	payload []byte
	ok      bool
}

// checkInnerSources sends each case's datagram from peer to to:8472 on
// node, whose filter is installed, and checks that it reaches a socket on
// node exactly when ok, and that the inner drop rule of family counts each
// dropped one and the other family's rule none.
func checkInnerSources(t *testing.T, node, peer *nstest.NS, to string, family byte, cases []innerCase) {
	t.Helper()
	network, payloadAt, other := "udp4", innerPayload, byte(unix.NFPROTO_IPV6)
	if family == unix.NFPROTO_IPV6 {
		network, payloadAt, other = "udp6", innerPayload6, unix.NFPROTO_IPV4
	}
	var l *net.UDPConn
	if err := node.Do(func(ns.NetNS) error {
		var err error
		l, err = net.ListenUDP(network, &net.UDPAddr{Port: 8472})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	delivered := func() string {
		buf := make([]byte, 160)
		_ = l.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := l.ReadFromUDP(buf)
		if err != nil || n < payloadAt {
			return ""
		}
		return string(buf[payloadAt:n])
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := ruleCount(t, node, "weft-inner-drop", family)
			beforeOther := ruleCount(t, node, "weft-inner-drop", other)
			sendVXLAN(t, peer, to, tc.payload)
			got := delivered()
			if tc.ok && got == "" || !tc.ok && got != "" {
				t.Fatalf("delivered %q, want delivered %v", got, tc.ok)
			}
			if after := ruleCount(t, node, "weft-inner-drop", family); !tc.ok && after != before+1 || tc.ok && after != before {
				t.Errorf("inner drop counter %d → %d", before, after)
			}
			if after := ruleCount(t, node, "weft-inner-drop", other); after != beforeOther {
				t.Errorf("the other family's inner drop counted the datagram: %d → %d", beforeOther, after)
			}
		})
	}
}

// TestPeerFilterInnerSource6 is TestPeerFilterInnerSource over an IPv6
// underlay (weft-v6.<VNI>'s datagrams): a peer's datagram is delivered only
// when it carries an IPv6 packet from the peer's IPv6 pod subnet or its own
// address; spoofed sources, an IPv4 packet inside, and a truncated one are
// dropped and counted by the IPv6 inner drop rule. An IPv4 peer's sources
// do not admit it.
func TestPeerFilterInnerSource6(t *testing.T) {
	t.Parallel()
	nodes, addrs, addrs6 := nstest.DualUnderlay(t, 2, 46)
	nodes[1].MustRun(t, "ping", "-6", "-c", "1", "-W", "2", addrs6[0])
	m, err := NewNFTables(testLogger(t), Options{NetNS: nodes[0]})
	if err != nil {
		t.Fatal(err)
	}
	peer, peer4 := netip.MustParseAddr(addrs6[1]), netip.MustParseAddr(addrs[1])
	if err := m.EnsurePeerFilter(t.Context(), 8472, []FilterPeer{
		{Addr: peer, Sources: []netip.Prefix{netip.MustParsePrefix("fd10:0:0:2::/64"), netip.PrefixFrom(peer, 128)}},
		{Addr: peer4, Sources: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24"), netip.MustParsePrefix("fd10:0:0:9::/64")}},
	}); err != nil {
		t.Fatalf("EnsurePeerFilter: %v", err)
	}
	dst := netip.MustParseAddr("fd10:0:0:1::5")
	inner := func(src string) []byte {
		return packettest.VXLAN(1, vxMAC, 0x86dd, packettest.IPv6UDP(netip.MustParseAddr(src), dst, 40000, 9999, []byte(src)))
	}
	checkInnerSources(t, nodes[0], nodes[1], addrs6[0], unix.NFPROTO_IPV6, []innerCase{
		{"pod of the peer", inner("fd10:0:0:2::77"), true},
		{"the peer's host", inner(addrs6[1]), true},
		{"spoofing another node's pod", inner("fd10:0:0:3::77"), false},
		{"spoofing this node's pod", inner("fd10:0:0:1::9"), false},
		{"a source only the IPv4 peer lists", inner("fd10:0:0:9::1"), false},
		{"IPv4 inside", packettest.VXLAN(1, vxMAC, 0x0800, packettest.IPv4UDP(netip.MustParseAddr("10.244.2.77"), netip.MustParseAddr("10.244.1.5"), 40000, 9999, []byte("v4"))), false},
		{"truncated", inner("fd10:0:0:2::77")[:40], false},
	})
}

// TestPeerFilterWithoutInnerCheck: on a kernel without concatenated
// interval sets (the probe said so) the filter still installs, matching the
// outer address only, and RemovePeerFilter works without naming the set
// such a kernel refuses.
func TestPeerFilterWithoutInnerCheck(t *testing.T) {
	t.Parallel()
	nodes, addrs := nstest.Underlay(t, 2, 44)
	full, err := NewNFTables(testLogger(t), Options{NetNS: nodes[0]})
	if err != nil {
		t.Fatal(err)
	}
	peers := []FilterPeer{self(addrs[1])}
	if err := full.EnsurePeerFilter(t.Context(), 8472, peers); err != nil {
		t.Fatal(err)
	}
	m, err := NewNFTables(testLogger(t), Options{NetNS: nodes[0]})
	if err != nil {
		t.Fatal(err)
	}
	m.inner = innerUnsupported // what the probe returns on such a kernel
	// Such a kernel never had the sources set: start without it.
	if err := full.RemovePeerFilter(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := m.EnsurePeerFilter(t.Context(), 8472, peers); err != nil {
		t.Fatalf("EnsurePeerFilter without the inner check: %v", err)
	}
	out := nodes[0].MustRun(t, "nft", "list", "table", "inet", DefaultTable)
	if strings.Contains(out, "weft-inner-drop") || strings.Contains(out, nftSources4) || !strings.Contains(out, "weft-peer-accept") {
		t.Errorf("fallback filter:\n%s", out)
	}
	if err := m.RemovePeerFilter(t.Context()); err != nil {
		t.Fatalf("RemovePeerFilter: %v", err)
	}
	if out := nodes[0].MustRun(t, "nft", "list", "table", "inet", DefaultTable); strings.Contains(out, "chain input") {
		t.Errorf("after RemovePeerFilter:\n%s", out)
	}
}

func TestPeerFilterRejectsBadInput(t *testing.T) {
	n := nstest.New(t, "wmq")
	m, err := NewNFTables(testLogger(t), Options{NetNS: n})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		port  uint16
		peers []FilterPeer
	}{
		{"port 0", 0, nil},
		{"invalid address", 8472, []FilterPeer{{}}},
		{"invalid source", 8472, []FilterPeer{{Addr: netip.MustParseAddr("198.18.0.1"), Sources: []netip.Prefix{{}}}}},
	} {
		if err := m.EnsurePeerFilter(t.Context(), tc.port, tc.peers); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

// TestPeerFilterUpdatesChangedElementsOnly: a change of the peer set adds
// and deletes the elements that differ and leaves the chain as it is (its
// rules keep their handles: no rewrite, the cost of a new peer stays a few
// elements); after Verify finds the table gone, the filter is rewritten
// whole, even for the same peers.
func TestPeerFilterUpdatesChangedElementsOnly(t *testing.T) {
	t.Parallel()
	n := nstest.New(t, "wpf")
	m, err := NewNFTables(testLogger(t), Options{NetNS: n})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	peer := func(a, pod string) FilterPeer {
		ip := netip.MustParseAddr(a)
		return FilterPeer{Addr: ip, Sources: []netip.Prefix{netip.PrefixFrom(ip, 32), netip.MustParsePrefix(pod)}}
	}
	a, b, c := peer("198.18.1.1", "10.244.1.0/24"), peer("198.18.1.2", "10.244.2.0/24"), peer("198.18.1.3", "10.244.3.0/24")
	chain := func() string { return n.MustRun(t, "nft", "-a", "list", "chain", "inet", DefaultTable, nftInput) }
	sets := func() string {
		return n.MustRun(t, "nft", "list", "set", "inet", DefaultTable, nftPeers4) +
			n.MustRun(t, "nft", "list", "set", "inet", DefaultTable, nftSources4)
	}
	if err := m.EnsurePeerFilter(ctx, 8472, []FilterPeer{a, b}); err != nil {
		t.Fatal(err)
	}
	before := chain()
	if err := m.EnsurePeerFilter(ctx, 8472, []FilterPeer{b, c}); err != nil {
		t.Fatal(err)
	}
	if after := chain(); after != before {
		t.Errorf("chain rewritten by a change of peers:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	got := sets()
	for _, s := range []string{"198.18.1.2", "198.18.1.3", "10.244.2.0/24", "10.244.3.0/24"} {
		if !strings.Contains(got, s) {
			t.Errorf("sets lack %s:\n%s", s, got)
		}
	}
	for _, s := range []string{"198.18.1.1", "10.244.1.0/24"} {
		if strings.Contains(got, s) {
			t.Errorf("sets still hold %s:\n%s", s, got)
		}
	}

	n.MustRun(t, "nft", "delete", "table", "inet", DefaultTable)
	if ok, err := m.Verify(ctx, rulesFor("10.244.0.0/16", "10.244.3.0/24")); err != nil || ok {
		t.Fatalf("Verify after the table's deletion = %v, %v, want false", ok, err)
	}
	if err := m.EnsurePeerFilter(ctx, 8472, []FilterPeer{b, c}); err != nil {
		t.Fatal(err)
	}
	if got := sets(); !strings.Contains(got, "198.18.1.3") || !strings.Contains(got, "10.244.2.0/24") {
		t.Errorf("filter not restored after Verify:\n%s", got)
	}
}

// TestUpdatePeerFilter: a change of peers given as a delta leaves the sets
// exactly as EnsurePeerFilter with the whole new set does, without
// rewriting the chain; it refuses (ErrPeerFilterUnknown) when no filter is
// known as installed on the port, and after the table was deleted behind
// its back.
func TestUpdatePeerFilter(t *testing.T) {
	t.Parallel()
	n := nstest.New(t, "wpf")
	m, err := NewNFTables(testLogger(t), Options{NetNS: n})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	peer := func(a string, pods ...string) FilterPeer {
		ip := netip.MustParseAddr(a)
		p := FilterPeer{Addr: ip, Sources: []netip.Prefix{netip.PrefixFrom(ip, ip.BitLen())}}
		for _, pod := range pods {
			p.Sources = append(p.Sources, netip.MustParsePrefix(pod))
		}
		return p
	}
	a, b, c := peer("198.18.1.1", "10.244.1.0/24"), peer("198.18.1.2", "10.244.2.0/24"), peer("198.18.1.3", "10.244.3.0/24")
	v6 := peer("2001:db8::5")
	if err := m.UpdatePeerFilter(ctx, 8472, []FilterPeer{a}, nil); !errors.Is(err, ErrPeerFilterUnknown) {
		t.Fatalf("UpdatePeerFilter with nothing installed = %v, want ErrPeerFilterUnknown", err)
	}
	chain := func() string { return n.MustRun(t, "nft", "-a", "list", "chain", "inet", DefaultTable, nftInput) }
	sets := func() string {
		var out string
		for _, s := range []string{nftPeers4, nftPeers6, nftSources4, nftSources6} {
			out += n.MustRun(t, "nft", "list", "set", "inet", DefaultTable, s)
		}
		return out
	}
	if err := m.EnsurePeerFilter(ctx, 8472, []FilterPeer{a, b, v6}); err != nil {
		t.Fatal(err)
	}
	before := chain()
	if err := m.UpdatePeerFilter(ctx, 8472, nil, nil); err != nil {
		t.Fatal(err)
	}
	// b gains a subnet, c and an IPv6 peer come, a and the other IPv6 peer
	// go.
	b2 := peer("198.18.1.2", "10.244.2.0/24", "10.244.12.0/24")
	c6 := peer("2001:db8::6", "fd10:0:0:6::/64")
	if err := m.UpdatePeerFilter(ctx, 8472, []FilterPeer{b2, c, c6}, []netip.Addr{a.Addr, v6.Addr}); err != nil {
		t.Fatal(err)
	}
	if after := chain(); after != before {
		t.Errorf("chain rewritten by an update:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	got := sets()
	if err := m.EnsurePeerFilter(ctx, 8472, []FilterPeer{b2, c, c6}); err != nil {
		t.Fatal(err)
	}
	if want := sets(); got != want {
		t.Errorf("sets after the update:\n%s\nwant (EnsurePeerFilter of the whole set):\n%s", got, want)
	}
	if err := m.UpdatePeerFilter(ctx, 4789, []FilterPeer{a}, nil); !errors.Is(err, ErrPeerFilterUnknown) {
		t.Errorf("UpdatePeerFilter on another port = %v, want ErrPeerFilterUnknown", err)
	}
	n.MustRun(t, "nft", "delete", "table", "inet", DefaultTable)
	if err := m.UpdatePeerFilter(ctx, 8472, []FilterPeer{a}, nil); !errors.Is(err, ErrPeerFilterUnknown) {
		t.Errorf("UpdatePeerFilter after the table's deletion = %v, want ErrPeerFilterUnknown", err)
	}
	if err := m.EnsurePeerFilter(ctx, 8472, []FilterPeer{a}); err != nil {
		t.Fatal(err)
	}
	if got := sets(); !strings.Contains(got, "198.18.1.1") || strings.Contains(got, "198.18.1.3") {
		t.Errorf("filter not rewritten after the refusal:\n%s", got)
	}
}

// TestPeerFilterOfManyPeers: the filter of 10000 peers (IPv4 and IPv6,
// with inner sources) goes in as one transaction, and so does a delta of
// 3000 changed: larger than the socket's default send buffer (EMSGSIZE
// past ~2000 peers before), and with acks that do not echo the requests
// (ENOBUFS on the receive side before).
func TestPeerFilterOfManyPeers(t *testing.T) {
	const nPeers, nPeers6 = 10000, 2000
	t.Parallel()
	n := nstest.New(t, "wpfm")
	m, err := NewNFTables(testLogger(t), Options{NetNS: n})
	if err != nil {
		t.Fatal(err)
	}
	peer := func(i, gen int) FilterPeer {
		a := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		return FilterPeer{Addr: a, Sources: []netip.Prefix{netip.PrefixFrom(a, 32),
			netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(gen), byte(i >> 8), byte(i)}), 32)}}
	}
	peer6 := func(i int) FilterPeer {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i), 14: byte(i >> 8)})
		return FilterPeer{Addr: a, Sources: []netip.Prefix{netip.PrefixFrom(a, 128),
			netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x10, 6: byte(i >> 8), 7: byte(i)}), 64)}}
	}
	var peers []FilterPeer
	for i := range nPeers {
		peers = append(peers, peer(i, 1))
	}
	for i := range nPeers6 {
		peers = append(peers, peer6(i))
	}
	if err := m.EnsurePeerFilter(t.Context(), 8472, peers); err != nil {
		t.Fatalf("EnsurePeerFilter with %d peers: %v", len(peers), err)
	}
	var changed []FilterPeer
	for i := range 3000 {
		changed = append(changed, peer(nPeers+i, 2))
	}
	if err := m.UpdatePeerFilter(t.Context(), 8472, changed, nil); err != nil {
		t.Fatalf("UpdatePeerFilter with %d changed: %v", len(changed), err)
	}
	got := n.MustRun(t, "nft", "list", "set", "inet", DefaultTable, nftSources4)
	for _, s := range []string{"198.18.50.199 . 10.2.50.199", "198.18.39.15 . 10.1.39.15"} { // the last changed, the last first
		if !strings.Contains(got, s) {
			t.Errorf("%s lacks %s", nftSources4, s)
		}
	}
	if got := n.MustRun(t, "nft", "list", "set", "inet", DefaultTable, nftPeers6); !strings.Contains(got, "2001:db8::7cf") {
		t.Errorf("%s lacks the last IPv6 peer 2001:db8::7cf", nftPeers6)
	}
}

// TestPeerFilterRewriteOfManyPeers: a change too large for an update (more
// than maxFilterDeletes elements out) replaces the sets with new ones in one
// transaction instead of flushing and refilling them: the kernel took 3.7 s
// of CPU to flush the sources set of 5000 peers and refill it with 4850,
// 50 ms to fill new sets. A new set has a new handle.
func TestPeerFilterRewriteOfManyPeers(t *testing.T) {
	t.Parallel()
	n := nstest.New(t, "wpfr")
	m, err := NewNFTables(testLogger(t), Options{NetNS: n})
	if err != nil {
		t.Fatal(err)
	}
	peer := func(i int) FilterPeer {
		a := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		return FilterPeer{Addr: a, Sources: []netip.Prefix{netip.PrefixFrom(a, 32),
			netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 26)}}
	}
	var peers []FilterPeer
	for i := range 5000 {
		peers = append(peers, peer(i))
	}
	handle := func() string {
		out := n.MustRun(t, "nft", "-a", "list", "set", "inet", DefaultTable, nftSources4)
		i := strings.Index(out, "# handle ")
		if i < 0 {
			t.Fatalf("no handle in\n%.300s", out)
		}
		return strings.Fields(out[i:])[2]
	}
	if err := m.EnsurePeerFilter(t.Context(), 8472, peers); err != nil {
		t.Fatal(err)
	}
	before := handle()
	if err := m.EnsurePeerFilter(t.Context(), 8472, peers[150:]); err != nil {
		t.Fatal(err)
	}
	if after := handle(); after == before {
		t.Errorf("the sources set kept handle %s: flushed and refilled, not made anew", before)
	}
	got := n.MustRun(t, "nft", "list", "set", "inet", DefaultTable, nftSources4)
	if strings.Contains(got, "198.18.0.149 . ") || !strings.Contains(got, "198.18.0.150 . 10.0.150.0/26") {
		t.Errorf("after the rewrite %s holds the wrong peers", nftSources4)
	}
	if chain := n.MustRun(t, "nft", "list", "chain", "inet", DefaultTable, nftInput); !strings.Contains(chain, "@"+nftSources4) {
		t.Errorf("the chain lost its lookup of %s:\n%s", nftSources4, chain)
	}
}
