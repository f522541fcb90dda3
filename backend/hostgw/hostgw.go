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
	log *slog.Logger
	ul  backend.Underlay
	cfg *subnet.Config // peers are checked against it; nil refuses every peer
	// network and network6 are the pod networks; zero for a family the
	// config does not enable.
	network, network6 netip.Prefix
	h                 *nl.Handle

	// Set by Prepare, refreshed by Sync.
	underlay  netlink.Link
	mtu       int
	connected []netip.Prefix

	own   subnet.Lease
	peers backend.PeerSet
	// plans is the last outcome for every peer in peers; routes, per
	// family, weft's routes as far as the backend knows (the last dump, kept
	// up to date by every write since). Both are set by every pass that
	// reads the kernel; plans is nil until one has read it all.
	plans  map[netip.Prefix]*plan
	routes map[backend.Family]map[netip.Prefix]nl.Route

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
	if err := opts.Underlay.RequireAddrs("host-gw", opts.Config); err != nil {
		return nil, err
	}
	enabled4 := opts.Config == nil || opts.Config.EnableIPv4
	enabled6 := opts.Config != nil && opts.Config.EnableIPv6
	if enabled4 && opts.Underlay.BehindNAT() {
		// Peers route pod traffic to PublicIP as a next hop on their own
		// link: it must be this node's address there (Flannel refuses too).
		return nil, fmt.Errorf("host-gw: PublicIP %s is not the address of %s (%s), so this node is behind a NAT, which host-gw cannot cross: use vxlan, udp or wireguard, or leave --public-ip to the interface's address",
			opts.Underlay.PublicIP, opts.Underlay.Link, opts.Underlay.LocalIP)
	}
	if enabled6 && opts.Underlay.BehindNAT6() {
		return nil, fmt.Errorf("host-gw: PublicIPv6 %s is not the address of %s (%s), so this node is behind a NAT, which host-gw cannot cross: use vxlan, or leave --public-ipv6 to the interface's address",
			opts.Underlay.PublicIPv6, opts.Underlay.Link, opts.Underlay.LocalIPv6)
	}
	if opts.Underlay.Index == 0 && opts.Underlay.Link == "" {
		return nil, errors.New("host-gw: underlay link is not set")
	}
	var network, network6 netip.Prefix
	if opts.Config != nil && enabled4 {
		network = opts.Config.Network
	}
	if enabled6 {
		network6 = opts.Config.IPv6Network
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("backend", "host-gw")
	return &Backend{
		log:      log,
		status:   backend.NewStatusBook(log),
		ul:       opts.Underlay,
		cfg:      opts.Config,
		network:  network,
		network6: network6,
		h:        nl.New(nil),
		peers:    backend.PeerSet{},
	}, nil
}

