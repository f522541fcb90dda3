package etcd

import (
	"context"
	"errors"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/subnet"
)

// maxBatchEvents caps how many events WatchLeases coalesces into a batch.
const maxBatchEvents = 1024

// WatchLeases implements subnet.Manager. It lists the leases (a snapshot),
// then watches the subnets prefix from the list's revision + 1. When the
// watch breaks — its revision was compacted, etcd lost its leader, the
// connection failed for good — it lists again and sends a new snapshot, so
// the receiver never misses a change. While etcd is unreachable it retries
// with backoff, logging the outage once and the recovery once. Malformed
// keys are skipped (see Malformed); a key whose value turns malformed is
// reported as removed.
func (m *Manager) WatchLeases(ctx context.Context, out chan<- subnet.LeaseBatch) error {
	backoff := m.retryMin
	var downSince time.Time
	for {
		leases, rev, err := m.list(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if downSince.IsZero() {
				downSince = time.Now()
				m.log.Warn("watch leases: cannot list leases; retrying until etcd answers", "err", err)
			} else {
				m.log.Debug("watch leases: list failed again", "err", err, "retry_in", backoff)
			}
			if err := sleep(ctx, backoff); err != nil {
				return err
			}
			backoff = min(backoff*2, m.retryMax)
			continue
		}
		if !downSince.IsZero() {
			m.log.Info("watch leases: etcd answers again", "down_for", time.Since(downSince).Round(time.Millisecond))
			downSince = time.Time{}
		}
		backoff = m.retryMin
		select {
		case out <- subnet.LeaseBatch{Snapshot: true, Leases: leases, Revision: rev}:
		case <-ctx.Done():
			return ctx.Err()
		}
		err = m.watchFrom(ctx, rev+1, out)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		m.relists.Add(1)
		if errors.Is(err, rpctypes.ErrCompacted) {
			m.log.Info("watch leases: revision compacted; re-listing", "from_rev", rev+1)
		} else {
			m.log.Warn("watch leases: watch broke; re-listing", "err", err)
		}
	}
}

// watchFrom sends batches of events from revision rev on until the watch
// fails, and returns why.
func (m *Manager) watchFrom(ctx context.Context, rev int64, out chan<- subnet.LeaseBatch) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := m.cli.Watch(wctx, m.subnetsDir, clientv3.WithPrefix(), clientv3.WithRev(rev))
	for {
		var resp clientv3.WatchResponse
		var ok bool
		select {
		case resp, ok = <-wch:
		case <-ctx.Done():
			return ctx.Err()
		}
		var batch subnet.LeaseBatch
		var stop error
		// Fold in every response already waiting, so a burst of changes is
		// one batch.
		for {
			if !ok {
				stop = errors.New("watch channel closed")
				break
			}
			if err := resp.Err(); err != nil {
				stop = err
				break
			}
			if resp.Header.Revision > batch.Revision {
				batch.Revision = resp.Header.Revision
			}
			m.appendEvents(&batch, resp.Events)
			if len(batch.Events) >= maxBatchEvents {
				break
			}
			select {
			case resp, ok = <-wch:
				continue
			default:
			}
			break
		}
		if len(batch.Events) > 0 {
			select {
			case out <- batch:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if stop != nil {
			return stop
		}
	}
}

func (m *Manager) appendEvents(b *subnet.LeaseBatch, evs []*clientv3.Event) {
	for _, ev := range evs {
		name := strings.TrimPrefix(string(ev.Kv.Key), m.subnetsDir)
		sn, sn6, err := subnet.ParseKeyName(name)
		if err != nil {
			m.skip(ev.Kv.Key, err)
			continue
		}
		removed := subnet.Event{Type: subnet.EventRemoved, Lease: subnet.Lease{Subnet: sn, IPv6Subnet: sn6, Revision: ev.Kv.ModRevision}}
		if ev.Type == clientv3.EventTypeDelete {
			b.Events = append(b.Events, removed)
			continue
		}
		l, err := m.parse(ev.Kv)
		if err != nil {
			// The receiver may know an older, valid value of this key: drop it.
			m.skip(ev.Kv.Key, err)
			b.Events = append(b.Events, removed)
			continue
		}
		b.Events = append(b.Events, subnet.Event{Type: subnet.EventAdded, Lease: l})
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
