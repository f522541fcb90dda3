package wireguard

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/internal/nl"
	"github.com/weftnet/weft/subnet"
)

// Backend is the wireguard backend. See the package doc for what it
// programs. Methods follow the backend.Backend contract: all but Peers, Run
// and Close are called from one goroutine, in the network namespace weftd
// runs in.
type Backend struct {
	log  *slog.Logger
	opts Options
	ul   backend.Underlay
	// cfg is the network config peers are checked against (nil: none, and
	// no lease is a usable peer); network is its Network.
	cfg      *subnet.Config
	network  netip.Prefix
	stateDir string
	h        *nl.Handle
	// name is the device; DeviceName except in tests, where several
	// "nodes" share one /var/run/wireguard.
	name string
	// keyCheck is how often Run looks for a rotated key file.
	keyCheck time.Duration

	// Set by Prepare.
	mtu  int
	key  privateKey
	impl Implementation // resolved: kernel or userspace
	link netlink.Link
	us   *userspace // the embedded device; nil for the kernel's
	wg   *wgctrl.Client

	own    subnet.Lease    // set by Configure
	peers  backend.PeerSet // desired peer set
	synced bool            // a full pass has run: removals are safe

	repairs atomic.Uint64
	status  *backend.StatusBook

	closeOnce sync.Once
}

var (
	_ backend.Backend       = (*Backend)(nil)
	_ backend.Constructor   = New
	_ backend.RepairCounter = (*Backend)(nil)
	_ backend.Device        = (*Backend)(nil)
)

// New builds a wireguard backend from opts (options from
// opts.Config.Backend). It touches neither the kernel nor the key file: the
// daemon builds one on every config poll to validate the options.
func New(opts backend.Options) (backend.Backend, error) {
	return newBackend(opts)
}

