package wireguard

import (
	"bytes"
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
	// no lease is a usable peer).
	cfg      *subnet.Config
	stateDir string
	h        *nl.Handle
	// keyCheck is how often Run looks for a rotated key file.
	keyCheck time.Duration
	// devs are the devices Mode and the network's families call for (see
	// layout): one, or weft-wg and weft-wg-v6 for a dual-stack network in
	// Mode separate. Their links are set by Prepare.
	devs []*wgdev

	// Set by Prepare.
	mtu  int
	key  privateKey
	impl Implementation // resolved: kernel or userspace
	wg   *wgctrl.Client

	own    subnet.Lease    // set by Configure
	peers  backend.PeerSet // desired peer set
	synced bool            // a full pass has run: removals are safe

	repairs atomic.Uint64
	status  *backend.StatusBook

	// devMu serializes writes to the devices: syncDevice's, on the
	// daemon's goroutine, and the later handshake kicks' (kickLater), on a
	// timer's. It guards closed and later.
	devMu  sync.Mutex
	closed bool
	later  map[string]*laterKicks // by device name

	closeOnce sync.Once
}

// laterKicks are the new peers of a device that get their handshake kick
// when timer fires (see kickLater).
type laterKicks struct {
	timer *time.Timer
	keys  []wgtypes.Key
}

// wgdev is one WireGuard device and the pod traffic it carries.
type wgdev struct {
	// name is DeviceName or DeviceNameV6, except in tests, where several
	// "nodes" share one /var/run/wireguard (see rename).
	name   string
	suffix string // of name after the base name: "" or "-v6"
	port   int
	// fams are the families of pod traffic the device carries (AllowedIPs,
	// routes, its own address).
	fams []backend.Family
	// via is the underlay family peers are reached over (their PublicIP or
	// PublicIPv6); zero in Mode auto with both families, chosen per peer.
	via backend.Family
	// v6Data: peers' attributes of this device are in their BackendV6Data
	// (the IPv6 device, or the only device of an IPv6-only network), not
	// BackendData.
	v6Data bool

	link netlink.Link
	us   *userspace // the embedded device; nil for the kernel's
}

func (d *wgdev) carries(f backend.Family) bool { return slices.Contains(d.fams, f) }

