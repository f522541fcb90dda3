package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/daemon/laststate"
	"github.com/weftnet/weft/daemon/masq"
	"github.com/weftnet/weft/internal/nl"
	"github.com/weftnet/weft/subnet"
)

// Deps are the concrete parts the daemon is built from.
type Deps struct {
	Logger  *slog.Logger
	Manager subnet.Manager
	// Backends maps Backend.Type to its constructor.
	Backends map[string]backend.Constructor
	// Masq installs the forwarding rules, and masquerade when
	// Config.IPMasq is set; nil installs nothing (tests).
	Masq masq.Manager
	// NewMasq, used when Masq is nil, makes the Manager of a firewall API
	// ("nftables", "iptables"): the daemon picks one per network config
	// (Config.MasqBackend, EnableNFTables).
	NewMasq func(kind string) (masq.Manager, error)
	// Underlay, when set, is used instead of detecting it from the kernel.
	Underlay *backend.Underlay
	// StoreScope names the store and network Manager serves (e.g. "etcd
	// /coreos.com/network"). The last known state records it, and a file
	// recorded under another scope is refused.
	StoreScope string
	// OnReady, when set, is called once per generation after the node is
	// ready (lease held, backend configured, CNI config installed, the
	// peers of the store's first snapshot or of the last known state
	// programmed), and
	// retried with backoff until it succeeds or the generation ends. The
	// Kubernetes wiring clears the Node's NetworkUnavailable condition
	// with it.
	OnReady func(ctx context.Context) error
	// Blackholes keeps the unreachable routes for the pod network
	// (Config.BlackholeRoute); nil programs none (tests).
	Blackholes Blackholes
	// Connected, when set, lists the prefixes directly connected to the
	// underlay (a pod network overlapping one is refused). Nil: read from
	// the kernel, or, with Underlay set, none known.
	Connected func(backend.Underlay) ([]netip.Prefix, error)
}

// Daemon is one node's weftd.
type Daemon struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	metrics *metrics

	// ready flags, read by /readyz from the HTTP goroutine.
	// peersProgrammed is set by a generation's first full pass: until
	// then a restarted node (the udp backend keeps its peers in memory)
	// may not reach them.
	leaseHeld, subnetFileWritten, backendReady, cniConfInstalled, peersProgrammed atomic.Bool
	// heartbeat is the unix-nano time the reconcile loop last ran; zero
	// while no generation is running.
	heartbeat atomic.Int64

	mu     sync.Mutex // guards status
	status Status
	// running is the current generation's backend; nil between
	// generations. Status and metrics read its peers and counters.
	running atomic.Pointer[runningBackend]
	// session is the one keeping the current lease alive; status and
	// metrics read the lease's expiry from it.
	session    atomic.Pointer[subnet.Session]
	healthAddr atomic.Pointer[string]
	// controlPlane is whether the lease store last answered.
	controlPlane atomic.Bool
	// lastBigTCP and lastBigTCPReason are the last generation's BIG TCP
	// decision (bigTCP), so it is logged when it changes. Touched only by
	// the generation goroutine.
	lastBigTCP       nl.GSO
	lastBigTCPReason string
	// lastState writes the last known state; nil without Config.StateDir.
	lastState *laststate.Writer
	// masqs are the firewall Managers made from Deps.NewMasq, by kind, and
	// masqInUse the kind of the running generation. Touched only by the
	// generation goroutine between generations (masqFor).
	masqs     map[string]masqMade
	masqInUse string
}