func newBackend(opts backend.Options) (*Backend, error) {
	var raw json.RawMessage
	var network netip.Prefix
	if opts.Config != nil {
		raw, network = opts.Config.Backend, opts.Config.Network
	}
	o, err := ParseOptions(raw)
	if err != nil {
		return nil, err
	}
	if err := backend.RefuseIPv6(subnet.BackendWireGuard, opts.Config); err != nil {
		return nil, err
	}
	if !opts.Underlay.PublicIP.Unmap().Is4() {
		return nil, fmt.Errorf("wireguard: PublicIP %s is not IPv4; weftd reaches wireguard peers over an IPv4 underlay", opts.Underlay.PublicIP)
	}
	if opts.StateDir == "" {
		return nil, errors.New("wireguard: no state directory for the private key; run weftd with --state-dir")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("backend", subnet.BackendWireGuard, "dev", DeviceName)
	b := &Backend{
		log:      log,
		opts:     o,
		ul:       opts.Underlay,
		cfg:      opts.Config,
		network:  network,
		stateDir: opts.StateDir,
		h:        nl.New(nil),
		name:     DeviceName,
		keyCheck: time.Second,
		peers:    backend.PeerSet{},
		status:   backend.NewStatusBook(log),
	}
	if ul := b.underlayMTU(); ul > 0 {
		if b.mtu = ul - Overhead; b.mtu < minMTU {
			return nil, fmt.Errorf("wireguard: pod MTU %d (underlay %d − %d) too small; set Backend.MTU or fix the underlay", b.mtu, ul, Overhead)
		}
	}
	return b, nil
}

// underlayMTU is the MTU the tunnel must fit: the MTU option (Flannel's
// meaning), else the underlay's; 0 when unknown until Prepare.
func (b *Backend) underlayMTU() int {
	if b.opts.MTU > 0 {
		return b.opts.MTU
	}
	return b.ul.MTU
}

// Options returns the parsed options.
func (b *Backend) Options() Options { return b.opts }

// MTU is the pod MTU: underlay MTU − Overhead. Valid after Prepare.
func (b *Backend) MTU() int { return b.mtu }

// Device implements backend.Device.
func (b *Backend) Device() string { return b.name }

// Implementation reports which WireGuard carries the device (kernel or
// userspace); empty before Prepare.
func (b *Backend) Implementation() Implementation { return b.impl }

// PublicKey is this node's public key. Valid after Prepare.
func (b *Backend) PublicKey() wgtypes.Key { return b.key.public() }

// Prepare loads the node's private key (creating it on the first start),
// creates or adopts the device, sets its key and listen port, and returns
// the BackendData to publish: {"PublicKey":…,"Port":…} as Flannel writes
// it. An existing device is adopted with its peers, so a restart of weftd
// does not interrupt a kernel device's sessions.
func (b *Backend) Prepare(ctx context.Context) (subnet.LeaseAttrs, error) {
	path := KeyPath(b.stateDir)
	k, created, tightened, err := loadOrCreateKey(path)
	if err != nil {
		return subnet.LeaseAttrs{}, fmt.Errorf("wireguard: %w", err)
	}
	b.key = k
	switch {
	case created:
		b.log.Info("generated the node's wireguard private key", "path", path, "publicKey", k.public().String())
	case tightened:
		b.log.Warn("the wireguard key file was readable by others; made it 0600. Rotate the key (weftctl wireguard rotate-key) if others may have read it", "path", path)
	}
	if b.mtu == 0 {
		if err := b.mtuFromLink(); err != nil {
			return subnet.LeaseAttrs{}, err
		}
	}
	if err := b.ensureDevice(); err != nil {
		return subnet.LeaseAttrs{}, err
	}
	if err := b.reconcile(false); err != nil {
		return subnet.LeaseAttrs{}, err
	}
	data, err := json.Marshal(BackendData{PublicKey: k.public().String(), Port: uint16(b.opts.ListenPort)})
	if err != nil {
		return subnet.LeaseAttrs{}, fmt.Errorf("wireguard: encode backend data: %w", err)
	}
	attrs := b.ul.LeaseAttrs(b.cfg)
	attrs.BackendData = data
	return attrs, nil
}

func (b *Backend) mtuFromLink() error {
	var ul netlink.Link
	var err error
	if b.ul.Index > 0 {
		ul, err = b.h.Netlink().LinkByIndex(b.ul.Index)
	} else {
		ul, err = b.h.Netlink().LinkByName(b.ul.Link)
	}
	if err != nil {
		return fmt.Errorf("wireguard: underlay link %q (index %d): %w", b.ul.Link, b.ul.Index, err)
	}
	if b.mtu = ul.Attrs().MTU - Overhead; b.mtu < minMTU {
		return fmt.Errorf("wireguard: pod MTU %d (underlay %d − %d) too small; set Backend.MTU or fix the underlay", b.mtu, ul.Attrs().MTU, Overhead)
	}
	return nil
}

// ensureDevice chooses the implementation (once), makes the device right
// (created or adopted, MTU, up; the embedded device running and serving its
// UAPI socket) and opens the wgctrl client. Called by Prepare and by every
// Sync, so a device deleted by hand is re-created.
func (b *Backend) ensureDevice() error {
	if b.impl == "" {
		impl, why, err := b.choose()
		if err != nil {
			return err
		}
		b.impl = impl
		b.log.Info("wireguard implementation", "implementation", impl, "why", why)
	}
	var err error
	switch b.impl {
	case ImplKernel:
		var created bool
		b.link, created, err = ensureKernelLink(b.h, b.name)
		if err != nil {
			return fmt.Errorf("wireguard: %w", err)
		}
		if created {
			b.log.Info("created kernel wireguard device", "ifindex", b.link.Attrs().Index)
		}
	default:
		if err := b.ensureUserspace(); err != nil {
			return err
		}
	}
	b.link, err = b.h.EnsureLinkState(b.link, nl.LinkState{MTU: b.mtu, Up: true})
	if err != nil {
		return fmt.Errorf("wireguard: %w", err)
	}
	if b.us != nil {
		// wireguard-go comes up on its own when it sees the link up, but
		// its listeners may take a second (one polls); packets read before
		// are dropped. Idempotent.
		if err := b.us.dev.Up(); err != nil {
			return fmt.Errorf("wireguard: bring up the embedded device: %w", err)
		}
	}
	if b.wg == nil {
		// Opened after the link exists: the kernel's genetlink family
		// appears when the module loads. Its socket stays in this
		// namespace.
		if b.wg, err = wgctrl.New(); err != nil {
			return fmt.Errorf("wireguard: open wgctrl: %w", err)
		}
	}
	return nil
}

// choose resolves Implementation: a kernel device that exists is adopted;
// otherwise auto asks the kernel (by creating a probe link).
func (b *Backend) choose() (Implementation, string, error) {
	have, err := b.h.Netlink().LinkByName(b.name)
	if err != nil && !nl.IsNotFound(err) {
		return "", "", fmt.Errorf("wireguard: look up %s: %w", b.name, err)
	}
	isKernel := err == nil && have.Type() == "wireguard"
	switch b.opts.Implementation {
	case ImplKernel:
		return ImplKernel, "forced by the Implementation option", nil
	case ImplUserspace:
		return ImplUserspace, "forced by the Implementation option", nil
	}
	if isKernel {
		return ImplKernel, "a kernel wireguard device " + b.name + " exists", nil
	}
	ok, perr := kernelSupport(b.h)
	if ok {
		return ImplKernel, "the kernel has WireGuard", nil
	}
	return ImplUserspace, fmt.Sprintf("the kernel has no WireGuard (%v); using the embedded wireguard-go", perr), nil
}

// ensureUserspace makes the embedded device run on the TUN device: started
// on the first call, re-started when wireguard-go stopped or the TUN device
// was deleted or replaced, its UAPI socket served again when it was removed.
func (b *Backend) ensureUserspace() error {
	have, err := b.h.Netlink().LinkByName(b.name)
	if err != nil && !nl.IsNotFound(err) {
		return fmt.Errorf("wireguard: look up %s: %w", b.name, err)
	}
	tunOK := err == nil && have.Type() == "tuntap"
	if b.us != nil && tunOK && b.us.alive() && b.link != nil && have.Attrs().Index == b.link.Attrs().Index {
		b.link = have
		repaired, err := b.us.ensureServed()
		if repaired {
			b.countRepair(true)
		}
		if err != nil {
			return fmt.Errorf("wireguard: %w", err)
		}
		return nil
	}
	if b.us != nil {
		b.log.Warn("embedded wireguard device lost its TUN; starting it again", "device", b.name)
		b.us.close()
		b.us = nil
		b.countRepair(true)
	}
	if err == nil && !tunOK {
		// A kernel device (Implementation forced) or anything else.
		b.log.Info("replacing the link of the device's name", "type", have.Type())
		if err := b.h.DeleteLink(b.name); err != nil {
			return fmt.Errorf("wireguard: %w", err)
		}
	}
	us, err := startUserspace(b.log, b.name, b.mtu)
	if err != nil {
		return fmt.Errorf("wireguard: embedded device: %w", err)
	}
	b.us = us
	b.link, err = b.h.Netlink().LinkByName(b.name)
	if err != nil {
		return fmt.Errorf("wireguard: look up %s: %w", b.name, err)
	}
	b.log.Info("embedded wireguard device running", "ifindex", b.link.Attrs().Index, "mtu", b.mtu, "port", b.opts.ListenPort)
	return nil
}

// Configure puts <subnet>.0/32 on the device (the source of node-originated
// traffic into the tunnel: inside our subnet, so peers' AllowedIPs accept
// it) and routes the pod network into the device.
func (b *Backend) Configure(ctx context.Context, own subnet.Lease) error {
	if b.link == nil {
		return errors.New("wireguard: Configure before Prepare")
	}
	if !own.Subnet.Addr().Is4() {
		return fmt.Errorf("wireguard: own subnet %s is not IPv4", own.Subnet)
	}
	b.own = own
	if err := b.ensureAddr(); err != nil {
		return err
	}
	delete(b.peers, own.Subnet.Masked())
	return b.reconcile(false)
}

func (b *Backend) ensureAddr() error {
	addr := netip.PrefixFrom(b.own.Subnet.Masked().Addr(), 32)
	if err := b.h.EnsureAddrs(b.link, unix.AF_INET, []netip.Prefix{addr}); err != nil {
		return fmt.Errorf("wireguard: %w", err)
	}
	return nil
}

// Sync makes the device and the routes match peers exactly; see
// backend.Backend. It also re-checks the device itself (re-created if
// deleted, MTU, up, key, port) and its address. Per-peer failures are joined
// in the error and shown in Peers; refused peers are not errors.
func (b *Backend) Sync(ctx context.Context, peers []subnet.Lease) error {
	if b.link == nil {
		return errors.New("wireguard: Sync before Prepare")
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
	delete(b.peers, b.own.Subnet.Masked())
	b.synced = true
	return b.reconcile(true)
}

// Apply applies events; see backend.Backend. It diffs the whole device (one
// read) but writes only the peers that differ, so other peers' sessions are
// untouched.
func (b *Backend) Apply(ctx context.Context, events []subnet.Event) error {
	if b.link == nil {
		return errors.New("wireguard: Apply before Prepare")
	}
	b.peers.Apply(events)
	delete(b.peers, b.own.Subnet.Masked())
	return b.reconcile(false)
}

// Run watches the key file until ctx is done. When the key in it is no
// longer the device's (weftctl wireguard rotate-key), Run returns an error
// wrapping backend.ErrLeaseDataChanged: the daemon then prepares a new
// backend, which takes the new key, and republishes the lease. A key file
// removed while running is written back from the key in use.
func (b *Backend) Run(ctx context.Context) error {
	// The key, not the link: Prepare sets the key before Run starts and
	// nothing changes it after, while Sync, which runs beside Run, sets
	// the link.
	if b.key.k == (wgtypes.Key{}) {
		return errors.New("wireguard: Run before Prepare")
	}
	t := time.NewTicker(b.keyCheck)
	defer t.Stop()
	path := KeyPath(b.stateDir)
	warned := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		k, err := readKey(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if werr := writeKey(path, b.key, false); werr != nil && !errors.Is(werr, fs.ErrExist) {
				b.log.Warn("the wireguard key file was removed and cannot be written back", "path", path, "err", werr)
			} else if werr == nil {
				b.log.Warn("the wireguard key file was removed; wrote back the key in use", "path", path)
			}
		case err != nil:
			if !warned {
				b.log.Warn("the wireguard key file is unreadable; keeping the key in use", "err", err)
				warned = true
			}
		case k.k != b.key.k:
			b.log.Info("the wireguard key file holds a new key; re-preparing and republishing the lease", "path", path, "publicKey", k.public().String())
			return fmt.Errorf("wireguard: key rotated: %w", backend.ErrLeaseDataChanged)
		default:
			warned = false
		}
	}
}

// Peers reports every peer in the desired set, sorted by subnet.
func (b *Backend) Peers() []backend.PeerStatus { return b.status.Peers() }

// Close stops the embedded device (the TUN device, its address and routes
// stay for the next start) and closes the wgctrl client. A kernel device
// keeps running. Safe to call more than once, and on a backend never
// prepared.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		if b.us != nil {
			b.us.close()
		}
		if b.wg != nil {
			_ = b.wg.Close()
		}
	})
	return nil
}

