package masq

import (
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
)

// dropCount returns the packet counter of the IPv4 drop rule of the peer
// filter in n.
func dropCount(t *testing.T, n *nstest.NS) uint64 {
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
		comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		if !strings.HasPrefix(comment, "weft-peer-drop") {
			continue
		}
		var v4 bool
		var packets uint64
		for _, e := range r.Exprs {
			switch e := e.(type) {
			case *expr.Cmp:
				if len(e.Data) == 1 && e.Data[0] == unix.NFPROTO_IPV4 {
					v4 = true
				}
			case *expr.Counter:
				packets = e.Packets
			}
		}
		if v4 {
			return packets
		}
	}
	t.Fatal("no IPv4 drop rule in the peer filter")
	return 0
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

	send := func(from int) {
		t.Helper()
		if err := nodes[from].Do(func(ns.NetNS) error {
			c, err := net.Dial("udp4", net.JoinHostPort(addrs[0], "8472"))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte(addrs[from]))
			return err
		}); err != nil {
			t.Fatal(err)
		}
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
		buf := make([]byte, 64)
		if err := l.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, _, err := l.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no datagram delivered: %v", err)
		}
		return string(buf[:n])
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

	if err := m.EnsurePeerFilter(ctx, port, []netip.Addr{netip.MustParseAddr(addrs[1]), netip.MustParseAddr(addrs[1])}); err != nil {
		t.Fatalf("EnsurePeerFilter: %v", err)
	}
	check(1, 2, 1)

	// Restart (a new Manager) with the same peers: one rule pair per
	// family, one element.
	m2, err := NewNFTables(testLogger(t), Options{NetNS: nodes[0]})
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.EnsurePeerFilter(ctx, port, []netip.Addr{netip.MustParseAddr(addrs[1])}); err != nil {
		t.Fatalf("EnsurePeerFilter again: %v", err)
	}
	out := nodes[0].MustRun(t, "nft", "list", "chain", "inet", DefaultTable, nftInput)
	if c := strings.Count(out, "weft-peer-"); c != 4 {
		t.Errorf("peer filter chain has %d rules, want 4:\n%s", c, out)
	}

	// The peer set changes: node 2 in, node 1 out.
	if err := m.EnsurePeerFilter(ctx, port, []netip.Addr{netip.MustParseAddr(addrs[2])}); err != nil {
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

func TestPeerFilterRejectsBadInput(t *testing.T) {
	n := nstest.New(t, "wmq")
	m, err := NewNFTables(testLogger(t), Options{NetNS: n})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		port  uint16
		peers []netip.Addr
	}{
		{"port 0", 0, nil},
		{"invalid address", 8472, []netip.Addr{{}}},
	} {
		if err := m.EnsurePeerFilter(t.Context(), tc.port, tc.peers); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}
