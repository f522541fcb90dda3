package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/subnet"
)

// DefaultPrefix is Flannel's etcd prefix.
const DefaultPrefix = "/coreos.com/network"

// Options configure a Manager.
type Options struct {
	// Prefix under which config and subnets live; DefaultPrefix when empty.
	Prefix string
	// Logger; discarded when nil.
	Logger *slog.Logger
	// Clock computes lease expirations; the wall clock when nil.
	Clock subnet.Clock
	// RetryMin and RetryMax bound WatchLeases' backoff while etcd is
	// unreachable (250 ms and 5 s when zero).
	RetryMin, RetryMax time.Duration
	// PageSize bounds the keys one request of a lease listing reads
	// (DefaultPageSize when zero): a store of many leases is listed in
	// pages, one consistent snapshot (see list).
	PageSize int
}

// DefaultPageSize is the keys per request of a lease listing: a few hundred
// KB of lease values, far below etcd's and gRPC's message limits, and few
// round trips for a cluster of thousands of nodes.
const DefaultPageSize = 500

// Manager is subnet.Manager on etcd. Safe for concurrent use.
type Manager struct {
	cli        *clientv3.Client
	configKey  string
	subnetsDir string // with a trailing slash
	log        *slog.Logger
	clock      subnet.Clock
	retryMin   time.Duration
	retryMax   time.Duration
	pageSize   int64

	malformed atomic.Int64
	relists   atomic.Int64
}

var _ subnet.Manager = (*Manager)(nil)

// New returns a Manager that uses cli (which stays the caller's to close).
// It starts nothing.
func New(cli *clientv3.Client, opts Options) *Manager {
	prefix := strings.TrimSuffix(opts.Prefix, "/")
	if prefix == "" {
		prefix = DefaultPrefix
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	clock := opts.Clock
	if clock == nil {
		clock = subnet.RealClock()
	}
	m := &Manager{
		cli:        cli,
		configKey:  prefix + "/config",
		subnetsDir: prefix + "/subnets/",
		log:        log,
		clock:      clock,
		retryMin:   opts.RetryMin,
		retryMax:   opts.RetryMax,
		pageSize:   int64(opts.PageSize),
	}
	if m.pageSize <= 0 {
		m.pageSize = DefaultPageSize
	}
	if m.retryMin <= 0 {
		m.retryMin = 250 * time.Millisecond
	}
	if m.retryMax <= 0 {
		m.retryMax = 5 * time.Second
	}
	m.retryMax = max(m.retryMax, m.retryMin)
	return m
}

// Malformed counts lease keys skipped because their name or value could not
// be parsed (each is also logged as a warning).
func (m *Manager) Malformed() int64 { return m.malformed.Load() }

// Relists counts how often WatchLeases had to re-list after its watch broke
// (compaction, lost connection).
func (m *Manager) Relists() int64 { return m.relists.Load() }

// Key returns the etcd key of the lease for sn and sn6.
func (m *Manager) Key(sn, sn6 netip.Prefix) string { return m.subnetsDir + subnet.KeyName(sn, sn6) }

// GetNetworkConfig implements subnet.Manager.
func (m *Manager) GetNetworkConfig(ctx context.Context) (*subnet.Config, error) {
	resp, err := m.cli.Get(ctx, m.configKey)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", m.configKey, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("get %s: %w", m.configKey, subnet.ErrNoConfig)
	}
	c, err := subnet.ParseConfig(resp.Kvs[0].Value)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.configKey, err)
	}
	return c, nil
}

// SetNetworkConfig implements subnet.Manager: raw is validated with
// subnet.ParseConfig before it is written.
func (m *Manager) SetNetworkConfig(ctx context.Context, raw []byte) error {
	if _, err := subnet.ParseConfig(raw); err != nil {
		return fmt.Errorf("set %s: %w", m.configKey, err)
	}
	if _, err := m.cli.Put(ctx, m.configKey, string(raw)); err != nil {
		return fmt.Errorf("set %s: %w", m.configKey, err)
	}
	return nil
}