// Repairs implements backend.RepairCounter.
func (b *Backend) Repairs() uint64 { return b.repairs.Load() }

func (b *Backend) countRepair(full bool) {
	if full {
		b.repairs.Add(1)
	}
}

// handshakeKick is the keepalive a new peer is given for a moment, so that
// the device handshakes with it at once (see syncDevice).
const handshakeKick = time.Second

// ---- desired state ----

// plan is what one peer needs.
type plan struct {
	lease    subnet.Lease
	subnet   netip.Prefix
	state    backend.PeerState
	reason   string
	key      wgtypes.Key
	endpoint netip.AddrPort
}

// env is the node-side input of planning.
type env struct {
	// node is what backend.CheckPeer judges leases against.
	node backend.PeerNode
	pub  wgtypes.Key
	port int
}

// planPeers computes, without touching the kernel, what each peer needs or
// why it is refused: first the checks every backend makes
// (backend.CheckPeer, IPv4), then wireguard's own (BackendData, keys).
// Peers are visited oldest lease first (lowest CreateRevision, then subnet),
// so a public key claimed twice stays with the node that had it first (a new
// node with a copied state directory cannot take over a peer's identity),
// the same way on every pass.
func planPeers(e env, peers backend.PeerSet) map[netip.Prefix]*plan {
	keys := slices.SortedFunc(maps.Keys(peers), func(a, c netip.Prefix) int {
		return cmp.Or(backend.OlderFirst(peers[a], peers[c]), comparePrefix(a, c))
	})
	keyOwner := map[wgtypes.Key]netip.Prefix{}
	out := make(map[netip.Prefix]*plan, len(peers))
	for _, sn := range keys {
		l := peers[sn]
		p := &plan{lease: l, subnet: sn}
		out[sn] = p
		v := backend.CheckPeer(e.node, l)
		if v.Own {
			p.refuse("subnet is this node's own")
			continue
		}
		if fv := v.Family(backend.IPv4); !fv.Usable {
			p.refuse(cmp.Or(fv.Reason, "the network does not use IPv4"))
			continue
		}
		d, err := parseBackendData(l.Attrs.BackendData, e.port)
		if err != nil {
			p.refuse(err.Error())
			continue
		}
		if d.key == e.pub {
			p.refuse("PublicKey is this node's own (a copied state directory?)")
			continue
		}
		if other, dup := keyOwner[d.key]; dup {
			p.refuse(fmt.Sprintf("PublicKey is already used by the older lease of peer %s (%s)", other, peers[other].Attrs.PublicIP))
			continue
		}
		keyOwner[d.key] = sn
		p.state, p.key, p.endpoint = backend.PeerProgrammed, d.key, d.endpoint(l.Attrs.PublicIP)
	}
	return out
}

