package subnettest

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/weftnet/weft/subnet"
)

// Options configure a Manager.
type Options struct {
	// Clock decides lease expiry; the wall clock when nil.
	Clock subnet.Clock
}

// Manager is an in-memory subnet.Manager. It keeps a revision counter and a
// change history like etcd, so WatchLeases resumes by revision and falls
// back to a snapshot after Compact. Leases expire when the clock passes
// their Expiration: checked on every call, or explicitly with ExpireDue.
// Safe for concurrent use.
type Manager struct {
	clock subnet.Clock

	mu        sync.Mutex
	config    []byte                  // guarded by mu
	leases    map[string]subnet.Lease // by key name; guarded by mu
	rev       int64                   // guarded by mu
	history   []histEvent             // events after compacted; guarded by mu
	compacted int64                   // guarded by mu
	changed   chan struct{}           // closed on every change; guarded by mu
	nextID    int64                   // guarded by mu
	fault     func(op string) error   // guarded by mu
	calls     map[string]int          // guarded by mu
}

type histEvent struct {
	rev int64
	ev  subnet.Event
}

var _ subnet.Manager = (*Manager)(nil)

// New returns an empty Manager: no config, no leases, revision 1.
func New(opts Options) *Manager {
	if opts.Clock == nil {
		opts.Clock = subnet.RealClock()
	}
	return &Manager{
		clock:   opts.Clock,
		leases:  make(map[string]subnet.Lease),
		rev:     1,
		changed: make(chan struct{}),
		calls:   make(map[string]int),
	}
}

// SetFault installs f, called at the start of every Manager method with the
// method's name ("AcquireLease", "RenewLease", ...); a non-nil result is
// returned by the method and nothing changes. nil removes it.
func (m *Manager) SetFault(f func(op string) error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fault = f
}

// Calls returns how many times the method op was called.
func (m *Manager) Calls(op string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[op]
}

// Revision returns the current store revision.
func (m *Manager) Revision() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rev
}

// begin records a call, applies the fault and expires due leases. It
// returns with m.mu held unless it returns an error.
func (m *Manager) begin(op string) error {
	m.mu.Lock()
	m.calls[op]++
	if m.fault != nil {
		if err := m.fault(op); err != nil {
			m.mu.Unlock()
			return err
		}
	}
	m.expireDueLocked()
	return nil
}

// GetNetworkConfig implements subnet.Manager.
func (m *Manager) GetNetworkConfig(ctx context.Context) (*subnet.Config, error) {
	if err := m.begin("GetNetworkConfig"); err != nil {
		return nil, err
	}
	raw := m.config
	m.mu.Unlock()
	if raw == nil {
		return nil, fmt.Errorf("get network config: %w", subnet.ErrNoConfig)
	}
	c, err := subnet.ParseConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("get network config: %w", err)
	}
	return c, nil
}

// SetNetworkConfig implements subnet.Manager. It validates raw first.
func (m *Manager) SetNetworkConfig(ctx context.Context, raw []byte) error {
	if _, err := subnet.ParseConfig(raw); err != nil {
		return fmt.Errorf("set network config: %w", err)
	}
	if err := m.begin("SetNetworkConfig"); err != nil {
		return err
	}
	defer m.mu.Unlock()
	m.config = slices.Clone(raw)
	return nil
}

// DeleteNetworkConfig removes the config, as an operator could.
func (m *Manager) DeleteNetworkConfig() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.config = nil
}

// AcquireLease implements subnet.Manager with the same order as the etcd
// store: the lease with this PublicIP, then req.Previous if free, then a
// random free subnet.
func (m *Manager) AcquireLease(ctx context.Context, req subnet.AcquireRequest) (*subnet.Lease, error) {
	if err := subnet.ValidateAcquire(req); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := m.begin("AcquireLease"); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	ttl := req.TTL
	if ttl <= 0 {
		ttl = subnet.DefaultLeaseTTL
	}
	cfg := req.Config

	for _, k := range m.sortedKeysLocked() {
		l := m.leases[k]
		if !subnet.SameNode(l.Attrs, req.Attrs) {
			continue
		}
		if !cfg.Contains(l.Subnet, l.IPv6Subnet) {
			if !l.Reserved() {
				// Our own lease from an older config: give it back.
				m.deleteLocked(k)
			}
			continue
		}
		return m.putLocked(l.Subnet, l.IPv6Subnet, req.Attrs, ttl, l.Reserved()), nil
	}
	if sn, sn6, ok := req.PreviousSubnets(); ok && !m.claimedLocked(sn, sn6) {
		return m.putLocked(sn, sn6, req.Attrs, ttl, false), nil
	}
	sn, sn6, err := cfg.PickFree(m.listLocked(), nil)
	if err != nil {
		return nil, fmt.Errorf("acquire lease: %w", err)
	}
	return m.putLocked(sn, sn6, req.Attrs, ttl, false), nil
}

