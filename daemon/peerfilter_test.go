package daemon

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"runtime"
	"slices"
	"testing"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/daemon/masq"
	"github.com/weftnet/weft/daemon/masq/masqtest"
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

// sameFilterPeer reports whether a and b are the same filter entry.
func sameFilterPeer(a, b masq.FilterPeer) bool {
	return a.Addr == b.Addr && slices.Equal(a.Sources, b.Sources)
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
// each (the bench's), from a snapshot or from events (the bench writes 100
// leases a transaction), the filter index and the installed filter cost
// ~130 bytes of live heap a peer, a packed key and prefix inline in each
// (the installed entry less the address's own prefix); netip keys, a slice
// of one key per address and the installed masq.FilterPeer with its
// Sources allocation made it ~320.
func TestPeerFilterHeapPerPeer(t *testing.T) {
	const n, batch = 10000, 100
	for _, tc := range []struct {
		name  string
		build func(*generation, []subnet.Lease)
	}{
		{"a snapshot", func(g *generation, leases []subnet.Lease) {
			g.replacePeers(leases)
			g.updatePeerFilter(t.Context(), true)
		}},
		{"events", func(g *generation, leases []subnet.Lease) {
			g.replacePeers(nil)
			g.updatePeerFilter(t.Context(), true)
			evs := make([]subnet.Event, batch)
			for i := 0; i < len(leases); i += batch {
				for j := range evs {
					evs[j] = subnet.Event{Type: subnet.EventAdded, Lease: leases[i+j]}
				}
				g.applyEvents(evs)
				g.updatePeerFilter(t.Context(), true) // as each pass does
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := testGeneration(t, `{"Network":"10.0.0.0/8","SubnetLen":26,"Backend":{"Type":"alloc"}}`, &syncBuffer{})
			g.masq, g.be = discardFilter{}, tunneledAlloc{}
			leases := make([]subnet.Lease, n)
			for i := range leases {
				leases[i] = benchLease(i)
			}
			tc.build(g, leases)
			if len(g.peers) != n || !g.filter.holds(filterPeers(g.peers)) || g.filterIdx == nil {
				t.Fatalf("%d peers (want %d), their filter installed %t, an index kept %t",
					len(g.peers), n, g.filter.holds(filterPeers(g.peers)), g.filterIdx != nil)
			}
			// What the filter keeps is what goes when it is forgotten.
			var with, without runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&with)
			g.filter, g.filterIdx, g.filterTouched, g.filterStale = peerFilterState{}, nil, nil, nil
			runtime.GC()
			runtime.ReadMemStats(&without)
			per := (int64(with.HeapAlloc) - int64(without.HeapAlloc)) / n
			t.Logf("%d bytes of live heap a peer for the peer filter", per)
			if per > 220 {
				t.Errorf("the peer filter keeps %d bytes a peer, want at most 220: netip keys or a slice per address again?", per)
			}
			runtime.KeepAlive(g)
		})
	}
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

// TestPeerFilterBatchAllocsPerPeer is the regression guard of allocations
// on the incremental path: among 2000 peers, the grow and the trim of the
// filter after a batch adding 256 peers, and after one taking them out
// again, allocate a few times per batch (slices and maps of the batch's
// size), not once per peer of the batch (an entry's Sources allocated per
// address visited before: 0.66 a peer, 0.11 now).
func TestPeerFilterBatchAllocsPerPeer(t *testing.T) {
	const n, batch, rounds = 2000, 256, 8
	g := testGeneration(t, `{"Network":"10.0.0.0/8","SubnetLen":26,"Backend":{"Type":"alloc"}}`, &syncBuffer{})
	g.masq, g.be = discardFilter{}, tunneledAlloc{}
	leases := make([]subnet.Lease, n)
	for i := range leases {
		leases[i] = benchLease(i)
	}
	g.replacePeers(leases)
	g.updatePeerFilter(t.Context(), true)
	add, remove := make([]subnet.Event, batch), make([]subnet.Event, batch)
	for i := range batch {
		add[i] = subnet.Event{Type: subnet.EventAdded, Lease: benchLease(n + i)}
		remove[i] = subnet.Event{Type: subnet.EventRemoved, Lease: benchLease(n + i)}
	}
	// What applyEvents allocates (checking each lease) is not the filter's.
	var mallocs uint64
	pass := func(evs []subnet.Event) {
		g.applyEvents(evs)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		g.updatePeerFilter(t.Context(), true)
		g.updatePeerFilter(t.Context(), false)
		runtime.ReadMemStats(&after)
		mallocs += after.Mallocs - before.Mallocs
	}
	pass(add) // the maps grown to their size
	pass(remove)
	mallocs = 0
	for range rounds {
		pass(add)
		pass(remove)
	}
	if !g.filter.holds(filterPeers(g.peers)) || g.filterIdx == nil || len(g.peers) != n || g.filterTrimPending() {
		t.Fatalf("after the batches: the peers' filter installed %t, index kept %t, %d peers (want %d), trim pending %t",
			g.filter.holds(filterPeers(g.peers)), g.filterIdx != nil, len(g.peers), n, g.filterTrimPending())
	}
	per := float64(mallocs) / (2 * rounds * batch)
	t.Logf("%.3f allocations a peer of a batch", per)
	if per > 0.3 {
		t.Errorf("a batch allocates %.3f times a peer it carries, want at most 0.3: an allocation per address again?", per)
	}
}

// TestPeerFilterFullGrowKeepsWhatIsInstalled: a full update with grow
// (after a snapshot) installs the union of what was installed and what
// the peers need, marks the addresses where that is more than they need
// as the trim's, and the trim then leaves exactly the peers' filter.
func TestPeerFilterFullGrowKeepsWhatIsInstalled(t *testing.T) {
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	lease := func(sn, ip string) subnet.Lease { return aLease(sn, ip, "alloc") }
	dual := func(l subnet.Lease, sn6, ip6 string) subnet.Lease {
		l.IPv6Subnet, l.Attrs.PublicIPv6 = p(sn6), a(ip6)
		return l
	}
	before := []subnet.Lease{
		lease("10.244.2.0/24", "198.18.0.2"),                                         // stays
		lease("10.244.3.0/24", "198.18.0.3"),                                         // goes
		lease("10.244.4.0/24", "198.18.0.4"),                                         // moves to .2 (which then needs no more)
		lease("10.244.5.0/24", "198.18.0.5"),                                         // takes another subnet
		dual(lease("10.244.6.0/24", "198.18.0.6"), "fd10:0:0:6::/64", "2001:db8::6"), // loses its IPv6
	}
	after := []subnet.Lease{
		before[0],
		lease("10.244.4.0/24", "198.18.0.2"),
		lease("10.244.15.0/24", "198.18.0.5"),
		lease("10.244.6.0/24", "198.18.0.6"),
		dual(lease("10.244.7.0/24", "198.18.0.7"), "fd10:0:0:7::/64", "2001:db8::7"), // new
	}
	g := testGeneration(t, allocConfig, &syncBuffer{})
	fake := &masqtest.Fake{}
	g.masq, g.be = fake, tunneledAlloc{}
	g.replacePeers(before)
	g.updatePeerFilter(t.Context(), true)
	installed := filterPeers(g.peers)
	g.replacePeers(after)
	g.filterIdx = nil // what a snapshot does
	g.updatePeerFilter(t.Context(), true)

	exact := filterPeers(g.peers)
	union := unionFilterPeers(exact, installed)
	if got, want := fake.PeerFilterSources(), filterSources(union); !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("after the grow the filter holds\n%v\nwant\n%v", got, want)
	}
	wantStale := []netip.Addr{a("198.18.0.3"), a("198.18.0.4"), a("198.18.0.5"), a("2001:db8::6")}
	if got := slices.SortedFunc(maps.Keys(g.filterStale), netip.Addr.Compare); !slices.Equal(got, wantStale) {
		t.Errorf("stale after the grow %v, want %v", got, wantStale)
	}
	if !g.filter.holds(union) {
		t.Error("the daemon's record of the filter is not what it installed")
	}
	g.updatePeerFilter(t.Context(), false)
	if got, want := fake.PeerFilterSources(), filterSources(exact); !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("after the trim the filter holds\n%v\nwant\n%v", got, want)
	}
	if g.filterTrimPending() || !g.filter.holds(exact) {
		t.Errorf("after the trim: trim pending %t, the record is the peers' filter %t", g.filterTrimPending(), g.filter.holds(exact))
	}
}