func (p *plan) refuse(why string) {
	p.state = backend.PeerRefused
	p.reason = fmt.Sprintf("peer %s (%s): %s", p.subnet, p.lease.Attrs.PublicIP, why)
}

func comparePrefix(a, c netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(c.Addr()), cmp.Compare(a.Bits(), c.Bits()))
}

// ---- making the device and the kernel match ----

// reconcile makes the device's peers and weft's routes match the plans.
// full marks a Sync (its changes count as repairs). Before the first Sync
// the desired set may be incomplete (Prepare, Configure on a restarted
// node), so nothing is removed then except what overlaps this node's own
// subnet: a restarted node's device keeps its peers until the first full
// pass.
func (b *Backend) reconcile(full bool) error {
	e := env{
		node: backend.PeerNode{Config: b.cfg, Own: b.own, PublicIP: b.ul.PublicIP.Unmap(), BackendType: subnet.BackendWireGuard},
		pub:  b.key.public(), port: b.opts.ListenPort,
	}
	plans := planPeers(e, b.peers)
	var errs []error
	if err := b.syncDevice(plans, full); err != nil {
		errs = append(errs, err)
	}
	if err := b.syncRoutes(plans, full); err != nil {
		errs = append(errs, err)
	}
	want := make(map[netip.Prefix]backend.PeerStatus, len(plans))
	for sn, p := range plans {
		want[sn] = backend.PeerStatus{Subnet: sn, PublicIP: p.lease.Attrs.PublicIP, State: p.state, Reason: p.reason}
	}
	b.status.Update(nil, want)
	return errors.Join(errs...)
}

