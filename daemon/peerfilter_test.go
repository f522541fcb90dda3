package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"testing"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/daemon/masq"
	"github.com/weftnet/weft/internal/packed"
	"github.com/weftnet/weft/subnet"
)

// discardFilter is a firewall that takes any peer filter and keeps nothing
// of it, so what a test measures is the daemon's own.
type discardFilter struct{ masq.Manager }

func (discardFilter) EnsurePeerFilter(context.Context, uint16, []masq.FilterPeer) error { return nil }
func (discardFilter) RemovePeerFilter(context.Context) error                            { return nil }
func (discardFilter) UpdatePeerFilter(context.Context, uint16, []masq.FilterPeer, []netip.Addr) error {
	return nil
}

// benchLease is the i-th of the bench's vxlan peers: a /26 of 10.0.0.0/8
// and a PublicIP of its own.
func benchLease(i int) subnet.Lease {
	sn := netip.AddrFrom4([4]byte{10, byte(100 + i>>10), byte(i >> 2), byte(i&3) << 6})
	ip := fmt.Sprintf("198.19.%d.%d", i/250, 1+i%250)
	return aLease(netip.PrefixFrom(sn, 26).String(), ip, "alloc")
}

// TestPeerFilterHeapPerPeer is the regression guard of what the daemon
// keeps of the peer filter: with 10000 peers of one address and one /26
// each (the bench's), the filter index and the installed filter of
// updatePeerFilter cost ~260 bytes of live heap a peer; an index of netip
// keys with a slice of one key per address made it ~320.
func TestPeerFilterHeapPerPeer(t *testing.T) {
	const n = 10000
	g := testGeneration(t, `{"Network":"10.0.0.0/8","SubnetLen":26,"Backend":{"Type":"alloc"}}`, &syncBuffer{})
	g.masq, g.be = discardFilter{}, tunneledAlloc{}
	leases := make([]subnet.Lease, n)
	for i := range leases {
		leases[i] = benchLease(i)
	}
	g.replacePeers(leases)
	if len(g.peers) != n {
		t.Fatalf("%d peers, want %d", len(g.peers), n)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g.updatePeerFilter(t.Context(), true)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if !g.filter.installed || g.filterIdx == nil {
		t.Fatal("no filter installed, or no index kept for the next update")
	}
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	t.Logf("%d bytes of live heap a peer for the peer filter", per)
	if per > 290 {
		t.Errorf("the peer filter keeps %d bytes a peer, want at most 290: netip keys or a slice per address again?", per)
	}
	runtime.KeepAlive(g)
	runtime.KeepAlive(leases)
}

// TestPrefixSets: a set of prefixes per address follows adds and removals
// whichever of its prefixes is the one kept inline, leaves no empty slice
// behind and has exactly the addresses with a prefix.
func TestPrefixSets(t *testing.T) {
	v4, v6 := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("2001:db8::1")
	a, b := packed.AddrOf(v4), packed.AddrOf(v6)
	p := func(s string) packed.Prefix { return packed.PrefixOf(netip.MustParsePrefix(s)) }
	x, y, z := p("10.244.1.0/24"), p("10.244.2.0/24"), p("10.244.3.0/24")
	type op struct {
		add  bool
		a    packed.Addr
		p    packed.Prefix
		want []packed.Prefix // the set of a after it, sorted
	}
	for _, tc := range []struct {
		name  string
		ops   []op
		addrs []netip.Addr // at the end
	}{
		{"one", []op{{true, a, x, []packed.Prefix{x}}, {false, a, x, nil}}, nil},
		{"added twice, removed once", []op{{true, a, x, []packed.Prefix{x}}, {true, a, x, []packed.Prefix{x}}, {false, a, x, nil}}, nil},
		{"a second and a third", []op{{true, a, x, []packed.Prefix{x}}, {true, a, y, []packed.Prefix{x, y}},
			{true, a, z, []packed.Prefix{x, y, z}}, {true, a, y, []packed.Prefix{x, y, z}}}, []netip.Addr{v4}},
		{"the first removed with others", []op{{true, a, x, []packed.Prefix{x}}, {true, a, y, []packed.Prefix{x, y}},
			{true, a, z, []packed.Prefix{x, y, z}}, {false, a, x, []packed.Prefix{y, z}}, {false, a, z, []packed.Prefix{y}},
			{false, a, y, nil}}, nil},
		{"another removed", []op{{true, a, x, []packed.Prefix{x}}, {true, a, y, []packed.Prefix{x, y}},
			{true, a, z, []packed.Prefix{x, y, z}}, {false, a, y, []packed.Prefix{x, z}}, {false, a, z, []packed.Prefix{x}},
			{true, a, y, []packed.Prefix{x, y}}}, []netip.Addr{v4}},
		{"what a lacks removed", []op{{false, a, x, nil}, {true, a, x, []packed.Prefix{x}}, {false, a, y, []packed.Prefix{x}}},
			[]netip.Addr{v4}},
		{"addresses apart", []op{{true, b, x, []packed.Prefix{x}}, {true, a, x, []packed.Prefix{x}}, {true, b, y, []packed.Prefix{x, y}},
			{false, b, x, []packed.Prefix{y}}, {false, a, x, nil}, {true, a, z, []packed.Prefix{z}}}, []netip.Addr{v4, v6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newPrefixSets(0)
			for i, o := range tc.ops {
				if o.add {
					s.add(o.a, o.p)
				} else {
					s.remove(o.a, o.p)
				}
				got, ok := s.appendTo(nil, o.a)
				slices.SortFunc(got, backend.ComparePrefix)
				want := []netip.Prefix{}
				for _, w := range o.want {
					want = append(want, w.Prefix())
				}
				if ok != (len(want) > 0) || !slices.Equal(got, want) {
					t.Fatalf("op %d: the set of %s is %v (%t), want %v", i, o.a.Addr(), got, ok, want)
				}
				if v, ok := s.more[o.a]; ok && len(v) == 0 {
					t.Fatalf("op %d: an empty slice left in more", i)
				}
			}
			if got := s.addrs(); !slices.Equal(got, tc.addrs) || s.len() != len(tc.addrs) {
				t.Errorf("addresses %v (len %d), want %v", got, s.len(), tc.addrs)
			}
		})
	}
}