// claimedLocked reports whether any key holds sn or sn6.
func (m *Manager) claimedLocked(sn, sn6 netip.Prefix) bool {
	for _, l := range m.leases {
		if sn.IsValid() && l.Subnet == sn || sn6.IsValid() && l.IPv6Subnet == sn6 {
			return true
		}
	}
	return false
}

// putLocked writes a lease (or a reservation) and returns a copy.
func (m *Manager) putLocked(sn, sn6 netip.Prefix, attrs subnet.LeaseAttrs, ttl time.Duration, reserved bool) *subnet.Lease {
	m.rev++
	key := subnet.KeyName(sn, sn6)
	created := m.rev
	if cur, ok := m.leases[key]; ok {
		created = cur.CreateRevision // a rewrite keeps it, as in etcd
	}
	l := subnet.Lease{Subnet: sn, IPv6Subnet: sn6, Attrs: cloneAttrs(attrs), Revision: m.rev, CreateRevision: created}
	if !reserved {
		m.nextID++
		l.LeaseID = m.nextID
		l.Expiration = m.clock.Now().Add(ttl)
	}
	m.leases[key] = l
	m.recordLocked(subnet.Event{Type: subnet.EventAdded, Lease: l})
	out := l
	out.Attrs = cloneAttrs(l.Attrs)
	return &out
}

func (m *Manager) deleteLocked(key string) {
	l, ok := m.leases[key]
	if !ok {
		return
	}
	delete(m.leases, key)
	m.rev++
	m.recordLocked(subnet.Event{Type: subnet.EventRemoved, Lease: subnet.Lease{Subnet: l.Subnet, IPv6Subnet: l.IPv6Subnet, Revision: m.rev}})
}

func (m *Manager) recordLocked(ev subnet.Event) {
	m.history = append(m.history, histEvent{rev: m.rev, ev: ev})
	close(m.changed)
	m.changed = make(chan struct{})
}

// RenewLease implements subnet.Manager: a compare-and-swap on l.Revision.
// A reservation is only checked, never rewritten.
func (m *Manager) RenewLease(ctx context.Context, l *subnet.Lease, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := m.begin("RenewLease"); err != nil {
		return err
	}
	defer m.mu.Unlock()
	if ttl <= 0 {
		ttl = subnet.DefaultLeaseTTL
	}
	key := subnet.KeyName(l.Subnet, l.IPv6Subnet)
	cur, ok := m.leases[key]
	if !ok {
		return fmt.Errorf("renew lease %s: key is gone: %w", key, subnet.ErrLeaseLost)
	}
	if cur.Revision != l.Revision {
		return fmt.Errorf("renew lease %s: revision %d is now %d (rewritten by %s): %w", key, l.Revision, cur.Revision, cur.Attrs.PublicIP, subnet.ErrLeaseLost)
	}
	if cur.Reserved() {
		*l = cur
		l.Attrs = cloneAttrs(cur.Attrs)
		return nil
	}
	*l = *m.putLocked(l.Subnet, l.IPv6Subnet, l.Attrs, ttl, false)
	return nil
}

// ListLeases implements subnet.Manager. Leases are sorted by key name.
func (m *Manager) ListLeases(ctx context.Context) ([]subnet.Lease, int64, error) {
	if err := m.begin("ListLeases"); err != nil {
		return nil, 0, err
	}
	defer m.mu.Unlock()
	return m.listLocked(), m.rev, nil
}

