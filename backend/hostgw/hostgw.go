package hostgw

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/internal/nl"
	"github.com/weftnet/weft/subnet"
)

// Backend is the host-gw backend. See the package doc for what it programs.
// Methods follow the backend.Backend contract: all but Peers and Run are
// called from one goroutine, in the network namespace weftd runs in.
type Backend struct {
	log     *slog.Logger
	ul      backend.Underlay
	cfg     *subnet.Config // peers are checked against it; nil refuses every peer
	network netip.Prefix   // pod network; zero when the config has none
	h       *nl.Handle

	// Set by Prepare, refreshed by Sync.
	underlay  netlink.Link
	mtu       int
	connected []netip.Prefix

	own   subnet.Lease
	peers backend.PeerSet

	// repairs counts kernel changes made by full passes; read by the
	// daemon's metrics from any goroutine.
	repairs atomic.Uint64

	status *backend.StatusBook
}

var (
	_ backend.Backend       = (*Backend)(nil)
	_ backend.Constructor   = New
	_ backend.RepairCounter = (*Backend)(nil)
)

// New builds a host-gw backend. host-gw has no options of its own (the
// config's Backend object needs only "Type"). It touches no kernel state.
func New(opts backend.Options) (backend.Backend, error) {
	if !opts.Underlay.PublicIP.IsValid() {
		return nil, errors.New("host-gw: underlay PublicIP is not set")
	}
	if opts.Underlay.BehindNAT() {
		// Peers route pod traffic to PublicIP as a next hop on their own
		// link: it must be this node's address there (Flannel refuses too).
		return nil, fmt.Errorf("host-gw: PublicIP %s is not the address of %s (%s), so this node is behind a NAT, which host-gw cannot cross: use vxlan, udp or wireguard, or leave --public-ip to the interface's address",
			opts.Underlay.PublicIP, opts.Underlay.Link, opts.Underlay.LocalIP)
	}
	if opts.Underlay.Index == 0 && opts.Underlay.Link == "" {
		return nil, errors.New("host-gw: underlay link is not set")
	}
	if err := backend.RefuseIPv6("host-gw", opts.Config); err != nil {
		return nil, err
	}
	var network netip.Prefix
	if opts.Config != nil {
		network = opts.Config.Network
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("backend", "host-gw")
	return &Backend{
		log:     log,
		status:  backend.NewStatusBook(log),
		ul:      opts.Underlay,
		cfg:     opts.Config,
		network: network,
		h:       nl.New(nil),
		peers:   backend.PeerSet{},
	}, nil
}

// Prepare looks up the underlay (MTU, directly connected subnets). host-gw
// publishes its addresses and no BackendData.
func (b *Backend) Prepare(ctx context.Context) (subnet.LeaseAttrs, error) {
	return b.ul.LeaseAttrs(b.cfg), b.refreshUnderlay()
}

func (b *Backend) refreshUnderlay() error {
	var ul netlink.Link
	var err error
	if b.ul.Index > 0 {
		ul, err = b.h.Netlink().LinkByIndex(b.ul.Index)
	} else {
		ul, err = b.h.Netlink().LinkByName(b.ul.Link)
	}
	if err != nil {
		return fmt.Errorf("host-gw: underlay link %q (index %d): %w", b.ul.Link, b.ul.Index, err)
	}
	fam := unix.AF_INET
	if !b.ul.PublicIP.Unmap().Is4() {
		fam = unix.AF_INET6
	}
	conn, err := b.h.ConnectedPrefixes(ul, fam)
	if err != nil {
		return fmt.Errorf("host-gw: %w", err)
	}
	b.underlay, b.connected = ul, conn
	b.mtu = b.ul.MTU
	if b.mtu == 0 {
		b.mtu = ul.Attrs().MTU
	}
	return nil
}

// MTU is the underlay MTU: host-gw adds no header. Valid after Prepare.
func (b *Backend) MTU() int { return b.mtu }

// Configure records the node's own lease and removes any weft route to its
// own subnet (left if the subnet once belonged to a peer).
func (b *Backend) Configure(ctx context.Context, own subnet.Lease) error {
	if b.underlay == nil {
		return errors.New("host-gw: Configure before Prepare")
	}
	b.own = own
	delete(b.peers, own.Subnet.Masked())
	return b.reconcile(map[netip.Prefix]bool{own.Subnet.Masked(): true})
}

// Sync makes weft's routes match peers exactly; see backend.Backend. It
// re-reads the underlay's connected subnets first, so a peer refused earlier
// is accepted once the underlay reaches it directly (and vice versa). The
// error joins per-peer failures; refused peers are not errors.
func (b *Backend) Sync(ctx context.Context, peers []subnet.Lease) error {
	if b.underlay == nil {
		return errors.New("host-gw: Sync before Prepare")
	}
	if err := b.refreshUnderlay(); err != nil {
		return err
	}
	b.peers.Replace(peers)
	return b.reconcile(nil)
}

// Apply applies events incrementally; see backend.Backend.
func (b *Backend) Apply(ctx context.Context, events []subnet.Event) error {
	if b.underlay == nil {
		return errors.New("host-gw: Apply before Prepare")
	}
	return b.reconcile(b.peers.Apply(events))
}

// Run returns nil when ctx is done: the kernel does the work.
func (b *Backend) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// Peers reports every peer in the desired set, sorted by subnet.
func (b *Backend) Peers() []backend.PeerStatus { return b.status.Peers() }

// Close does nothing: routes stay for the next run.
func (b *Backend) Close() error { return nil }

// plan is one peer's route or the reason it is refused.
type plan struct {
	lease  subnet.Lease
	state  backend.PeerState
	reason string
	route  nl.Route
}

type env struct {
	// node is what backend.CheckPeer judges leases against.
	node      backend.PeerNode
	ulIndex   int
	ulName    string
	connected []netip.Prefix
}

// planPeers decides, without touching the kernel, each peer's route or why
// it is refused: the rules every backend shares (backend.CheckPeer), then
// host-gw's own, a PublicIP on a directly connected subnet.
func planPeers(e env, peers map[netip.Prefix]subnet.Lease) map[netip.Prefix]*plan {
	out := make(map[netip.Prefix]*plan, len(peers))
	for sn, l := range peers {
		p := &plan{lease: l, state: backend.PeerRefused}
		out[sn] = p
		pub := l.Attrs.PublicIP.Unmap()
		why := ""
		v := backend.CheckPeer(e.node, l)
		fv := v.Family(backend.IPv4)
		switch {
		case v.Own:
			why = "subnet is this node's own"
		case !fv.Usable:
			why = cmp.Or(fv.Reason, "the network does not use IPv4")
		case !containsAddr(e.connected, pub):
			why = fmt.Sprintf("PublicIP is not on a subnet directly connected to %s (connected: %v); "+
				"host-gw needs every node on one L2 segment: use the vxlan backend (DirectRouting keeps "+
				"same-segment peers unencapsulated)", e.ulName, e.connected)
		}
		if why != "" {
			p.reason = fmt.Sprintf("peer %s (%s): %s", sn, l.Attrs.PublicIP, why)
			continue
		}
		p.state = backend.PeerProgrammed
		p.route = nl.Route{Dst: sn, Gw: pub, LinkIndex: e.ulIndex}
	}
	return out
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// reconcile makes weft's routes match the plans for subnets in scope (nil:
// everything, including routes for subnets nobody has).
func (b *Backend) reconcile(scope map[netip.Prefix]bool) error {
	e := env{
		node: backend.PeerNode{Config: b.cfg, Own: b.own, PublicIP: b.ul.PublicIP.Unmap(),
			BackendType: subnet.BackendHostGW, Connected: b.connected},
		ulIndex: b.underlay.Attrs().Index, ulName: b.underlay.Attrs().Name, connected: b.connected,
	}
	plans := planPeers(e, b.peers)
	inScope := func(sn netip.Prefix) bool { return scope == nil || scope[sn] }

	routes, err := b.h.WeftRoutes(unix.AF_INET)
	if err != nil {
		return fmt.Errorf("host-gw: %w", err)
	}
	var errs []error
	for sn, p := range plans {
		if !inScope(sn) || p.state != backend.PeerProgrammed {
			continue
		}
		var have *nl.Route
		if r, ok := routes[sn]; ok {
			have = &r
		}
		wrote, err := b.h.EnsureRoute(p.route, have)
		if err != nil {
			p.state, p.reason = backend.PeerFailed, err.Error()
			errs = append(errs, fmt.Errorf("host-gw: peer %s: %w", sn, err))
			continue
		}
		if wrote {
			b.countRepair(scope)
			b.log.Debug("programmed route", "route", p.route.String())
		}
	}
	for dst, r := range routes {
		if p, ok := plans[dst]; ok && p.state == backend.PeerProgrammed {
			continue
		}
		if !inScope(dst) || !b.ownsRoute(r) {
			continue
		}
		if err := b.h.DeleteRoute(r); err != nil {
			errs = append(errs, fmt.Errorf("host-gw: %w", err))
			continue
		}
		b.countRepair(scope)
		b.log.Info("deleted stale route", "route", r.String())
	}
	b.updateStatus(scope, plans)
	return errors.Join(errs...)
}

// countRepair counts a kernel change made by a full pass (scope nil): drift,
// or a change the incremental path missed.
func (b *Backend) countRepair(scope map[netip.Prefix]bool) {
	if scope == nil {
		b.repairs.Add(1)
	}
}

// Repairs implements backend.RepairCounter.
func (b *Backend) Repairs() uint64 { return b.repairs.Load() }

// ownsRoute: a weft-protocol route is this backend's if it sits on the
// underlay (peer routes of this pod network or of an earlier one: weft puts
// nothing else there) or leads into the pod network. Weft routes on other
// devices (another backend's) are left alone.
func (b *Backend) ownsRoute(r nl.Route) bool {
	if r.LinkIndex == b.underlay.Attrs().Index {
		return true
	}
	return b.network.IsValid() && b.network.Contains(r.Dst.Addr()) && r.Dst.Bits() >= b.network.Bits()
}

// updateStatus records outcomes for subnets in scope (all when nil).
func (b *Backend) updateStatus(scope map[netip.Prefix]bool, plans map[netip.Prefix]*plan) {
	want := make(map[netip.Prefix]backend.PeerStatus, len(plans))
	for sn, p := range plans {
		want[sn] = backend.PeerStatus{Subnet: sn, PublicIP: p.lease.Attrs.PublicIP, State: p.state, Reason: p.reason}
	}
	b.status.Update(scope, want)
}

// Device implements backend.Device: host-gw routes over the underlay.
func (b *Backend) Device() string { return b.ul.Link }
