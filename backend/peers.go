package backend

import (
	"cmp"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/weftnet/weft/subnet"
)

// PeerSet is a kernel backend's desired peers by (masked) subnet. It is
// owned by the goroutine calling Sync and Apply; not safe for concurrent use.
type PeerSet map[netip.Prefix]subnet.Lease

// Replace makes the set exactly peers, as Sync must.
func (s *PeerSet) Replace(peers []subnet.Lease) {
	*s = make(PeerSet, len(peers))
	for _, l := range peers {
		(*s)[l.Subnet.Masked()] = l
	}
}

// Apply applies events and returns the subnets they touch: the scope of an
// incremental pass.
func (s PeerSet) Apply(events []subnet.Event) map[netip.Prefix]bool {
	scope := make(map[netip.Prefix]bool, len(events))
	for _, ev := range events {
		sn := ev.Lease.Subnet.Masked()
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

// StatusBook keeps the last outcome per peer for Backend.Peers and logs
// every change of it once: a peer that stays refused is not logged on every
// pass. Safe for concurrent use.
type StatusBook struct {
	log *slog.Logger

	mu sync.Mutex
	m  map[netip.Prefix]PeerStatus // guarded by mu
}

// NewStatusBook returns an empty book logging to log.
func NewStatusBook(log *slog.Logger) *StatusBook {
	return &StatusBook{log: log, m: map[netip.Prefix]PeerStatus{}}
}

// Update records want, the outcome of a pass over scope (every subnet when
// nil): subnets in scope missing from want are removed.
func (b *StatusBook) Update(scope map[netip.Prefix]bool, want map[netip.Prefix]PeerStatus) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for sn := range b.m {
		if _, ok := want[sn]; !ok && (scope == nil || scope[sn]) {
			b.log.Info("peer removed", "subnet", sn)
			delete(b.m, sn)
		}
	}
	// Sorted, so logs of one pass read in a stable order.
	for _, sn := range slices.SortedFunc(maps.Keys(want), ComparePrefix) {
		st := want[sn]
		if scope != nil && !scope[sn] {
			continue
		}
		if old, ok := b.m[sn]; ok && old == st {
			continue
		}
		b.m[sn] = st
		if st.State == PeerProgrammed {
			b.log.Info("peer programmed", "subnet", sn, "publicIP", st.PublicIP)
		} else {
			b.log.Warn("peer "+string(st.State), "subnet", sn, "publicIP", st.PublicIP, "reason", st.Reason)
		}
	}
}

// Peers returns every recorded status, sorted by subnet.
func (b *StatusBook) Peers() []PeerStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := slices.Collect(maps.Values(b.m))
	slices.SortFunc(out, func(a, c PeerStatus) int { return ComparePrefix(a.Subnet, c.Subnet) })
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
func OlderFirst(a, c subnet.Lease) int {
	switch {
	case a.CreateRevision == c.CreateRevision:
		return 0
	case a.CreateRevision == 0:
		return 1
	case c.CreateRevision == 0:
		return -1
	}
	return cmp.Compare(a.CreateRevision, c.CreateRevision)
}
