package daemon

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/daemon/masq"
	"github.com/weftnet/weft/internal/packed"
	"github.com/weftnet/weft/subnet"
)

// peerFilterState is what the peer filter was last set to.
type peerFilterState struct {
	installed bool // EnsurePeerFilter succeeded with peers below
	removed   bool // RemovePeerFilter succeeded (the backend has it off)
	// by is the filter as installed: per peer address its Sources less
	// the address's own prefix, which every entry has (kept when it is
	// the only one), so that the entry of a peer alone at its address is
	// one prefix held inline (see prefixSets). It is read with sources and
	// written with record.
	by prefixSets
}

// sources appends to dst the Sources installed for a, sorted as an entry's
// (filterIndex.appendEntry); false when the filter has no entry for a.
func (s *peerFilterState) sources(dst []netip.Prefix, a netip.Addr) ([]netip.Prefix, bool) {
	start := len(dst)
	dst, ok := s.by.appendTo(dst, packed.AddrOf(a))
	if !ok {
		return dst, false
	}
	self := netip.PrefixFrom(a, a.BitLen())
	if i, found := slices.BinarySearchFunc(dst[start:], self, backend.ComparePrefix); !found {
		dst = slices.Insert(dst, start+i, self)
	}
	return dst, true
}

// record notes that the filter now holds p, an entry (its Sources sorted,
// a among them).
func (s *peerFilterState) record(p masq.FilterPeer) {
	self := netip.PrefixFrom(p.Addr, p.Addr.BitLen())
	var buf [4]netip.Prefix
	rest := buf[:0]
	for _, x := range p.Sources {
		if x != self {
			rest = append(rest, x)
		}
	}
	if len(rest) == 0 {
		rest = append(rest, self)
	}
	s.by.set(packed.AddrOf(p.Addr), rest)
}

// holds reports whether the filter is installed as exactly peers.
func (s *peerFilterState) holds(peers []masq.FilterPeer) bool {
	if !s.installed || s.by.len() != len(peers) {
		return false
	}
	var buf [8]netip.Prefix
	for _, p := range peers {
		if have, ok := s.sources(buf[:0], p.Addr); !ok || !slices.Equal(have, p.Sources) {
			return false
		}
	}
	return true
}

// grow adds to peers, a filterPeers list, what the filter holds beyond it:
// every address of either with the sources of both, in filterPeers's
// order. It returns that list, which may share peers's array and
// Sources, and the addresses where it holds more than peers did (the
// trim's to take out).
func (s *peerFilterState) grow(peers []masq.FilterPeer) ([]masq.FilterPeer, map[netip.Addr]bool) {
	stale := map[netip.Addr]bool{}
	var buf [8]netip.Prefix
	both := 0
	for i, p := range peers {
		have, ok := s.sources(buf[:0], p.Addr)
		if !ok {
			continue
		}
		both++
		if u := unionSources(p.Sources, have); !slices.Equal(u, p.Sources) {
			peers[i].Sources, stale[p.Addr] = u, true
		}
	}
	if both == s.by.len() {
		return peers, stale
	}
	var gone []masq.FilterPeer // installed for no peer
	for pa := range s.by.one {
		a := pa.Addr()
		if _, ok := slices.BinarySearchFunc(peers, a, func(p masq.FilterPeer, a netip.Addr) int { return p.Addr.Compare(a) }); ok {
			continue
		}
		src, _ := s.sources(nil, a)
		gone = append(gone, masq.FilterPeer{Addr: a, Sources: src})
		stale[a] = true
	}
	slices.SortFunc(gone, func(x, y masq.FilterPeer) int { return x.Addr.Compare(y.Addr) })
	return unionFilterPeers(peers, gone), stale
}

// filterIndex maps each underlay address of the peers (filterAddrs) to the
// keys of the peers that have it, so the filter entry of an address is
// found without visiting the other peers. The address of one peer, nearly
// every one, costs a packed address and key (see prefixSets).
type filterIndex struct{ keys prefixSets }

