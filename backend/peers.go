package backend

import (
	"cmp"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/weftnet/weft/internal/packed"
	"github.com/weftnet/weft/subnet"
)

// PeerSet is a kernel backend's desired peers by (masked) key
// (subnet.Lease.Key: the IPv4 subnet, or the IPv6 subnet of an IPv6-only
// lease). It is owned by the goroutine calling Sync and Apply; not safe for
// concurrent use.
type PeerSet map[netip.Prefix]subnet.Lease

// Replace makes the set exactly peers, as Sync must.
func (s *PeerSet) Replace(peers []subnet.Lease) {
	*s = make(PeerSet, len(peers))
	for _, l := range peers {
		(*s)[l.Key().Masked()] = l
	}
}

// Apply applies events and returns the keys they touch: the scope of an
// incremental pass.
func (s PeerSet) Apply(events []subnet.Event) map[netip.Prefix]bool {
	scope := make(map[netip.Prefix]bool, len(events))
	for _, ev := range events {
		sn := ev.Lease.Key().Masked()
		scope[sn] = true
		switch ev.Type {
		case subnet.EventAdded:
			s[sn] = ev.Lease
		case subnet.EventRemoved:
			delete(s, sn)
		}
	}
	return scope
}

// ApplyFamilies is Apply for a backend that programs both families of a
// peer: the scope it returns also holds the IPv6 subnets the events touch,
// before and after (a dual-stack peer's key is its IPv4 subnet, and a peer
// whose IPv6 subnet changed must lose the old one's state in this pass).
func (s PeerSet) ApplyFamilies(events []subnet.Event) map[netip.Prefix]bool {
	var v6 []netip.Prefix
	for _, ev := range events {
		v6 = append(v6, ev.Lease.IPv6Subnet)
		if old, ok := s[ev.Lease.Key().Masked()]; ok {
			v6 = append(v6, old.IPv6Subnet)
		}
	}
	scope := s.Apply(events)
	for _, sn := range v6 {
		if sn.IsValid() {
			scope[sn.Masked()] = true
		}
	}
	return scope
}

// LeaseScope is the scope of a pass over l alone: its key and its IPv6
// subnet (see ApplyFamilies).
func LeaseScope(l subnet.Lease) map[netip.Prefix]bool {
	scope := map[netip.Prefix]bool{l.Key().Masked(): true}
	if l.IPv6Subnet.IsValid() {
		scope[l.IPv6Subnet.Masked()] = true
	}
	return scope
}

// FamilyOutcome is what a backend did with one address family of a peer.
type FamilyOutcome struct {
	State  PeerState
	Reason string // why, when State is not PeerProgrammed
}

// Outcome is a peer's outcome when it does not depend on the family (a
// lease refused as a whole, e.g. this node's own).
func Outcome(state PeerState, reason string) FamilyOutcome {
	return FamilyOutcome{State: state, Reason: reason}
}

// NewPeerStatus merges what a backend did with each family of peer l into
// its status. Only the families cfg enables count (nil: IPv4 only). The
// peer is programmed when each of them is; otherwise its state is a failed
// family's, else a refused one's, and Reason names the peer and says, per
// family (when the network has both and they differ), why:
//
//	peer 10.244.2.0/24 (198.18.0.11): IPv6: lease has no IPv6 subnet
func NewPeerStatus(cfg *subnet.Config, l subnet.Lease, v4, v6 FamilyOutcome) PeerStatus {
	st := PeerStatus{Subnet: l.Subnet.Masked(), PublicIP: l.Attrs.PublicIP.Unmap(),
		IPv6Subnet: l.IPv6Subnet.Masked(), PublicIPv6: l.Attrs.PublicIPv6, State: PeerProgrammed}
	if !l.Subnet.IsValid() {
		st.Subnet = netip.Prefix{}
	}
	if !l.IPv6Subnet.IsValid() {
		st.IPv6Subnet = netip.Prefix{}
	}
	type fam struct {
		name string
		o    FamilyOutcome
	}
	var on []fam
	if cfg == nil || cfg.EnableIPv4 {
		on = append(on, fam{"IPv4", v4})
	}
	if cfg != nil && cfg.EnableIPv6 {
		on = append(on, fam{"IPv6", v6})
	}
	var bad []fam
	for _, f := range on {
		switch f.o.State {
		case PeerProgrammed:
			continue
		case PeerFailed:
			st.State = PeerFailed
		default:
			if st.State != PeerFailed {
				st.State = PeerRefused
			}
		}
		bad = append(bad, f)
	}
	if len(bad) == 0 {
		return st
	}
	why := bad[0].o.Reason
	switch {
	case len(bad) == 2 && bad[0].o.Reason != bad[1].o.Reason:
		why = bad[0].name + ": " + bad[0].o.Reason + "; " + bad[1].name + ": " + bad[1].o.Reason
	case len(on) == 2 && len(bad) == 1:
		why = bad[0].name + ": " + why
	}
	addr := st.PublicIP
	if !addr.IsValid() {
		addr = st.PublicIPv6
	}
	st.Reason = fmt.Sprintf("peer %s (%s): %s", st.Key(), addr, why)
	return st
}