// Prepare opens the backend's netlink socket and looks up the underlay
// (MTU, directly connected subnets). host-gw publishes its addresses and
// no BackendData.
func (b *Backend) Prepare(ctx context.Context) (subnet.LeaseAttrs, error) {
	// One socket for the backend's life, in the namespace Prepare is
	// called in (every method is called there).
	if err := b.h.Persist(); err != nil {
		return subnet.LeaseAttrs{}, fmt.Errorf("host-gw: %w", err)
	}
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
	var conn []netip.Prefix
	for _, f := range b.families() {
		af := unix.AF_INET
		if f == backend.IPv6 {
			af = unix.AF_INET6
		}
		c, err := b.h.ConnectedPrefixes(ul, af)
		if err != nil {
			return fmt.Errorf("host-gw: %w", err)
		}
		conn = append(conn, c...)
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
// own subnets (left if a subnet once belonged to a peer).
func (b *Backend) Configure(ctx context.Context, own subnet.Lease) error {
	if b.underlay == nil {
		return errors.New("host-gw: Configure before Prepare")
	}
	b.own = own
	delete(b.peers, own.Key().Masked())
	return b.reconcile(backend.LeaseScope(own))
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
	scope := b.peers.ApplyFamilies(events)
	if b.plans == nil {
		return b.reconcile(scope) // nothing read from the kernel yet
	}
	return b.applyScope(scope)
}

// Run returns nil when ctx is done: the kernel does the work.
func (b *Backend) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// Peers reports every peer in the desired set, sorted by subnet.
func (b *Backend) Peers() []backend.PeerStatus { return b.status.Peers() }

// Close closes the backend's netlink socket; routes stay for the next run.
func (b *Backend) Close() error {
	b.h.Close()
	return nil
}

// famPlan is one family's part of a peer's plan: its route, or why it is
// not programmed.
type famPlan struct {
	out   backend.FamilyOutcome
	route nl.Route
}

// plan is one peer's routes (one per family the network enables) or the
// reasons they are refused.
type plan struct {
	lease  subnet.Lease
	v4, v6 famPlan
}

// family returns p's part for f.
func (p *plan) family(f backend.Family) *famPlan {
	if f == backend.IPv6 {
		return &p.v6
	}
	return &p.v4
}

type env struct {
	// node is what backend.CheckPeer judges leases against.
	node backend.PeerNode
	// families are the address families the network enables.
	families  []backend.Family
	ulIndex   int
	ulName    string
	connected []netip.Prefix // either family
}

// planPeers decides, without touching the kernel, each peer's route per
// family or why it is refused (planPeer).
func planPeers(e env, peers map[netip.Prefix]subnet.Lease) map[netip.Prefix]*plan {
	out := make(map[netip.Prefix]*plan, len(peers))
	for sn, l := range peers {
		out[sn] = planPeer(e, l)
	}
	return out
}

// planPeer is one peer's plan: the rules every backend shares
// (backend.CheckPeer), then host-gw's own, an underlay address of the
// family on a directly connected subnet.
func planPeer(e env, l subnet.Lease) *plan {
	p := &plan{lease: l}
	v := backend.CheckPeer(e.node, l)
	for _, f := range e.families {
		fp := p.family(f)
		fv := v.Family(f)
		dst, pub, key := l.Subnet.Masked(), l.Attrs.PublicIP.Unmap(), "PublicIP"
		if f == backend.IPv6 {
			dst, pub, key = l.IPv6Subnet.Masked(), l.Attrs.PublicIPv6, "PublicIPv6"
		}
		why := ""
		switch {
		case v.Own:
			why = "subnet is this node's own"
		case !fv.Usable:
			why = cmp.Or(fv.Reason, "the network does not use "+f.String())
		case !containsAddr(e.connected, pub):
			why = fmt.Sprintf("%s %s is not on a subnet directly connected to %s (connected: %v); "+
				"host-gw needs every node on one L2 segment: use the vxlan backend (DirectRouting keeps "+
				"same-segment peers unencapsulated)", key, pub, e.ulName, e.connected)
		}
		if why != "" {
			fp.out = backend.Outcome(backend.PeerRefused, why)
			continue
		}
		fp.out = backend.Outcome(backend.PeerProgrammed, "")
		fp.route = nl.Route{Dst: dst, Gw: pub, LinkIndex: e.ulIndex}
	}
	return p
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (b *Backend) env() env {
	return env{
		node: backend.PeerNode{Config: b.cfg, Own: b.own, PublicIP: b.ul.PublicIP.Unmap(), PublicIPv6: b.ul.PublicIPv6,
			BackendType: subnet.BackendHostGW, Connected: b.connected},
		families: b.families(),
		ulIndex:  b.underlay.Attrs().Index, ulName: b.underlay.Attrs().Name, connected: b.connected,
	}
}

// reconcile re-plans every peer, reads weft's routes from the kernel and
// makes them match the plans for the peers in scope (nil: everything,
// including routes for subnets nobody has). A scope holds peer keys and,
// for dual-stack peers, their IPv6 subnets (see Apply).
func (b *Backend) reconcile(scope map[netip.Prefix]bool) error {
	e := b.env()
	plans := planPeers(e, b.peers)
	b.plans, b.routes = nil, make(map[backend.Family]map[netip.Prefix]nl.Route, len(e.families))
	var errs []error
	for _, f := range e.families {
		af := unix.AF_INET
		if f == backend.IPv6 {
			af = unix.AF_INET6
		}
		routes, err := b.h.WeftRoutes(af)
		if err != nil {
			errs = append(errs, fmt.Errorf("host-gw: %w", err))
			continue
		}
		b.routes[f] = routes
	}
	if len(errs) > 0 {
		// What the kernel holds is unknown: the next Apply reads it again.
		b.updateStatus(scope, plans)
		return errors.Join(errs...)
	}
	b.plans = plans
	if scope == nil {
		all := make(map[netip.Prefix]bool, len(plans))
		for sn := range plans {
			all[sn] = true
		}
		for _, routes := range b.routes {
			for dst := range routes {
				all[dst] = true
			}
		}
		return b.pass(all, true)
	}
	return b.pass(scope, false)
}

// applyScope is the incremental pass: the peers in scope planned afresh,
// their routes made right from what the backend knows the kernel holds
// (b.routes), reading nothing back. A new peer costs a request per family,
// a removed one as many, an unchanged one none, whatever the number of
// peers; drift is the next full pass's to repair.
func (b *Backend) applyScope(scope map[netip.Prefix]bool) error {
	e := b.env()
	slots := make(map[netip.Prefix]bool, len(scope))
	for sn := range scope {
		slots[sn] = true
		if old, ok := b.plans[sn]; ok {
			// The routes it had, wherever its subnets have gone since.
			for _, f := range e.families {
				if dst := old.family(f).route.Dst; dst.IsValid() {
					slots[dst] = true
				}
			}
		}
		if l, ok := b.peers[sn]; ok {
			b.plans[sn] = planPeer(e, l)
		} else {
			delete(b.plans, sn)
		}
	}
	return b.pass(slots, false)
}

// pass makes weft's routes of each family at the subnets in scope match
// the plans of the peers in scope, starting from b.routes and keeping it up
// to date; a scope holds peer keys and the destinations their routes had
// and have. full says scope is everything: its changes are repairs.
func (b *Backend) pass(scope map[netip.Prefix]bool, full bool) error {
	var errs []error
	for _, f := range b.families() {
		routes := b.routes[f]
		want := map[netip.Prefix]bool{}
		for sn := range scope {
			p, ok := b.plans[sn]
			if !ok {
				continue
			}
			fp := p.family(f)
			if fp.out.State != backend.PeerProgrammed {
				continue
			}
			want[fp.route.Dst] = true
			var have *nl.Route
			if r, ok := routes[fp.route.Dst]; ok {
				have = &r
			}
			wrote, err := b.h.EnsureRoute(fp.route, have)
			if err != nil {
				fp.out = backend.Outcome(backend.PeerFailed, err.Error())
				errs = append(errs, fmt.Errorf("host-gw: peer %s: %w", sn, err))
				continue
			}
			if wrote {
				routes[fp.route.Dst] = fp.route
				b.countRepair(full)
				b.log.Debug("programmed route", "route", fp.route.String())
			}
		}
		for dst := range scope {
			r, ok := routes[dst]
			if !ok || want[dst] || !b.ownsRoute(r) {
				continue
			}
			if err := b.h.DeleteRoute(r); err != nil {
				errs = append(errs, fmt.Errorf("host-gw: %w", err))
				continue
			}
			delete(routes, dst)
			b.countRepair(full)
			if full {
				b.log.Info("deleted stale route", "route", r.String())
			} else {
				b.log.Debug("deleted the route of a removed peer", "route", r.String())
			}
		}
	}
	if full {
		scope = nil
	}
	b.updateStatus(scope, b.plans)
	return errors.Join(errs...)
}

// families are the address families the network enables (IPv4 without a
// config).
func (b *Backend) families() []backend.Family {
	if b.cfg == nil {
		return []backend.Family{backend.IPv4}
	}
	var fs []backend.Family
	if b.cfg.EnableIPv4 {
		fs = append(fs, backend.IPv4)
	}
	if b.cfg.EnableIPv6 {
		fs = append(fs, backend.IPv6)
	}
	return fs
}

// countRepair counts a kernel change made by a full pass: drift, or a
// change the incremental path missed.
func (b *Backend) countRepair(full bool) {
	if full {
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
	for _, n := range []netip.Prefix{b.network, b.network6} {
		if n.IsValid() && n.Contains(r.Dst.Addr()) && r.Dst.Bits() >= n.Bits() {
			return true
		}
	}
	return false
}

// updateStatus records outcomes for subnets in scope (all when nil).
func (b *Backend) updateStatus(scope map[netip.Prefix]bool, plans map[netip.Prefix]*plan) {
	backend.UpdatePlans(b.status, scope, plans, func(_ netip.Prefix, p *plan) backend.PeerStatus {
		return backend.NewPeerStatus(b.cfg, p.lease, p.v4.out, p.v6.out)
	})
}

// Device implements backend.Device: host-gw routes over the underlay.
func (b *Backend) Device() string { return b.ul.Link }