func newFilterIndex(peers map[netip.Prefix]subnet.Lease) *filterIndex {
	idx := &filterIndex{keys: newPrefixSets(len(peers))}
	for k, l := range peers {
		idx.add(k, l)
	}
	return idx
}

// filterAddrs calls f with each underlay address of l and the pod subnet
// its VXLAN traffic carries (PublicIP with Subnet, PublicIPv6 with
// IPv6Subnet); a family the lease lacks adds nothing.
func filterAddrs(l subnet.Lease, f func(netip.Addr, netip.Prefix)) {
	for _, p := range [2]struct {
		a  netip.Addr
		sn netip.Prefix
	}{{l.Attrs.PublicIP.Unmap(), l.Subnet}, {l.Attrs.PublicIPv6, l.IPv6Subnet}} {
		if p.a.IsValid() && !p.a.IsUnspecified() && p.sn.IsValid() {
			f(p.a, p.sn.Masked())
		}
	}
}

func (idx *filterIndex) add(k netip.Prefix, l subnet.Lease) {
	filterAddrs(l, func(a netip.Addr, _ netip.Prefix) { idx.keys.add(packed.AddrOf(a), packed.PrefixOf(k)) })
}

func (idx *filterIndex) remove(k netip.Prefix, l subnet.Lease) {
	filterAddrs(l, func(a netip.Addr, _ netip.Prefix) { idx.keys.remove(packed.AddrOf(a), packed.PrefixOf(k)) })
}

// appendEntry appends to dst the filter entry of address a: the inner
// sources its VXLAN traffic may carry, which are the pod subnets of that
// family of the peers at a and a itself (its host answering our pods keeps
// that source), sorted; false when no peer has a.
func (idx *filterIndex) appendEntry(dst []netip.Prefix, peers map[netip.Prefix]subnet.Lease, a netip.Addr) ([]netip.Prefix, bool) {
	pa := packed.AddrOf(a)
	first, ok := idx.keys.one[pa]
	if !ok {
		return dst, false
	}
	start := len(dst)
	dst = append(dst, netip.PrefixFrom(a, a.BitLen()))
	subnets := func(k packed.Prefix) {
		filterAddrs(peers[k.Prefix()], func(la netip.Addr, sn netip.Prefix) {
			if la == a {
				dst = append(dst, sn)
			}
		})
	}
	subnets(first)
	for _, k := range idx.keys.more[pa] {
		subnets(k)
	}
	src := dst[start:]
	slices.SortFunc(src, backend.ComparePrefix)
	return dst[:start+len(slices.Compact(src))], true
}

// noteFilterChange keeps the filter index up to date with a change of
// peer k from old to l (nil: none) and records the addresses whose filter
// entry may have changed, for the next updatePeerFilter. Without an index
// (the next update is a full one) it does nothing.
func (g *generation) noteFilterChange(k netip.Prefix, old, l *subnet.Lease) {
	if g.filterIdx == nil {
		return
	}
	if g.filterTouched == nil {
		g.filterTouched = map[netip.Addr]bool{}
	}
	touch := func(a netip.Addr, _ netip.Prefix) { g.filterTouched[a] = true }
	if old != nil {
		g.filterIdx.remove(k, *old)
		filterAddrs(*old, touch)
	}
	if l != nil {
		g.filterIdx.add(k, *l)
		filterAddrs(*l, touch)
	}
}