// parse turns a key under subnetsDir into a Lease.
func (m *Manager) parse(kv *mvccpb.KeyValue) (subnet.Lease, error) {
	name := strings.TrimPrefix(string(kv.Key), m.subnetsDir)
	sn, sn6, err := subnet.ParseKeyName(name)
	if err != nil {
		return subnet.Lease{}, err
	}
	l := subnet.Lease{Subnet: sn, IPv6Subnet: sn6, Revision: kv.ModRevision, CreateRevision: kv.CreateRevision, LeaseID: kv.Lease}
	if kv.Value != nil {
		if err := json.Unmarshal(kv.Value, &l.Attrs); err != nil {
			return l, fmt.Errorf("%s: %w", kv.Key, err)
		}
	}
	return l, nil
}

func (m *Manager) skip(key []byte, err error) {
	m.malformed.Add(1)
	m.log.Warn("skipping malformed lease", "key", string(key), "err", err)
}

// maxListRestarts bounds how often list starts over because the revision
// its first page pinned was compacted before the last page was read.
const maxListRestarts = 3

// list reads every lease key, in pages of at most pageSize keys, and
// returns them with the revision they are a snapshot of. The first page
// pins the revision and every later page reads at it, continuing after the
// last key read: the pages are one consistent snapshot however the store
// changes meanwhile (a lease written between pages is after that revision,
// so a watch from revision+1 sees it), and no key is read twice. If that
// revision is compacted before the last page, the listing starts over.
// Malformed keys are skipped and counted.
func (m *Manager) list(ctx context.Context) ([]subnet.Lease, int64, error) {
	for restarts := 0; ; restarts++ {
		leases, rev, err := m.listPages(ctx)
		if err == nil || !errors.Is(err, rpctypes.ErrCompacted) || restarts == maxListRestarts {
			return leases, rev, err
		}
		m.log.Debug("list leases: the listed revision was compacted between pages; starting over", "rev", rev)
	}
}