// New checks cfg and deps and returns a daemon. It starts nothing.
func New(cfg Config, deps Deps) (*Daemon, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if deps.Manager == nil {
		return nil, errors.New("daemon: no lease store")
	}
	if len(deps.Backends) == 0 {
		return nil, errors.New("daemon: no backends")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	d := &Daemon{cfg: cfg, deps: deps, log: deps.Logger}
	d.lastState = d.newLastStateWriter()
	d.metrics = newMetrics(d.leaseExpiry, d.controlPlane.Load)
	d.metrics.registry.MustRegister(&scrapeCollector{d: d})
	return d, nil
}

// Run runs the daemon until ctx is done. It returns nil on a clean stop:
// the lease and the kernel state stay, so a restart reuses both.
func (d *Daemon) Run(ctx context.Context) error {
	if d.cfg.StateDir != "" {
		// Private: the state dir holds key material (wireguard) and what
		// this node knows of its peers.
		if err := os.MkdirAll(d.cfg.StateDir, 0o700); err != nil {
			return fmt.Errorf("state directory: %w (change --state-dir)", err)
		}
	}
	ln, err := d.listen()
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.serveHTTP(ctx, ln) })
	g.Go(func() error { return d.runGenerations(ctx) })
	g.Go(func() error { return d.runWatchdog(ctx) })
	if d.lastState != nil {
		g.Go(func() error { return d.lastState.Run(ctx) })
	}
	err = g.Wait()
	d.notify("STOPPING=1")
	return err
}

// runGenerations runs one generation per network config until ctx is done.
func (d *Daemon) runGenerations(ctx context.Context) error {
	underlay, err := d.underlay()
	if err != nil {
		return err
	}
	d.log.Info("underlay", "link", underlay.Link, "publicIP", underlay.PublicIP, "localIP", underlay.Local(), "publicIPv6", underlay.PublicIPv6, "localIPv6", underlay.Local6(), "mtu", underlay.MTU)
	last := d.loadLastState(underlay)
	for {
		var cfg *subnet.Config
		var from *laststate.State
		if last != nil { // only the first generation may start from the file
			cfg, from = d.firstConfig(ctx, last, underlay)
			last = nil
		}
		if cfg == nil {
			if cfg, err = d.waitConfig(ctx, nil, underlay); err != nil {
				return nilOnDone(ctx, err)
			}
		}
		err = d.runGeneration(ctx, cfg, underlay, from)
		d.setNotReady()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, backend.ErrLeaseDataChanged) {
			d.log.Info("the backend's lease data changed; preparing it again and republishing the lease", "err", err)
			continue
		}
		if !errors.Is(err, errConfigChanged) {
			return err
		}
	}
}

var errConfigChanged = errors.New("network config changed")

func (d *Daemon) underlay() (backend.Underlay, error) {
	if d.deps.Underlay != nil {
		return *d.deps.Underlay, nil
	}
	return findUnderlay(UnderlayChoice{Iface: d.cfg.Iface, IfaceRegex: d.cfg.IfaceRegex, IfaceCanReach: d.cfg.IfaceCanReach, PublicIP: d.cfg.PublicIP, PublicIPv6: d.cfg.PublicIPv6})
}

// waitConfig returns the stored network config, waiting with backoff while
// it is missing, invalid (including backend options the backend refuses), or
// equal to skip. It is also how a running node notices an etcd outage: each
// read is bounded, and each distinct problem is logged once (and its end),
// not once per retry.
func (d *Daemon) waitConfig(ctx context.Context, skip *subnet.Config, underlay backend.Underlay) (*subnet.Config, error) {
	bo := newBackoff(500*time.Millisecond, 10*time.Second)
	problem := ""
	for {
		rctx, cancel := context.WithTimeout(ctx, storeCallTimeout)
		cfg, err := d.deps.Manager.GetNetworkConfig(rctx)
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		d.setControlPlane(storeAnswered(err))
		if err == nil {
			err = d.checkBackend(cfg, underlay)
		}
		if err == nil {
			err = d.checkUnderlay(cfg, underlay)
		}
		// now says what is wrong; key decides when that is news. Each
		// distinct bad config is reported once; an outage once as a whole,
		// as its error text changes (timeouts, unavailable) while it lasts.
		now, key := "", ""
		var cfgErr *subnet.ConfigError
		switch {
		case err == nil:
		case errors.Is(err, subnet.ErrNoConfig):
			now = "waiting for the network config; set it with `weftctl config set FILE`"
			key = now
		case errors.As(err, &cfgErr) || errors.Is(err, errBackendRefused) || errors.Is(err, errUnderlayOverlap):
			now = "cannot use the network config; fix it with `weftctl config set FILE` (the node keeps its current state)"
			key = err.Error()
			if cfg != nil {
				key += string(cfg.Raw) // same refusal, another config: news
			}
		case errors.Is(err, errNotConnected) || errors.Is(err, subnet.ErrUnreachable):
			// Not connected yet: the dial (dialEtcd) reports that, once; a
			// store wrapping ErrUnreachable has reported its outage.
		default:
			now = "cannot read the network config from etcd; keeping the current state and retrying"
			key = now
		}
		switch {
		case errors.Is(err, errNotConnected) || errors.Is(err, subnet.ErrUnreachable):
		case now != "" && key != problem:
			d.log.Warn(now, "err", err)
			problem = key
		case now == "" && problem != "":
			d.log.Info("network config read and valid again")
			problem = ""
		}
		if err == nil && (skip == nil || !sameNetwork(cfg, skip)) {
			return cfg, nil
		}
		if err := sleepCtx(ctx, bo.next()); err != nil {
			return nil, err
		}
	}
}