// StatusBook keeps the last outcome per peer for Backend.Peers and logs
// every change of it once: a peer that stays refused is not logged on every
// pass. Safe for concurrent use.
type StatusBook struct {
	log *slog.Logger

	mu sync.Mutex
	// A peer's entry is entries[index[key]]: a dense list of pointer-free
	// entries (a removal moves the last into the hole), the state and
	// reason of a peer not programmed aside in why. With 10000 peers a map
	// of PeerStatus (144 bytes, stored out of the map's slots) held ~220
	// bytes a peer, this ~130.
	index   map[packed.Prefix]int32   // guarded by mu
	entries []bookEntry               // guarded by mu
	why     map[packed.Prefix]bookWhy // guarded by mu
}

// bookEntry is a programmed peer's PeerStatus, packed, with its key.
type bookEntry struct {
	key, subnet, ipv6Subnet packed.Prefix
	publicIP, publicIPv6    packed.Addr
}

// bookWhy is the state and reason of a peer that is not programmed.
type bookWhy struct {
	state  PeerState
	reason string
}

func packStatus(key netip.Prefix, st PeerStatus) (bookEntry, bookWhy) {
	e := bookEntry{key: packed.PrefixOf(key), subnet: packed.PrefixOf(st.Subnet), ipv6Subnet: packed.PrefixOf(st.IPv6Subnet),
		publicIP: packed.AddrOf(st.PublicIP), publicIPv6: packed.AddrOf(st.PublicIPv6)}
	if st.State == PeerProgrammed && st.Reason == "" {
		return e, bookWhy{}
	}
	return e, bookWhy{state: st.State, reason: st.Reason}
}

func (e bookEntry) status(w bookWhy) PeerStatus {
	st := PeerStatus{Subnet: e.subnet.Prefix(), IPv6Subnet: e.ipv6Subnet.Prefix(),
		PublicIP: e.publicIP.Addr(), PublicIPv6: e.publicIPv6.Addr(), State: PeerProgrammed}
	if w != (bookWhy{}) {
		st.State, st.Reason = w.state, w.reason
	}
	return st
}

// NewStatusBook returns an empty book logging to log.
func NewStatusBook(log *slog.Logger) *StatusBook {
	return &StatusBook{log: log, index: map[packed.Prefix]int32{}, why: map[packed.Prefix]bookWhy{}}
}

// getLocked is the recorded status of key k.
func (b *StatusBook) getLocked(k packed.Prefix) (bookEntry, bookWhy, bool) {
	i, ok := b.index[k]
	if !ok {
		return bookEntry{}, bookWhy{}, false
	}
	return b.entries[i], b.why[k], true
}

// setLocked records e (and w, zero for a programmed peer).
func (b *StatusBook) setLocked(e bookEntry, w bookWhy) {
	if i, ok := b.index[e.key]; ok {
		b.entries[i] = e
	} else {
		b.index[e.key] = int32(len(b.entries))
		b.entries = append(b.entries, e)
	}
	if w == (bookWhy{}) {
		delete(b.why, e.key)
	} else {
		b.why[e.key] = w
	}
}

// Update records want, the outcome of a pass over scope (every subnet when
// nil): subnets in scope missing from want are removed. Its cost is the
// scope's size, not the book's, so an incremental pass over a few peers
// stays cheap among thousands.
func (b *StatusBook) Update(scope map[netip.Prefix]bool, want map[netip.Prefix]PeerStatus) {
	b.update(scope, maps.Keys(want), func(sn netip.Prefix) (PeerStatus, bool) {
		st, ok := want[sn]
		return st, ok
	})
}