// listPages is one attempt of list; on a compaction it returns the pinned
// revision with the error.
func (m *Manager) listPages(ctx context.Context) ([]subnet.Lease, int64, error) {
	end := clientv3.GetPrefixRangeEnd(m.subnetsDir)
	from := m.subnetsDir
	var rev int64
	var out []subnet.Lease
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(m.pageSize)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := m.cli.Get(ctx, from, opts...)
		if err != nil {
			return nil, rev, fmt.Errorf("list %s: %w", m.subnetsDir, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			l, err := m.parse(kv)
			if err != nil {
				m.skip(kv.Key, err)
				continue
			}
			out = append(out, l)
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out, rev, nil
		}
		// The smallest key after the last one read.
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// ListLeases implements subnet.Manager. Expiration is filled from each etcd
// lease's remaining TTL.
func (m *Manager) ListLeases(ctx context.Context) ([]subnet.Lease, int64, error) {
	leases, rev, err := m.list(ctx)
	if err != nil {
		return nil, 0, err
	}
	now := m.clock.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range leases {
		if leases[i].Reserved() {
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			ttl, err := m.cli.TimeToLive(ctx, clientv3.LeaseID(leases[i].LeaseID))
			if err == nil && ttl.TTL >= 0 {
				leases[i].Expiration = now.Add(time.Duration(ttl.TTL) * time.Second)
			} else {
				leases[i].Expiration = now
			}
		})
	}
	wg.Wait()
	return leases, rev, ctx.Err()
}

// errConflict means a transaction's compare failed: someone else wrote
// first. AcquireLease retries on it.
var errConflict = errors.New("conflicting write")

// maxAcquireRounds bounds how often AcquireLease re-lists after losing a race
// on its own lease (each round is one list and a few transactions).
const maxAcquireRounds = 10

// AcquireLease implements subnet.Manager; see the interface for the order.
// A new subnet is created by one transaction that requires the key to be
// absent and binds it to a fresh etcd lease of req.TTL; losing the race for
// a subnet just moves on to another free one, chosen at random.
func (m *Manager) AcquireLease(ctx context.Context, req subnet.AcquireRequest) (*subnet.Lease, error) {
	if err := subnet.ValidateAcquire(req); err != nil {
		return nil, err
	}
	ttl := req.TTL
	if ttl <= 0 {
		ttl = subnet.DefaultLeaseTTL
	}
	g := &grant{m: m, ttl: ttl}
	defer g.revokeUnused()
	cfg := req.Config
	val, err := json.Marshal(req.Attrs)
	if err != nil {
		return nil, fmt.Errorf("acquire lease: %w", err)
	}

rounds:
	for range maxAcquireRounds {
		leases, _, err := m.list(ctx)
		if err != nil {
			return nil, fmt.Errorf("acquire lease: %w", err)
		}
		for _, l := range leases {
			if !subnet.SameNode(l.Attrs, req.Attrs) {
				continue
			}
			if !cfg.Contains(l.Subnet, l.IPv6Subnet) {
				if !l.Reserved() {
					m.log.Info("releasing own lease outside the network config", "subnet", l.Subnet, "network", cfg.Network)
					if err := m.deleteIf(ctx, l); err != nil && !errors.Is(err, errConflict) {
						return nil, fmt.Errorf("acquire lease: %w", err)
					}
				}
				continue
			}
			nl, err := m.rewrite(ctx, l, req.Attrs, val, g)
			if errors.Is(err, errConflict) {
				continue rounds
			}
			if err != nil {
				return nil, fmt.Errorf("acquire lease %s: %w", subnet.KeyName(l.Subnet, l.IPv6Subnet), err)
			}
			m.log.Info("reusing lease", "subnet", nl.Subnet, "reserved", nl.Reserved())
			return nl, nil
		}
		if sn, sn6, ok := req.PreviousSubnets(); ok && !claimed(leases, sn, sn6) {
			nl, err := m.create(ctx, sn, sn6, req.Attrs, val, g)
			if err == nil {
				m.log.Info("reusing subnet of the previous subnet file", "subnet", nl.Subnet)
				return nl, nil
			}
			if !errors.Is(err, errConflict) {
				return nil, fmt.Errorf("acquire lease %s: %w", sn, err)
			}
		}
		collided := make(map[string]bool)
		for {
			sn, sn6, err := cfg.PickFree(leases, func(a, b netip.Prefix) bool { return collided[subnet.KeyName(a, b)] })
			if err != nil {
				return nil, fmt.Errorf("acquire lease: %w", err)
			}
			nl, err := m.create(ctx, sn, sn6, req.Attrs, val, g)
			if errors.Is(err, errConflict) {
				collided[subnet.KeyName(sn, sn6)] = true
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("acquire lease %s: %w", sn, err)
			}
			m.log.Info("acquired new lease", "subnet", nl.Subnet, "ttl", ttl)
			return nl, nil
		}
	}
	return nil, fmt.Errorf("acquire lease: own lease kept changing under us %d times", maxAcquireRounds)
}

func claimed(leases []subnet.Lease, sn, sn6 netip.Prefix) bool {
	for _, l := range leases {
		if sn.IsValid() && l.Subnet == sn || sn6.IsValid() && l.IPv6Subnet == sn6 {
			return true
		}
	}
	return false
}

// grant is an etcd lease obtained lazily and kept for the next write until
// one uses it.
type grant struct {
	m      *Manager
	ttl    time.Duration
	id     clientv3.LeaseID
	ttlGot time.Duration
	at     time.Time
}

func (g *grant) get(ctx context.Context) (clientv3.LeaseID, error) {
	if g.id != 0 {
		return g.id, nil
	}
	secs := int64(math.Ceil(g.ttl.Seconds()))
	at := g.m.clock.Now()
	resp, err := g.m.cli.Grant(ctx, max(secs, 1))
	if err != nil {
		return 0, fmt.Errorf("grant etcd lease: %w", err)
	}
	g.id, g.ttlGot, g.at = resp.ID, time.Duration(resp.TTL)*time.Second, at
	return g.id, nil
}

// take hands the lease over to a key that now uses it.
func (g *grant) take() (clientv3.LeaseID, time.Time) {
	id, exp := g.id, g.at.Add(g.ttlGot)
	g.id = 0
	return id, exp
}

func (g *grant) revokeUnused() {
	if g.id != 0 {
		g.m.revoke(g.id)
		g.id = 0
	}
}

// revoke drops an etcd lease no key uses any more; failure only leaves it
// to expire on its own.
func (m *Manager) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := m.cli.Revoke(ctx, id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		m.log.Debug("revoke unused etcd lease", "lease", int64(id), "err", err)
	}
}