// storeAnswered reports whether a config read's error still means the store
// answered (no config, an invalid one).
func storeAnswered(err error) bool {
	var cfgErr *subnet.ConfigError
	return err == nil || errors.Is(err, subnet.ErrNoConfig) || errors.As(err, &cfgErr)
}

// storeCallTimeout bounds one read of the lease store, so an unreachable etcd
// is noticed and reported instead of blocking silently.
const storeCallTimeout = 5 * time.Second

// errBackendRefused marks configs whose backend is missing or refuses its
// options: a config problem, not an outage.
var errBackendRefused = errors.New("backend refused the config")

// checkBackend reports whether cfg's backend exists and accepts its
// options. Constructors touch nothing (backend.Constructor), so trying one is
// free, and a bad option is refused before the running generation is ended.
func (d *Daemon) checkBackend(cfg *subnet.Config, underlay backend.Underlay) error {
	newBackend, ok := d.deps.Backends[cfg.BackendType]
	if !ok {
		return fmt.Errorf("%w: backend type %q is not built into this weftd", errBackendRefused, cfg.BackendType)
	}
	be, err := newBackend(backend.Options{Logger: d.log, Underlay: underlay, Config: cfg, StateDir: d.cfg.StateDir})
	if err != nil {
		return fmt.Errorf("%w: %s: %w", errBackendRefused, cfg.BackendType, err)
	}
	return be.Close()
}

// sameNetwork reports whether two configs would program the node the same
// way, so switching between them needs no new generation.
func sameNetwork(a, b *subnet.Config) bool {
	return a.Network == b.Network && a.SubnetLen == b.SubnetLen &&
		a.SubnetMin == b.SubnetMin && a.SubnetMax == b.SubnetMax &&
		a.IPv6Network == b.IPv6Network && a.IPv6SubnetLen == b.IPv6SubnetLen &&
		a.BackendType == b.BackendType && string(compactJSON(a.Backend)) == string(compactJSON(b.Backend)) &&
		(a.EnableNFTables == nil) == (b.EnableNFTables == nil) && (a.EnableNFTables == nil || *a.EnableNFTables == *b.EnableNFTables)
}

