package masq

import (
	"net/netip"
	"runtime"
	"strings"
	"testing"
)

// maxFilterBytesPerPeer bounds TestInstalledFilterMemoryPerPeer.
const maxFilterBytesPerPeer = 350

// TestInstalledFilterMemoryPerPeer is the regression guard of what the
// nftables manager keeps per peer of an installed peer filter with the
// inner check: the keys of its three elements (its address, its pod
// subnet's and its address's source ranges) and, under its address, which
// they are: 448 bytes a peer when each key was held twice and the address's
// keys in four lists, 308 since.
func TestInstalledFilterMemoryPerPeer(t *testing.T) {
	const n = 5000
	f, err := newFilterSets(testFilterPeers(n))
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	st := newInstalledFilter(4789, true, f)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := len(st.elems[0]) + len(st.elems[2]); got != 3*n {
		t.Fatalf("%d elements, want %d", got, 3*n)
	}
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	t.Logf("%d bytes of live heap per peer", per)
	if per > maxFilterBytesPerPeer {
		t.Errorf("the installed filter keeps %d bytes per peer, want at most %d", per, maxFilterBytesPerPeer)
	}
	runtime.KeepAlive(st)
	runtime.KeepAlive(f)
}

// maxFilterSetsBytesPerPeer bounds TestFilterSetsAllocPerPeer.
const maxFilterSetsBytesPerPeer = 700

// TestFilterSetsAllocPerPeer is the regression guard of what a rewrite of
// the peer filter allocates to build its elements, peers sorted as the
// daemon hands them: the three elements and their keys. A trim after
// many removals rewrites the filter of every remaining peer, and what it
// allocates then is held beside the peer state at weftd's peak RSS. 2202
// bytes a peer when every peer's sources went through a map and the lists
// grew by appending, 450 since.
func TestFilterSetsAllocPerPeer(t *testing.T) {
	const n = 5000
	peers := testFilterPeers(n)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f, err := newFilterSets(peers)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.len(); got != 3*n {
		t.Fatalf("%d elements, want %d", got, 3*n)
	}
	per := (after.TotalAlloc - before.TotalAlloc) / n
	t.Logf("%d bytes allocated per peer", per)
	if per > maxFilterSetsBytesPerPeer {
		t.Errorf("building the filter's elements allocated %d bytes per peer, want at most %d", per, maxFilterSetsBytesPerPeer)
	}
}

// Peers out of order or repeated give the elements of the same peers
// sorted and merged.
func TestFilterSetsMergeRepeatedPeers(t *testing.T) {
	a := netip.MustParseAddr("198.18.0.2")
	b := netip.MustParseAddr("198.18.0.3")
	pa := netip.MustParsePrefix("10.244.2.0/24")
	pb := netip.MustParsePrefix("10.244.3.0/24")
	merged, err := newFilterSets([]FilterPeer{
		{Addr: b, Sources: []netip.Prefix{pb}},
		{Addr: netip.AddrFrom16(a.As16()), Sources: []netip.Prefix{netip.PrefixFrom(a, 32)}}, // a, IPv4-mapped
		{Addr: a, Sources: []netip.Prefix{pa}},
		{Addr: b, Sources: []netip.Prefix{netip.PrefixFrom(b, 32), netip.MustParsePrefix("10.244.3.128/25")}}, // inside pb: dropped
	})
	if err != nil {
		t.Fatal(err)
	}
	want, err := newFilterSets([]FilterPeer{
		{Addr: b, Sources: []netip.Prefix{pb, netip.PrefixFrom(b, 32)}},
		{Addr: a, Sources: []netip.Prefix{netip.PrefixFrom(a, 32), pa}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, es := range merged.all() {
		var got, exp []string
		for _, e := range es {
			got = append(got, elemKey(e))
		}
		for _, e := range want.all()[i] {
			exp = append(exp, elemKey(e))
		}
		if strings.Join(got, ",") != strings.Join(exp, ",") {
			t.Errorf("set %d: %q, want %q", i, got, exp)
		}
	}
	if len(merged.v4) != 2 || len(merged.sources4) != 4 {
		t.Errorf("%d peer and %d source elements, want 2 and 4", len(merged.v4), len(merged.sources4))
	}
	// The callers' lists are theirs: merging did not write into them.
	in := []netip.Prefix{pa, pb}
	if _, err := newFilterSets([]FilterPeer{{Addr: a, Sources: in[:1]}, {Addr: a, Sources: []netip.Prefix{netip.PrefixFrom(a, 32)}}}); err != nil {
		t.Fatal(err)
	}
	if in[1] != pb {
		t.Errorf("merging wrote into a caller's Sources: %v", in)
	}
}

func testFilterPeers(n int) []FilterPeer {
	peers := make([]FilterPeer, n)
	for i := range peers {
		a := netip.AddrFrom4([4]byte{100, 64, byte(i / 250), byte(1 + i%250)})
		peers[i] = FilterPeer{Addr: a, Sources: []netip.Prefix{
			netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(100 + i/256), byte(i), 0}), 24), netip.PrefixFrom(a, 32)}}
	}
	return peers
}