// create writes a new lease key if it does not exist.
func (m *Manager) create(ctx context.Context, sn, sn6 netip.Prefix, attrs subnet.LeaseAttrs, val []byte, g *grant) (*subnet.Lease, error) {
	id, err := g.get(ctx)
	if err != nil {
		return nil, err
	}
	key := m.Key(sn, sn6)
	resp, err := m.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(val), clientv3.WithLease(id))).
		Commit()
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", key, err)
	}
	if !resp.Succeeded {
		return nil, errConflict
	}
	id, exp := g.take()
	return &subnet.Lease{Subnet: sn, IPv6Subnet: sn6, Attrs: attrs, Expiration: exp, Revision: resp.Header.Revision,
		CreateRevision: resp.Header.Revision, LeaseID: int64(id)}, nil
}

// rewrite puts val on the key of l if l.Revision is still its ModRevision.
// A lease is rebound to a fresh etcd lease (the old one is revoked after);
// a reservation stays one.
func (m *Manager) rewrite(ctx context.Context, l subnet.Lease, attrs subnet.LeaseAttrs, val []byte, g *grant) (*subnet.Lease, error) {
	key := m.Key(l.Subnet, l.IPv6Subnet)
	var opts []clientv3.OpOption
	if !l.Reserved() {
		id, err := g.get(ctx)
		if err != nil {
			return nil, err
		}
		opts = append(opts, clientv3.WithLease(id))
	}
	resp, err := m.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", l.Revision)).
		Then(clientv3.OpPut(key, string(val), opts...)).
		Commit()
	if err != nil {
		return nil, fmt.Errorf("rewrite %s: %w", key, err)
	}
	if !resp.Succeeded {
		return nil, errConflict
	}
	out := &subnet.Lease{Subnet: l.Subnet, IPv6Subnet: l.IPv6Subnet, Attrs: attrs, Revision: resp.Header.Revision, CreateRevision: l.CreateRevision}
	if !l.Reserved() {
		id, exp := g.take()
		out.LeaseID, out.Expiration = int64(id), exp
		m.revoke(clientv3.LeaseID(l.LeaseID))
	}
	return out, nil
}

// deleteIf deletes the key of l if l.Revision is still its ModRevision.
func (m *Manager) deleteIf(ctx context.Context, l subnet.Lease) error {
	key := m.Key(l.Subnet, l.IPv6Subnet)
	resp, err := m.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", l.Revision)).
		Then(clientv3.OpDelete(key)).
		Commit()
	if err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	if !resp.Succeeded {
		return errConflict
	}
	if !l.Reserved() {
		m.revoke(clientv3.LeaseID(l.LeaseID))
	}
	return nil
}

// RenewLease implements subnet.Manager: a fresh etcd lease of ttl replaces
// the old one in a transaction that requires the key's ModRevision to be
// l.Revision, so a key someone else rewrote (or that expired) is never
// written: that is ErrLeaseLost. A reservation is only checked.
func (m *Manager) RenewLease(ctx context.Context, l *subnet.Lease, ttl time.Duration) error {
	key := m.Key(l.Subnet, l.IPv6Subnet)
	if l.Revision <= 0 {
		return fmt.Errorf("renew lease %s: it has no revision: %w", key, subnet.ErrLeaseLost)
	}
	if ttl <= 0 {
		ttl = subnet.DefaultLeaseTTL
	}
	if l.Reserved() {
		resp, err := m.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", l.Revision)).Commit()
		if err != nil {
			return fmt.Errorf("renew lease %s: %w", key, err)
		}
		if !resp.Succeeded {
			return fmt.Errorf("renew lease %s: reservation changed or removed: %w", key, subnet.ErrLeaseLost)
		}
		return nil
	}
	val, err := json.Marshal(l.Attrs)
	if err != nil {
		return fmt.Errorf("renew lease %s: %w", key, err)
	}
	g := &grant{m: m, ttl: ttl}
	defer g.revokeUnused()
	nl, err := m.rewrite(ctx, *l, l.Attrs, val, g)
	if errors.Is(err, errConflict) {
		return fmt.Errorf("renew lease %s: key expired or was rewritten since revision %d: %w", key, l.Revision, subnet.ErrLeaseLost)
	}
	if err != nil {
		return fmt.Errorf("renew lease: %w", err)
	}
	l.Revision, l.Expiration, l.LeaseID = nl.Revision, nl.Expiration, nl.LeaseID
	return nil
}

