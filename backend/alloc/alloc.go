// Package alloc is a backend that programs nothing: the node takes a lease
// and publishes no backend data. It serves clusters that route pod subnets
// some other way (Flannel's "alloc" backend), and lets control-plane tests and
// benchmarks run weftd without root or kernel state.
package alloc

import (
	"context"
	"sync"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/subnet"
)

// Type is the Backend.Type name of this backend.
const Type = "alloc"

// Backend records the peer set it is given and programs nothing. Its
// Peers judge each lease by backend.CheckPeer, as the kernel backends do.
type Backend struct {
	mtu int
	cfg *subnet.Config
	ul  backend.Underlay

	mu    sync.Mutex
	own   subnet.Lease            // guarded by mu
	peers map[string]subnet.Lease // guarded by mu
}

var _ backend.Backend = (*Backend)(nil)

// New returns an alloc backend; it satisfies backend.Constructor.
// The underlay must have an address of each family the network enables:
// peers reach the node at them.
func New(opts backend.Options) (backend.Backend, error) {
	if err := opts.Underlay.RequireAddrs(Type, opts.Config); err != nil {
		return nil, err
	}
	mtu := opts.Underlay.MTU
	if mtu == 0 {
		mtu = 1500
	}
	return &Backend{mtu: mtu, cfg: opts.Config, ul: opts.Underlay, peers: map[string]subnet.Lease{}}, nil
}

// Prepare publishes the node's addresses and no backend data.
func (b *Backend) Prepare(context.Context) (subnet.LeaseAttrs, error) {
	return b.ul.LeaseAttrs(b.cfg), nil
}
func (b *Backend) MTU() int     { return b.mtu }
func (b *Backend) Close() error { return nil }

// Configure records own, so Peers refuses leases overlapping it.
func (b *Backend) Configure(_ context.Context, own subnet.Lease) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.own = own
	return nil
}

func (b *Backend) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

func (b *Backend) Sync(_ context.Context, peers []subnet.Lease) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.peers = make(map[string]subnet.Lease, len(peers))
	for _, p := range peers {
		b.peers[p.Key().String()] = p
	}
	return nil
}

func (b *Backend) Apply(_ context.Context, events []subnet.Event) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ev := range events {
		if ev.Type == subnet.EventRemoved {
			delete(b.peers, ev.Lease.Key().String())
		} else {
			b.peers[ev.Lease.Key().String()] = ev.Lease
		}
	}
	return nil
}

// Peers reports every lease it was given: programmed when backend.CheckPeer
// finds it usable (IPv4 or IPv6), else refused with the reason.
func (b *Backend) Peers() []backend.PeerStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	// No BackendType: peers must run the network's (alloc programs
	// nothing, so it stands in for any backend in control-plane tests).
	node := backend.PeerNode{Config: b.cfg, Own: b.own, PublicIP: b.ul.PublicIP, PublicIPv6: b.ul.PublicIPv6}
	out := make([]backend.PeerStatus, 0, len(b.peers))
	for _, p := range b.peers {
		v4, v6 := backend.CheckPeer(node, p).Outcomes()
		out = append(out, backend.NewPeerStatus(b.cfg, p, v4, v6))
	}
	return out
}
