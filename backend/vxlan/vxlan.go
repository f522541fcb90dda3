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
	// and every peer is refused).
	cfg *subnet.Config
	h   *nl.Handle

	// devs are the VXLAN devices, one per address family the network
	// enables, IPv4's first: weft.<VNI>, weft-v6.<VNI>.
	devs []*device

	// Set by Prepare.
	underlay netlink.Link
	mtu      int // the pods': the least of the devices'

	own   subnet.Lease    // set by Configure
	peers backend.PeerSet // desired peer set

	// repairs counts kernel changes made by full passes; read by the
	// daemon's metrics from any goroutine.
	repairs atomic.Uint64

	status *backend.StatusBook
}

// device is the VXLAN device of one address family of the pod network:
// weft.<VNI> carries IPv4 pods over the IPv4 underlay, weft-v6.<VNI> IPv6
// pods over the IPv6 underlay (Flannel's flannel.<VNI> and
// flannel-v6.<VNI>). Each has its own VtepMAC, published in BackendData and
// BackendV6Data.
type device struct {
	f       backend.Family
	name    string
	network netip.Prefix // the family's pod network
	// public is the node's underlay address of the family (PublicIP,
	// PublicIPv6), which peers' FDB entries point at and the VtepMAC is
	// derived from; local is the one the device sends from (they differ
	// behind a NAT).
	public, local netip.Addr

	// Set by ensureDevice.
	link      netlink.Link
	mac       net.HardwareAddr
	mtu       int
	connected []netip.Prefix // the underlay's directly connected subnets of the family
}

// af is the device's address family for netlink.
func (d *device) af() int {
	if d.f == backend.IPv6 {
		return unix.AF_INET6
	}
	return unix.AF_INET
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
	if opts.Config != nil {
		raw = opts.Config.Backend
	}
	o, err := ParseOptions(raw)
	if err != nil {
		return nil, err
	}
	if err := opts.Underlay.RequireAddrs("vxlan", opts.Config); err != nil {
		return nil, err
	}
	if opts.Underlay.Index == 0 && opts.Underlay.Link == "" {
		return nil, errors.New("vxlan: underlay link is not set")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("backend", "vxlan")
	var devs []*device
	u := opts.Underlay
	if c := opts.Config; c == nil || c.EnableIPv4 {
		d := &device{f: backend.IPv4, name: DeviceName(o.VNI), public: u.PublicIP.Unmap(), local: u.Local().Unmap()}
		if c != nil {
			d.network = c.Network
		}
		devs = append(devs, d)
	}
	if c := opts.Config; c != nil && c.EnableIPv6 {
		devs = append(devs, &device{f: backend.IPv6, name: DeviceName6(o.VNI), network: c.IPv6Network, public: u.PublicIPv6, local: u.Local6()})
	}
	return &Backend{
		log:    log,
		status: backend.NewStatusBook(log),
		opts:   o,
		ul:     opts.Underlay,
		cfg:    opts.Config,
		devs:   devs,
		h:      nl.New(nil),
		peers:  backend.PeerSet{},
	}, nil
}

// Options returns the parsed options.
func (b *Backend) Options() Options { return b.opts }

// TunnelPort implements backend.Tunneled.
func (b *Backend) TunnelPort() uint16 { return uint16(b.opts.Port) }

// FilterPort implements backend.PeerFiltered.
func (b *Backend) FilterPort() (uint16, bool) { return b.opts.FilterPort() }

// Prepare creates or adopts weft.<VNI> (and weft-v6.<VNI> when the network
// enables IPv6) and returns the BackendData (BackendV6Data) to publish. A
// device with the same VNI, port, local address, underlay, learning and GBP
// settings is reused (same ifindex, no flap); anything else of that name is
// replaced.
func (b *Backend) Prepare(ctx context.Context) (subnet.LeaseAttrs, error) {
	if err := b.ensureDevices(); err != nil {
		return subnet.LeaseAttrs{}, err
	}
	attrs := b.ul.LeaseAttrs(b.cfg)
	for _, d := range b.devs {
		data, err := json.Marshal(BackendData{VNI: b.opts.VNI, VtepMAC: d.mac.String()})
		if err != nil {
			return subnet.LeaseAttrs{}, fmt.Errorf("vxlan: encode backend data: %w", err)
		}
		if d.f == backend.IPv6 {
			attrs.BackendV6Data = data
		} else {
			attrs.BackendData = data
		}
	}
	return attrs, nil
}

// ensureDevices resolves the underlay and makes each device right (see
// ensureDevice). Called by Prepare and by every Sync, so a device deleted or
// altered by hand is repaired too.
func (b *Backend) ensureDevices() error {
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
	b.mtu = 0
	for _, d := range b.devs {
		if err := b.ensureDevice(d, ulMTU); err != nil {
			return err
		}
		if b.mtu == 0 || d.mtu < b.mtu {
			b.mtu = d.mtu
		}
	}
	return nil
}

// ensureDevice makes d's device right: created or reused, MAC, MTU, up, TX
// checksum setting; it records the underlay's connected subnets of d's
// family.
func (b *Backend) ensureDevice(d *device, ulMTU int) error {
	ul := b.underlay
	d.mtu = ulMTU - Overhead(d.local)
	d.mac = VtepMAC(d.public, b.opts.VNI)
	name := d.name
	want := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: name, HardwareAddr: d.mac, MTU: d.mtu},
		VxlanId:      b.opts.VNI,
		VtepDevIndex: ul.Attrs().Index,
		// The interface's address: behind a NAT, PublicIP is not local.
		SrcAddr:  nl.IP(d.local),
		Port:     b.opts.Port,
		Learning: b.opts.Learning,
		GBP:      b.opts.GBP,
	}
	if err := b.clearConflicts(name, d.f); err != nil {
		return err
	}
	dev, created, err := b.h.EnsureLink(want, func(have netlink.Link) bool { return compatible(have.(*netlink.Vxlan), want) })
	if err != nil {
		return fmt.Errorf("vxlan: %w", err)
	}
	if created {
		b.log.Info("created vxlan device", "dev", name, "ifindex", dev.Attrs().Index, "vni", b.opts.VNI, "port", b.opts.Port, "local", d.local)
	}
	// Set MAC after creation too: udev (MACAddressPolicy=persistent) may
	// rewrite a new device's MAC behind us, which would strand every peer's
	// neighbour entry for this node.
	dev, err = b.h.EnsureLinkState(dev, nl.LinkState{MAC: d.mac, MTU: d.mtu, Up: true})
	if err != nil {
		return fmt.Errorf("vxlan: %w", err)
	}
	if b.opts.DisableTXChecksumOffload {
		if err := nl.SetTxChecksum(name, false); err != nil {
			return fmt.Errorf("vxlan: disable tx checksum offload: %w", err)
		}
	}
	d.link = dev
	conn, err := b.h.ConnectedPrefixes(ul, d.af())
	if err != nil {
		return fmt.Errorf("vxlan: %w", err)
	}
	d.connected = conn
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

