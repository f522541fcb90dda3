// Package alloc is a backend that programs nothing: the node takes a lease
// and publishes no backend data. It serves clusters that route pod subnets
// some other way (Flannel's "alloc" backend), and lets control-plane tests and
// benchmarks run weftd without root or kernel state.
package alloc

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/subnet"
)

// Type is the Backend.Type name of this backend.
const Type = "alloc"

// Backend records the peer set it is given and programs nothing.
type Backend struct {
	mtu int

	mu    sync.Mutex
	peers map[string]subnet.Lease
}

var _ backend.Backend = (*Backend)(nil)

// New returns an alloc backend; it satisfies backend.Constructor.
func New(opts backend.Options) (backend.Backend, error) {
	mtu := opts.Underlay.MTU
	if mtu == 0 {
		mtu = 1500
	}
	return &Backend{mtu: mtu, peers: map[string]subnet.Lease{}}, nil
}

func (b *Backend) Prepare(context.Context) (json.RawMessage, error) { return nil, nil }
func (b *Backend) Configure(context.Context, subnet.Lease) error    { return nil }
func (b *Backend) MTU() int                                         { return b.mtu }
func (b *Backend) Close() error                                     { return nil }

func (b *Backend) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

func (b *Backend) Sync(_ context.Context, peers []subnet.Lease) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.peers = make(map[string]subnet.Lease, len(peers))
	for _, p := range peers {
		b.peers[p.Subnet.String()] = p
	}
	return nil
}

func (b *Backend) Apply(_ context.Context, events []subnet.Event) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ev := range events {
		if ev.Type == subnet.EventRemoved {
			delete(b.peers, ev.Lease.Subnet.String())
		} else {
			b.peers[ev.Lease.Subnet.String()] = ev.Lease
		}
	}
	return nil
}

func (b *Backend) Peers() []backend.PeerStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]backend.PeerStatus, 0, len(b.peers))
	for _, p := range b.peers {
		out = append(out, backend.PeerStatus{Subnet: p.Subnet, PublicIP: p.Attrs.PublicIP, State: backend.PeerProgrammed})
	}
	return out
}
