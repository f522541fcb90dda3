package subnettest

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/subnet"
)

func TestManagerContract(t *testing.T) {
	TestManager(t, func(t *testing.T) subnet.Manager { return New(Options{}) })
}

func TestExpiry(t *testing.T) {
	clk := NewClock(time.Unix(1_700_000_000, 0))
	m := New(Options{Clock: clk})
	// The reservation below lies outside the range the nodes draw from.
	cfg := MustConfig(t, `{"Network":"10.20.0.0/16","SubnetMax":"10.20.98.0"}`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	short := acquire(t, m, subnet.AcquireRequest{Config: cfg, Attrs: Node(20, 1), TTL: time.Minute})
	long := acquire(t, m, subnet.AcquireRequest{Config: cfg, Attrs: Node(20, 2), TTL: time.Hour})
	if err := m.ReserveSubnet(ctx, netip.MustParsePrefix("10.20.99.0/24"), netip.MustParseAddr("198.18.20.3")); err != nil {
		t.Fatal(err)
	}
	out := make(chan subnet.LeaseBatch)
	go m.WatchLeases(ctx, out)
	w := NewWatchState(out)
	w.WaitFor(t, 5*time.Second, func(s map[netip.Prefix]subnet.Lease) bool { return len(s) == 3 })

	clk.Advance(59 * time.Second)
	if n := m.ExpireDue(); n != 0 {
		t.Fatalf("ExpireDue before the TTL = %d", n)
	}
	clk.Advance(time.Second)
	if n := m.ExpireDue(); n != 1 {
		t.Fatalf("ExpireDue at the TTL = %d, want 1", n)
	}
	w.WaitFor(t, 5*time.Second, func(s map[netip.Prefix]subnet.Lease) bool {
		_, gone := s[short.Subnet]
		return len(s) == 2 && !gone
	})
	if err := m.RenewLease(ctx, short, time.Minute); !errors.Is(err, subnet.ErrLeaseLost) {
		t.Fatalf("renew expired = %v, want ErrLeaseLost", err)
	}
	// Expiry also happens lazily on any call.
	clk.Advance(2 * time.Hour)
	ls, _, err := m.ListLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || !ls[0].Reserved() {
		t.Fatalf("after 2h: %+v, want only the reservation", ls)
	}
	if m.Expire(long.Subnet) {
		t.Fatal("Expire found a lease that already expired")
	}
}

func TestWatchCompaction(t *testing.T) {
	m := New(Options{})
	cfg := MustConfig(t, `{"Network":"10.21.0.0/16"}`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	acquire(t, m, subnet.AcquireRequest{Config: cfg, Attrs: Node(21, 1)})
	out := make(chan subnet.LeaseBatch)
	go m.WatchLeases(ctx, out)
	w := NewWatchState(out)
	w.Next(t, 5*time.Second)
	// Changes and a compaction while the receiver is not reading.
	l2 := acquire(t, m, subnet.AcquireRequest{Config: cfg, Attrs: Node(21, 2)})
	m.Compact()
	b := w.Next(t, 5*time.Second)
	if !b.Snapshot || len(b.Leases) != 2 {
		t.Fatalf("after compaction got %+v, want a snapshot of 2 leases", b)
	}
	if _, ok := w.State()[l2.Subnet]; !ok {
		t.Fatalf("snapshot misses %s", l2.Subnet)
	}
}

func TestConcurrentAcquire(t *testing.T) {
	m := New(Options{})
	// 10.22.0.0/21 with /27: 64 subnets, 62 candidates.
	cfg := MustConfig(t, `{"Network":"10.22.0.0/21","SubnetLen":27}`)
	n := cfg.Subnets()
	var wg sync.WaitGroup
	got := make([]netip.Prefix, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			l, err := m.AcquireLease(context.Background(), subnet.AcquireRequest{Config: cfg, Attrs: Node(22, i+1)})
			errs[i] = err
			if err == nil {
				got[i] = l.Subnet
			}
		})
	}
	wg.Wait()
	seen := map[netip.Prefix]bool{}
	for i := range n {
		if errs[i] != nil || seen[got[i]] {
			t.Fatalf("acquirer %d: %s %v", i, got[i], errs[i])
		}
		seen[got[i]] = true
	}
	if _, err := m.AcquireLease(context.Background(), subnet.AcquireRequest{Config: cfg, Attrs: Node(22, 200)}); !errors.Is(err, subnet.ErrNoFreeSubnet) {
		t.Fatalf("one more: %v", err)
	}
}

func TestFault(t *testing.T) {
	m := New(Options{})
	boom := errors.New("boom")
	m.SetFault(func(op string) error {
		if op == "ListLeases" {
			return boom
		}
		return nil
	})
	if _, _, err := m.ListLeases(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("ListLeases = %v", err)
	}
	if m.Calls("ListLeases") != 1 {
		t.Fatalf("Calls = %d", m.Calls("ListLeases"))
	}
}

func TestClock(t *testing.T) {
	c := NewClock(time.Unix(0, 0))
	t1 := c.NewTimer(time.Second)
	t2 := c.NewTimer(2 * time.Second)
	if d, ok := c.NextTimer(); !ok || d != time.Second {
		t.Fatalf("NextTimer = %v %v", d, ok)
	}
	c.Advance(time.Second)
	select {
	case <-t1.C():
	default:
		t.Fatal("timer 1 did not fire")
	}
	if !t2.Stop() || c.Timers() != 0 {
		t.Fatal("Stop did not remove timer 2")
	}
}