// updatePeerFilter keeps the firewall filter of a PeerFiltered backend (vxlan)
// in step with the peer set. With grow it only adds: it runs so before the
// backend programs a change, so a new peer's packets are let in by the time
// routes point at it. Without grow it also takes out what no peer needs
// any more; the reconcile loop does that once per Config.PeerFilterGrace
// (filterTrimPending says when there is something to take out), because
// the kernel's removal would delay whatever change comes next.
// After a batch of events it hands the firewall only the entries of the
// addresses touched since (masq.PeerFilterUpdater); after a full pass, or
// when the firewall does not know its filter, the whole set.
// Backends that do not filter leave the firewall alone.
func (g *generation) updatePeerFilter(ctx context.Context, grow bool) {
	f, ok := g.be.(backend.PeerFiltered)
	if !ok {
		return
	}
	pf, ok := g.masq.(masq.PeerFilter)
	if !ok {
		if !g.filter.removed {
			g.filter.removed = true // say it once
			g.d.log.Warn("the VXLAN peer filter needs the nftables firewall API (--masq-backend=nftables, or auto without EnableNFTables false); VXLAN is accepted from anyone")
		}
		return
	}
	port, on := f.FilterPort()
	if !on {
		if !g.filter.removed {
			if err := pf.RemovePeerFilter(ctx); err != nil {
				g.d.log.Warn("cannot remove the peer filter; retrying on the next pass", "err", err)
				return
			}
			g.filter = peerFilterState{removed: true}
		}
		return
	}
	if pu, ok := pf.(masq.PeerFilterUpdater); ok && g.filter.installed && g.filterIdx != nil {
		if g.updatePeerFilterDelta(ctx, pu, port, grow) {
			return
		}
	}
	idx := g.filterIdx // kept up to date while not nil: no second index
	if idx == nil {
		idx = newFilterIndex(g.peers)
	}
	peers := idx.peers(g.peers)
	var stale map[netip.Addr]bool
	if grow && g.filter.installed {
		// The filter may hold more than the peers: the addresses where it
		// does are the trim's to take out.
		peers, stale = g.filter.grow(peers)
	}
	g.filterIdx, g.filterTouched, g.filterStale = idx, nil, stale
	if g.filter.holds(peers) {
		return
	}
	if err := pf.EnsurePeerFilter(ctx, port, peers); err != nil {
		// The filter is as it was: the next update is a whole one.
		g.filterIdx, g.filterTouched, g.filterStale = nil, nil, nil
		g.d.metrics.reconcileErrors.WithLabelValues("peer-filter").Inc()
		g.d.log.Warn("cannot update the VXLAN peer filter; retrying on the next pass", "err", err)
		return
	}
	by := g.filter.by // refilled, not a second map of every peer
	by.reset(len(peers))
	g.filter = peerFilterState{installed: true, by: by}
	for _, p := range peers {
		g.filter.record(p)
	}
}

// filterTrimPending reports whether the peer filter may hold entries the
// peers do not need (an update without grow would take them out), or
// changes an update could not hand over.
func (g *generation) filterTrimPending() bool {
	return len(g.filterStale) > 0 || len(g.filterTouched) > 0
}

