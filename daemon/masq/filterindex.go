package masq

import (
	"net/netip"
	"slices"

	"github.com/google/nftables"
)

// installedFilter is a peer filter as installed: its port, whether it has
// the inner check, and the elements of its sets (filterIndex).
type installedFilter struct {
	port  uint16
	inner bool
	filterIndex
}

func newInstalledFilter(port uint16, inner bool, f filterSets) *installedFilter {
	return &installedFilter{port: port, inner: inner, filterIndex: newFilterIndex(f, inner)}
}

// filterIndex holds the elements of a peer filter's sets by peer address,
// per family, in maps whose keys and values are fixed-size and hold no
// pointer: an element is no allocation of its own and the garbage
// collector does not scan the maps (an element's key as a string, in a
// map per set and again in a list per address, took 308 bytes a peer of
// 10000 with the inner check; TestInstalledFilterMemoryPerPeer). An element
// to delete is rebuilt from the address and its range. The sources
// elements are kept only when the filter has the inner check: without it
// the sources sets are not installed.
type filterIndex struct {
	v4 familyIndex[[4]byte]
	v6 familyIndex[[16]byte]
}

// newFilterIndex is the index of f's elements (with its sources elements
// when sources is set).
func newFilterIndex(f filterSets, sources bool) filterIndex {
	var x filterIndex
	x.record(f, sources)
	return x
}

// record adds f's elements to x (its sources elements when sources is
// set).
func (x *filterIndex) record(f filterSets, sources bool) {
	x.v4.record(f.v4, f.sources4, sources)
	x.v6.record(f.v6, f.sources6, sources)
}

// drop takes out a's elements.
func (x *filterIndex) drop(a netip.Addr) {
	switch {
	case a.Is4():
		x.v4.drop(a.As4())
	case a.Is6():
		x.v6.drop(a.As16())
	}
}

// counts are the numbers of elements x holds per set, filterSets.all's
// order.
func (x *filterIndex) counts() [4]int {
	return [4]int{len(x.v4.addrs), len(x.v6.addrs), x.v4.sources, x.v6.sources}
}

// len is the number of elements x holds.
func (x *filterIndex) len() int {
	n := 0
	for _, c := range x.counts() {
		n += c
	}
	return n
}

// missing are f's elements that x lacks, by set in filterSets.all's order
// (none of the sources sets unless sources is set).
func (x *filterIndex) missing(f filterSets, sources bool) (add [4][]nftables.SetElement) {
	add[0], add[2] = x.v4.missing(f.v4, f.sources4, sources)
	add[1], add[3] = x.v6.missing(f.v6, f.sources6, sources)
	return add
}

// shrinksBeyond reports whether some set of st holds more than max elements
// beyond f's: updating st to f would delete more than max, so a rewrite is
// cheaper, and known to be without the difference computed (an index of
// all of f's elements).
func (st *installedFilter) shrinksBeyond(f filterSets, max int) bool {
	have := st.counts()
	for i, es := range f.all() {
		if have[i]-len(es) > max {
			return true
		}
	}
	return false
}

// affectedAddrs are the addresses of changed and removed, unmapped, sorted
// and each once.
func affectedAddrs(changed []FilterPeer, removed []netip.Addr) []netip.Addr {
	affected := make([]netip.Addr, 0, len(changed)+len(removed))
	for _, p := range changed {
		affected = append(affected, p.Addr.Unmap())
	}
	for _, a := range removed {
		affected = append(affected, a.Unmap())
	}
	slices.SortFunc(affected, netip.Addr.Compare)
	return slices.Compact(affected)
}