// layout is the devices o.Mode calls for with the families cfg enables, as
// Flannel lays them out: Mode separate gives each family its own device
// (weft-wg on ListenPort for IPv4, weft-wg-v6 on ListenPortV6 for IPv6),
// each reaching peers over the underlay of its family; the other modes put
// every family on weft-wg, reaching peers over IPv4 (ipv4), IPv6 (ipv6) or
// per peer (auto).
func layout(o Options, cfg *subnet.Config) ([]*wgdev, error) {
	v4, v6 := cfg == nil || cfg.EnableIPv4, cfg != nil && cfg.EnableIPv6
	if !v4 && !v6 {
		return nil, errors.New("wireguard: the network enables no address family (EnableIPv4, EnableIPv6)")
	}
	if o.Mode == ModeSeparate {
		var devs []*wgdev
		if v4 {
			devs = append(devs, &wgdev{name: DeviceName, port: o.ListenPort, fams: []backend.Family{backend.IPv4}, via: backend.IPv4})
		}
		if v6 {
			devs = append(devs, &wgdev{name: DeviceNameV6, suffix: DeviceNameV6[len(DeviceName):], port: o.ListenPortV6,
				fams: []backend.Family{backend.IPv6}, via: backend.IPv6, v6Data: true})
		}
		return devs, nil
	}
	d := &wgdev{name: DeviceName, port: o.ListenPort, v6Data: !v4}
	if v4 {
		d.fams = append(d.fams, backend.IPv4)
	}
	if v6 {
		d.fams = append(d.fams, backend.IPv6)
	}
	switch {
	case o.Mode == ModeIPv4 && !v4:
		return nil, errors.New("wireguard options: Mode ipv4 reaches peers over their IPv4 underlay address, which an IPv6-only network does not publish; use separate (the default), auto or ipv6")
	case o.Mode == ModeIPv6 && !v6:
		return nil, errors.New("wireguard options: Mode ipv6 reaches peers over their IPv6 underlay address, which a network without IPv6 does not publish; set EnableIPv6 or use separate (the default), auto or ipv4")
	case o.Mode == ModeIPv4, o.Mode == ModeAuto && !v6:
		d.via = backend.IPv4
	case o.Mode == ModeIPv6, o.Mode == ModeAuto && !v4:
		d.via = backend.IPv6
	}
	return []*wgdev{d}, nil
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
	if opts.Config != nil {
		raw = opts.Config.Backend
	}
	o, err := ParseOptions(raw)
	if err != nil {
		return nil, err
	}
	devs, err := layout(o, opts.Config)
	if err != nil {
		return nil, err
	}
	if err := opts.Underlay.RequireAddrs(subnet.BackendWireGuard, opts.Config); err != nil {
		return nil, err
	}
	if opts.StateDir == "" {
		return nil, errors.New("wireguard: no state directory for the private key; run weftd with --state-dir")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("backend", subnet.BackendWireGuard, "dev", devs[0].name)
	b := &Backend{
		log:      log,
		opts:     o,
		ul:       opts.Underlay,
		cfg:      opts.Config,
		stateDir: opts.StateDir,
		h:        nl.New(nil),
		keyCheck: time.Second,
		devs:     devs,
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

// rename gives the devices names from base instead of DeviceName (base,
// base-v6): tests run several nodes on one machine, whose UAPI sockets
// share /var/run/wireguard. Before Prepare only.
func (b *Backend) rename(base string) {
	for _, d := range b.devs {
		d.name = base + d.suffix
	}
}

// network is the pod network of family f (invalid when the config has
// none).
func (b *Backend) network(f backend.Family) netip.Prefix {
	switch {
	case b.cfg == nil:
		return netip.Prefix{}
	case f == backend.IPv6:
		return b.cfg.IPv6Network.Masked()
	}
	return b.cfg.Network.Masked()
}

// ownSubnet is this node's subnet of family f (invalid before Configure).
func (b *Backend) ownSubnet(f backend.Family) netip.Prefix {
	if f == backend.IPv6 {
		return b.own.IPv6Subnet.Masked()
	}
	return b.own.Subnet.Masked()
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

// Device implements backend.Device: the first device (weft-wg; weft-wg-v6
// on an IPv6-only network in Mode separate).
func (b *Backend) Device() string { return b.devs[0].name }

// Implementation reports which WireGuard carries the device (kernel or
// userspace); empty before Prepare.
func (b *Backend) Implementation() Implementation { return b.impl }

// PublicKey is this node's public key. Valid after Prepare.
func (b *Backend) PublicKey() wgtypes.Key { return b.key.public() }

// Prepare loads the node's private key (creating it on the first start),
// creates or adopts the devices, sets their key and listen ports, and
// returns the attributes to publish: BackendData {"PublicKey":…,"Port":…}
// for IPv4 and BackendV6Data for IPv6 (the port of the device carrying the
// family), as Flannel writes them. An existing device is adopted with its
// peers, so a restart of weftd does not interrupt a kernel device's
// sessions. Every device has the one key.
func (b *Backend) Prepare(ctx context.Context) (subnet.LeaseAttrs, error) {
	// One socket for the backend's life, in the namespace Prepare is
	// called in (every method is called there).
	if err := b.h.Persist(); err != nil {
		return subnet.LeaseAttrs{}, fmt.Errorf("wireguard: %w", err)
	}
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
	if err := b.ensureDevices(); err != nil {
		return subnet.LeaseAttrs{}, err
	}
	if err := b.reconcile(false); err != nil {
		return subnet.LeaseAttrs{}, err
	}
	attrs := b.ul.LeaseAttrs(b.cfg)
	for _, d := range b.devs {
		data, err := json.Marshal(BackendData{PublicKey: k.public().String(), Port: uint16(d.port)})
		if err != nil {
			return subnet.LeaseAttrs{}, fmt.Errorf("wireguard: encode backend data: %w", err)
		}
		if d.carries(backend.IPv4) {
			attrs.BackendData = data
		}
		if d.carries(backend.IPv6) {
			attrs.BackendV6Data = data
		}
	}
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

// ensureDevices chooses the implementation (once, for every device), makes
// each device right (created or adopted, MTU, up; the embedded device
// running and serving its UAPI socket) and opens the wgctrl client. Called
// by Prepare and by every Sync, so a device deleted by hand is re-created.
func (b *Backend) ensureDevices() error {
	if b.impl == "" {
		impl, why, err := b.choose()
		if err != nil {
			return err
		}
		b.impl = impl
		b.log.Info("wireguard implementation", "implementation", impl, "why", why)
	}
	for _, d := range b.devs {
		if err := b.ensureDevice(d); err != nil {
			return err
		}
	}
	if b.wg == nil {
		// Opened after the link exists: the kernel's genetlink family
		// appears when the module loads. Its socket stays in this
		// namespace.
		var err error
		if b.wg, err = wgctrl.New(); err != nil {
			return fmt.Errorf("wireguard: open wgctrl: %w", err)
		}
	}
	return nil
}

func (b *Backend) ensureDevice(d *wgdev) error {
	var err error
	switch b.impl {
	case ImplKernel:
		var created bool
		d.link, created, err = ensureKernelLink(b.h, d.name)
		if err != nil {
			return fmt.Errorf("wireguard: %w", err)
		}
		if created {
			b.log.Info("created kernel wireguard device", "device", d.name, "ifindex", d.link.Attrs().Index)
		}
	default:
		if err := b.ensureUserspace(d); err != nil {
			return err
		}
	}
	d.link, err = b.h.EnsureLinkState(d.link, nl.LinkState{MTU: b.mtu, Up: true})
	if err != nil {
		return fmt.Errorf("wireguard: %w", err)
	}
	if d.us != nil {
		// wireguard-go comes up on its own when it sees the link up, but
		// its listeners may take a second (one polls); packets read before
		// are dropped. Idempotent.
		if err := d.us.dev.Up(); err != nil {
			return fmt.Errorf("wireguard: bring up the embedded device %s: %w", d.name, err)
		}
	}
	return nil
}

// choose resolves Implementation: a kernel device that exists is adopted;
// otherwise auto asks the kernel (by creating a probe link).
func (b *Backend) choose() (Implementation, string, error) {
	name := b.devs[0].name
	have, err := b.h.Netlink().LinkByName(name)
	if err != nil && !nl.IsNotFound(err) {
		return "", "", fmt.Errorf("wireguard: look up %s: %w", name, err)
	}
	isKernel := err == nil && have.Type() == "wireguard"
	switch b.opts.Implementation {
	case ImplKernel:
		return ImplKernel, "forced by the Implementation option", nil
	case ImplUserspace:
		return ImplUserspace, "forced by the Implementation option", nil
	}
	if isKernel {
		return ImplKernel, "a kernel wireguard device " + name + " exists", nil
	}
	ok, perr := kernelSupport(b.h)
	if ok {
		return ImplKernel, "the kernel has WireGuard", nil
	}
	return ImplUserspace, fmt.Sprintf("the kernel has no WireGuard (%v); using the embedded wireguard-go", perr), nil
}

// ensureUserspace makes the embedded device d run on its TUN device: started
// on the first call, re-started when wireguard-go stopped or the TUN device
// was deleted or replaced, its UAPI socket served again when it was removed.
func (b *Backend) ensureUserspace(d *wgdev) error {
	have, err := b.h.Netlink().LinkByName(d.name)
	if err != nil && !nl.IsNotFound(err) {
		return fmt.Errorf("wireguard: look up %s: %w", d.name, err)
	}
	tunOK := err == nil && have.Type() == "tuntap"
	if d.us != nil && tunOK && d.us.alive() && d.link != nil && have.Attrs().Index == d.link.Attrs().Index {
		d.link = have
		repaired, err := d.us.ensureServed()
		if repaired {
			b.countRepair(true)
		}
		if err != nil {
			return fmt.Errorf("wireguard: %w", err)
		}
		return nil
	}
	if d.us != nil {
		b.log.Warn("embedded wireguard device lost its TUN; starting it again", "device", d.name)
		d.us.close()
		d.us = nil
		b.countRepair(true)
	}
	if err == nil && !tunOK {
		// A kernel device (Implementation forced) or anything else.
		b.log.Info("replacing the link of the device's name", "device", d.name, "type", have.Type())
		if err := b.h.DeleteLink(d.name); err != nil {
			return fmt.Errorf("wireguard: %w", err)
		}
	}
	us, err := startUserspace(b.log, d.name, b.mtu)
	if err != nil {
		return fmt.Errorf("wireguard: embedded device %s: %w", d.name, err)
	}
	d.us = us
	d.link, err = b.h.Netlink().LinkByName(d.name)
	if err != nil {
		return fmt.Errorf("wireguard: look up %s: %w", d.name, err)
	}
	b.log.Info("embedded wireguard device running", "device", d.name, "ifindex", d.link.Attrs().Index, "mtu", b.mtu, "port", d.port)
	return nil
}

// Configure puts the own subnet's first address of each family a device
// carries on it (<subnet>.0/32, <subnet>::/128: the source of
// node-originated traffic into the tunnel, inside our subnet, so peers'
// AllowedIPs accept it) and routes the pod network into the device.
func (b *Backend) Configure(ctx context.Context, own subnet.Lease) error {
	if !b.prepared() {
		return errors.New("wireguard: Configure before Prepare")
	}
	for _, d := range b.devs {
		for _, f := range d.fams {
			if sn := ownSubnetOf(own, f); !sn.IsValid() || !is(f, sn.Addr()) {
				return fmt.Errorf("wireguard: own lease has no %s subnet (%s), the network enables %s", f, sn, f)
			}
		}
	}
	b.own = own
	if err := b.ensureAddrs(); err != nil {
		return err
	}
	delete(b.peers, own.Key().Masked())
	return b.reconcile(false)
}

// prepared reports whether Prepare made the devices.
func (b *Backend) prepared() bool { return b.devs[0].link != nil }

func ownSubnetOf(l subnet.Lease, f backend.Family) netip.Prefix {
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

// af is f's address family for netlink.
func af(f backend.Family) int {
	if f == backend.IPv6 {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

func (b *Backend) ensureAddrs() error {
	for _, d := range b.devs {
		for _, f := range d.fams {
			a := b.ownSubnet(f).Addr()
			if err := b.h.EnsureAddrs(d.link, af(f), []netip.Prefix{netip.PrefixFrom(a, a.BitLen())}); err != nil {
				return fmt.Errorf("wireguard: %w", err)
			}
		}
	}
	return nil
}

// Sync makes the devices and the routes match peers exactly; see
// backend.Backend. It also re-checks the devices themselves (re-created if
// deleted, MTU, up, key, port) and their addresses. Per-peer failures are
// joined in the error and shown in Peers; refused peers are not errors.
func (b *Backend) Sync(ctx context.Context, peers []subnet.Lease) error {
	if !b.prepared() {
		return errors.New("wireguard: Sync before Prepare")
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
	delete(b.peers, b.own.Key().Masked())
	b.synced = true
	return b.reconcile(true)
}

// Apply applies events; see backend.Backend. It diffs each whole device (one
// read) but writes only the peers that differ, so other peers' sessions are
// untouched.
func (b *Backend) Apply(ctx context.Context, events []subnet.Event) error {
	if !b.prepared() {
		return errors.New("wireguard: Apply before Prepare")
	}
	b.peers.Apply(events)
	delete(b.peers, b.own.Key().Masked())
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

// Close stops the embedded devices (the TUN devices, their addresses and
// routes stay for the next start) and closes the wgctrl client and the
// netlink socket. A kernel
// device keeps running. Safe to call more than once, and on a backend never
// prepared.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		b.devMu.Lock()
		b.closed = true
		for _, k := range b.later {
			k.timer.Stop()
		}
		b.devMu.Unlock()
		for _, d := range b.devs {
			if d.us != nil {
				d.us.close()
			}
		}
		if b.wg != nil {
			_ = b.wg.Close()
		}
		b.h.Close()
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
// the device handshakes with it (see syncDevice).
const handshakeKick = time.Second

// kickDelay is how long the node whose public key is the greater of a pair
// waits before it kicks a new peer (see kickLater). It is well above an
// underlay round trip, so the other node's handshake has arrived by then.
const kickDelay = time.Second

// ---- desired state ----

// plan is what one peer needs on one device.
type plan struct {
	lease  subnet.Lease
	subnet netip.Prefix // the lease's key
	// state is the device's peer as a whole: programmed (for at least one
	// family), refused or failed; reason says why when it is not.
	state  backend.PeerState
	reason string
	// fams is the outcome of each family the device carries.
	fams     map[backend.Family]backend.FamilyOutcome
	allowed  []netip.Prefix // the subnets of the programmed families
	key      wgtypes.Key
	endpoint netip.AddrPort
}

// env is the node-side input of planning.
type env struct {
	// node is what backend.CheckPeer judges leases against.
	node backend.PeerNode
	pub  wgtypes.Key
}

// planPeers computes, without touching the kernel, what each peer needs on
// device d or why it is refused: first the checks every backend makes
// (backend.CheckPeer, per family, the underlay address d reaches the peer
// at included), then wireguard's own (BackendData, keys). Peers are visited
// oldest lease first (lowest CreateRevision, then subnet), so a public key
// claimed twice stays with the node that had it first (a new node with a
// copied state directory cannot take over a peer's identity), the same way
// on every pass.
func planPeers(e env, d *wgdev, peers backend.PeerSet) map[netip.Prefix]*plan {
	keys := slices.SortedFunc(maps.Keys(peers), func(a, c netip.Prefix) int {
		return cmp.Or(backend.OlderFirst(peers[a], peers[c]), comparePrefix(a, c))
	})
	keyOwner := map[wgtypes.Key]netip.Prefix{}
	out := make(map[netip.Prefix]*plan, len(peers))
	for _, sn := range keys {
		l := peers[sn]
		p := &plan{lease: l, subnet: sn, fams: map[backend.Family]backend.FamilyOutcome{}}
		out[sn] = p
		via := d.via
		if via == 0 {
			via = autoVia(e.node, l)
		}
		node := e.node
		if via == backend.IPv4 {
			// IPv6 pods (if d carries them) cross the IPv4 underlay: the
			// peer's PublicIP is what must be usable.
			node.IPv6Carrier = backend.IPv4
		}
		v := backend.CheckPeer(node, l)
		if v.Own {
			p.refuse("subnet is this node's own")
			continue
		}
		if fv := v.Family(via); !fv.Usable {
			// The family of the endpoint: its verdict judged the address.
			p.refuse(cmp.Or(fv.Reason, "the network does not use "+via.String()))
			continue
		}
		raw := l.Attrs.BackendData
		if d.v6Data {
			raw = l.Attrs.BackendV6Data
		}
		pd, err := parseBackendData(raw, d.port)
		if err != nil {
			if d.v6Data {
				err = fmt.Errorf("BackendV6Data: %w", err)
			}
			p.refuse(err.Error())
			continue
		}
		if pd.key == e.pub {
			p.refuse("PublicKey is this node's own (a copied state directory?)")
			continue
		}
		if other, dup := keyOwner[pd.key]; dup {
			p.refuse(fmt.Sprintf("PublicKey is already used by the older lease of peer %s (%s)", other, peers[other].Attrs.PublicIP))
			continue
		}
		keyOwner[pd.key] = sn
		addr := l.Attrs.PublicIP
		if via == backend.IPv6 {
			addr = l.Attrs.PublicIPv6
		}
		p.state, p.key, p.endpoint = backend.PeerProgrammed, pd.key, pd.endpoint(addr)
		for _, f := range d.fams {
			if fv := v.Family(f); !fv.Usable {
				p.fams[f] = backend.Outcome(backend.PeerRefused, cmp.Or(fv.Reason, "the network does not use "+f.String()))
				continue
			}
			p.fams[f] = backend.Outcome(backend.PeerProgrammed, "")
			p.allowed = append(p.allowed, ownSubnetOf(l, f).Masked())
		}
	}
	return out
}

// autoVia is Mode auto's choice of the underlay a dual-stack device reaches
// the peer of l over, Flannel's: the family the peer has the only address
// of; else IPv4 when the peer's IPv4 address is public (not RFC 1918),
// IPv6 when both nodes' IPv6 addresses are (not ULA), IPv4 otherwise.
func autoVia(n backend.PeerNode, l subnet.Lease) backend.Family {
	v4, v6 := l.Attrs.PublicIP.Unmap(), l.Attrs.PublicIPv6
	switch {
	case !v4.IsValid() && v6.IsValid():
		return backend.IPv6
	case !v6.IsValid():
		return backend.IPv4
	case !v4.IsPrivate() && n.PublicIP.IsValid():
		return backend.IPv4
	case !v6.IsPrivate() && n.PublicIPv6.IsValid() && !n.PublicIPv6.IsPrivate():
		return backend.IPv6
	}
	return backend.IPv4
}

func (p *plan) refuse(why string) { p.settle(backend.PeerRefused, why) }

// settle makes the whole peer refused or failed, every family with it.
func (p *plan) settle(state backend.PeerState, why string) {
	p.state, p.reason = state, why
	for f := range p.fams {
		p.fams[f] = backend.Outcome(state, why)
	}
}

func comparePrefix(a, c netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(c.Addr()), cmp.Compare(a.Bits(), c.Bits()))
}

// ---- making the devices and the kernel match ----

// reconcile makes each device's peers and weft's routes match the plans.
// full marks a Sync (its changes count as repairs). Before the first Sync
// the desired set may be incomplete (Prepare, Configure on a restarted
// node), so nothing is removed then except what overlaps this node's own
// subnets: a restarted node's device keeps its peers until the first full
// pass.
func (b *Backend) reconcile(full bool) error {
	e := env{
		node: backend.PeerNode{Config: b.cfg, Own: b.own, PublicIP: b.ul.PublicIP.Unmap(), PublicIPv6: b.ul.PublicIPv6,
			BackendType: subnet.BackendWireGuard},
		pub: b.key.public(),
	}
	var errs []error
	plans := make([]map[netip.Prefix]*plan, len(b.devs))
	for i, d := range b.devs {
		plans[i] = planPeers(e, d, b.peers)
		if err := b.syncDevice(d, plans[i], full); err != nil {
			errs = append(errs, err)
		}
	}
	for i, d := range b.devs {
		for _, f := range d.fams {
			if err := b.syncRoutes(d, f, plans[i], full); err != nil {
				errs = append(errs, err)
			}
		}
	}
	want := make(map[netip.Prefix]backend.PeerStatus, len(b.peers))
	for sn, l := range b.peers {
		out := map[backend.Family]backend.FamilyOutcome{}
		for i, d := range b.devs {
			p := plans[i][sn]
			for _, f := range d.fams {
				o, ok := p.fams[f]
				if !ok { // refused as a whole, before its families
					o = backend.Outcome(p.state, p.reason)
				}
				out[f] = o
			}
		}
		want[sn] = backend.NewPeerStatus(b.cfg, l, out[backend.IPv4], out[backend.IPv6])
	}
	b.status.Update(nil, want)
	return errors.Join(errs...)
}

// removable reports whether state for dst that no plan wants may be
// deleted now.
func (b *Backend) removable(dst netip.Prefix) bool {
	if b.synced {
		return true
	}
	for _, f := range []backend.Family{backend.IPv4, backend.IPv6} {
		if own := b.ownSubnet(f); own.IsValid() && dst.Overlaps(own) {
			return true
		}
	}
	return false
}

// syncDevice reads device d and writes, in one request, what differs: the
// private key and listen port, peers to remove, peers to add, and changed
// attributes of existing peers (only those attributes, so their sessions
// continue). A failed write marks the peers it carried failed.
func (b *Backend) syncDevice(d *wgdev, plans map[netip.Prefix]*plan, full bool) error {
	b.devMu.Lock()
	defer b.devMu.Unlock()
	dev, err := b.wg.Device(d.name)
	if err != nil {
		failAll(plans, err)
		return fmt.Errorf("wireguard: read device %s: %w", d.name, err)
	}
	var cfg wgtypes.Config
	if dev.PrivateKey != b.key.k {
		cfg.PrivateKey = &b.key.k
	}
	if dev.ListenPort != d.port {
		cfg.ListenPort = &d.port
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
	var kicked []wgtypes.Key // new peers kicked now, whose keepalive then goes back to 0
	var later []wgtypes.Key  // new peers kicked after kickDelay
	pub := b.key.public()
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
			// A new peer gets a handshake soon: WireGuard sends a
			// keepalive (and so handshakes) when a peer's keepalive is
			// turned on. The peer then drops the session it may hold from
			// before this device (re)started and talks to us at once,
			// instead of after its own 15 s rekey timeout. Of two nodes
			// that learn of each other at the same moment, only the one
			// with the smaller key kicks at once: two handshakes crossing
			// on the wire leave both sides waiting as responders for
			// WireGuard's 5 s retry. The other kicks after kickDelay, in
			// case the first handshake was lost or was sent before this
			// device knew its peer (then it only sends a keepalive).
			if bytes.Compare(pub[:], p.key[:]) > 0 {
				later = append(later, p.key)
			} else {
				on := handshakeKick
				pc.PersistentKeepaliveInterval = &on
				kicked = append(kicked, p.key)
			}
		}
		cfg.Peers = append(cfg.Peers, pc)
		written = append(written, p)
	}
	if cfg.PrivateKey == nil && cfg.ListenPort == nil && len(cfg.Peers) == 0 {
		return nil
	}
	if err := b.wg.ConfigureDevice(d.name, cfg); err != nil {
		for _, p := range written {
			p.settle(backend.PeerFailed, err.Error())
		}
		return fmt.Errorf("wireguard: configure device %s: %w", d.name, err)
	}
	if len(kicked) > 0 {
		// Keepalive back off; if this fails, the next pass sees the
		// difference and sets it.
		if err := b.wg.ConfigureDevice(d.name, wgtypes.Config{Peers: keepalives(kicked, 0)}); err != nil {
			return fmt.Errorf("wireguard: configure device %s: %w", d.name, err)
		}
	}
	b.kickLater(d.name, later)
	if cfg.PrivateKey != nil || cfg.ListenPort != nil {
		b.log.Info("set device key and listen port", "device", d.name, "publicKey", b.key.public().String(), "port", d.port)
		b.countRepair(full && dev.PrivateKey != (wgtypes.Key{}))
	}
	for _, pc := range cfg.Peers[:removals] {
		b.log.Info("removed wireguard peer", "device", d.name, "publicKey", pc.PublicKey.String())
		b.countRepair(full)
	}
	for _, p := range written {
		b.log.Debug("programmed wireguard peer", "device", d.name, "subnet", p.subnet, "allowedIPs", p.allowed, "endpoint", p.endpoint, "publicKey", p.key.String())
		b.countRepair(full)
	}
	return nil
}

// kickLater gives the peers with keys of device dev their handshake kick after
// kickDelay, all at once with those already waiting. The caller holds
// devMu. A peer removed meanwhile is skipped (UpdateOnly); a failed kick
// is logged only: the peers still handshake on their first packet.
func (b *Backend) kickLater(dev string, keys []wgtypes.Key) {
	if len(keys) == 0 {
		return
	}
	if b.later == nil {
		b.later = map[string]*laterKicks{}
	}
	if k := b.later[dev]; k != nil {
		k.keys = append(k.keys, keys...)
		return
	}
	k := &laterKicks{keys: keys}
	b.later[dev] = k
	k.timer = time.AfterFunc(kickDelay, func() {
		b.devMu.Lock()
		defer b.devMu.Unlock()
		delete(b.later, dev)
		if b.closed {
			return
		}
		err := b.wg.ConfigureDevice(dev, wgtypes.Config{Peers: keepalives(k.keys, handshakeKick)})
		if err == nil {
			// Keepalive back off; if this fails, the next pass sees the
			// difference and sets it.
			err = b.wg.ConfigureDevice(dev, wgtypes.Config{Peers: keepalives(k.keys, 0)})
		}
		if err != nil {
			b.log.Warn("could not start handshakes with new peers; they handshake on their first packet", "device", dev, "peers", len(k.keys), "err", err)
			return
		}
		b.log.Debug("started handshakes with new peers", "device", dev, "peers", len(k.keys))
	})
}

// keepalives sets the keepalive of the existing peers keys to d.
func keepalives(keys []wgtypes.Key, d time.Duration) []wgtypes.PeerConfig {
	pcs := make([]wgtypes.PeerConfig, len(keys))
	for i, key := range keys {
		pcs[i] = wgtypes.PeerConfig{PublicKey: key, UpdateOnly: true, PersistentKeepaliveInterval: &d}
	}
	return pcs
}

// peerRemovable: a device peer no plan wants is removed after the first
// full pass, or earlier when it routes part of this node's own subnets.
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
	allowed := make([]net.IPNet, len(p.allowed))
	for i, sn := range p.allowed {
		allowed[i] = *nl.IPNet(sn)
	}
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
	if !sameAllowed(hp.AllowedIPs, p.allowed) {
		pc.ReplaceAllowedIPs, pc.AllowedIPs, changed = true, allowed, true
	}
	return pc, changed
}

func unmapped(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// sameAllowed reports whether the device's AllowedIPs are exactly want, in
// any order.
func sameAllowed(have []net.IPNet, want []netip.Prefix) bool {
	if len(have) != len(want) {
		return false
	}
	for _, n := range have {
		p, ok := nl.Prefix(&n)
		if !ok || !slices.Contains(want, p.Masked()) {
			return false
		}
	}
	return true
}

func failAll(plans map[netip.Prefix]*plan, err error) {
	for _, p := range plans {
		if p.state == backend.PeerProgrammed {
			p.settle(backend.PeerFailed, err.Error())
		}
	}
}

// syncRoutes makes weft's routes of family f into device d, which carries
// f, match: the pod network of f (once this node has a subnet of f) and
// each peer's subnet of f where it is programmed. Stale weft routes of f on
// any of the backend's devices or into the pod network of f (left by
// another backend or another Mode) are deleted.
func (b *Backend) syncRoutes(d *wgdev, f backend.Family, plans map[netip.Prefix]*plan, full bool) error {
	routes, err := b.h.WeftRoutes(af(f))
	if err != nil {
		return fmt.Errorf("wireguard: %w", err)
	}
	idx := d.link.Attrs().Index
	want := map[netip.Prefix]nl.Route{}
	if network := b.network(f); network.IsValid() && b.ownSubnet(f).IsValid() {
		want[network] = nl.Route{Dst: network, LinkIndex: idx}
	}
	wantBy := map[netip.Prefix]*plan{}
	for _, p := range plans {
		if o := p.fams[f]; p.state == backend.PeerProgrammed && o.State == backend.PeerProgrammed {
			dst := ownSubnetOf(p.lease, f).Masked()
			want[dst], wantBy[dst] = nl.Route{Dst: dst, LinkIndex: idx}, p
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
			if p := wantBy[dst]; p != nil {
				p.fams[f] = backend.Outcome(backend.PeerFailed, err.Error())
			}
			errs = append(errs, fmt.Errorf("wireguard: %w", err))
			continue
		}
		if changed {
			b.countRepair(full)
		}
	}
	for dst, r := range routes {
		if _, ok := want[dst]; ok || !b.ownsRoute(f, r) || !b.removable(dst) {
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

// ownsRoute: a weft-protocol route of family f is this backend's if it uses
// one of its devices or leads into the pod network of f.
func (b *Backend) ownsRoute(f backend.Family, r nl.Route) bool {
	for _, d := range b.devs {
		if d.link != nil && r.LinkIndex == d.link.Attrs().Index {
			return true
		}
	}
	network := b.network(f)
	return network.IsValid() && network.Contains(r.Dst.Addr())
}
