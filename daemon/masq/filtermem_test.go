package masq

import (
	"net/netip"
	"runtime"
	"strings"
	"testing"
)

// maxFilterBytesPerPeer bounds TestInstalledFilterMemoryPerPeer.
const maxFilterBytesPerPeer = 80

// TestInstalledFilterMemoryPerPeer is the regression guard of what the
// nftables manager keeps per peer of an installed peer filter with the
// inner check, among 10000 peers as the daemon hands them (its address and
// a /26 pod subnet as sources): its three elements (its address, its pod
// subnet's and its address's source ranges) and, under its address, which
// they are. 448 bytes a peer (5000 peers, /24 subnets) when each key was
// held twice and the address's keys in four lists; 308 (the same with
// 10000 peers and /26 subnets) when each key was a string, in a map per
// set and in a list per address; 39 since the elements are fixed-size
// keys and values without pointers, an address's sources in its entry
// (the same under the race detector).
func TestInstalledFilterMemoryPerPeer(t *testing.T) {
	const n = 10000
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
	if got := st.len(); got != 3*n {
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

// Bounds of TestPeerFilterUpdateAllocs.
const (
	maxFilterUpdateAllocs = 36
	maxFilterUpdateBytes  = 2800
)

// TestPeerFilterUpdateAllocs is the regression guard of what
// UpdatePeerFilter allocates beside the kernel's transaction, among 10000
// installed peers: the elements of the batch, the diff against the
// installed filter, and the record of it. A batch moves one peer's pod
// subnet and brings a new peer; the next moves it back and takes the new
// peer out: 43 allocations, 2312 bytes an update (45, 2576 under the race
// detector) when the diff took a map of the batch's elements by string
// key; 27, 2260 (29, 2448) since. Most of the rest is the batch's
// elements, 128 bytes each, and the lists of them.
func TestPeerFilterUpdateAllocs(t *testing.T) {
	const n = 10000
	peers := testFilterPeers(n + 1)
	f, err := newFilterSets(peers[:n])
	if err != nil {
		t.Fatal(err)
	}
	st := newInstalledFilter(4789, true, f)
	moved := FilterPeer{Addr: peers[0].Addr, Sources: []netip.Prefix{peers[0].Sources[0], peers[n].Sources[1]}}
	batches := [2]struct {
		changed []FilterPeer
		removed []netip.Addr
		add     [4]int // elements added per set, filterSets.all's order
		del     [4]int
	}{
		{changed: []FilterPeer{moved, peers[n]}, add: [4]int{1, 0, 3, 0}, del: [4]int{0, 0, 1, 0}},
		{changed: []FilterPeer{peers[0]}, removed: []netip.Addr{peers[n].Addr}, add: [4]int{0, 0, 1, 0}, del: [4]int{1, 0, 3, 0}},
	}
	var runs int
	update := func() {
		b := &batches[runs%2]
		runs++
		f, err := newFilterSets(b.changed)
		if err != nil {
			t.Fatal(err)
		}
		affected := affectedAddrs(b.changed, b.removed)
		add, del := st.updateDiff(f, affected)
		for i := range add {
			if len(add[i]) != b.add[i] || len(del[i]) != b.del[i] {
				t.Fatalf("batch %d, set %d: %d elements added, %d deleted; want %d, %d", (runs-1)%2, i, len(add[i]), len(del[i]), b.add[i], b.del[i])
			}
		}
		st.updated(f, affected)
	}
	allocs := testing.AllocsPerRun(99, update) // and one warm-up: even, back where it began
	const rounds = 100
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range rounds {
		update()
	}
	runtime.ReadMemStats(&after)
	if got := st.len(); got != 3*n {
		t.Fatalf("after the updates %d elements, want %d", got, 3*n)
	}
	bytes := (after.TotalAlloc - before.TotalAlloc) / rounds
	t.Logf("%.0f allocations, %d bytes an update", allocs, bytes)
	if allocs > maxFilterUpdateAllocs || bytes > maxFilterUpdateBytes {
		t.Errorf("an update allocated %.0f times, %d bytes; want at most %d, %d", allocs, bytes, maxFilterUpdateAllocs, maxFilterUpdateBytes)
	}
}

// maxFilterFullPassBytesPerPeer bounds TestPeerFilterFullPassAllocs.
const maxFilterFullPassBytesPerPeer = 100

// TestPeerFilterFullPassAllocs is the regression guard of what a full pass
// of unchanged peers allocates in the bookkeeping of an update of the
// whole set (updateFilterLocked), beside the elements it is handed
// (TestFilterSetsAllocPerPeer): the diff of the installed filter against
// the whole set, and the record of the result. Among 10000 peers: 1124
// bytes a peer (80235 allocations) when the diff took a map of every
// element by string key and the record was made again; 39 (34-35)
// since, the index of the whole set that becomes the record (the same
// under the race detector).
func TestPeerFilterFullPassAllocs(t *testing.T) {
	const n = 10000
	f, err := newFilterSets(testFilterPeers(n))
	if err != nil {
		t.Fatal(err)
	}
	st := newInstalledFilter(4789, true, f)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	add, del, next := st.fullDiff(f)
	st.filterIndex = next
	runtime.ReadMemStats(&after)
	if got := elemCount(add) + elemCount(del); got != 0 {
		t.Fatalf("%d changes for the same peers, want none", got)
	}
	if got := st.len(); got != 3*n {
		t.Fatalf("%d elements after the pass, want %d", got, 3*n)
	}
	per := (after.TotalAlloc - before.TotalAlloc) / n
	t.Logf("%d bytes a peer, %d allocations", per, after.Mallocs-before.Mallocs)
	if per > maxFilterFullPassBytesPerPeer {
		t.Errorf("a full pass allocated %d bytes a peer, want at most %d", per, maxFilterFullPassBytesPerPeer)
	}
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
			got = append(got, elemString(e))
		}
		for _, e := range want.all()[i] {
			exp = append(exp, elemString(e))
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

// testFilterPeers are n IPv4 peers sorted by address as the daemon hands
// them: each its address and a /26 pod subnet as sources.
func testFilterPeers(n int) []FilterPeer {
	peers := make([]FilterPeer, n)
	for i := range peers {
		a := netip.AddrFrom4([4]byte{100, 64, byte((i + 1) >> 8), byte(i + 1)})
		pod := i * 64
		peers[i] = FilterPeer{Addr: a, Sources: []netip.Prefix{netip.PrefixFrom(a, 32),
			netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(pod >> 16), byte(pod >> 8), byte(pod)}), 26)}}
	}
	return peers
}
