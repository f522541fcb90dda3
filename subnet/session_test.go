package subnet_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/subnettest"
)

type sessionRig struct {
	clk   *subnettest.Clock
	m     *subnettest.Manager
	s     *subnet.Session
	ctx   context.Context
	errc  chan error
	stop  context.CancelFunc
	lease subnet.Lease
}

func newSessionRig(t *testing.T, ttl time.Duration, opts subnet.SessionOptions) *sessionRig {
	t.Helper()
	clk := subnettest.NewClock(time.Unix(1_700_000_000, 0))
	m := subnettest.New(subnettest.Options{Clock: clk})
	cfg := subnettest.MustConfig(t, `{"Network":"10.30.0.0/16"}`)
	l, err := m.AcquireLease(context.Background(), subnet.AcquireRequest{Config: cfg, Attrs: subnettest.Node(30, 1), TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	opts.Clock = clk
	s := subnet.NewSession(m, l, ttl, opts)
	ctx, cancel := context.WithCancel(context.Background())
	r := &sessionRig{clk: clk, m: m, s: s, ctx: ctx, errc: make(chan error, 1), stop: cancel, lease: *l}
	go func() { r.errc <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-r.errc
	})
	return r
}

// nextTimer waits until the session waits on a timer and returns how far
// it is.
func (r *sessionRig) nextTimer(t *testing.T) time.Duration {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if d, ok := r.clk.NextTimer(); ok {
			return d
		}
		select {
		case err := <-r.errc:
			t.Fatalf("Run returned %v while a timer was expected", err)
		case <-time.After(time.Millisecond):
		}
	}
	t.Fatal("session never waited on a timer")
	return 0
}

func (r *sessionRig) waitRenewals(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.m.Calls("RenewLease") < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d renewals, want %d", r.m.Calls("RenewLease"), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSessionRenewsAtHalfTTL(t *testing.T) {
	r := newSessionRig(t, time.Hour, subnet.SessionOptions{})
	for i := 1; i <= 3; i++ {
		if d := r.nextTimer(t); d != 30*time.Minute {
			t.Fatalf("renewal %d scheduled in %v, want 30m", i, d)
		}
		r.clk.Advance(30 * time.Minute)
		r.waitRenewals(t, i)
		r.nextTimer(t) // the session is back to waiting: its copy is updated
		l := r.s.Lease()
		if want := r.clk.Now().Add(time.Hour); !l.Expiration.Equal(want) {
			t.Fatalf("after renewal %d Expiration = %v, want %v", i, l.Expiration, want)
		}
		if l.Revision == r.lease.Revision {
			t.Fatal("Lease() still has the old revision")
		}
	}
	select {
	case <-r.s.Done():
		t.Fatal("Done closed while the lease is held")
	default:
	}
}

func TestSessionRetriesWithoutLettingItExpire(t *testing.T) {
	r := newSessionRig(t, 10*time.Second, subnet.SessionOptions{RetryMin: time.Second})
	down := errors.New("etcd unreachable")
	r.m.SetFault(func(op string) error {
		if op == "RenewLease" {
			return down
		}
		return nil
	})
	expires := r.lease.Expiration
	r.clk.Advance(r.nextTimer(t))
	for i := 1; i <= 10; i++ {
		r.waitRenewals(t, i)
		d := r.nextTimer(t)
		left := expires.Sub(r.clk.Now())
		if d <= 0 || d >= left {
			t.Fatalf("retry %d in %v with %v of the lease left: it could expire first", i, d, left)
		}
		r.clk.Advance(d)
	}
	if !r.clk.Now().Before(expires) {
		t.Fatalf("clock %v reached expiry %v while retrying", r.clk.Now(), expires)
	}
	r.m.SetFault(nil)
	r.clk.Advance(r.nextTimer(t))
	r.waitRenewals(t, 11)
	r.nextTimer(t)
	if l := r.s.Lease(); !l.Expiration.After(expires) {
		t.Fatalf("after the store came back, Expiration %v not extended past %v", l.Expiration, expires)
	}
}

func TestSessionBackoffGrows(t *testing.T) {
	r := newSessionRig(t, 24*time.Hour, subnet.SessionOptions{RetryMin: time.Second, RetryMax: 4 * time.Second})
	r.m.SetFault(func(op string) error { return errors.New("down") })
	r.clk.Advance(r.nextTimer(t))
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second}
	for i, w := range want {
		r.waitRenewals(t, i+1)
		if d := r.nextTimer(t); d != w {
			t.Fatalf("retry %d after %v, want %v", i+1, d, w)
		}
		r.clk.Advance(w)
	}
}

func TestSessionLost(t *testing.T) {
	r := newSessionRig(t, time.Hour, subnet.SessionOptions{})
	// Another writer takes the key over.
	other := r.lease
	other.Attrs = subnettest.Node(30, 2)
	r.m.Put(other)
	r.clk.Advance(r.nextTimer(t))
	select {
	case err := <-r.errc:
		if !errors.Is(err, subnet.ErrLeaseLost) {
			t.Fatalf("Run = %v, want ErrLeaseLost", err)
		}
		r.errc <- err // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the lease was lost")
	}
	select {
	case <-r.s.Done():
	default:
		t.Fatal("Done not closed")
	}
	if !errors.Is(r.s.Err(), subnet.ErrLeaseLost) {
		t.Fatalf("Err = %v", r.s.Err())
	}
	ls, _, _ := r.m.ListLeases(context.Background())
	if len(ls) != 1 || ls[0].Attrs.PublicIP != netip.MustParseAddr("198.18.30.2") {
		t.Fatalf("the other writer's lease was overwritten: %+v", ls)
	}
}

func TestSessionStopKeepsLease(t *testing.T) {
	r := newSessionRig(t, time.Hour, subnet.SessionOptions{})
	r.nextTimer(t)
	r.stop()
	select {
	case err := <-r.errc:
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
		r.errc <- nil
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	select {
	case <-r.s.Done():
		t.Fatal("Done closed on a clean stop")
	default:
	}
	if r.m.Calls("RenewLease") != 0 {
		t.Fatal("renewed on stop")
	}
}
