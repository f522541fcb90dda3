package vxlan

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/internal/nl"
	"github.com/weftnet/weft/subnet"
)

// Backend is the vxlan backend. See the package doc for what it programs.
// Methods follow the backend.Backend contract: all but Peers and Run are
// called from one goroutine, in the network namespace weftd runs in.
type Backend struct {
	log  *slog.Logger
	opts Options
	ul   backend.Underlay
	// cfg is the network config peers are checked against (nil: none,
	// and every peer is refused); network is its pod network, zero when
	// there is none.
	cfg     *subnet.Config
	network netip.Prefix
	h       *nl.Handle

	// Set by Prepare.
	dev       netlink.Link // weft.<VNI>
	underlay  netlink.Link
	mac       net.HardwareAddr
	mtu       int
	connected []netip.Prefix // underlay's directly connected subnets

	own   subnet.Lease    // set by Configure
	peers backend.PeerSet // desired peer set

	// repairs counts kernel changes made by full passes; read by the
	// daemon's metrics from any goroutine.
	repairs atomic.Uint64

	status *backend.StatusBook
}

var (
	_ backend.Backend       = (*Backend)(nil)
	_ backend.Constructor   = New
	_ backend.PeerFiltered  = (*Backend)(nil)
	_ backend.Tunneled      = (*Backend)(nil)
	_ backend.RepairCounter = (*Backend)(nil)
)