// updatePeerFilterDelta hands the firewall the entries of the addresses
// touched since the last update (see updatePeerFilter for grow). An update
// with grow moves the addresses whose entry then holds more than their
// peers need (a peer gone, a subnet moved) to g.filterStale, so the next
// pass does not visit them again: a pass costs the addresses its own
// events touched, however many removals wait for the trim. The trim (no
// grow) visits the touched and the stale ones. It reports false when the
// firewall asks for the whole set.
func (g *generation) updatePeerFilterDelta(ctx context.Context, pu masq.PeerFilterUpdater, port uint16, grow bool) bool {
	visit := g.filterTouched
	if !grow && len(g.filterStale) > 0 {
		visit = maps.Clone(g.filterStale)
		maps.Copy(visit, g.filterTouched)
	}
	var changed []masq.FilterPeer
	var removed, stale []netip.Addr
	var src []netip.Prefix // changed's Sources are cut from it, not allocated one by one
	var wantBuf, haveBuf [8]netip.Prefix
	addrs := slices.AppendSeq(make([]netip.Addr, 0, len(visit)), maps.Keys(visit))
	slices.SortFunc(addrs, netip.Addr.Compare)
	for _, a := range addrs {
		want, ok := g.filterIdx.appendEntry(wantBuf[:0], g.peers, a)
		have, had := g.filter.sources(haveBuf[:0], a)
		switch {
		case !ok && !had:
			continue
		case !ok && grow:
			stale = append(stale, a) // gone: only an update without grow takes it out
			continue
		case !ok:
			removed = append(removed, a)
			continue
		}
		exact := want
		if grow && had {
			want = unionSources(want, have)
		}
		if !slices.Equal(want, exact) {
			stale = append(stale, a)
		}
		if !had || !slices.Equal(want, have) {
			start := len(src)
			src = append(src, want...)
			changed = append(changed, masq.FilterPeer{Addr: a, Sources: src[start:len(src):len(src)]})
		}
	}
	if len(changed) > 0 || len(removed) > 0 {
		err := pu.UpdatePeerFilter(ctx, port, changed, removed)
		if errors.Is(err, masq.ErrPeerFilterUnknown) {
			return false
		}
		if err != nil {
			g.d.metrics.reconcileErrors.WithLabelValues("peer-filter").Inc()
			g.d.log.Warn("cannot update the VXLAN peer filter; retrying on the next pass", "err", err)
			return true // the touched addresses stay for the next pass
		}
		for _, p := range changed {
			g.filter.record(p)
		}
		for _, a := range removed {
			g.filter.by.delete(packed.AddrOf(a))
		}
	}
	// Every address visited is now exact, or stale and recorded as such.
	if !grow {
		g.filterStale = nil
	}
	g.filterTouched = nil
	for _, a := range stale {
		if g.filterStale == nil {
			g.filterStale = map[netip.Addr]bool{}
		}
		g.filterStale[a] = true
	}
	return true
}

// filterPeers is the peer set as the filter takes it, sorted by address:
// per underlay address (PublicIP, and PublicIPv6 for the IPv6 device's
// traffic) its filterIndex entry.
func filterPeers(peers map[netip.Prefix]subnet.Lease) []masq.FilterPeer {
	return newFilterIndex(peers).peers(peers)
}

// peers is filterPeers from the index of peers. The Sources are cut from
// one slice grown for them all (each capped at its length), not allocated
// one by one.
func (idx *filterIndex) peers(peers map[netip.Prefix]subnet.Lease) []masq.FilterPeer {
	addrs := idx.keys.addrs()
	out := make([]masq.FilterPeer, 0, len(addrs))
	src := make([]netip.Prefix, 0, 2*len(addrs)) // the address and one subnet, mostly
	for _, a := range addrs {
		start := len(src)
		src, _ = idx.appendEntry(src, peers, a)
		out = append(out, masq.FilterPeer{Addr: a, Sources: src[start:len(src):len(src)]})
	}
	return out
}

// unionFilterPeers merges two sorted filter peer lists (filterPeers's
// order): every address of either, with the sources of both.
func unionFilterPeers(a, b []masq.FilterPeer) []masq.FilterPeer {
	out := make([]masq.FilterPeer, 0, max(len(a), len(b)))
	for len(a) > 0 || len(b) > 0 {
		switch {
		case len(b) == 0 || (len(a) > 0 && a[0].Addr.Less(b[0].Addr)):
			out, a = append(out, a[0]), a[1:]
		case len(a) == 0 || b[0].Addr.Less(a[0].Addr):
			out, b = append(out, b[0]), b[1:]
		default:
			out = append(out, masq.FilterPeer{Addr: a[0].Addr, Sources: unionSources(a[0].Sources, b[0].Sources)})
			a, b = a[1:], b[1:]
		}
	}
	return out
}

