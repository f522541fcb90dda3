package vxlan

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
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
	"github.com/weftnet/weft/internal/packed"
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
	// h is per-request sockets until Prepare opens the backend's own
	// (Persist), which Close closes.
	h *nl.Handle

	// devs are the VXLAN devices, one per address family the network
	// enables, IPv4's first: weft.<VNI>, weft-v6.<VNI>.
	devs []*device

	// Set by Prepare.
	underlay netlink.Link
	mtu      int // the pods': the least of the devices'

	own   subnet.Lease    // set by Configure
	peers backend.PeerSet // desired peer set
	// known says every device's plans and kernel state are those of the
	// last pass that read the kernel, kept up to date since, so Apply can
	// pass incrementally.
	known bool

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

	// Set by every pass that reads the kernel (Backend.reconcile), kept up
	// to date by the incremental ones: the family's plan of every peer (by
	// key), the peers claiming each VtepMAC, the kernel state.
	plans  map[netip.Prefix]*plan
	claims claims
	kernel kernelState
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
	// One socket for the backend's life, in the namespace Prepare is
	// called in (every method is called there).
	if err := b.h.Persist(); err != nil {
		return subnet.LeaseAttrs{}, fmt.Errorf("vxlan: %w", err)
	}
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
	scope := b.peers.ApplyFamilies(events)
	if !b.known {
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

// Close closes the backend's netlink socket; kernel state stays for the
// next run.
func (b *Backend) Close() error {
	b.h.Close()
	return nil
}

// ---- desired state ----

// plan is what one peer needs in the kernel in one address family (the
// family of the env it was planned in). A device keeps one per peer, so it
// is packed (package packed, khw) and small (80 bytes, where an nl.Route,
// a net.HardwareAddr and the MAC's String made 192 and two allocations
// more): the route and the MAC are unpacked where netlink or a log takes
// them (route, ensurePeer).
type plan struct {
	// created is the lease's CreateRevision, which settles a VtepMAC
	// claimed twice (the lease itself is the peer set's: a plan does not
	// copy it).
	created int64
	reason  string // why the peer is refused or failed
	// dst is the route's destination and pub the peer's underlay address
	// of the family (PublicIP, PublicIPv6); both zero when the peer was
	// refused before it had a route.
	dst packed.Prefix
	pub packed.Addr
	// mac is the VtepMAC an encapsulated peer claims (neighbour + FDB),
	// also when it lost the claim to an older lease and is refused for it;
	// zero for a direct-routed peer.
	mac   khw
	link  int32 // the route's device: the family's VXLAN device, or the underlay
	state pstate
}

// pstate is a plan's backend.PeerState in a byte; the zero pstate is none.
type pstate uint8

const (
	_ pstate = iota
	programmed
	refused
	failed
)

func (s pstate) peerState() backend.PeerState {
	switch s {
	case programmed:
		return backend.PeerProgrammed
	case refused:
		return backend.PeerRefused
	case failed:
		return backend.PeerFailed
	}
	return ""
}

// outcome is what became of p's peer in p's family.
func (p *plan) outcome() backend.FamilyOutcome { return backend.Outcome(p.state.peerState(), p.reason) }

// encap reports whether p's peer is encapsulated: its route goes through
// the VXLAN device, and it has a neighbour and an FDB entry.
func (p *plan) encap() bool { return p.mac.n != 0 }

// route is p's route: dst via dst's first address (S.0, S::) onlink on
// the VXLAN device when encapsulated, else via pub on the underlay; the
// zero route when there is none.
func (p *plan) route() nl.Route {
	r := nl.Route{Dst: p.dst.Prefix(), LinkIndex: int(p.link)}
	if p.encap() {
		r.Gw, r.OnLink = r.Dst.Addr(), true
	} else {
		r.Gw = p.pub.Addr()
	}
	return r
}

// publicIP is where p's FDB entry sends its VtepMAC's frames: pub when
// encapsulated, zero otherwise.
func (p *plan) publicIP() netip.Addr {
	if !p.encap() {
		return netip.Addr{}
	}
	return p.pub.Addr()
}

// claims are the encapsulated peers (by key) that claim each VtepMAC; once
// settled (settleClaim), a MAC's first claimant is its owner. Nearly every
// MAC has one claimant, so that one is kept packed in first, with no slice
// of its own; only a MAC claimed more than once has the rest, in the
// order they came, in more.
type claims struct {
	first map[khw]packed.Prefix
	more  map[khw][]netip.Prefix
}

// newClaims makes claims with room for n MACs.
func newClaims(n int) claims {
	return claims{first: make(map[khw]packed.Prefix, n), more: map[khw][]netip.Prefix{}}
}

// len is the number of MACs claimed.
func (c claims) len() int { return len(c.first) }

// macs are the MACs claimed.
func (c claims) macs() iter.Seq[khw] { return maps.Keys(c.first) }

// owner is mac's first claimant: its owner, once settled.
func (c claims) owner(mac khw) (netip.Prefix, bool) {
	sn, ok := c.first[mac]
	return sn.Prefix(), ok
}

// add makes sn mac's last claimant.
func (c claims) add(mac khw, sn netip.Prefix) {
	if _, ok := c.first[mac]; !ok {
		c.first[mac] = packed.PrefixOf(sn)
		return
	}
	c.more[mac] = append(c.more[mac], sn)
}

// remove drops sn from mac's claimants, the others keeping their order.
func (c claims) remove(mac khw, sn netip.Prefix) {
	first, ok := c.first[mac]
	if !ok {
		return
	}
	more := c.more[mac]
	if first == packed.PrefixOf(sn) {
		if len(more) == 0 {
			delete(c.first, mac)
			return
		}
		c.first[mac] = packed.PrefixOf(more[0])
		more = slices.Delete(more, 0, 1)
	} else {
		more = slices.DeleteFunc(more, func(c netip.Prefix) bool { return c == sn })
	}
	if len(more) == 0 {
		delete(c.more, mac)
	} else {
		c.more[mac] = more
	}
}

// of appends mac's claimants, first first, to buf.
func (c claims) of(mac khw, buf []netip.Prefix) []netip.Prefix {
	first, ok := c.first[mac]
	if !ok {
		return buf
	}
	return append(append(buf, first.Prefix()), c.more[mac]...)
}

// set makes cl (of's list, reordered) mac's claimants, in cl's order; an
// empty cl leaves mac unclaimed.
func (c claims) set(mac khw, cl []netip.Prefix) {
	if len(cl) == 0 {
		return
	}
	c.first[mac] = packed.PrefixOf(cl[0])
	if len(cl) == 1 {
		delete(c.more, mac)
		return
	}
	c.more[mac] = append(c.more[mac][:0], cl[1:]...)
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
// family e.f or why it is refused (planPeer), then settles every VtepMAC
// claimed twice (settleClaim); it returns the plans and, per VtepMAC, the
// peers that claim it.
func planPeers(e env, peers map[netip.Prefix]subnet.Lease) (map[netip.Prefix]*plan, claims) {
	out := make(map[netip.Prefix]*plan, len(peers))
	cls := newClaims(len(peers))
	for sn, l := range peers {
		p := planPeer(e, l)
		out[sn] = p
		if p.encap() {
			cls.add(p.mac, sn)
		}
	}
	var buf []netip.Prefix
	for mac := range cls.more { // the MACs claimed twice
		cl := cls.of(mac, buf[:0])
		settleClaim(out, cl)
		cls.set(mac, cl)
		buf = cl
	}
	return out, cls
}

// planPeer is one peer's plan in family e.f: first the rules every backend
// shares (backend.CheckPeer), then vxlan's own (BackendData or, IPv6,
// BackendV6Data), leaving out only the rule that couples peers, a VtepMAC
// claimed twice (settleClaim). A plan's reason does not name the peer:
// backend.NewPeerStatus does.
func planPeer(e env, l subnet.Lease) *plan {
	p := &plan{created: l.CreateRevision}
	refuse := func(format string, args ...any) *plan {
		p.state = refused
		p.reason = fmt.Sprintf(format, args...)
		return p
	}
	v := backend.CheckPeer(e.node, l)
	if v.Own {
		return refuse("subnet is this node's own")
	}
	if fv := v.Family(e.f); !fv.Usable {
		return refuse("%s", cmp.Or(fv.Reason, "the network does not use "+e.f.String()))
	}
	dst, pub, data, dataKey := l.Subnet.Masked(), l.Attrs.PublicIP.Unmap(), l.Attrs.BackendData, ""
	if e.f == backend.IPv6 {
		dst, pub, data, dataKey = l.IPv6Subnet.Masked(), l.Attrs.PublicIPv6, l.Attrs.BackendV6Data, "BackendV6Data: "
	}
	if e.direct && containsAddr(e.connected, pub) {
		// dst via pub dev <underlay>
		p.state, p.dst, p.pub, p.link = programmed, packed.PrefixOf(dst), packed.AddrOf(pub), int32(e.ulIndex)
		return p
	}
	mac, err := parseBackendData(data, e.vni)
	if err != nil {
		return refuse("%s%v", dataKey, err)
	}
	// dst via dst.0 (dst::) onlink dev <device>, neighbour and FDB entry
	p.state, p.dst, p.pub, p.link = programmed, packed.PrefixOf(dst), packed.AddrOf(pub), int32(e.devIndex)
	p.mac = packHW(mac)
	return p
}

// settleClaim gives a VtepMAC claimed by the peers in claimants (plans made
// by planPeer in family f) to the oldest lease (lowest CreateRevision, then
// subnet order) and refuses the others, so a newcomer cannot take over a
// legitimate peer's MAC, whatever order the leases came in. It sorts
// claimants: the owner is first.
func settleClaim(plans map[netip.Prefix]*plan, claimants []netip.Prefix) {
	if len(claimants) < 2 {
		return
	}
	slices.SortFunc(claimants, func(a, c netip.Prefix) int {
		return cmp.Or(backend.OlderRevision(plans[a].created, plans[c].created), backend.ComparePrefix(a, c))
	})
	owner := plans[claimants[0]].publicIP() // the family's underlay address: claims are encapsulated peers'
	for _, sn := range claimants[1:] {
		p := plans[sn]
		p.state = refused
		p.reason = fmt.Sprintf("VtepMAC %s is already used by the older lease of peer %s (%s)", p.mac, claimants[0], owner)
	}
}

// replan brings plans and claims (planPeers's results for an earlier peer
// set) up to date with peers for the keys in scope: those are planned
// afresh, and so is every peer sharing a VtepMAC with one of them, since a
// claim changes hands as a whole. It returns the keys whose plan it redid
// (scope's among them), the kernel slots to look at (those keys and the
// route destinations the old plans had: a dual-stack peer's IPv6 subnet
// is not its key, and may have moved) and the VtepMACs whose claim it
// settled.
func replan(e env, peers backend.PeerSet, plans map[netip.Prefix]*plan, cls claims,
	scope map[netip.Prefix]bool) (work, slots map[netip.Prefix]bool, macs map[khw]bool) {
	work = make(map[netip.Prefix]bool, len(scope))
	slots = make(map[netip.Prefix]bool, len(scope))
	macs = map[khw]bool{}
	for sn := range scope {
		work[sn], slots[sn] = true, true
		if old := plans[sn]; old != nil {
			if dst := old.dst.Prefix(); dst.IsValid() {
				slots[dst] = true
			}
			if old.encap() {
				cls.remove(old.mac, sn)
				macs[old.mac] = true
			}
		}
		delete(plans, sn)
		if l, ok := peers[sn]; ok {
			p := planPeer(e, l)
			plans[sn] = p
			if p.encap() {
				cls.add(p.mac, sn)
				macs[p.mac] = true
			}
		}
	}
	var buf [4]netip.Prefix // a MAC's claimants: nearly always one
	for mac := range macs {
		cl := cls.of(mac, buf[:0])
		for _, sn := range cl {
			if !work[sn] {
				work[sn], slots[sn] = true, true
				plans[sn] = planPeer(e, peers[sn]) // its lease is the same: so is its route
			}
		}
		settleClaim(plans, cl)
		cls.set(mac, cl)
	}
	return work, slots, macs
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

// env is the planning input of d's family, as the backend is now.
func (b *Backend) env(d *device) env {
	var connected []netip.Prefix
	for _, d := range b.devs {
		connected = append(connected, d.connected...)
	}
	return env{
		f: d.f, vni: b.opts.VNI,
		node: backend.PeerNode{Config: b.cfg, Own: b.own, PublicIP: b.ul.PublicIP.Unmap(), PublicIPv6: b.ul.PublicIPv6,
			BackendType: subnet.BackendVXLAN, Connected: connected},
		devIndex: d.link.Attrs().Index, ulIndex: b.underlay.Attrs().Index,
		direct: b.opts.DirectRouting, connected: d.connected,
	}
}

// reconcile re-plans every peer, reads the kernel and makes it match the
// plans of each family for the subnets in scope (nil: everything,
// including state for subnets nobody has), then records each peer's
// status. A scope holds peer keys and, for dual-stack peers, their IPv6
// subnets (see Apply).
func (b *Backend) reconcile(scope map[netip.Prefix]bool) error {
	b.known = false
	var errs []error
	known := true
	for _, d := range b.devs {
		d.plans, d.claims = planPeers(b.env(d), b.peers)
		if err := b.readKernel(d); err != nil {
			errs = append(errs, err)
			known = false
			continue
		}
		if scope != nil {
			errs = append(errs, b.pass(d, scope, scopedMACs(d, scope), false))
			continue
		}
		// Everything: every peer and every entry the kernel has.
		all := make(map[netip.Prefix]bool, len(d.plans)+len(d.kernel.routes)+len(d.kernel.neighs))
		for sn, p := range d.plans {
			all[sn] = true
			if dst := p.dst.Prefix(); dst.IsValid() {
				all[dst] = true
			}
		}
		for dst := range d.kernel.routes {
			all[dst.Prefix()] = true
		}
		for ka := range d.kernel.neighs {
			ip := ka.Addr()
			if ip.IsMulticast() || ip.IsLinkLocalUnicast() {
				// The kernel's own (ff02::16 for MLD on weft-v6.<VNI>):
				// weft's neighbours are peer subnets' first addresses.
				continue
			}
			all[netip.PrefixFrom(ip, ip.BitLen())] = true
		}
		macs := make(map[khw]bool, d.claims.len()+len(d.kernel.fdb))
		for mac := range d.claims.macs() {
			macs[mac] = true
		}
		for mac := range d.kernel.fdb {
			macs[mac] = true
		}
		errs = append(errs, b.pass(d, all, macs, true))
	}
	b.known = known
	b.updateStatus(scope)
	return errors.Join(errs...)
}

// scopedMACs are the VtepMACs a scoped pass that read the kernel looks at:
// those the plans in scope claim and those of the neighbours in scope.
func scopedMACs(d *device, scope map[netip.Prefix]bool) map[khw]bool {
	macs := map[khw]bool{}
	for sn := range scope {
		if p := d.plans[sn]; p != nil && p.encap() {
			macs[p.mac] = true
		}
		if mac, ok := d.kernel.neighMAC(sn.Addr()); ok {
			macs[mac] = true
		}
	}
	return macs
}

// readKernel dumps d's routes, neighbours and FDB into d.kernel.
func (b *Backend) readKernel(d *device) error {
	devIndex := d.link.Attrs().Index
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
	d.kernel = newKernelState(routes, neighs, fdb, extraFDB)
	return nil
}

// applyScope is the incremental pass: in each family it re-plans the peers
// in scope (and those sharing a VtepMAC with them, whose claim may change
// hands) and makes their kernel state match, from what the backend knows
// the kernel holds (kernelState). Its netlink requests are the changes
// only: a new peer costs an FDB entry, a neighbour and a route per family,
// a removed one their deletes, an unchanged one nothing.
func (b *Backend) applyScope(scope map[netip.Prefix]bool) error {
	var errs []error
	status := make(map[netip.Prefix]bool, len(scope))
	for _, d := range b.devs {
		work, slots, macs := replan(b.env(d), b.peers, d.plans, d.claims, scope)
		for sn := range work {
			status[sn] = true
		}
		errs = append(errs, b.pass(d, slots, macs, false))
	}
	b.updateStatus(status)
	return errors.Join(errs...)
}

// pass makes d's kernel state match d.plans at the slots in scope (peer
// keys, route destinations, neighbour addresses: a route at a slot, a
// neighbour at its address) and for the FDB entries of macs, from
// d.kernel, keeping it up to date. Ensuring comes before deleting so that a
// changed peer never loses its path for longer than the replace. full says
// scope and macs are everything: its changes are repairs, and FDB entries
// beyond a MAC's first go too.
func (b *Backend) pass(d *device, scope map[netip.Prefix]bool, macs map[khw]bool, full bool) error {
	k := &d.kernel
	lvl := slog.LevelDebug // a removed peer's state: the status book logs the removal
	if full {
		lvl = slog.LevelInfo
	}
	var errs []error
	wantRoute := map[netip.Prefix]bool{}
	wantNeigh := map[netip.Addr]bool{}
	for sn := range scope {
		p := d.plans[sn]
		if p == nil || p.state != programmed {
			continue
		}
		r := p.route()
		wantRoute[r.Dst] = true
		if p.encap() {
			wantNeigh[r.Gw] = true
		}
		changed, err := b.ensurePeer(d, p, r)
		if err != nil {
			p.state, p.reason = failed, err.Error()
			errs = append(errs, fmt.Errorf("vxlan: peer %s: %w", sn, err))
		}
		if changed {
			b.countRepair(full)
		}
	}

	// Delete what no peer needs. Routes: weft's own only (protocol), and only
	// those on weft's device or into the pod network.
	for sn := range scope {
		if r, ok := k.route(sn); ok && !wantRoute[sn] && b.ownsRoute(d, r) {
			if err := b.h.DeleteRoute(r); err != nil {
				errs = append(errs, fmt.Errorf("vxlan: %w", err))
			} else {
				k.deleteRoute(sn)
				b.countRepair(full)
				b.log.Log(context.Background(), lvl, "deleted stale route", "route", r.String())
			}
		}
		if ip := sn.Addr(); !wantNeigh[ip] {
			if n, ok := k.neigh(ip); ok {
				if err := b.h.DeleteNeigh(d.link.Attrs().Index, n.IP); err != nil {
					errs = append(errs, fmt.Errorf("vxlan: %w", err))
				} else {
					k.deleteNeigh(n.IP)
					b.countRepair(full)
					b.log.Log(context.Background(), lvl, "deleted stale neighbour", "ip", n.IP, "mac", n.MAC.String())
				}
			}
		}
	}
	// FDB is keyed by MAC, which the claim's owner holds.
	stale := func(mac khw, dst netip.Addr) bool {
		owner, ok := d.claims.owner(mac)
		if !ok {
			return true
		}
		// The owner's plan: programmed, unless its writes failed just now
		// (keep the entry; the next full pass retries).
		return d.plans[owner].publicIP() != dst
	}
	var fdb []nl.FDBEntry
	for mac := range macs {
		if dst, ok := k.fdbDst(mac); ok && stale(mac, dst) {
			fe, _ := k.fdbEntry(mac)
			fdb = append(fdb, fe)
		}
	}
	if full {
		for _, fe := range k.extraFDB {
			if stale(packHW(fe.MAC), fe.Dst) {
				fdb = append(fdb, fe)
			}
		}
		k.extraFDB = nil
	}
	for _, fe := range fdb {
		if err := b.h.DeleteFDB(fe); err != nil {
			errs = append(errs, fmt.Errorf("vxlan: %w", err))
			continue
		}
		mac := packHW(fe.MAC)
		if dst, ok := k.fdbDst(mac); ok && dst == fe.Dst {
			k.deleteFDB(mac)
		}
		b.countRepair(full)
		b.log.Log(context.Background(), lvl, "deleted stale fdb entry", "mac", fe.MAC.String(), "dst", fe.Dst)
	}
	return errors.Join(errs...)
}

// ensurePeer writes p's route (r, p.route()), neighbour and FDB entry where
// the kernel (as d.kernel has it) differs, and records what it wrote. FDB
// and neighbour go first so the route never points at an unresolved next
// hop. An FDB entry or neighbour d.kernel has as p wants it is left before
// anything is unpacked (fdbIs, neighIs: the nl Ensure calls would leave it
// too), so a pass over unchanged peers allocates nothing for them.
func (b *Backend) ensurePeer(d *device, p *plan, r nl.Route) (changed bool, err error) {
	k := &d.kernel
	if p.encap() {
		var mac net.HardwareAddr // unpacked once, for what is written
		if !k.fdbIs(p.mac, p.pub) {
			mac = p.mac.hw()
			var have *nl.FDBEntry
			if fe, ok := k.fdbEntry(p.mac); ok {
				have = &fe
			}
			w, err := b.h.EnsureFDB(r.LinkIndex, mac, p.publicIP(), have)
			if err != nil {
				return changed, err
			}
			if w {
				k.setFDB(nl.FDBEntry{MAC: mac, Dst: p.publicIP(), LinkIndex: r.LinkIndex})
			}
			changed = changed || w
		}
		if !k.neighIs(r.Gw, p.mac) {
			if mac == nil {
				mac = p.mac.hw()
			}
			var haveN *nl.Neigh
			if n, ok := k.neigh(r.Gw); ok {
				haveN = &n
			}
			w, err := b.h.EnsureNeigh(r.LinkIndex, r.Gw, mac, haveN)
			if err != nil {
				return changed, err
			}
			if w {
				k.setNeigh(nl.Neigh{IP: r.Gw, MAC: mac, LinkIndex: r.LinkIndex, Permanent: true})
			}
			changed = changed || w
		}
	}
	var haveR *nl.Route
	if hr, ok := k.route(r.Dst); ok {
		haveR = &hr
	}
	w, err := b.h.EnsureRoute(r, haveR)
	if err != nil {
		return changed, err
	}
	if w {
		k.setRoute(r)
	}
	if changed = changed || w; changed {
		b.log.Debug("programmed peer", "subnet", r.Dst, "publicIP", p.publicIP(), "route", r.String(), "vtepMAC", p.mac.String())
	}
	return changed, nil
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
func (b *Backend) updateStatus(scope map[netip.Prefix]bool) {
	outcome := func(f backend.Family, sn netip.Prefix) backend.FamilyOutcome {
		for _, d := range b.devs {
			if p, ok := d.plans[sn]; ok && d.f == f {
				return p.outcome()
			}
		}
		return backend.FamilyOutcome{}
	}
	backend.UpdatePlans(b.status, scope, b.peers, func(sn netip.Prefix, l subnet.Lease) backend.PeerStatus {
		return backend.NewPeerStatus(b.cfg, l, outcome(backend.IPv4, sn), outcome(backend.IPv6, sn))
	})
}

// Device implements backend.Device: the IPv4 device, or the IPv6 one of an
// IPv6-only network.
func (b *Backend) Device() string {
	if len(b.devs) == 0 {
		return DeviceName(b.opts.VNI)
	}
	return b.devs[0].name
}