// generation is the state of one network config's run. Its fields are owned
// by the reconcile goroutine once the generation is running.
type generation struct {
	d     *Daemon
	cfg   *subnet.Config
	be    backend.Backend
	own   subnet.Lease
	peers map[netip.Prefix]subnet.Lease
	// underlay is this node's, as leases are checked against it.
	underlay backend.Underlay
	ignored  map[netip.Prefix]string // subnet → why it is not a peer, to log once
	// ignoredFull is set once ignored reached maxIgnored (said once).
	ignoredFull bool
	// blackholeErr is the last error setting the unreachable routes.
	blackholeErr string
	// checkOwn asks keepLease to verify our lease with the store now.
	checkOwn chan struct{}
	// filter is the peer filter as last installed; filterIdx indexes the
	// peers by filter address for incremental updates (nil: the next update
	// is a full one) and filterTouched holds the addresses changed since
	// the last one (see noteFilterChange).
	filter        peerFilterState
	filterIdx     *filterIndex
	filterTouched map[netip.Addr]bool
	// filterStale holds the addresses whose installed entry lets in more
	// than their peers need: the trim's to take out (see
	// updatePeerFilterDelta).
	filterStale map[netip.Addr]bool
	// masq is the firewall Manager of this generation (nil: none); rules
	// what it was last asked to hold (rulesSet once it was), firewallErr
	// the last error checking them.
	masq        masq.Manager
	rules       masq.Rules
	rulesSet    bool
	firewallErr string
	// synced is set after the generation's first full pass, and
	// programmed closed with it.
	synced     bool
	programmed chan struct{}
	// restored is set when the generation started from the last known
	// state; live once a watch snapshot came from the store, ownConfirmed
	// once own was acquired from it. Only live, confirmed state is saved.
	restored, live, ownConfirmed bool
	// revision is the store revision of the last batch applied.
	revision int64
	// others is every lease the watch last reported that is not in peers
	// (refused, or this node's own), so with peers the whole store, and
	// the peer set can be judged again when the own lease moves. Kept
	// apart from peers so a peer's lease is held once.
	others map[netip.Prefix]subnet.Lease
}

// runGeneration runs cfg until it changes or ctx is done. With last, it
// starts from the last known state: the node is programmed before the store
// is heard, and the lease is acquired once it answers.
func (d *Daemon) runGeneration(ctx context.Context, cfg *subnet.Config, underlay backend.Underlay, last *laststate.State) error {
	log := d.log.With("backend", cfg.BackendType, "network", cfg.Network)
	be, err := d.deps.Backends[cfg.BackendType](backend.Options{Logger: log, Underlay: underlay, Config: cfg, StateDir: d.cfg.StateDir})
	if err != nil {
		return fmt.Errorf("backend %s: %w", cfg.BackendType, err)
	}
	defer be.Close()
	attrs, err := retry(ctx, log, "prepare backend", func() (subnet.LeaseAttrs, error) { return be.Prepare(ctx) })
	if err != nil {
		return nilOnDone(ctx, err)
	}
	attrs.BackendType = cfg.BackendType
	g := &generation{d: d, cfg: cfg, be: be, underlay: underlay, peers: map[netip.Prefix]subnet.Lease{}, others: map[netip.Prefix]subnet.Lease{}, ignored: map[netip.Prefix]string{}, programmed: make(chan struct{})}
	if g.masq, err = d.masqFor(ctx, cfg); err != nil {
		return err
	}
	req := subnet.AcquireRequest{
		Config: cfg,
		Attrs:  attrs,
		TTL:    d.cfg.SubnetLeaseTTL,
	}
	req.Previous, req.PreviousIPv6 = d.previousSubnets(cfg)
	lease := &subnet.Lease{}
	if last != nil {
		*lease = last.Own
		lease.Attrs = req.Attrs // what this node publishes now
		// Until the store confirms it, status and metrics read the
		// recorded expiry from a session that is not run.
		d.session.Store(subnet.NewSession(d.deps.Manager, lease, req.TTL, subnet.SessionOptions{}))
	} else {
		if lease, err = d.acquire(ctx, req); err != nil {
			return nilOnDone(ctx, err)
		}
		g.ownConfirmed = true
	}
	if err := g.adopt(ctx, *lease); err != nil {
		return nilOnDone(ctx, err)
	}
	if last != nil {
		g.restorePeers(ctx, last)
	}
	d.backendReady.Store(true)
	if err := d.installCNIConf(d.bigTCP(be, underlay)); err != nil {
		return err
	}
	d.cniConfInstalled.Store(true)
	d.running.Store(&runningBackend{be})
	defer d.running.Store(nil)
	status := fmt.Sprintf("subnet %s, backend %s", subnet.KeyName(lease.Subnet, lease.IPv6Subnet), cfg.BackendType)
	if last != nil {
		status += ", lease store unreachable: running on the last known state"
	}

	batches := make(chan subnet.LeaseBatch, 64)
	ownLeases := make(chan subnet.Lease, 1)
	g.checkOwn = make(chan struct{}, 1)
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return nilOnDone(ctx, d.deps.Manager.WatchLeases(ctx, batches)) })
	eg.Go(func() error { return d.keepLease(ctx, *lease, req, last != nil, g.checkOwn, ownLeases) })
	eg.Go(func() error { return be.Run(ctx) })
	eg.Go(func() error { return d.watchConfig(ctx, cfg, underlay) })
	eg.Go(func() error { return g.reconcile(ctx, batches, ownLeases) })
	eg.Go(func() error {
		// Ready means the peers are programmed, not only the node: a
		// restarted node's kernel may hold nothing for them yet.
		select {
		case <-g.programmed:
		case <-ctx.Done():
			return nil
		}
		log.Info("node ready", leaseAttrs(*lease, "mtu", be.MTU(), "fromLastKnownState", last != nil)...)
		d.notify("READY=1\nSTATUS=" + status)
		if d.deps.OnReady == nil {
			return nil
		}
		_, err := retry(ctx, log, "report the node ready", func() (struct{}, error) { return struct{}{}, d.deps.OnReady(ctx) })
		return nilOnDone(ctx, err)
	})
	return eg.Wait()
}