// updateDiff is UpdatePeerFilter's change of st's sets (filterSets.all's
// order) for f, the elements of the peers that changed, and affected
// (affectedAddrs), the addresses that changed or went: f's elements st
// lacks, and the elements of affected addresses st has and f lacks. The
// sources sets are left alone without the inner check. What it allocates
// beside the elements is an index of f's: the size of the batch, not of
// the filter.
func (st *installedFilter) updateDiff(f filterSets, affected []netip.Addr) (add, del [4][]nftables.SetElement) {
	next := newFilterIndex(f, st.inner)
	add = st.missing(f, st.inner)
	for _, a := range affected {
		switch {
		case a.Is4():
			st.v4.deletions(a.As4(), &next.v4, st.inner, &del[0], &del[2])
		case a.Is6():
			st.v6.deletions(a.As16(), &next.v6, st.inner, &del[1], &del[3])
		}
	}
	return add, del
}

// updated records in st that the change updateDiff(f, affected) gave is
// installed: the affected addresses hold f's elements.
func (st *installedFilter) updated(f filterSets, affected []netip.Addr) {
	for _, a := range affected {
		st.drop(a)
	}
	st.record(f, st.inner)
}

// fullDiff is the change of st's sets (filterSets.all's order) that makes
// them hold f's elements: those st lacks, and those f lacks; and next, the
// index of f's elements, what st holds once the change is installed. The
// sources sets are left alone without the inner check.
func (st *installedFilter) fullDiff(f filterSets) (add, del [4][]nftables.SetElement, next filterIndex) {
	next = newFilterIndex(f, st.inner)
	add = st.missing(f, st.inner)
	for a := range st.v4.addrs {
		st.v4.deletions(a, &next.v4, st.inner, &del[0], &del[2])
	}
	for a := range st.v6.addrs {
		st.v6.deletions(a, &next.v6, st.inner, &del[1], &del[3])
	}
	return add, del, next
}

// addrKey is a peer address as the elements of its family hold it.
type addrKey interface{ [4]byte | [16]byte }

// span is the inner source range lo–hi of an element of a sources set:
// the element's key is its peer address followed by lo, its key end the
// same address followed by hi (newFilterSets makes them so).
type span[A addrKey] struct{ lo, hi A }

// inlineSpans is how many sources elements an address holds in its
// familyIndex entry; one with more has them all in familyIndex.more. The
// daemon hands a peer two sources: its address and its pod subnet.
const inlineSpans = 2

// spilled is the addrElems.n of an address whose sources elements are in
// familyIndex.more.
const spilled = 0xff

// addrElems are a peer address's sources elements; that there is an entry
// is its element in the peer set.
type addrElems[A addrKey] struct {
	n     uint8 // spans in use, or spilled
	spans [inlineSpans]span[A]
}

// familyIndex is a filterIndex's elements of one family.
type familyIndex[A addrKey] struct {
	// addrs are the addresses of the peer set, with their sources
	// elements; nil until the first is recorded.
	addrs map[A]addrElems[A]
	// more are the sources elements of the addresses that have more than
	// inlineSpans (rare: a peer whose subnet moved, kept until the trim).
	more map[A][]span[A]
	// sources is the number of sources elements.
	sources int
}

// record adds the elements of the family's peer set and (with
// withSources) sources set to x.
func (x *familyIndex[A]) record(peers, sources []nftables.SetElement, withSources bool) {
	if !withSources {
		sources = nil
	}
	if x.addrs == nil && len(peers)+len(sources) > 0 {
		x.addrs = make(map[A]addrElems[A], len(peers))
	}
	for _, e := range peers {
		if a := A(e.Key); !x.has(a) {
			x.addrs[a] = addrElems[A]{}
		}
	}
	for _, e := range sources {
		x.addSpan(spanOf[A](e))
	}
}

// addSpan records the sources element of a with the range s.
func (x *familyIndex[A]) addSpan(a A, s span[A]) {
	if x.hasSpan(a, s) {
		return
	}
	x.sources++
	e := x.addrs[a]
	switch {
	case e.n == spilled:
		x.more[a] = append(x.more[a], s)
		return
	case e.n < inlineSpans:
		e.spans[e.n] = s
		e.n++
	default:
		if x.more == nil {
			x.more = make(map[A][]span[A])
		}
		x.more[a] = append(append(make([]span[A], 0, inlineSpans+1), e.spans[:]...), s)
		e = addrElems[A]{n: spilled}
	}
	x.addrs[a] = e
}

