package masqtest

import (
	"context"
	"net/netip"
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
	filterPort  uint16
	filterPeers []netip.Addr
	filterOn    bool
}

var (
	_ masq.Manager    = (*Fake)(nil)
	_ masq.PeerFilter = (*Fake)(nil)
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
	f.rules = &r
	return nil
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
func (f *Fake) EnsurePeerFilter(ctx context.Context, port uint16, peers []netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.filterOn, f.filterPort, f.filterPeers = true, port, slices.Clone(peers)
	return nil
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
	return *f.rules, true
}

// Calls returns how many Ensure and Remove calls succeeded.
func (f *Fake) Calls() (ensures, removes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ensures, f.removes
}

// PeerFilter returns the filter's port and peers (a copy) and whether it is
// installed.
func (f *Fake) PeerFilter() (port uint16, peers []netip.Addr, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.filterPort, slices.Clone(f.filterPeers), f.filterOn
}