// removable reports whether state for dst that no plan wants may be
// deleted now.
func (b *Backend) removable(dst netip.Prefix) bool {
	return b.synced || (b.own.Subnet.IsValid() && dst.Overlaps(b.own.Subnet.Masked()))
}

// syncDevice reads the device and writes, in one request, what differs: the
// private key and listen port, peers to remove, peers to add, and changed
// attributes of existing peers (only those attributes, so their sessions
// continue). A failed write marks the peers it carried failed.
func (b *Backend) syncDevice(plans map[netip.Prefix]*plan, full bool) error {
	dev, err := b.wg.Device(b.name)
	if err != nil {
		b.failAll(plans, err)
		return fmt.Errorf("wireguard: read device %s: %w", b.name, err)
	}
	var cfg wgtypes.Config
	if dev.PrivateKey != b.key.k {
		cfg.PrivateKey = &b.key.k
	}
	if dev.ListenPort != b.opts.ListenPort {
		cfg.ListenPort = &b.opts.ListenPort
	}
	want := map[wgtypes.Key]*plan{}
	for _, p := range plans {
		if p.state == backend.PeerProgrammed {
			want[p.key] = p
		}
	}
	have := make(map[wgtypes.Key]wgtypes.Peer, len(dev.Peers))
	for _, hp := range dev.Peers {
		have[hp.PublicKey] = hp
		if want[hp.PublicKey] != nil || !b.peerRemovable(hp) {
			continue
		}
		cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: hp.PublicKey, Remove: true})
	}
	removals := len(cfg.Peers)
	psk, keepalive := b.opts.psk(), time.Duration(b.opts.PersistentKeepaliveInterval)*time.Second
	var written []*plan
	var kick []wgtypes.PeerConfig // new peers whose keepalive goes back to 0
	for _, sn := range slices.SortedFunc(maps.Keys(plans), comparePrefix) {
		p := plans[sn]
		if p.state != backend.PeerProgrammed {
			continue
		}
		pc, changed := peerConfig(p, have, psk, keepalive)
		if !changed {
			continue
		}
		if _, known := have[p.key]; !known && keepalive == 0 {
			// A new peer gets a handshake at once: WireGuard sends a
			// keepalive (and so handshakes) when a peer's keepalive is
			// turned on. The peer then drops the session it may hold from
			// before this device (re)started and talks to us at once,
			// instead of after its own 15 s rekey timeout.
			on, off := handshakeKick, time.Duration(0)
			pc.PersistentKeepaliveInterval = &on
			kick = append(kick, wgtypes.PeerConfig{PublicKey: p.key, UpdateOnly: true, PersistentKeepaliveInterval: &off})
		}
		cfg.Peers = append(cfg.Peers, pc)
		written = append(written, p)
	}
	if cfg.PrivateKey == nil && cfg.ListenPort == nil && len(cfg.Peers) == 0 {
		return nil
	}
	if err := b.wg.ConfigureDevice(b.name, cfg); err != nil {
		for _, p := range written {
			p.state, p.reason = backend.PeerFailed, err.Error()
		}
		return fmt.Errorf("wireguard: configure device %s: %w", b.name, err)
	}
	if len(kick) > 0 {
		// Keepalive back off; if this fails, the next pass sees the
		// difference and sets it.
		if err := b.wg.ConfigureDevice(b.name, wgtypes.Config{Peers: kick}); err != nil {
			return fmt.Errorf("wireguard: configure device %s: %w", b.name, err)
		}
	}
	if cfg.PrivateKey != nil || cfg.ListenPort != nil {
		b.log.Info("set device key and listen port", "publicKey", b.key.public().String(), "port", b.opts.ListenPort)
		b.countRepair(full && dev.PrivateKey != (wgtypes.Key{}))
	}
	for _, pc := range cfg.Peers[:removals] {
		b.log.Info("removed wireguard peer", "publicKey", pc.PublicKey.String())
		b.countRepair(full)
	}
	for _, p := range written {
		b.log.Debug("programmed wireguard peer", "subnet", p.subnet, "endpoint", p.endpoint, "publicKey", p.key.String())
		b.countRepair(full)
	}
	return nil
}