// New builds a vxlan backend from opts (options from opts.Config.Backend).
// It touches no kernel state.
func New(opts backend.Options) (backend.Backend, error) {
	var raw json.RawMessage
	var network netip.Prefix
	if opts.Config != nil {
		raw, network = opts.Config.Backend, opts.Config.Network
	}
	o, err := ParseOptions(raw)
	if err != nil {
		return nil, err
	}
	if err := backend.RefuseIPv6("vxlan", opts.Config); err != nil {
		return nil, err
	}
	if !opts.Underlay.PublicIP.IsValid() {
		return nil, errors.New("vxlan: underlay PublicIP is not set")
	}
	if opts.Underlay.Index == 0 && opts.Underlay.Link == "" {
		return nil, errors.New("vxlan: underlay link is not set")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("backend", "vxlan", "dev", DeviceName(o.VNI))
	return &Backend{
		log:     log,
		status:  backend.NewStatusBook(log),
		opts:    o,
		ul:      opts.Underlay,
		cfg:     opts.Config,
		network: network,
		h:       nl.New(nil),
		peers:   backend.PeerSet{},
	}, nil
}

// Options returns the parsed options.
func (b *Backend) Options() Options { return b.opts }

// TunnelPort implements backend.Tunneled.
func (b *Backend) TunnelPort() uint16 { return uint16(b.opts.Port) }

// FilterPort implements backend.PeerFiltered.
func (b *Backend) FilterPort() (uint16, bool) { return b.opts.FilterPort() }

// Prepare creates or adopts weft.<VNI> and returns the BackendData to
// publish. A device with the same VNI, port, local address, underlay, learning
// and GBP settings is reused (same ifindex, no flap); anything else of that
// name is replaced.
func (b *Backend) Prepare(ctx context.Context) (subnet.LeaseAttrs, error) {
	if err := b.ensureDevice(); err != nil {
		return subnet.LeaseAttrs{}, err
	}
	data, err := json.Marshal(BackendData{VNI: b.opts.VNI, VtepMAC: b.mac.String()})
	if err != nil {
		return subnet.LeaseAttrs{}, fmt.Errorf("vxlan: encode backend data: %w", err)
	}
	attrs := b.ul.LeaseAttrs(b.cfg)
	attrs.BackendData = data
	return attrs, nil
}

// ensureDevice resolves the underlay and makes weft.<VNI> right: created or
// reused, MAC, MTU, up, TX checksum setting. Called by Prepare and by every
// Sync, so a device deleted or altered by hand is repaired too.
func (b *Backend) ensureDevice() error {
	var ul netlink.Link
	var err error
	if b.ul.Index > 0 {
		ul, err = b.h.Netlink().LinkByIndex(b.ul.Index)
	} else {
		ul, err = b.h.Netlink().LinkByName(b.ul.Link)
	}
	if err != nil {
		return fmt.Errorf("vxlan: underlay link %q (index %d): %w", b.ul.Link, b.ul.Index, err)
	}
	b.underlay = ul
	ulMTU := b.ul.MTU
	if ulMTU == 0 {
		ulMTU = ul.Attrs().MTU
	}
	if b.opts.MTU != 0 {
		ulMTU = b.opts.MTU // Flannel's meaning: the path MTU, not the device's
	}
	b.mtu = ulMTU - Overhead(b.ul.Local())
	b.mac = VtepMAC(b.ul.PublicIP, b.opts.VNI)
	name := DeviceName(b.opts.VNI)
	want := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: name, HardwareAddr: b.mac, MTU: b.mtu},
		VxlanId:      b.opts.VNI,
		VtepDevIndex: ul.Attrs().Index,
		// The interface's address: behind a NAT, PublicIP is not local.
		SrcAddr:  nl.IP(b.ul.Local()),
		Port:     b.opts.Port,
		Learning: b.opts.Learning,
		GBP:      b.opts.GBP,
	}
	if err := b.clearConflicts(name); err != nil {
		return err
	}
	dev, created, err := b.h.EnsureLink(want, func(have netlink.Link) bool { return compatible(have.(*netlink.Vxlan), want) })
	if err != nil {
		return fmt.Errorf("vxlan: %w", err)
	}
	if created {
		b.log.Info("created vxlan device", "ifindex", dev.Attrs().Index, "vni", b.opts.VNI, "port", b.opts.Port, "local", b.ul.Local())
	}
	// Set MAC after creation too: udev (MACAddressPolicy=persistent) may
	// rewrite a new device's MAC behind us, which would strand every peer's
	// neighbour entry for this node.
	dev, err = b.h.EnsureLinkState(dev, nl.LinkState{MAC: b.mac, MTU: b.mtu, Up: true})
	if err != nil {
		return fmt.Errorf("vxlan: %w", err)
	}
	if b.opts.DisableTXChecksumOffload {
		if err := nl.SetTxChecksum(name, false); err != nil {
			return fmt.Errorf("vxlan: disable tx checksum offload: %w", err)
		}
	}
	b.dev = dev
	conn, err := b.h.ConnectedPrefixes(ul, familyOf(b.ul.Local()))
	if err != nil {
		return fmt.Errorf("vxlan: %w", err)
	}
	b.connected = conn
	return nil
}

// compatible reports whether an existing device can be adopted as want
// without re-creating it. MAC and MTU are not part of it: they can be changed
// in place.
func compatible(have, want *netlink.Vxlan) bool {
	return have.VxlanId == want.VxlanId &&
		have.Port == want.Port &&
		have.VtepDevIndex == want.VtepDevIndex &&
		have.SrcAddr.Equal(want.SrcAddr) &&
		have.Learning == want.Learning &&
		have.GBP == want.GBP &&
		(len(have.Group) == 0 || have.Group.IsUnspecified()) &&
		!have.FlowBased
}