// ReleaseLease implements subnet.Manager: it deletes every key whose IPv4
// or IPv6 subnet is sn and revokes its etcd lease.
func (m *Manager) ReleaseLease(ctx context.Context, sn netip.Prefix) error {
	leases, _, err := m.list(ctx)
	if err != nil {
		return fmt.Errorf("release %s: %w", sn, err)
	}
	for _, l := range leases {
		if l.Subnet != sn && l.IPv6Subnet != sn {
			continue
		}
		key := m.Key(l.Subnet, l.IPv6Subnet)
		if _, err := m.cli.Delete(ctx, key); err != nil {
			return fmt.Errorf("release %s: %w", key, err)
		}
		if !l.Reserved() {
			m.revoke(clientv3.LeaseID(l.LeaseID))
		}
		m.log.Info("released lease", "subnet", sn, "public_ip", l.Attrs.PublicIP)
	}
	return nil
}

// ReserveSubnet implements subnet.Manager. The reservation is a key without
// an etcd lease, value {"PublicIP": publicIP}; if publicIP already holds sn
// its lease becomes a reservation with its attributes kept. An IPv6 sn (or
// publicIP) makes an IPv6-only reservation.
func (m *Manager) ReserveSubnet(ctx context.Context, sn netip.Prefix, publicIP netip.Addr) error {
	if !sn.IsValid() || sn.Masked() != sn || !publicIP.IsValid() {
		return fmt.Errorf("reserve %s for %s: want a subnet address (host bits zero) and a public IP", sn, publicIP)
	}
	var sn4, sn6 netip.Prefix
	if sn.Addr().Is4() {
		sn4 = sn
	} else {
		sn6 = sn
	}
	var attrs subnet.LeaseAttrs
	if publicIP.Is4() {
		attrs.PublicIP = publicIP
	} else {
		attrs.PublicIPv6 = publicIP
	}
	for range maxAcquireRounds {
		leases, _, err := m.list(ctx)
		if err != nil {
			return fmt.Errorf("reserve %s: %w", sn, err)
		}
		var own *subnet.Lease
		for _, l := range leases {
			if l.Subnet != sn && l.IPv6Subnet != sn {
				continue
			}
			if !subnet.SameNode(l.Attrs, attrs) {
				return fmt.Errorf("reserve %s for %s: held by %s: %w", sn, publicIP, l.Attrs.PublicIP, subnet.ErrSubnetTaken)
			}
			own = &l
		}
		if own != nil {
			val, err := json.Marshal(own.Attrs)
			if err != nil {
				return fmt.Errorf("reserve %s: %w", sn, err)
			}
			res := *own
			res.LeaseID = 0 // rewrite without an etcd lease
			if _, err := m.rewrite(ctx, res, own.Attrs, val, &grant{m: m}); errors.Is(err, errConflict) {
				continue
			} else if err != nil {
				return fmt.Errorf("reserve %s: %w", sn, err)
			}
			if !own.Reserved() {
				m.revoke(clientv3.LeaseID(own.LeaseID))
			}
			return nil
		}
		val, err := json.Marshal(attrs)
		if err != nil {
			return fmt.Errorf("reserve %s: %w", sn, err)
		}
		key := m.Key(sn4, sn6)
		resp, err := m.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(val))).
			Commit()
		if err != nil {
			return fmt.Errorf("reserve %s: %w", key, err)
		}
		if resp.Succeeded {
			m.log.Info("reserved subnet", "subnet", sn, "public_ip", publicIP)
			return nil
		}
	}
	return fmt.Errorf("reserve %s: the key kept changing under us", sn)
}