// peerRemovable: a device peer no plan wants is removed after the first
// full pass, or earlier when it routes part of this node's own subnet.
func (b *Backend) peerRemovable(hp wgtypes.Peer) bool {
	if b.synced {
		return true
	}
	for _, n := range hp.AllowedIPs {
		if p, ok := nl.Prefix(&n); ok && b.removable(p.Masked()) {
			return true
		}
	}
	return false
}

// peerConfig is the change that makes the device's peer (in have) match p;
// changed is false when it already does.
func peerConfig(p *plan, have map[wgtypes.Key]wgtypes.Peer, psk wgtypes.Key, keepalive time.Duration) (wgtypes.PeerConfig, bool) {
	ep := net.UDPAddrFromAddrPort(p.endpoint)
	allowed := []net.IPNet{*nl.IPNet(p.subnet)}
	hp, ok := have[p.key]
	if !ok {
		return wgtypes.PeerConfig{
			PublicKey: p.key, Endpoint: ep, PresharedKey: &psk, PersistentKeepaliveInterval: &keepalive,
			ReplaceAllowedIPs: true, AllowedIPs: allowed,
		}, true
	}
	pc := wgtypes.PeerConfig{PublicKey: p.key, UpdateOnly: true}
	changed := false
	if hp.Endpoint == nil || hp.Endpoint.AddrPort() != p.endpoint && unmapped(hp.Endpoint.AddrPort()) != p.endpoint {
		pc.Endpoint, changed = ep, true
	}
	if hp.PresharedKey != psk {
		pc.PresharedKey, changed = &psk, true
	}
	if hp.PersistentKeepaliveInterval != keepalive {
		pc.PersistentKeepaliveInterval, changed = &keepalive, true
	}
	if len(hp.AllowedIPs) != 1 || !ipNetEqual(hp.AllowedIPs[0], allowed[0]) {
		pc.ReplaceAllowedIPs, pc.AllowedIPs, changed = true, allowed, true
	}
	return pc, changed
}