// MTU is the pod MTU: the device MTU (dual stack: the lesser of the two
// devices', so a pod's packets of either family fit). Valid after Prepare.
func (b *Backend) MTU() int { return b.mtu }

// Configure puts <subnet>.0/32 on weft.<VNI> (and only that; IPv6:
// <IPv6 subnet>::/128 on weft-v6.<VNI>) and removes any weft state for the
// node's own subnets (left if one once was a peer's).
func (b *Backend) Configure(ctx context.Context, own subnet.Lease) error {
	if !b.prepared() {
		return errors.New("vxlan: Configure before Prepare")
	}
	for _, d := range b.devs {
		if sn := ownSubnet(own, d.f); !sn.IsValid() || !is(d.f, sn.Addr()) {
			return fmt.Errorf("vxlan: own lease %s has no %s subnet, which the network enables", own.Key(), d.f)
		}
	}
	b.own = own
	if err := b.ensureAddrs(); err != nil {
		return err
	}
	delete(b.peers, own.Key().Masked())
	return b.reconcile(backend.LeaseScope(own))
}

// prepared reports whether Prepare made the devices.
func (b *Backend) prepared() bool { return len(b.devs) > 0 && b.devs[0].link != nil }

// ownSubnet is l's subnet of family f.
func ownSubnet(l subnet.Lease, f backend.Family) netip.Prefix {
	if f == backend.IPv6 {
		return l.IPv6Subnet
	}
	return l.Subnet
}

// is reports whether a is an address of family f.
func is(f backend.Family, a netip.Addr) bool {
	if f == backend.IPv6 {
		return a.Is6() && !a.Is4In6()
	}
	return a.Is4()
}

// ensureAddrs makes the own subnet's first address (<subnet>.0/32,
// <subnet>::/128) each device's only address of its family.
func (b *Backend) ensureAddrs() error {
	for _, d := range b.devs {
		a := ownSubnet(b.own, d.f).Masked().Addr()
		if err := b.h.EnsureAddrs(d.link, d.af(), []netip.Prefix{netip.PrefixFrom(a, a.BitLen())}); err != nil {
			return fmt.Errorf("vxlan: %w", err)
		}
	}
	return nil
}

