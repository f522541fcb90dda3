package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/weftnet/weft/subnet"
)

// errNotConnected is what a call on a connectingStore returns when its ctx
// ends before the store is connected.
var errNotConnected = errors.New("lease store not connected yet")

// connectingStore is a subnet.Manager whose real store is connected in the
// background, so weftd starts — and restores its last known state — while
// the store is unreachable. Every call waits until the store is connected or
// its ctx ends, as a call to an unreachable store would. Safe for concurrent
// use.
type connectingStore struct {
	ready chan struct{} // closed once m is set
	once  sync.Once
	m     subnet.Manager
}

var _ subnet.Manager = (*connectingStore)(nil)

func newConnectingStore() *connectingStore {
	return &connectingStore{ready: make(chan struct{})}
}

// connect makes m the store every call goes to; only the first call counts.
func (s *connectingStore) connect(m subnet.Manager) {
	s.once.Do(func() {
		s.m = m
		close(s.ready)
	})
}

func (s *connectingStore) get(ctx context.Context) (subnet.Manager, error) {
	select {
	case <-s.ready:
		return s.m, nil
	default:
	}
	select {
	case <-s.ready:
		return s.m, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", errNotConnected, ctx.Err())
	}
}

func (s *connectingStore) GetNetworkConfig(ctx context.Context) (*subnet.Config, error) {
	m, err := s.get(ctx)
	if err != nil {
		return nil, err
	}
	return m.GetNetworkConfig(ctx)
}

func (s *connectingStore) SetNetworkConfig(ctx context.Context, raw []byte) error {
	m, err := s.get(ctx)
	if err != nil {
		return err
	}
	return m.SetNetworkConfig(ctx, raw)
}

func (s *connectingStore) AcquireLease(ctx context.Context, req subnet.AcquireRequest) (*subnet.Lease, error) {
	m, err := s.get(ctx)
	if err != nil {
		return nil, err
	}
	return m.AcquireLease(ctx, req)
}

func (s *connectingStore) RenewLease(ctx context.Context, l *subnet.Lease, ttl time.Duration) error {
	m, err := s.get(ctx)
	if err != nil {
		return err
	}
	return m.RenewLease(ctx, l, ttl)
}

func (s *connectingStore) ListLeases(ctx context.Context) ([]subnet.Lease, int64, error) {
	m, err := s.get(ctx)
	if err != nil {
		return nil, 0, err
	}
	return m.ListLeases(ctx)
}

// WatchLeases waits for the connection, then watches; like any
// WatchLeases it returns only when ctx is done.
func (s *connectingStore) WatchLeases(ctx context.Context, out chan<- subnet.LeaseBatch) error {
	m, err := s.get(ctx)
	if err != nil {
		return ctx.Err()
	}
	return m.WatchLeases(ctx, out)
}

func (s *connectingStore) ReleaseLease(ctx context.Context, sn netip.Prefix) error {
	m, err := s.get(ctx)
	if err != nil {
		return err
	}
	return m.ReleaseLease(ctx, sn)
}

func (s *connectingStore) ReserveSubnet(ctx context.Context, sn netip.Prefix, publicIP netip.Addr) error {
	m, err := s.get(ctx)
	if err != nil {
		return err
	}
	return m.ReserveSubnet(ctx, sn, publicIP)
}

// Malformed and Relists forward the store's watch counters (storeCounters);
// zero before it is connected or when it keeps none.
func (s *connectingStore) Malformed() int64 {
	if c, ok := s.counters(); ok {
		return c.Malformed()
	}
	return 0
}

func (s *connectingStore) Relists() int64 {
	if c, ok := s.counters(); ok {
		return c.Relists()
	}
	return 0
}

func (s *connectingStore) counters() (storeCounters, bool) {
	select {
	case <-s.ready:
		c, ok := s.m.(storeCounters)
		return c, ok
	default:
		return nil, false
	}
}