func familyOf(a netip.Addr) int {
	if a.Unmap().Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// MTU is the pod MTU: the device MTU. Valid after Prepare.
func (b *Backend) MTU() int { return b.mtu }

// Configure puts <subnet>.0/32 on the device (and only that) and removes any
// weft state for the node's own subnet (left if it once was a peer's).
func (b *Backend) Configure(ctx context.Context, own subnet.Lease) error {
	if b.dev == nil {
		return errors.New("vxlan: Configure before Prepare")
	}
	if !own.Subnet.Addr().Is4() {
		return fmt.Errorf("vxlan: own subnet %s is not IPv4", own.Subnet)
	}
	b.own = own
	if err := b.ensureAddr(); err != nil {
		return err
	}
	delete(b.peers, own.Subnet.Masked())
	return b.reconcile(map[netip.Prefix]bool{own.Subnet.Masked(): true})
}

// ensureAddr makes <own subnet>.0/32 the device's only IPv4 address.
func (b *Backend) ensureAddr() error {
	addr := netip.PrefixFrom(b.own.Subnet.Masked().Addr(), 32)
	if err := b.h.EnsureAddrs(b.dev, unix.AF_INET, []netip.Prefix{addr}); err != nil {
		return fmt.Errorf("vxlan: %w", err)
	}
	return nil
}

// Sync makes the kernel match peers exactly; see backend.Backend. It also
// re-checks the device (re-created if deleted, MAC/MTU/up/offload fixed) and
// its address. The error joins per-peer failures (also visible in
// Peers); refused peers are not errors.
func (b *Backend) Sync(ctx context.Context, peers []subnet.Lease) error {
	if b.dev == nil {
		return errors.New("vxlan: Sync before Prepare")
	}
	if err := b.ensureDevice(); err != nil {
		return err
	}
	if b.own.Subnet.IsValid() {
		if err := b.ensureAddr(); err != nil {
			return err
		}
	}
	b.peers.Replace(peers)
	return b.reconcile(nil)
}

// Apply applies events incrementally; see backend.Backend.
func (b *Backend) Apply(ctx context.Context, events []subnet.Event) error {
	if b.dev == nil {
		return errors.New("vxlan: Apply before Prepare")
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

// Close does nothing: kernel state stays for the next run.
func (b *Backend) Close() error { return nil }

// ---- desired state ----

// plan is what one peer needs in the kernel.
type plan struct {
	lease  subnet.Lease
	state  backend.PeerState
	reason string
	route  nl.Route
	// mac and publicIP are set for encapsulated peers (neighbour + FDB);
	// mac is nil for direct-routed ones.
	mac      net.HardwareAddr
	publicIP netip.Addr
}

// env is the node-side input of planning.
type env struct {
	vni int
	// node is what backend.CheckPeer judges leases against.
	node      backend.PeerNode
	devIndex  int
	ulIndex   int
	direct    bool
	connected []netip.Prefix
}

// planPeers computes, without touching the kernel, what each peer needs or
// why it is refused: first the rules every backend shares
// (backend.CheckPeer), then vxlan's own (BackendData, a VtepMAC claimed
// twice). Peers are visited oldest lease first (lowest CreateRevision, then
// subnet order), so of two leases claiming one VtepMAC the older keeps it on
// every pass: a newcomer cannot take over a legitimate peer's MAC.
func planPeers(e env, peers map[netip.Prefix]subnet.Lease) map[netip.Prefix]*plan {
	keys := slices.Collect(maps.Keys(peers))
	slices.SortFunc(keys, func(a, c netip.Prefix) int {
		return cmp.Or(backend.OlderFirst(peers[a], peers[c]), a.Addr().Compare(c.Addr()), cmp.Compare(a.Bits(), c.Bits()))
	})
	macOwner := map[string]netip.Prefix{}
	out := make(map[netip.Prefix]*plan, len(peers))
	for _, sn := range keys {
		l := peers[sn]
		p := &plan{lease: l}
		out[sn] = p
		refuse := func(format string, args ...any) {
			p.state = backend.PeerRefused
			p.reason = fmt.Sprintf("peer %s (%s): ", sn, l.Attrs.PublicIP) + fmt.Sprintf(format, args...)
		}
		v := backend.CheckPeer(e.node, l)
		if v.Own {
			refuse("subnet is this node's own")
			continue
		}
		if fv := v.Family(backend.IPv4); !fv.Usable {
			refuse("%s", cmp.Or(fv.Reason, "the network does not use IPv4"))
			continue
		}
		pub := l.Attrs.PublicIP.Unmap()
		gw := sn.Addr() // peerSubnet.0
		if e.direct && containsAddr(e.connected, pub) {
			p.state = backend.PeerProgrammed
			p.route = nl.Route{Dst: sn, Gw: pub, LinkIndex: e.ulIndex}
			continue
		}
		mac, err := parseBackendData(l.Attrs.BackendData, e.vni)
		if err != nil {
			refuse("%v", err)
			continue
		}
		if other, dup := macOwner[mac.String()]; dup {
			refuse("VtepMAC %s is already used by the older lease of peer %s (%s)", mac, other, peers[other].Attrs.PublicIP)
			continue
		}
		macOwner[mac.String()] = sn
		p.state = backend.PeerProgrammed
		p.mac, p.publicIP = mac, pub
		p.route = nl.Route{Dst: sn, Gw: gw, LinkIndex: e.devIndex, OnLink: true}
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

// ---- making the kernel match ----

// reconcile makes the kernel match the plans for the subnets in scope (nil:
// everything, including state for subnets nobody has). Ensuring comes before
// deleting so that a changed peer never loses its path for longer than the
// replace.
func (b *Backend) reconcile(scope map[netip.Prefix]bool) error {
	e := env{
		vni: b.opts.VNI,
		node: backend.PeerNode{Config: b.cfg, Own: b.own, PublicIP: b.ul.PublicIP.Unmap(),
			BackendType: subnet.BackendVXLAN, Connected: b.connected},
		devIndex: b.dev.Attrs().Index, ulIndex: b.underlay.Attrs().Index,
		direct: b.opts.DirectRouting, connected: b.connected,
	}
	plans := planPeers(e, b.peers)
	inScope := func(a netip.Addr) bool {
		if scope == nil {
			return true
		}
		for sn := range scope {
			if sn.Contains(a) {
				return true
			}
		}
		return false
	}

	routes, err := b.h.WeftRoutes(unix.AF_INET)
	if err != nil {
		return fmt.Errorf("vxlan: %w", err)
	}
	neighs, err := b.h.Neighs(e.devIndex, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("vxlan: %w", err)
	}
	fdb, extraFDB, err := b.h.FDB(e.devIndex)
	if err != nil {
		return fmt.Errorf("vxlan: %w", err)
	}

	// Desired entries across all peers (FDB is keyed by MAC, which any peer
	// may hold, so it is checked against the whole set).
	wantRoute := map[netip.Prefix]bool{}
	wantNeigh := map[netip.Addr]bool{}
	wantFDB := map[string]netip.Addr{}
	for sn, p := range plans {
		if p.state != backend.PeerProgrammed {
			continue
		}
		wantRoute[sn] = true
		if p.mac != nil {
			wantNeigh[p.route.Gw] = true
			wantFDB[p.mac.String()] = p.publicIP
		}
	}

	var errs []error
	// Ensure, per peer in scope.
	for sn, p := range plans {
		if !inScope(sn.Addr()) || p.state != backend.PeerProgrammed {
			continue
		}
		changed, err := b.ensurePeer(p, routes, neighs, fdb)
		if err != nil {
			p.state, p.reason = backend.PeerFailed, err.Error()
			errs = append(errs, fmt.Errorf("vxlan: peer %s: %w", sn, err))
		}
		if changed && scope == nil {
			b.repairs.Add(1)
		}
	}

	// Delete what no peer needs. Routes: weft's own only (protocol), and only
	// those on weft's device or into the pod network.
	for dst, r := range routes {
		if wantRoute[dst] || !inScope(dst.Addr()) || !b.ownsRoute(r) {
			continue
		}
		if err := b.h.DeleteRoute(r); err != nil {
			errs = append(errs, fmt.Errorf("vxlan: %w", err))
			continue
		}
		b.countRepair(scope)
		b.log.Info("deleted stale route", "route", r.String())
	}
	scopedMACs := map[string]bool{}
	for ip, n := range neighs {
		if !inScope(ip) {
			continue
		}
		scopedMACs[n.MAC.String()] = true
		if wantNeigh[ip] {
			continue
		}
		if err := b.h.DeleteNeigh(e.devIndex, ip); err != nil {
			errs = append(errs, fmt.Errorf("vxlan: %w", err))
			continue
		}
		b.countRepair(scope)
		b.log.Info("deleted stale neighbour", "ip", ip, "mac", n.MAC.String())
	}
	for _, p := range plans {
		if p.mac != nil && inScope(p.lease.Subnet.Addr()) {
			scopedMACs[p.mac.String()] = true
		}
	}
	for _, fe := range append(slices.Collect(maps.Values(fdb)), extraFDB...) {
		key := fe.MAC.String()
		if scope != nil && !scopedMACs[key] {
			continue
		}
		if dst, ok := wantFDB[key]; ok && dst == fe.Dst {
			continue
		}
		if err := b.h.DeleteFDB(fe); err != nil {
			errs = append(errs, fmt.Errorf("vxlan: %w", err))
			continue
		}
		b.countRepair(scope)
		b.log.Info("deleted stale fdb entry", "mac", fe.MAC.String(), "dst", fe.Dst)
	}

	b.updateStatus(scope, plans)
	return errors.Join(errs...)
}

// ensurePeer writes p's route, neighbour and FDB entry where the kernel
// (routes, neighs, fdb: snapshots from this pass) differs. FDB and
// neighbour go first so the route never points at an unresolved next hop.
func (b *Backend) ensurePeer(p *plan, routes map[netip.Prefix]nl.Route, neighs map[netip.Addr]nl.Neigh,
	fdb map[string]nl.FDBEntry) (changed bool, err error) {
	if p.mac != nil {
		var have *nl.FDBEntry
		if fe, ok := fdb[p.mac.String()]; ok {
			have = &fe
		}
		w, err := b.h.EnsureFDB(p.route.LinkIndex, p.mac, p.publicIP, have)
		if err != nil {
			return changed, err
		}
		changed = changed || w
		var haveN *nl.Neigh
		if n, ok := neighs[p.route.Gw]; ok {
			haveN = &n
		}
		w, err = b.h.EnsureNeigh(p.route.LinkIndex, p.route.Gw, p.mac, haveN)
		if err != nil {
			return changed, err
		}
		changed = changed || w
	}
	var haveR *nl.Route
	if r, ok := routes[p.route.Dst]; ok {
		haveR = &r
	}
	w, err := b.h.EnsureRoute(p.route, haveR)
	if err != nil {
		return changed, err
	}
	if changed = changed || w; changed {
		b.log.Debug("programmed peer", "subnet", p.lease.Subnet, "publicIP", p.publicIP, "route", p.route.String(), "vtepMAC", p.mac.String())
	}
	return changed, nil
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

// ownsRoute: a weft-protocol route is this backend's if it uses the device,
// sits on the underlay (DirectRouting routes, also those of an earlier pod
// network: weft puts nothing else there) or leads into the pod network.
func (b *Backend) ownsRoute(r nl.Route) bool {
	return r.LinkIndex == b.dev.Attrs().Index || r.LinkIndex == b.underlay.Attrs().Index ||
		(b.network.IsValid() && b.network.Contains(r.Dst.Addr()))
}

// updateStatus records the outcome for subnets in scope (all when nil).
func (b *Backend) updateStatus(scope map[netip.Prefix]bool, plans map[netip.Prefix]*plan) {
	want := make(map[netip.Prefix]backend.PeerStatus, len(plans))
	for sn, p := range plans {
		want[sn] = backend.PeerStatus{Subnet: sn, PublicIP: p.lease.Attrs.PublicIP, State: p.state, Reason: p.reason}
	}
	b.status.Update(scope, want)
}

// Device implements backend.Device.
func (b *Backend) Device() string { return DeviceName(b.opts.VNI) }
