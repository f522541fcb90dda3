package masqtest

import (
	"context"
	"net/netip"
	"reflect"
	"slices"
	"sync"

	"github.com/weftnet/weft/daemon/masq"
)

// Fake records what was asked of it. The zero value is ready to use and
// safe for concurrent use. Set Err to make every call fail with it.
type Fake struct {
	mu          sync.Mutex
	err         error
	rules       *masq.Rules
	ensures     int
	removes     int
	verifies    int
	filterPort  uint16
	filterPeers []masq.FilterPeer
	filterOn    bool
	// handed counts the filter peers the callers passed (FilterPeersHanded).
	handed int
	// shrinks counts the filter changes that took something out (Shrinks).
	shrinks int
}

var (
	_ masq.Manager           = (*Fake)(nil)
	_ masq.PeerFilter        = (*Fake)(nil)
	_ masq.PeerFilterUpdater = (*Fake)(nil)
)

// SetErr makes every later call return err (nil restores success).
func (f *Fake) SetErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// Ensure implements masq.Manager: it validates r like the real ones and
// records it.
func (f *Fake) Ensure(ctx context.Context, r masq.Rules) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	if err := r.Validate(); err != nil {
		return err
	}
	f.ensures++
	r.TunnelPorts = slices.Clone(r.TunnelPorts)
	f.rules = &r
	return nil
}

// Verify implements masq.Manager: the rules are in place unless Flush
// removed them (or nothing was ensured, or r differs from what was).
func (f *Fake) Verify(ctx context.Context, r masq.Rules) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.verifies++
	if f.err != nil {
		return false, f.err
	}
	return f.rules != nil && reflect.DeepEqual(*f.rules, r), nil
}

// Flush removes the rules and the peer filter behind the Manager's back,
// as an operator's `nft flush ruleset` or a firewall reload would.
func (f *Fake) Flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = nil
	f.filterOn, f.filterPeers, f.filterPort = false, nil, 0
}

// Verifies returns how many times Verify was called.
func (f *Fake) Verifies() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.verifies
}

// Remove implements masq.Manager.
func (f *Fake) Remove(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.removes++
	f.rules = nil
	f.filterOn, f.filterPeers, f.filterPort = false, nil, 0
	return nil
}

// EnsurePeerFilter implements masq.PeerFilter.
func (f *Fake) EnsurePeerFilter(ctx context.Context, port uint16, peers []masq.FilterPeer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.handed += len(peers)
	if f.filterOn && f.takesOutLocked(peers, func(a netip.Addr) bool {
		return !slices.ContainsFunc(peers, func(p masq.FilterPeer) bool { return p.Addr == a })
	}) {
		f.shrinks++
	}
	f.filterOn, f.filterPort = true, port
	f.filterPeers = make([]masq.FilterPeer, len(peers))
	for i, p := range peers {
		f.filterPeers[i] = masq.FilterPeer{Addr: p.Addr, Sources: slices.Clone(p.Sources)}
	}
	return nil
}

// UpdatePeerFilter implements masq.PeerFilterUpdater, refusing as NFTables
// does when no filter is installed on port.
func (f *Fake) UpdatePeerFilter(ctx context.Context, port uint16, changed []masq.FilterPeer, removed []netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	if !f.filterOn || f.filterPort != port {
		return masq.ErrPeerFilterUnknown
	}
	f.handed += len(changed) + len(removed)
	if f.takesOutLocked(changed, func(a netip.Addr) bool { return slices.Contains(removed, a) }) {
		f.shrinks++
	}
	gone := func(p masq.FilterPeer) bool {
		return slices.Contains(removed, p.Addr) || slices.ContainsFunc(changed, func(c masq.FilterPeer) bool { return c.Addr == p.Addr })
	}
	f.filterPeers = slices.DeleteFunc(f.filterPeers, gone)
	for _, p := range changed {
		f.filterPeers = append(f.filterPeers, masq.FilterPeer{Addr: p.Addr, Sources: slices.Clone(p.Sources)})
	}
	slices.SortFunc(f.filterPeers, func(a, b masq.FilterPeer) int { return a.Addr.Compare(b.Addr) })
	return nil
}

// FilterPeersHanded returns how many filter peers (and removed addresses)
// the callers of EnsurePeerFilter and UpdatePeerFilter passed in all: the
// work the peer filter was given.
func (f *Fake) FilterPeersHanded() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.handed
}

// takesOutLocked reports whether a filter change takes out an installed
// address (gone says which go) or a source of an address in next.
func (f *Fake) takesOutLocked(next []masq.FilterPeer, gone func(netip.Addr) bool) bool {
	for _, have := range f.filterPeers {
		if gone(have.Addr) {
			return true
		}
		i := slices.IndexFunc(next, func(p masq.FilterPeer) bool { return p.Addr == have.Addr })
		if i >= 0 && slices.ContainsFunc(have.Sources, func(sn netip.Prefix) bool { return !slices.Contains(next[i].Sources, sn) }) {
			return true
		}
	}
	return false
}

// Shrinks returns how many filter changes (EnsurePeerFilter over an
// installed filter, UpdatePeerFilter) took out an address or a source: the
// changes a real firewall makes slowly (see daemon.Config.PeerFilterGrace).
func (f *Fake) Shrinks() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.shrinks
}

// RemovePeerFilter implements masq.PeerFilter.
func (f *Fake) RemovePeerFilter(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.filterOn, f.filterPeers, f.filterPort = false, nil, 0
	return nil
}

// Rules returns the installed rules and whether any are installed.
func (f *Fake) Rules() (masq.Rules, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rules == nil {
		return masq.Rules{}, false
	}
	r := *f.rules
	r.TunnelPorts = slices.Clone(r.TunnelPorts)
	return r, true
}

// Calls returns how many Ensure and Remove calls succeeded.
func (f *Fake) Calls() (ensures, removes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ensures, f.removes
}

// PeerFilter returns the filter's port and peer addresses (a copy) and
// whether it is installed.
func (f *Fake) PeerFilter() (port uint16, peers []netip.Addr, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.filterPeers {
		peers = append(peers, p.Addr)
	}
	return f.filterPort, peers, f.filterOn
}

// PeerFilterSources returns the inner sources the filter allows per peer
// address (a copy).
func (f *Fake) PeerFilterSources() map[netip.Addr][]netip.Prefix {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[netip.Addr][]netip.Prefix, len(f.filterPeers))
	for _, p := range f.filterPeers {
		out[p.Addr] = append(out[p.Addr], p.Sources...)
	}
	return out
}