func (m *Manager) sortedKeysLocked() []string {
	keys := make([]string, 0, len(m.leases))
	for k := range m.leases {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (m *Manager) listLocked() []subnet.Lease {
	out := make([]subnet.Lease, 0, len(m.leases))
	for _, k := range m.sortedKeysLocked() {
		l := m.leases[k]
		l.Attrs = cloneAttrs(l.Attrs)
		out = append(out, l)
	}
	return out
}

// WatchLeases implements subnet.Manager. Each batch carries all changes
// made since the previous one; after Compact past the watcher's revision it
// sends a snapshot.
func (m *Manager) WatchLeases(ctx context.Context, out chan<- subnet.LeaseBatch) error {
	if err := m.begin("WatchLeases"); err != nil {
		return err
	}
	m.mu.Unlock()
	var rev int64
	snapshot := true
	for {
		m.mu.Lock()
		m.expireDueLocked()
		var b subnet.LeaseBatch
		changed := m.changed
		switch {
		case snapshot || rev < m.compacted:
			b = subnet.LeaseBatch{Snapshot: true, Leases: m.listLocked(), Revision: m.rev}
		case rev < m.rev:
			for _, h := range m.history {
				if h.rev > rev {
					ev := h.ev
					ev.Lease.Attrs = cloneAttrs(ev.Lease.Attrs)
					b.Events = append(b.Events, ev)
				}
			}
			b.Revision = m.rev
		}
		m.mu.Unlock()
		if b.Snapshot || len(b.Events) > 0 {
			// A change while the receiver is not reading rebuilds the batch,
			// so it carries that change too (and becomes a snapshot after a
			// Compact), as a lagging etcd watcher would see it.
			select {
			case out <- b:
				rev, snapshot = b.Revision, false
			case <-changed:
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ReleaseLease implements subnet.Manager: it deletes every key whose IPv4
// or IPv6 subnet is sn.
func (m *Manager) ReleaseLease(ctx context.Context, sn netip.Prefix) error {
	if err := m.begin("ReleaseLease"); err != nil {
		return err
	}
	defer m.mu.Unlock()
	for _, k := range m.sortedKeysLocked() {
		if l := m.leases[k]; l.Subnet == sn || l.IPv6Subnet == sn {
			m.deleteLocked(k)
		}
	}
	return nil
}

// ReserveSubnet implements subnet.Manager. An IPv6 sn makes an IPv6-only
// reservation.
func (m *Manager) ReserveSubnet(ctx context.Context, sn netip.Prefix, publicIP netip.Addr) error {
	if !sn.IsValid() || sn.Masked() != sn || !publicIP.IsValid() {
		return fmt.Errorf("reserve %s for %s: want a subnet address and a public IP", sn, publicIP)
	}
	if err := m.begin("ReserveSubnet"); err != nil {
		return err
	}
	defer m.mu.Unlock()
	var sn4, sn6 netip.Prefix
	attrs := subnet.LeaseAttrs{}
	if sn.Addr().Is4() {
		sn4 = sn
	} else {
		sn6 = sn
	}
	if publicIP.Is4() {
		attrs.PublicIP = publicIP
	} else {
		attrs.PublicIPv6 = publicIP
	}
	for _, l := range m.leases {
		if (sn4.IsValid() && l.Subnet == sn4 || sn6.IsValid() && l.IPv6Subnet == sn6) && !subnet.SameNode(l.Attrs, attrs) {
			return fmt.Errorf("reserve %s for %s: held by %s: %w", sn, publicIP, l.Attrs.PublicIP, subnet.ErrSubnetTaken)
		}
	}
	if cur, ok := m.leases[subnet.KeyName(sn4, sn6)]; ok {
		attrs = cur.Attrs
	}
	m.putLocked(sn4, sn6, attrs, 0, true)
	return nil
}

// Put writes l as is under its key (Revision and, unless l is a
// reservation, LeaseID are assigned), as another writer would: use it to
// simulate a foreign node taking over a subnet. It returns the stored copy.
func (m *Manager) Put(l subnet.Lease) subnet.Lease {
	m.mu.Lock()
	defer m.mu.Unlock()
	ttl := time.Duration(0)
	if !l.Reserved() {
		ttl = l.Expiration.Sub(m.clock.Now())
	}
	return *m.putLocked(l.Subnet, l.IPv6Subnet, l.Attrs, ttl, l.Reserved())
}

// Expire deletes the lease on sn as if its TTL ran out, and reports whether
// there was one.
func (m *Manager) Expire(sn netip.Prefix) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	found := false
	for _, k := range m.sortedKeysLocked() {
		if l := m.leases[k]; l.Subnet == sn || l.IPv6Subnet == sn {
			m.deleteLocked(k)
			found = true
		}
	}
	return found
}

// ExpireDue deletes every lease whose Expiration the clock has reached and
// returns how many. Reservations never expire.
func (m *Manager) ExpireDue() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.expireDueLocked()
}

func (m *Manager) expireDueLocked() int {
	now := m.clock.Now()
	n := 0
	for _, k := range m.sortedKeysLocked() {
		if l := m.leases[k]; !l.Reserved() && !now.Before(l.Expiration) {
			m.deleteLocked(k)
			n++
		}
	}
	return n
}

// Compact drops the change history up to the current revision, as etcd's
// compaction does: a watcher behind it gets a fresh snapshot.
func (m *Manager) Compact() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.history = nil
	m.compacted = m.rev
	close(m.changed)
	m.changed = make(chan struct{})
}

func cloneAttrs(a subnet.LeaseAttrs) subnet.LeaseAttrs {
	a.BackendData = slices.Clone(a.BackendData)
	a.BackendV6Data = slices.Clone(a.BackendV6Data)
	return a
}
