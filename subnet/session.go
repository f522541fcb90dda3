package subnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// SessionOptions tune a Session. The zero value is usable.
type SessionOptions struct {
	// Logger receives renewal failures and the loss of the lease; discarded
	// when nil.
	Logger *slog.Logger
	// Clock drives renewal; the wall clock when nil.
	Clock Clock
	// RenewBefore is how much of the lease must remain when it is renewed;
	// half the TTL when zero. A reservation (no TTL) is checked every
	// TTL-RenewBefore instead.
	RenewBefore time.Duration
	// RetryMin and RetryMax bound the backoff between failed renewals
	// (1 s and 30 s when zero). A retry never waits longer than half of what
	// is left of the lease, so a reachable store gets asked several times
	// before the lease could expire.
	RetryMin, RetryMax time.Duration
}

// Session keeps a held lease alive, like etcd's concurrency.Session: Run
// renews it well before it expires and Done closes if it is lost. Only Run
// talks to the store; Lease, Done and Err are safe to call from any
// goroutine.
type Session struct {
	m    Manager
	ttl  time.Duration
	opts SessionOptions
	log  *slog.Logger

	done     chan struct{}
	doneOnce sync.Once

	mu    sync.Mutex
	lease Lease // guarded by mu
	err   error // guarded by mu; set before done closes
}

// NewSession returns a session for l, renewed with ttl (DefaultLeaseTTL when
// zero) through m. It starts nothing: call Run.
func NewSession(m Manager, l *Lease, ttl time.Duration, opts SessionOptions) *Session {
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	if opts.Clock == nil {
		opts.Clock = RealClock()
	}
	if opts.RenewBefore <= 0 || opts.RenewBefore >= ttl {
		opts.RenewBefore = ttl / 2
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = time.Second
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = 30 * time.Second
	}
	opts.RetryMax = max(opts.RetryMax, opts.RetryMin)
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Session{m: m, ttl: ttl, opts: opts, log: log, lease: *l, done: make(chan struct{})}
}

// Lease returns a copy of the lease as last renewed.
func (s *Session) Lease() Lease {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lease
}

// Done is closed when the lease is lost (Run returned an ErrLeaseLost
// error). It is not closed when Run returns because its ctx ended: the
// lease is still held then, and a restarted node reuses it.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns the error that closed Done, nil while Done is open.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Run renews the lease until ctx is done (then it returns nil) or the store
// reports the lease lost (then it closes Done and returns an error wrapping
// ErrLeaseLost). Other renewal errors are retried with backoff: the lease is
// never given up while the store can still renew it. Run must be called at
// most once.
func (s *Session) Run(ctx context.Context) error {
	retry := time.Duration(0) // 0 while renewals succeed
	failingSince := time.Time{}
	for {
		l := s.Lease()
		now := s.opts.Clock.Now()
		wait := s.nextRenewal(l, now)
		if retry > 0 {
			wait = retry
			if !l.Reserved() {
				if left := l.Expiration.Sub(now); left > 0 {
					wait = min(wait, max(left/2, time.Millisecond))
				}
			}
		}
		if err := s.sleep(ctx, wait); err != nil {
			return nil
		}

		cp := l
		err := s.m.RenewLease(ctx, &cp, s.ttl)
		switch {
		case err == nil:
			s.mu.Lock()
			s.lease = cp
			s.mu.Unlock()
			if retry > 0 {
				s.log.Info("lease renewed after failures", "subnet", cp.Subnet, "failing_for", s.opts.Clock.Now().Sub(failingSince))
			} else {
				s.log.Debug("lease renewed", "subnet", cp.Subnet, "expires", cp.Expiration)
			}
			retry = 0
		case errors.Is(err, ErrLeaseLost):
			err = fmt.Errorf("renew lease %s: %w", KeyName(l.Subnet, l.IPv6Subnet), err)
			s.log.Warn("lease lost", "subnet", l.Subnet, "err", err)
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			s.doneOnce.Do(func() { close(s.done) })
			return err
		case ctx.Err() != nil:
			return nil
		default:
			if retry == 0 {
				failingSince = s.opts.Clock.Now()
				retry = s.opts.RetryMin
				s.log.Warn("renew lease failed, retrying", "subnet", l.Subnet, "expires", l.Expiration, "err", err)
			} else {
				retry = min(retry*2, s.opts.RetryMax)
				s.log.Debug("renew lease failed again", "subnet", l.Subnet, "err", err)
			}
		}
	}
}

// nextRenewal is how long to wait before renewing l.
func (s *Session) nextRenewal(l Lease, now time.Time) time.Duration {
	if l.Reserved() || l.Expiration.IsZero() {
		return s.ttl - s.opts.RenewBefore
	}
	return max(l.Expiration.Sub(now)-s.opts.RenewBefore, 0)
}

func (s *Session) sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d <= 0 {
		return nil
	}
	t := s.opts.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	}
}
