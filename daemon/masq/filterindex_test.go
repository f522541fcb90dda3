package masq

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/nftables"
)

// TestFilterIndex: the installed filter's index holds every element of
// every set once and gives each back whole (an address with more sources
// than its entry holds, IPv6, an address without sources of its family);
// without the inner check it keeps no sources elements; an update leaves
// it holding what an index of the whole new set holds.
func TestFilterIndex(t *testing.T) {
	peer := func(a string, sources ...string) FilterPeer {
		p := FilterPeer{Addr: netip.MustParseAddr(a)}
		for _, s := range sources {
			p.Sources = append(p.Sources, netip.MustParsePrefix(s))
		}
		return p
	}
	a := peer("198.18.0.1", "198.18.0.1/32", "10.244.1.0/24")
	b := peer("198.18.0.2", "198.18.0.2/32", "10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/26") // more than inlineSpans
	c := peer("2001:db8::1", "2001:db8::1/128", "fd00:1::/64")
	d := peer("198.18.0.4", "fd00:4::/64") // no source of its family
	f := mustFilterSets(t, a, b, c, d)
	if len(f.sources4) != 6 || len(f.sources6) != 2 {
		t.Fatalf("%d and %d sources elements, want 6 and 2", len(f.sources4), len(f.sources6))
	}
	st := newInstalledFilter(8472, true, f)
	if got, want := st.counts(), [4]int{len(f.v4), len(f.v6), len(f.sources4), len(f.sources6)}; got != want {
		t.Errorf("counts %v, want %v", got, want)
	}
	// A diff to the empty filter deletes every element, each rebuilt from
	// the index.
	add, del, _ := st.fullDiff(filterSets{})
	for i, es := range f.all() {
		if len(add[i]) != 0 {
			t.Errorf("set %d: %d elements to add to reach the empty filter", i, len(add[i]))
		}
		if got, want := elemStrings(del[i]), elemStrings(es); !slices.Equal(got, want) {
			t.Errorf("set %d: the index gives back %q, want %q", i, got, want)
		}
	}
	if add, _ := st.updateDiff(f, nil); elemCount(add) != 0 {
		t.Errorf("the installed elements are to be added again: %v", add)
	}

	outer := newInstalledFilter(8472, false, f)
	if got, want := outer.counts(), [4]int{len(f.v4), len(f.v6), 0, 0}; got != want {
		t.Errorf("without the inner check: counts %v, want %v", got, want)
	}
	if _, del, _ := outer.fullDiff(filterSets{}); len(del[0]) != len(f.v4) || len(del[2])+len(del[3]) != 0 {
		t.Errorf("without the inner check the diff to the empty filter deletes %d peers and %d sources, want %d and 0",
			len(del[0]), len(del[2])+len(del[3]), len(f.v4))
	}

	// a and d go (a twice, once IPv4-mapped), b keeps two of its sources:
	// four sources elements out, two peers, nothing in.
	b2 := peer("198.18.0.2", "198.18.0.2/32", "10.2.0.0/24")
	changed, removed := []FilterPeer{b2}, []netip.Addr{netip.AddrFrom16(a.Addr.As16()), a.Addr, d.Addr}
	update := func(changed []FilterPeer, removed []netip.Addr, adds, dels [4]int) {
		t.Helper()
		f := mustFilterSets(t, changed...)
		affected := affectedAddrs(changed, removed)
		add, del := st.updateDiff(f, affected)
		for i := range add {
			if len(add[i]) != adds[i] || len(del[i]) != dels[i] {
				t.Errorf("set %d: %d elements added, %d deleted; want %d, %d", i, len(add[i]), len(del[i]), adds[i], dels[i])
			}
		}
		st.updated(f, affected)
	}
	update(changed, removed, [4]int{}, [4]int{2, 0, 4, 0})
	same := func(peers ...FilterPeer) {
		t.Helper()
		want := mustFilterSets(t, peers...)
		add, del, next := st.fullDiff(want)
		if elemCount(add) != 0 || elemCount(del) != 0 || st.counts() != next.counts() {
			t.Errorf("after the update the index differs from that of the whole set: %v to add, %v to delete, counts %v, want %v",
				add, del, st.counts(), next.counts())
		}
	}
	same(b2, c)
	if len(st.v4.more) != 0 {
		t.Errorf("%d addresses' sources left spilled", len(st.v4.more))
	}
	update([]FilterPeer{a, b}, nil, [4]int{1, 0, 4, 0}, [4]int{})
	same(a, b, c)
}

func mustFilterSets(t *testing.T, peers ...FilterPeer) filterSets {
	t.Helper()
	f, err := newFilterSets(peers)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// elemCount is the number of elements in sets.
func elemCount(sets [4][]nftables.SetElement) int {
	n := 0
	for _, es := range sets {
		n += len(es)
	}
	return n
}

// elemString is an element's key and key end, for comparisons.
func elemString(e nftables.SetElement) string { return fmt.Sprintf("%x-%x", e.Key, e.KeyEnd) }

// elemStrings are the elemStrings of es, sorted.
func elemStrings(es []nftables.SetElement) []string {
	out := make([]string, 0, len(es))
	for _, e := range es {
		out = append(out, elemString(e))
	}
	slices.Sort(out)
	return out
}