func unmapped(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func ipNetEqual(a, c net.IPNet) bool {
	pa, oka := nl.Prefix(&a)
	pc, okc := nl.Prefix(&c)
	return oka && okc && pa.Masked() == pc.Masked()
}

func (b *Backend) failAll(plans map[netip.Prefix]*plan, err error) {
	for _, p := range plans {
		if p.state == backend.PeerProgrammed {
			p.state, p.reason = backend.PeerFailed, err.Error()
		}
	}
}

// syncRoutes makes weft's routes into the device match: the pod network
// (once this node has a subnet) and each programmed peer's subnet. Stale weft
// routes on the device or into the pod network (left by another backend)
// are deleted.
func (b *Backend) syncRoutes(plans map[netip.Prefix]*plan, full bool) error {
	routes, err := b.h.WeftRoutes(unix.AF_INET)
	if err != nil {
		return fmt.Errorf("wireguard: %w", err)
	}
	idx := b.link.Attrs().Index
	want := map[netip.Prefix]nl.Route{}
	if b.network.IsValid() && b.own.Subnet.IsValid() {
		want[b.network.Masked()] = nl.Route{Dst: b.network.Masked(), LinkIndex: idx}
	}
	for sn, p := range plans {
		if p.state == backend.PeerProgrammed {
			want[sn] = nl.Route{Dst: sn, LinkIndex: idx}
		}
	}
	var errs []error
	for _, dst := range slices.SortedFunc(maps.Keys(want), comparePrefix) {
		var have *nl.Route
		if r, ok := routes[dst]; ok {
			have = &r
		}
		changed, err := b.h.EnsureRoute(want[dst], have)
		if err != nil {
			if p := plans[dst]; p != nil {
				p.state, p.reason = backend.PeerFailed, err.Error()
			}
			errs = append(errs, fmt.Errorf("wireguard: %w", err))
			continue
		}
		if changed {
			b.countRepair(full)
		}
	}
	for dst, r := range routes {
		if _, ok := want[dst]; ok || !b.ownsRoute(r) || !b.removable(dst) {
			continue
		}
		if err := b.h.DeleteRoute(r); err != nil {
			errs = append(errs, fmt.Errorf("wireguard: %w", err))
			continue
		}
		b.countRepair(full)
		b.log.Info("deleted stale route", "route", r.String())
	}
	return errors.Join(errs...)
}

// ownsRoute: a weft-protocol route is this backend's if it uses the device
// or leads into the pod network.
func (b *Backend) ownsRoute(r nl.Route) bool {
	return r.LinkIndex == b.link.Attrs().Index || (b.network.IsValid() && b.network.Contains(r.Dst.Addr()))
}