// Sync makes the kernel match peers exactly; see backend.Backend. It also
// re-checks the device (re-created if deleted, MAC/MTU/up/offload fixed) and
// its address. The error joins per-peer failures (also visible in
// Peers); refused peers are not errors.
func (b *Backend) Sync(ctx context.Context, peers []subnet.Lease) error {
	if !b.prepared() {
		return errors.New("vxlan: Sync before Prepare")
	}
	if err := b.ensureDevices(); err != nil {
		return err
	}
	if b.own.Key().IsValid() {
		if err := b.ensureAddrs(); err != nil {
			return err
		}
	}
	b.peers.Replace(peers)
	return b.reconcile(nil)
}

// Apply applies events incrementally; see backend.Backend.
func (b *Backend) Apply(ctx context.Context, events []subnet.Event) error {
	if !b.prepared() {
		return errors.New("vxlan: Apply before Prepare")
	}
	return b.reconcile(b.peers.ApplyFamilies(events))
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

// plan is what one peer needs in the kernel in one address family (the
// family of the env it was planned in).
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

// env is the node-side input of planning one address family.
type env struct {
	// f is the family planned: IPv4 (the zero value) or IPv6.
	f   backend.Family
	vni int
	// node is what backend.CheckPeer judges leases against.
	node      backend.PeerNode
	devIndex  int // the family's device
	ulIndex   int
	direct    bool
	connected []netip.Prefix // the family's
}

// planPeers computes, without touching the kernel, what each peer needs in
// family e.f or why it is refused: first the rules every backend shares
// (backend.CheckPeer), then vxlan's own (BackendData or, IPv6,
// BackendV6Data; a VtepMAC claimed twice). Peers are visited oldest lease
// first (lowest CreateRevision, then subnet order), so of two leases
// claiming one VtepMAC the older keeps it on every pass: a newcomer cannot
// take over a legitimate peer's MAC. A plan's reason does not name the peer:
// backend.NewPeerStatus does.
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
			p.reason = fmt.Sprintf(format, args...)
		}
		v := backend.CheckPeer(e.node, l)
		if v.Own {
			refuse("subnet is this node's own")
			continue
		}
		if fv := v.Family(e.f); !fv.Usable {
			refuse("%s", cmp.Or(fv.Reason, "the network does not use "+e.f.String()))
			continue
		}
		dst, pub, data, dataKey := l.Subnet.Masked(), l.Attrs.PublicIP.Unmap(), l.Attrs.BackendData, ""
		if e.f == backend.IPv6 {
			dst, pub, data, dataKey = l.IPv6Subnet.Masked(), l.Attrs.PublicIPv6, l.Attrs.BackendV6Data, "BackendV6Data: "
		}
		gw := dst.Addr() // peerSubnet.0, peerSubnet::
		if e.direct && containsAddr(e.connected, pub) {
			p.state = backend.PeerProgrammed
			p.route = nl.Route{Dst: dst, Gw: pub, LinkIndex: e.ulIndex}
			continue
		}
		mac, err := parseBackendData(data, e.vni)
		if err != nil {
			refuse("%s%v", dataKey, err)
			continue
		}
		if other, dup := macOwner[mac.String()]; dup {
			otherIP := peers[other].Attrs.PublicIP
			if e.f == backend.IPv6 {
				otherIP = peers[other].Attrs.PublicIPv6
			}
			refuse("VtepMAC %s is already used by the older lease of peer %s (%s)", mac, other, otherIP)
			continue
		}
		macOwner[mac.String()] = sn
		p.state = backend.PeerProgrammed
		p.mac, p.publicIP = mac, pub
		p.route = nl.Route{Dst: dst, Gw: gw, LinkIndex: e.devIndex, OnLink: true}
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