// previousSubnets returns the subnets recorded in the existing subnet file
// (FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET: weft's or Flannel's), each only if it
// belongs to cfg's network. The lease store checks the rest.
func (d *Daemon) previousSubnets(cfg *subnet.Config) (sn, sn6 netip.Prefix) {
	f, err := subnet.ReadFile(d.cfg.SubnetFile)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			d.log.Warn("ignoring the previous subnet file", "path", d.cfg.SubnetFile, "err", err)
		}
		return netip.Prefix{}, netip.Prefix{}
	}
	if p := f.Subnet.Masked(); p.IsValid() && cfg.EnableIPv4 && cfg.Network.Contains(p.Addr()) && p.Bits() == cfg.SubnetLen {
		sn = p
	}
	if p := f.IPv6Subnet.Masked(); p.IsValid() && cfg.EnableIPv6 && cfg.IPv6Network.Contains(p.Addr()) && p.Bits() == cfg.IPv6SubnetLen {
		sn6 = p
	}
	return sn, sn6
}

// acquire gets a lease, retrying transient errors with backoff.
func (d *Daemon) acquire(ctx context.Context, req subnet.AcquireRequest) (*subnet.Lease, error) {
	l, err := retry(ctx, d.log, "acquire lease", func() (*subnet.Lease, error) {
		l, err := d.deps.Manager.AcquireLease(ctx, req)
		if err == nil {
			return l, nil
		}
		d.metrics.leaseFailures.Inc()
		return nil, err
	})
	if err != nil {
		return nil, err
	}
	d.metrics.leaseAcquisitions.Inc()
	d.setControlPlane(true)
	d.log.Info("lease acquired", leaseAttrs(*l, "expires", l.Expiration.Format(time.RFC3339))...)
	return l, nil
}

// keepLease renews the lease until ctx is done. A lost lease is acquired
// again (the same subnet when it is still free) and handed to the reconcile
// goroutine on own; losing a lease is never a reason to exit. A signal on
// check (the watch saw our key deleted or taken over) makes it ask the store
// at once instead of at the next renewal, hours away with a long TTL. With
// confirm (lease came from the last known state), it first acquires the
// lease as a start does, waiting for the store, and hands it on own.
func (d *Daemon) keepLease(ctx context.Context, lease subnet.Lease, req subnet.AcquireRequest, confirm bool, check <-chan struct{}, own chan<- subnet.Lease) error {
	if confirm {
		req.Previous, req.PreviousIPv6 = lease.Subnet, lease.IPv6Subnet
		l, err := d.acquire(ctx, req)
		if err != nil {
			return nilOnDone(ctx, err)
		}
		lease = *l
		select {
		case own <- lease:
		case <-ctx.Done():
			return nil
		}
	}
	for {
		err := d.holdLease(ctx, &lease, req.TTL, check)
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, subnet.ErrLeaseLost) {
			return fmt.Errorf("keep lease %s: %w", subnet.KeyName(lease.Subnet, lease.IPv6Subnet), err)
		}
		d.metrics.leaseLosses.Inc()
		d.leaseHeld.Store(false)
		d.log.Warn("lease lost; acquiring again", leaseAttrs(lease)...)
		req.Previous, req.PreviousIPv6 = lease.Subnet, lease.IPv6Subnet
		l, err := d.acquire(ctx, req)
		if err != nil {
			return nilOnDone(ctx, err)
		}
		lease = *l
		select {
		case own <- lease:
		case <-ctx.Done():
			return nil
		}
	}
}