// UpdatePlans is Update for a backend's plans: the status of each planned
// subnet in scope (every one when scope is nil), as status tells it. It
// visits scope, not plans, so an incremental pass costs its own size, and
// asks status for one peer at a time: no map of the pass's statuses (with
// thousands of peers in one batch, it was most of what the pass held).
// status runs with the book's lock held: it must not call the book.
func UpdatePlans[P any](b *StatusBook, scope map[netip.Prefix]bool, plans map[netip.Prefix]P, status func(netip.Prefix, P) PeerStatus) {
	b.update(scope, maps.Keys(plans), func(sn netip.Prefix) (PeerStatus, bool) {
		p, ok := plans[sn]
		if !ok {
			return PeerStatus{}, false
		}
		return status(sn, p), true
	})
}

// update records the outcome of a pass over scope (every subnet when nil,
// all being the subnets of the pass): want says a subnet's status, false
// for one to remove.
func (b *StatusBook) update(scope map[netip.Prefix]bool, all iter.Seq[netip.Prefix], want func(netip.Prefix) (PeerStatus, bool)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	// Sorted, so logs of one pass read in a stable order.
	var keys []netip.Prefix
	if scope == nil {
		keys = slices.SortedFunc(all, ComparePrefix)
		// Backwards: a removal moves the last entry, one already seen.
		for i := len(b.entries) - 1; i >= 0; i-- {
			sn := b.entries[i].key.Prefix()
			if _, ok := slices.BinarySearchFunc(keys, sn, ComparePrefix); !ok {
				b.removeLocked(sn)
			}
		}
	} else {
		keys = slices.SortedFunc(maps.Keys(scope), ComparePrefix)
	}
	for _, sn := range keys {
		st, ok := want(sn)
		if !ok {
			b.removeLocked(sn)
			continue
		}
		e, w := packStatus(sn, st)
		if old, oldWhy, ok := b.getLocked(e.key); ok && old == e && oldWhy == w {
			continue
		}
		b.setLocked(e, w)
		attrs := []any{"subnet", sn}
		if st.PublicIP.IsValid() {
			attrs = append(attrs, "publicIP", st.PublicIP)
		}
		if st.IPv6Subnet.IsValid() && st.IPv6Subnet != sn {
			attrs = append(attrs, "ipv6Subnet", st.IPv6Subnet)
		}
		if st.PublicIPv6.IsValid() {
			attrs = append(attrs, "publicIPv6", st.PublicIPv6)
		}
		if st.State == PeerProgrammed {
			b.log.Info("peer programmed", attrs...)
		} else {
			b.log.Warn("peer "+string(st.State), append(attrs, "reason", st.Reason)...)
		}
	}
}

// removeLocked forgets sn's status, logging it when there was one.
func (b *StatusBook) removeLocked(sn netip.Prefix) {
	k := packed.PrefixOf(sn)
	i, ok := b.index[k]
	if !ok {
		return
	}
	b.log.Info("peer removed", "subnet", sn)
	last := len(b.entries) - 1
	if int(i) != last {
		b.entries[i] = b.entries[last]
		b.index[b.entries[i].key] = i
	}
	b.entries = b.entries[:last]
	delete(b.index, k)
	delete(b.why, k)
	if cap(b.entries) > 64 && len(b.entries) < cap(b.entries)/4 {
		b.entries = slices.Clone(b.entries) // give back what thousands of removed peers held
	}
}

// Peers returns every recorded status, sorted by key (IPv4 peers first).
func (b *StatusBook) Peers() []PeerStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]PeerStatus, 0, len(b.entries))
	for _, e := range b.entries {
		out = append(out, e.status(b.why[e.key]))
	}
	slices.SortFunc(out, func(a, c PeerStatus) int { return ComparePrefix(a.Key(), c.Key()) })
	return out
}

// ComparePrefix orders prefixes by address, then length, for sorted peer
// lists.
func ComparePrefix(a, c netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(c.Addr()), cmp.Compare(a.Bits(), c.Bits()))
}

// OlderFirst orders leases by age, for backends that resolve a claim two
// leases make (a VtepMAC, a public key) in favour of the older: a lower
// CreateRevision first, and a lease of unknown age (0) after every known one.
func OlderFirst(a, c subnet.Lease) int { return OlderRevision(a.CreateRevision, c.CreateRevision) }

// OlderRevision is OlderFirst on the leases' CreateRevisions.
func OlderRevision(a, c int64) int {
	switch {
	case a == c:
		return 0
	case a == 0:
		return 1
	case c == 0:
		return -1
	}
	return cmp.Compare(a, c)
}
