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
	// by is the filter as installed, per peer address.
	by map[netip.Addr]masq.FilterPeer
}

// filterIndex maps each underlay address of the peers (filterAddrs) to the
// keys of the peers that have it, so the filter entry of an address is
// found without visiting the other peers.
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

// entry is appendEntry's entry as a filter peer of its own.
func (idx *filterIndex) entry(peers map[netip.Prefix]subnet.Lease, a netip.Addr) (masq.FilterPeer, bool) {
	src, ok := idx.appendEntry(make([]netip.Prefix, 0, 2), peers, a) // the address and one subnet, mostly: one allocation
	if !ok {
		return masq.FilterPeer{}, false
	}
	return masq.FilterPeer{Addr: a, Sources: src}, true
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
		exact := peers
		peers = unionFilterPeers(exact, sortedFilterPeers(g.filter.by))
		// The filter may hold more than the peers: the addresses where it
		// does are the trim's to take out.
		stale = differingFilterPeers(peers, exact)
	}
	g.filterIdx, g.filterTouched, g.filterStale = idx, nil, stale
	if g.filter.installed && len(peers) == len(g.filter.by) && !slices.ContainsFunc(peers, func(p masq.FilterPeer) bool {
		have, ok := g.filter.by[p.Addr]
		return !ok || !sameFilterPeer(p, have)
	}) {
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
	clear(by)
	if by == nil {
		by = make(map[netip.Addr]masq.FilterPeer, len(peers))
	}
	for _, p := range peers {
		by[p.Addr] = p
	}
	g.filter = peerFilterState{installed: true, by: by}
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
	for _, a := range slices.SortedFunc(maps.Keys(visit), netip.Addr.Compare) {
		want, ok := g.filterIdx.entry(g.peers, a)
		have, had := g.filter.by[a]
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
			want = unionFilterPeers([]masq.FilterPeer{want}, []masq.FilterPeer{have})[0]
		}
		if !sameFilterPeer(want, exact) {
			stale = append(stale, a)
		}
		if !had || !sameFilterPeer(want, have) {
			changed = append(changed, want)
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
			g.filter.by[p.Addr] = p
		}
		for _, a := range removed {
			delete(g.filter.by, a)
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

// peers is filterPeers from the index of peers. The Sources share one
// array (each capped at its length).
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

// differingFilterPeers returns the addresses of union (sorted, a superset
// of exact's entries) whose entry is not exact's.
func differingFilterPeers(union, exact []masq.FilterPeer) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	i := 0
	for _, u := range union {
		for i < len(exact) && exact[i].Addr.Less(u.Addr) {
			i++
		}
		if i < len(exact) && sameFilterPeer(u, exact[i]) {
			continue
		}
		out[u.Addr] = true
	}
	return out
}

// sortedFilterPeers is an installed filter as a list in filterPeers's order.
func sortedFilterPeers(by map[netip.Addr]masq.FilterPeer) []masq.FilterPeer {
	out := slices.Collect(maps.Values(by))
	slices.SortFunc(out, func(a, b masq.FilterPeer) int { return a.Addr.Compare(b.Addr) })
	return out
}

func sameFilterPeer(a, b masq.FilterPeer) bool {
	return a.Addr == b.Addr && slices.Equal(a.Sources, b.Sources)
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
			src := slices.SortedFunc(slices.Values(append(slices.Clone(a[0].Sources), b[0].Sources...)), backend.ComparePrefix)
			out = append(out, masq.FilterPeer{Addr: a[0].Addr, Sources: slices.Compact(src)})
			a, b = a[1:], b[1:]
		}
	}
	return out
}

// prefixSets holds a set of prefixes per address, in the packed forms: an
// address with one prefix (a peer alone at its address, the common case)
// costs a slot of one, a map without pointers the garbage collector does
// not scan and no allocation of its own; the other prefixes of an
// address, rarely any, are in more.
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

// addrs is the addresses with a prefix, sorted.
func (s *prefixSets) addrs() []netip.Addr {
	out := make([]netip.Addr, 0, len(s.one))
	for a := range s.one {
		out = append(out, a.Addr())
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