// holdLease runs renewal sessions for lease until ctx is done or the lease
// is lost; on return lease holds the last renewed state.
func (d *Daemon) holdLease(ctx context.Context, lease *subnet.Lease, ttl time.Duration, check <-chan struct{}) error {
	for {
		sctx, cancel := context.WithCancel(ctx)
		s := subnet.NewSession(d.deps.Manager, lease, ttl, subnet.SessionOptions{Logger: d.log, RenewBefore: d.cfg.SubnetLeaseRenewMargin})
		d.session.Store(s)
		errc := make(chan error, 1)
		go func() { errc <- s.Run(sctx) }()
		var err error
		select {
		case err = <-errc:
			cancel()
			*lease = s.Lease()
			return err
		case <-check:
			cancel()
			<-errc
			*lease = s.Lease()
			d.log.Info("the watch reports our lease changed; checking it with the store", leaseAttrs(*lease)...)
			if err = d.deps.Manager.RenewLease(ctx, lease, ttl); err != nil && errors.Is(err, subnet.ErrLeaseLost) {
				return err
			}
			// Renewed, or the store is unreachable: a new session retries.
		}
	}
}

// watchConfig polls the network config and ends the generation when it
// changes in a way that needs one. Invalid configs are reported by
// waitConfig and do not end the generation: the node keeps its last good
// state.
func (d *Daemon) watchConfig(ctx context.Context, cfg *subnet.Config, underlay backend.Underlay) error {
	for {
		if err := sleepCtx(ctx, d.cfg.ConfigPollInterval); err != nil {
			return nil
		}
		next, err := d.waitConfig(ctx, cfg, underlay)
		if err != nil {
			return nil
		}
		d.log.Info("network config changed; reprogramming the node", "network", next.Network, "backend", next.BackendType)
		return errConfigChanged
	}
}

// leaseExpiry is when the current lease runs out unless renewed; zero when
// there is none or it is a reservation.
func (d *Daemon) leaseExpiry() time.Time {
	if s := d.session.Load(); s != nil {
		return s.Lease().Expiration
	}
	return time.Time{}
}

func (d *Daemon) setNotReady() {
	d.leaseHeld.Store(false)
	d.backendReady.Store(false)
	d.peersProgrammed.Store(false)
	d.heartbeat.Store(0)
}

func ptr[T any](v T) *T { return &v }

// leaseAttrs are the log attributes naming l: its subnets and addresses,
// those of a family it has, then more.
func leaseAttrs(l subnet.Lease, more ...any) []any {
	var a []any
	if l.Subnet.IsValid() {
		a = append(a, "subnet", l.Subnet)
	}
	if l.IPv6Subnet.IsValid() {
		a = append(a, "ipv6Subnet", l.IPv6Subnet)
	}
	if l.Attrs.PublicIP.IsValid() {
		a = append(a, "publicIP", l.Attrs.PublicIP)
	}
	if l.Attrs.PublicIPv6.IsValid() {
		a = append(a, "publicIPv6", l.Attrs.PublicIPv6)
	}
	return append(a, more...)
}

// runningBackend boxes the interface for atomic.Pointer.
type runningBackend struct{ backend.Backend }

func nilOnDone(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}