// has reports whether a is in the peer set.
func (x *familyIndex[A]) has(a A) bool {
	_, ok := x.addrs[a]
	return ok
}

// hasSpan reports whether the sources element of a with the range s is in
// the sources set.
func (x *familyIndex[A]) hasSpan(a A, s span[A]) bool {
	e := x.addrs[a]
	if e.n == spilled {
		return slices.Contains(x.more[a], s)
	}
	return slices.Contains(e.spans[:e.n], s)
}

// spansOf are the ranges of a's sources elements; buf holds them when
// they are in a's entry.
func (x *familyIndex[A]) spansOf(a A, buf *[inlineSpans]span[A]) []span[A] {
	e := x.addrs[a]
	if e.n == spilled {
		return x.more[a]
	}
	*buf = e.spans
	return buf[:e.n]
}

// drop takes out a's elements.
func (x *familyIndex[A]) drop(a A) {
	e, ok := x.addrs[a]
	if !ok {
		return
	}
	if e.n == spilled {
		x.sources -= len(x.more[a])
		delete(x.more, a)
	} else {
		x.sources -= int(e.n)
	}
	delete(x.addrs, a)
}

// missing are the elements of peers and (with withSources) sources, the
// family's wanted elements, that x lacks.
func (x *familyIndex[A]) missing(peers, sources []nftables.SetElement, withSources bool) (addPeers, addSources []nftables.SetElement) {
	for _, e := range peers {
		if !x.has(A(e.Key)) {
			addPeers = append(addPeers, e)
		}
	}
	if !withSources {
		return addPeers, nil
	}
	for _, e := range sources {
		if !x.hasSpan(spanOf[A](e)) {
			addSources = append(addSources, e)
		}
	}
	return addPeers, addSources
}

// deletions appends to peers and (with withSources) sources the elements
// of a that x holds and next lacks.
func (x *familyIndex[A]) deletions(a A, next *familyIndex[A], withSources bool, peers, sources *[]nftables.SetElement) {
	if !x.has(a) {
		return
	}
	if !next.has(a) {
		*peers = append(*peers, peerElem(a))
	}
	if !withSources {
		return
	}
	var buf [inlineSpans]span[A]
	for _, s := range x.spansOf(a, &buf) {
		if !next.hasSpan(a, s) {
			*sources = append(*sources, sourcesElem(a, s))
		}
	}
}

// spanOf is the peer address and the range of an element of a sources
// set.
func spanOf[A addrKey](e nftables.SetElement) (A, span[A]) {
	a := A(e.Key)
	n := len(a)
	return a, span[A]{lo: A(e.Key[n:]), hi: A(e.KeyEnd[n:])}
}

// peerElem is a's element in the peer set of its family.
func peerElem[A addrKey](a A) nftables.SetElement {
	return nftables.SetElement{Key: appendAddr(make([]byte, 0, len(a)), a)}
}

// sourcesElem is the element of a's family's sources set for a and the
// range s: its key and key end in one allocation.
func sourcesElem[A addrKey](a A, s span[A]) nftables.SetElement {
	n := len(a)
	b := make([]byte, 0, 4*n)
	b = appendAddr(appendAddr(b, a), s.lo)
	b = appendAddr(appendAddr(b, a), s.hi)
	return nftables.SetElement{Key: b[: 2*n : 2*n], KeyEnd: b[2*n:]}
}

// appendAddr appends a's bytes to b (an array of a type parameter cannot
// be sliced).
func appendAddr[A addrKey](b []byte, a A) []byte {
	for i := range len(a) {
		b = append(b, a[i])
	}
	return b
}