// unionSources is the union of two sorted lists of sources, sorted: a
// itself when b adds nothing to it.
func unionSources(a, b []netip.Prefix) []netip.Prefix {
	if !slices.ContainsFunc(b, func(p netip.Prefix) bool {
		_, ok := slices.BinarySearchFunc(a, p, backend.ComparePrefix)
		return !ok
	}) {
		return a
	}
	u := append(slices.Clip(a), b...) // a new array: a is left as it is
	slices.SortFunc(u, backend.ComparePrefix)
	return slices.Compact(u)
}

// prefixSets holds a set of prefixes per address, in the packed forms: an
// address with one prefix (a peer alone at its address, the common case)
// costs a slot of one, a map without pointers the garbage collector does
// not scan and no allocation of its own; the other prefixes of an
// address, rarely any, are in more. Make it with newPrefixSets (or reset):
// the zero prefixSets has no map to write to.
type prefixSets struct {
	one  map[packed.Addr]packed.Prefix   // per address its first prefix
	more map[packed.Addr][]packed.Prefix // the others, never an empty slice
}

func newPrefixSets(n int) prefixSets {
	return prefixSets{one: make(map[packed.Addr]packed.Prefix, n)}
}

// len is the number of addresses with a prefix.
func (s *prefixSets) len() int { return len(s.one) }

// add puts p in the set of a, unless it is there.
func (s *prefixSets) add(a packed.Addr, p packed.Prefix) {
	first, ok := s.one[a]
	switch {
	case !ok:
		s.one[a] = p
	case first == p || slices.Contains(s.more[a], p):
	default:
		if s.more == nil {
			s.more = map[packed.Addr][]packed.Prefix{}
		}
		s.more[a] = append(s.more[a], p)
	}
}

// remove takes p out of the set of a, and a out once its set is empty.
// The order of the set's other prefixes may change.
func (s *prefixSets) remove(a packed.Addr, p packed.Prefix) {
	first, ok := s.one[a]
	if !ok {
		return
	}
	rest := s.more[a]
	switch i := slices.Index(rest, p); {
	case first == p && len(rest) == 0:
		delete(s.one, a)
		return
	case first == p:
		s.one[a], rest = rest[len(rest)-1], rest[:len(rest)-1]
	case i >= 0:
		rest[i], rest = rest[len(rest)-1], rest[:len(rest)-1]
	default:
		return
	}
	if len(rest) == 0 {
		delete(s.more, a)
	} else {
		s.more[a] = rest
	}
}

// appendTo appends the set of a to dst, in its order; false when a has
// none.
func (s *prefixSets) appendTo(dst []netip.Prefix, a packed.Addr) ([]netip.Prefix, bool) {
	first, ok := s.one[a]
	if !ok {
		return dst, false
	}
	dst = append(dst, first.Prefix())
	for _, p := range s.more[a] {
		dst = append(dst, p.Prefix())
	}
	return dst, true
}

// set makes ps, not empty, the set of a, in its order.
func (s *prefixSets) set(a packed.Addr, ps []netip.Prefix) {
	s.one[a] = packed.PrefixOf(ps[0])
	if len(ps) == 1 {
		delete(s.more, a)
		return
	}
	rest := s.more[a][:0]
	for _, p := range ps[1:] {
		rest = append(rest, packed.PrefixOf(p))
	}
	if s.more == nil {
		s.more = map[packed.Addr][]packed.Prefix{}
	}
	s.more[a] = rest
}

// delete takes a and its set out.
func (s *prefixSets) delete(a packed.Addr) {
	delete(s.one, a)
	delete(s.more, a)
}

// reset empties s for about n addresses, keeping the memory it has.
func (s *prefixSets) reset(n int) {
	if s.one == nil {
		*s = newPrefixSets(n)
		return
	}
	clear(s.one)
	clear(s.more)
}

// addrs is the addresses with a prefix, sorted.
func (s *prefixSets) addrs() []netip.Addr {
	out := make([]netip.Addr, 0, len(s.one))
	for a := range s.one {
		out = append(out, a.Addr())
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