// reconcile makes the kernel match the plans of each family for the
// subnets in scope (nil: everything, including state for subnets nobody
// has), then records each peer's status.
func (b *Backend) reconcile(scope map[netip.Prefix]bool) error {
	var connected []netip.Prefix
	for _, d := range b.devs {
		connected = append(connected, d.connected...)
	}
	node := backend.PeerNode{Config: b.cfg, Own: b.own, PublicIP: b.ul.PublicIP.Unmap(), PublicIPv6: b.ul.PublicIPv6,
		BackendType: subnet.BackendVXLAN, Connected: connected}
	var errs []error
	var plans4, plans6 map[netip.Prefix]*plan
	for _, d := range b.devs {
		e := env{
			f: d.f, vni: b.opts.VNI, node: node,
			devIndex: d.link.Attrs().Index, ulIndex: b.underlay.Attrs().Index,
			direct: b.opts.DirectRouting, connected: d.connected,
		}
		plans := planPeers(e, b.peers)
		if err := b.reconcileDevice(d, scope, plans); err != nil {
			errs = append(errs, err)
		}
		if d.f == backend.IPv6 {
			plans6 = plans
		} else {
			plans4 = plans
		}
	}
	b.updateStatus(scope, plans4, plans6)
	return errors.Join(errs...)
}

// reconcileDevice makes the kernel match the plans (of d's family) for the
// subnets in scope. Ensuring comes before deleting so that a changed peer
// never loses its path for longer than the replace.
func (b *Backend) reconcileDevice(d *device, scope map[netip.Prefix]bool, plans map[netip.Prefix]*plan) error {
	devIndex := d.link.Attrs().Index
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

	routes, err := b.h.WeftRoutes(d.af())
	if err != nil {
		return fmt.Errorf("vxlan: %w", err)
	}
	neighs, err := b.h.Neighs(devIndex, d.af())
	if err != nil {
		return fmt.Errorf("vxlan: %w", err)
	}
	fdb, extraFDB, err := b.h.FDB(devIndex)
	if err != nil {
		return fmt.Errorf("vxlan: %w", err)
	}

	// Desired entries across all peers (FDB is keyed by MAC, which any peer
	// may hold, so it is checked against the whole set).
	wantRoute := map[netip.Prefix]bool{}
	wantNeigh := map[netip.Addr]bool{}
	wantFDB := map[string]netip.Addr{}
	for _, p := range plans {
		if p.state != backend.PeerProgrammed {
			continue
		}
		wantRoute[p.route.Dst] = true
		if p.mac != nil {
			wantNeigh[p.route.Gw] = true
			wantFDB[p.mac.String()] = p.publicIP
		}
	}

	var errs []error
	// Ensure, per peer in scope.
	for sn, p := range plans {
		if !inScope(p.route.Dst.Addr()) || p.state != backend.PeerProgrammed {
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
		if wantRoute[dst] || !inScope(dst.Addr()) || !b.ownsRoute(d, r) {
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
		if err := b.h.DeleteNeigh(devIndex, ip); err != nil {
			errs = append(errs, fmt.Errorf("vxlan: %w", err))
			continue
		}
		b.countRepair(scope)
		b.log.Info("deleted stale neighbour", "ip", ip, "mac", n.MAC.String())
	}
	for _, p := range plans {
		if p.mac != nil && inScope(p.route.Dst.Addr()) {
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
		b.log.Debug("programmed peer", "subnet", p.route.Dst, "publicIP", p.publicIP, "route", p.route.String(), "vtepMAC", p.mac.String())
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

// ownsRoute: a weft-protocol route of d's family is this backend's if it
// uses d's device, sits on the underlay (DirectRouting routes, also those of
// an earlier pod network: weft puts nothing else there) or leads into the
// family's pod network.
func (b *Backend) ownsRoute(d *device, r nl.Route) bool {
	return r.LinkIndex == d.link.Attrs().Index || r.LinkIndex == b.underlay.Attrs().Index ||
		(d.network.IsValid() && d.network.Contains(r.Dst.Addr()))
}

// updateStatus records the outcome of each peer in scope (all when nil),
// both families' plans merged.
func (b *Backend) updateStatus(scope map[netip.Prefix]bool, plans4, plans6 map[netip.Prefix]*plan) {
	want := make(map[netip.Prefix]backend.PeerStatus, len(b.peers))
	outcome := func(plans map[netip.Prefix]*plan, sn netip.Prefix) backend.FamilyOutcome {
		if p, ok := plans[sn]; ok {
			return backend.Outcome(p.state, p.reason)
		}
		return backend.FamilyOutcome{}
	}
	for sn, l := range b.peers {
		want[sn] = backend.NewPeerStatus(b.cfg, l, outcome(plans4, sn), outcome(plans6, sn))
	}
	b.status.Update(scope, want)
}

// Device implements backend.Device: the IPv4 device, or the IPv6 one of an
// IPv6-only network.
func (b *Backend) Device() string {
	if len(b.devs) == 0 {
		return DeviceName(b.opts.VNI)
	}
	return b.devs[0].name
}
