package udp

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/udp/tun"
	"github.com/weftnet/weft/backend/udp/wire"
	"github.com/weftnet/weft/internal/nl"
	"github.com/weftnet/weft/subnet"
)

const (
	// DefaultPort is Flannel's udp backend port.
	DefaultPort = 8285
	// Overhead is what the tunnel adds to an inner packet on an IPv4
	// underlay: a 20-byte IP and an 8-byte UDP header.
	Overhead = 28
	// Overhead6 is what it adds on an IPv6 underlay (an IPv6-only
	// network): a 40-byte IPv6 and an 8-byte UDP header.
	Overhead6 = 48
	// minMTU6 is IPv6's minimum link MTU (RFC 8200), which the pod MTU of
	// a network with IPv6 must reach.
	minMTU6 = 1280
	// DeviceName is the TUN device.
	DeviceName = "weft-udp"
	// maxQueues bounds the TUN queues (the kernel allows 256).
	maxQueues = 64
	// socketBuffer is the SO_RCVBUF/SO_SNDBUF asked for each socket.
	socketBuffer = 4 << 20
	// txQueueLen is the TUN queue, in packets, that holds what the kernel
	// routes into the tunnel while weftd is not scheduled. The kernel's
	// default of 500 lost 5-12% of a 500 Mbit/s UDP stream on the lab;
	// 2000 (3 MB of full-size packets, 5 ms at 5 Gbit/s) lost under 1%.
	txQueueLen = 2000
	// defaultRxBatch is how many datagrams one recvmmsg takes.
	defaultRxBatch = 32
)

// Options are the udp backend's keys in the config's "Backend" object.
type Options struct {
	// Port is the UDP port on every node (Flannel: 8285).
	Port int
	// MTU overrides the pod MTU; 0 means underlay MTU − Overhead.
	MTU int
	// Queues is the number of TUN queues and UDP sockets, each served
	// (both directions) by one goroutine; 0 means GOMAXPROCS.
	Queues int
	// DisableOffloads turns off TUN TSO/virtio headers, UDP GSO and UDP
	// GRO (for debugging or comparison).
	DisableOffloads bool
	// RxBatch is the number of datagrams per recvmmsg (default 32).
	RxBatch int
}

// Backend is the udp backend. See the package documentation.
type Backend struct {
	log      *slog.Logger
	opts     Options
	underlay backend.Underlay
	cfg      *subnet.Config // peers are checked against it; nil refuses every peer
	network  netip.Prefix
	carrier  backend.Family // the underlay family of every datagram (underlayFamily)
	mtu      int
	now      func() time.Time

	// Owned by the daemon goroutine (Prepare/Configure/Sync/Apply).
	own      netip.Prefix
	ownLease subnet.Lease
	peers    map[netip.Prefix]subnet.Lease
	dev      *tun.Device
	socks    []*os.File // UDP sockets, one per queue, not in the Go poller
	stop     *os.File   // eventfd, readable once the packet path must stop

	table atomic.Pointer[table]
	gso   atomic.Bool
	gro   bool
	tso   bool
	vnet  bool

	stats []counters // 2 per queue: tx, rx

	closeOnce sync.Once
	closing   chan struct{}
	running   atomic.Bool
	stopped   chan struct{} // closed when Run has stopped and closed the descriptors
	fdsOnce   sync.Once
}

var (
	_ backend.Backend     = (*Backend)(nil)
	_ backend.Tunneled    = (*Backend)(nil)
	_ backend.IPv6Carrier = (*Backend)(nil)
)

// TunnelPort implements backend.Tunneled.
func (b *Backend) TunnelPort() uint16 { return uint16(b.opts.Port) }

// IPv6Carrier implements backend.IPv6Carrier: in a network with IPv4, IPv6
// pods travel in the same IPv4 datagrams as IPv4 pods, to the peer's
// PublicIP; in an IPv6-only network, in IPv6 datagrams to its PublicIPv6.
func (b *Backend) IPv6Carrier() backend.Family { return b.carrier }

// underlayFamily is the family of the tunnel's datagrams for cfg: IPv4
// whenever the network has IPv4 (so a dual-stack cluster keeps one
// underlay address per node, the PublicIP every udp node, Flannel's too,
// is reached at), IPv6 in an IPv6-only network, whose leases carry only a
// PublicIPv6.
func underlayFamily(cfg *subnet.Config) backend.Family {
	if cfg == nil || cfg.EnableIPv4 {
		return backend.IPv4
	}
	return backend.IPv6
}

// New builds the backend from opts; it touches neither the kernel nor
// starts goroutines.
func New(opts backend.Options) (backend.Backend, error) {
	return newBackend(opts)
}

func newBackend(opts backend.Options) (*Backend, error) {
	carrier := underlayFamily(opts.Config)
	if l := opts.Underlay.Local6(); carrier == backend.IPv6 && (!l.Is6() || l.Is4In6()) {
		return nil, errors.New("udp backend: the network is IPv6-only (EnableIPv4 false), so the tunnel runs over the IPv6 underlay, " +
			"but the underlay has no IPv6 address: add one, or give weftd --public-ipv6")
	}
	o := Options{Port: DefaultPort}
	if opts.Config != nil {
		if err := backend.DecodeOptions(opts.Config.Backend, &o); err != nil {
			return nil, fmt.Errorf("udp backend options: %w", err)
		}
	}
	if o.Port <= 0 || o.Port > 65535 {
		return nil, fmt.Errorf("udp backend: Port %d out of range; use 1-65535 (default %d)", o.Port, DefaultPort)
	}
	if o.Queues <= 0 {
		o.Queues = runtime.GOMAXPROCS(0)
	}
	o.Queues = min(o.Queues, maxQueues)
	if o.RxBatch <= 0 {
		o.RxBatch = defaultRxBatch
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Backend{
		log:      log.With("backend", subnet.BackendUDP),
		opts:     o,
		underlay: opts.Underlay,
		carrier:  carrier,
		now:      time.Now,
		peers:    make(map[netip.Prefix]subnet.Lease),
		closing:  make(chan struct{}),
		stopped:  make(chan struct{}),
	}
	if opts.Config != nil {
		b.cfg, b.network = opts.Config, opts.Config.Network
	}
	b.mtu = o.MTU
	if b.mtu <= 0 {
		b.mtu = opts.Underlay.MTU - b.overhead()
	}
	if b.mtu < 576 {
		return nil, fmt.Errorf("udp backend: MTU %d too small (underlay MTU %d); set Backend.MTU or fix the underlay", b.mtu, opts.Underlay.MTU)
	}
	if b.cfg != nil && b.cfg.EnableIPv6 && b.mtu < minMTU6 {
		return nil, fmt.Errorf("udp backend: MTU %d is below IPv6's minimum of %d (underlay MTU %d, tunnel overhead %d); the network enables IPv6: raise the underlay MTU or Backend.MTU",
			b.mtu, minMTU6, opts.Underlay.MTU, b.overhead())
	}
	b.table.Store(buildTable(b.peerNode(), nil, o.Port, false))
	return b, nil
}

// MTU is the pod MTU.
func (b *Backend) MTU() int { return b.mtu }

// overhead is what the tunnel adds to an inner packet on its underlay.
func (b *Backend) overhead() int {
	if b.carrier == backend.IPv6 {
		return Overhead6
	}
	return Overhead
}

// Prepare opens (or re-attaches to) the TUN device and the UDP sockets and
// probes the offloads. Its BackendData announces PartialChecksums when the
// TUN has the virtio header, else it is nil, as Flannel's udp leases are.
func (b *Backend) Prepare(ctx context.Context) (subnet.LeaseAttrs, error) {
	if err := b.open(); err != nil {
		return subnet.LeaseAttrs{}, err
	}
	attrs := b.underlay.LeaseAttrs(b.cfg)
	attrs.BackendData = b.leaseData()
	return attrs, nil
}

// open opens the device, the sockets and the stop eventfd once.
func (b *Backend) open() error {
	if b.dev != nil {
		return nil
	}
	select {
	case <-b.closing:
		return errors.New("udp backend: prepare after close")
	default:
	}
	cfg := tun.Config{Name: DeviceName, Queues: b.opts.Queues, Offload: !b.opts.DisableOffloads}
	dev, err := tun.Open(cfg)
	if errors.Is(err, tun.ErrIncompatible) {
		// Something else holds the name (an old single-queue device):
		// replace it.
		b.log.Warn("replacing incompatible device", "device", DeviceName, "err", err)
		if l, lerr := netlink.LinkByName(DeviceName); lerr == nil {
			_ = netlink.LinkDel(l)
		}
		dev, err = tun.Open(cfg)
	}
	if err != nil {
		return fmt.Errorf("udp backend: %w", err)
	}
	link, err := netlink.LinkByName(DeviceName)
	if err == nil && link.Attrs().MTU != b.mtu {
		err = netlink.LinkSetMTU(link, b.mtu)
	}
	if err == nil && link.Attrs().TxQLen < txQueueLen {
		// Raised, never lowered: an operator's longer queue stays.
		err = netlink.LinkSetTxQLen(link, txQueueLen)
	}
	if err == nil {
		err = netlink.LinkSetUp(link)
	}
	if err != nil {
		dev.Close()
		return fmt.Errorf("udp backend: set up %s: %w", DeviceName, err)
	}
	socks, err := b.listen(len(dev.Files))
	if err != nil {
		dev.Close()
		return err
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		dev.Close()
		closeFiles(socks)
		return fmt.Errorf("udp backend: eventfd: %w", err)
	}
	b.dev, b.socks, b.stop = dev, socks, os.NewFile(uintptr(efd), "weft-udp-stop")
	b.vnet, b.tso = dev.VnetHdr, dev.TSO
	if !b.opts.DisableOffloads {
		b.gso.Store(probeGSO(socks[0]))
		b.gro = true
		for _, f := range socks {
			if err := setSockopt(f, unix.SOL_UDP, unix.UDP_GRO, 1); err != nil {
				b.gro = false
			}
		}
	}
	b.stats = make([]counters, 2*len(dev.Files))
	b.log.Info("udp tunnel ready", "device", DeviceName, "underlay", b.carrier, "mtu", b.mtu, "port", b.opts.Port,
		"queues", len(dev.Files), "vnetHdr", b.vnet, "tso", b.tso, "gso", b.gso.Load(), "gro", b.gro,
		"partialChecksums", b.vnet)
	return nil
}

// leaseData is this node's BackendData: PartialChecksums needs the virtio
// header, which lets the receive path hand packets over as
// CHECKSUM_PARTIAL.
func (b *Backend) leaseData() json.RawMessage {
	if !b.vnet {
		return nil
	}
	data, _ := json.Marshal(BackendData{PartialChecksums: true}) // cannot fail
	return data
}

// listen opens n UDP sockets on the port of the underlay family, bound to
// the local address when there is one, sharing the port through
// SO_REUSEPORT. They are plain descriptors (see io_linux.go): blocking, so
// a full send buffer makes sendmmsg wait, and received with MSG_DONTWAIT
// after poll(2) says so.
func (b *Backend) listen(n int) ([]*os.File, error) {
	var sa unix.Sockaddr
	var addr netip.AddrPort
	if b.carrier == backend.IPv6 {
		// Bound to the local address, so datagrams leave with the source
		// address peers check against our lease's PublicIPv6. newBackend
		// made sure there is one.
		local := b.underlay.Local6()
		sa = &unix.SockaddrInet6{Port: b.opts.Port, Addr: local.As16()}
		addr = netip.AddrPortFrom(local, uint16(b.opts.Port))
	} else {
		sa4 := &unix.SockaddrInet4{Port: b.opts.Port}
		addr = netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(b.opts.Port))
		if local := b.underlay.Local(); local.Is4() {
			// Bound to the local address, so datagrams leave with the
			// source address peers check against our lease's PublicIP
			// (the same one, or what a 1:1 NAT in front of the node turns
			// it into).
			sa4.Addr = local.As4()
			addr = netip.AddrPortFrom(local, uint16(b.opts.Port))
		}
		sa = sa4
	}
	socks := make([]*os.File, 0, n)
	for range n {
		f, err := openSocket(sa)
		if err != nil {
			closeFiles(socks)
			return nil, fmt.Errorf("udp backend: listen on %s: %w", addr, err)
		}
		socks = append(socks, f)
	}
	return socks, nil
}

// openSocket opens one tunnel socket bound to sa (*unix.SockaddrInet4 or
// *unix.SockaddrInet6: the socket's family).
func openSocket(sa unix.Sockaddr) (*os.File, error) {
	_, v6 := sa.(*unix.SockaddrInet6)
	domain := unix.AF_INET
	if v6 {
		domain = unix.AF_INET6
	}
	s, err := unix.Socket(domain, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	err = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	if err == nil {
		// The inner MTU leaves room for the outer headers, so outer
		// datagrams fit the underlay; DF is left clear so a smaller hop
		// inside the underlay fragments instead of blackholing. IPv6
		// routers never fragment: with PMTUDISC_DONT this node's kernel
		// fragments a datagram larger than the path MTU it learnt from a
		// Packet Too Big, and the peer reassembles it.
		if v6 {
			err = unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DONT)
		} else {
			err = unix.SetsockoptInt(s, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT)
		}
	}
	if err == nil && v6 {
		// IPv6 datagrams only: no IPv4-mapped peers on this socket.
		err = unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
	}
	if err == nil {
		for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
			if unix.SetsockoptInt(s, unix.SOL_SOCKET, o[0], socketBuffer) != nil {
				_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, o[1], socketBuffer)
			}
		}
		err = unix.Bind(s, sa)
	}
	if err != nil {
		unix.Close(s)
		return nil, err
	}
	// Blocking, so os.NewFile leaves it out of the poller.
	return os.NewFile(uintptr(s), "udp"), nil
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		_ = f.Close()
	}
}

// fdOf is f's descriptor, valid until f is closed.
func fdOf(f *os.File) (ioFD, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := ioFD(-1)
	if err := rc.Control(func(u uintptr) { fd = ioFD(u) }); err != nil {
		return -1, err
	}
	return fd, nil
}

func setSockopt(f *os.File, level, opt, v int) error {
	fd, err := fdOf(f)
	if err != nil {
		return err
	}
	return unix.SetsockoptInt(int(fd), level, opt, v)
}

// probeGSO reports whether the kernel knows UDP_SEGMENT (Linux 4.18+).
func probeGSO(f *os.File) bool {
	fd, err := fdOf(f)
	if err != nil {
		return false
	}
	_, err = unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
	return err == nil
}

// Configure gives the device, per family the network enables,
// <subnet>.0/32 (<IPv6 subnet>::/128): the source of node-originated
// traffic into the tunnel, inside our subnet so peers accept it; and routes
// that family's pod network into it. A family the network does not use
// loses weft's route on the device (the device outlives weftd and a
// Network change).
func (b *Backend) Configure(ctx context.Context, own subnet.Lease) error {
	v4 := b.cfg == nil || b.cfg.EnableIPv4
	v6 := b.cfg != nil && b.cfg.EnableIPv6
	if v4 && !own.Subnet.Addr().Is4() {
		return fmt.Errorf("udp backend: subnet %s is not IPv4", own.Subnet)
	}
	if v6 && (!own.IPv6Subnet.Addr().Is6() || own.IPv6Subnet.Addr().Is4In6()) {
		return fmt.Errorf("udp backend: the network enables IPv6 but this node's lease has no IPv6 subnet (%s)", own.IPv6Subnet)
	}
	h := nl.New(nil)
	link, err := h.Netlink().LinkByName(DeviceName)
	if err != nil {
		return fmt.Errorf("udp backend: configure: %w (call Prepare first)", err)
	}
	type fam struct {
		family  int
		on      bool
		own     netip.Prefix
		network netip.Prefix
	}
	fams := []fam{{unix.AF_INET, v4, own.Subnet, b.network}, {unix.AF_INET6, v6, own.IPv6Subnet, netip.Prefix{}}}
	if v6 {
		fams[1].network = b.cfg.IPv6Network
	}
	for _, f := range fams {
		if !f.on {
			// A network that had this family before: its route must not
			// keep sending into the tunnel, nor its address stay.
			if err := deleteWeftRoutes(h, link, f.family); err != nil {
				return fmt.Errorf("udp backend: %w", err)
			}
			if err := h.EnsureAddrs(link, f.family, nil); err != nil {
				return fmt.Errorf("udp backend: %w", err)
			}
			continue
		}
		gw := f.own.Masked().Addr()
		if err := h.EnsureAddrs(link, f.family, []netip.Prefix{netip.PrefixFrom(gw, gw.BitLen())}); err != nil {
			return fmt.Errorf("udp backend: %w", err)
		}
		if f.network.IsValid() {
			if err := ensureNetworkRoute(h, link, f.family, nl.Route{Dst: f.network.Masked(), LinkIndex: link.Attrs().Index, Src: gw}); err != nil {
				return fmt.Errorf("udp backend: %w", err)
			}
		}
	}
	b.own, b.ownLease = own.Key().Masked(), own
	delete(b.peers, b.own)
	b.rebuild()
	b.log.Info("udp tunnel configured", "subnet", own.Subnet, "ipv6Subnet", own.IPv6Subnet, "network", b.network)
	return nil
}

// ensureNetworkRoute installs want, the pod network of family into the TUN,
// as the device's only weft route of that family. A route on the TUN to
// want's destination without weft's protocol is one an older weftd
// installed: the device is weft's, so that route is replaced too. A weft
// route on the TUN to another destination is the route of a previous
// Network (the device outlives weftd and a Network change): it is deleted,
// or the old network's traffic would still go into a tunnel no peer of it
// is behind. Other routes on the device (an operator's) are left alone.
func ensureNetworkRoute(h *nl.Handle, link netlink.Link, family int, want nl.Route) error {
	nrs, err := h.Netlink().RouteList(link, family)
	if err != nil {
		return fmt.Errorf("list routes of %s: %w", DeviceName, err)
	}
	for _, nr := range nrs {
		r, ok := nl.FromNetlinkRoute(nr)
		if !ok || nr.Priority != nl.WeftMetric(family) {
			continue
		}
		switch {
		case r.Dst == want.Dst && nr.Protocol != nl.RouteProtocol:
			if err := h.Netlink().RouteDel(&nr); err != nil && !nl.IsNotFound(err) {
				return fmt.Errorf("replace old route %s dev %s: %w", r.Dst, DeviceName, err)
			}
		case r.Dst != want.Dst && nr.Protocol == nl.RouteProtocol:
			if err := h.DeleteRoute(r); err != nil {
				return fmt.Errorf("delete the previous network's route: %w", err)
			}
		}
	}
	routes, err := h.WeftRoutes(family)
	if err != nil {
		return err
	}
	var have *nl.Route
	if r, ok := routes[want.Dst]; ok {
		have = &r
	}
	_, err = h.EnsureRoute(want, have)
	return err
}

// deleteWeftRoutes deletes weft's routes of family on the device.
func deleteWeftRoutes(h *nl.Handle, link netlink.Link, family int) error {
	nrs, err := h.Netlink().RouteList(link, family)
	if err != nil {
		return fmt.Errorf("list routes of %s: %w", DeviceName, err)
	}
	for _, nr := range nrs {
		if r, ok := nl.FromNetlinkRoute(nr); ok && nr.Protocol == nl.RouteProtocol && nr.Priority == nl.WeftMetric(family) {
			if err := h.DeleteRoute(r); err != nil {
				return fmt.Errorf("delete the previous network's route %s: %w", r.Dst, err)
			}
		}
	}
	return nil
}

// Sync replaces the peer table with peers. Nothing per peer lives in the
// kernel, so this is a table swap; the packet path never waits.
func (b *Backend) Sync(_ context.Context, peers []subnet.Lease) error {
	m := make(map[netip.Prefix]subnet.Lease, len(peers))
	for _, l := range peers {
		if k := l.Key().Masked(); k != b.own {
			m[k] = l
		}
	}
	b.peers = m
	b.rebuild()
	return nil
}

// Apply applies lease events to the peer table.
func (b *Backend) Apply(_ context.Context, events []subnet.Event) error {
	for _, e := range events {
		k := e.Lease.Key().Masked()
		if k == b.own {
			continue
		}
		switch e.Type {
		case subnet.EventAdded:
			b.peers[k] = e.Lease
		case subnet.EventRemoved:
			delete(b.peers, k)
		}
	}
	b.rebuild()
	return nil
}

// peerNode is this node as backend.CheckPeer judges leases against it.
func (b *Backend) peerNode() backend.PeerNode {
	return backend.PeerNode{Config: b.cfg, Own: b.ownLease, PublicIP: b.underlay.PublicIP, PublicIPv6: b.underlay.PublicIPv6,
		BackendType: subnet.BackendUDP, IPv6Carrier: b.carrier}
}

func (b *Backend) rebuild() {
	t := buildTable(b.peerNode(), b.peers, b.opts.Port, b.vnet)
	b.table.Store(t)
	b.log.Debug("peer table updated", "peers", len(t.statuses))
}

// Peers reports each known peer. Safe for concurrent use.
func (b *Backend) Peers() []backend.PeerStatus {
	return append([]backend.PeerStatus(nil), b.table.Load().statuses...)
}

// Run moves packets until ctx is done (or Close), then closes the device
// queues and sockets and returns nil. It needs Prepare; the file
// descriptors it uses are bound to the namespace Prepare ran in, so Run
// itself may run on any goroutine.
func (b *Backend) Run(ctx context.Context) error {
	if b.dev == nil {
		return errors.New("udp backend: Run before Prepare")
	}
	if !b.running.CompareAndSwap(false, true) {
		return errors.New("udp backend: Run called twice")
	}
	defer close(b.stopped)
	defer b.closeFDs()
	if b.isClosing() {
		return nil
	}
	stop, err := fdOf(b.stop)
	if err != nil {
		return fmt.Errorf("udp backend: %w", err)
	}
	errc := make(chan error, len(b.dev.Files))
	var wg sync.WaitGroup
	for i, f := range b.dev.Files {
		q, err := b.newQueue(i, f, b.socks[i], stop)
		if err != nil {
			b.closeIO()
			wg.Wait()
			return fmt.Errorf("udp backend: %w", err)
		}
		wg.Go(func() { errc <- q.run() })
	}
	select {
	case <-ctx.Done():
	case <-b.closing:
	case err = <-errc:
	}
	b.closeIO()
	wg.Wait()
	if err != nil {
		return fmt.Errorf("udp backend: packet path: %w", err)
	}
	return nil
}

func (b *Backend) isClosing() bool {
	select {
	case <-b.closing:
		return true
	default:
		return false
	}
}

// Close stops the packet path and closes the device queues and sockets;
// when Run is running, it returns once Run has closed them (so a new
// Backend attaching to the device does not share it with stale queues).
// The device and its route stay (the device is persistent), so a new
// Backend on this node picks the tunnel up again.
func (b *Backend) Close() error {
	b.closeIO()
	if b.running.Load() {
		<-b.stopped
	} else {
		b.closeFDs()
	}
	return nil
}

// closeIO tells the packet goroutines to stop: they poll the eventfd.
func (b *Backend) closeIO() {
	b.closeOnce.Do(func() {
		close(b.closing)
		if b.stop != nil {
			var one [8]byte
			binary.NativeEndian.PutUint64(one[:], 1)
			_, _ = b.stop.Write(one[:])
		}
	})
}

// closeFDs closes the descriptors, once no goroutine uses them.
func (b *Backend) closeFDs() {
	b.fdsOnce.Do(func() {
		if b.dev != nil {
			_ = b.dev.Close()
		}
		closeFiles(b.socks)
		if b.stop != nil {
			_ = b.stop.Close()
		}
	})
}

// Stats returns the counters, summed over queues. Safe for concurrent use.
func (b *Backend) Stats() Stats {
	s := Stats{Drops: make(map[string]uint64), GSO: b.gso.Load(), GRO: b.gro, TSO: b.tso}
	if b.dev != nil {
		s.Queues = len(b.dev.Files)
	}
	var sum [numCounters]uint64
	for i := range b.stats {
		for j := range sum {
			sum[j] += b.stats[i].v[j].Load()
		}
	}
	s.TxPackets, s.TxBytes = sum[cTxPackets], sum[cTxBytes]
	s.RxPackets, s.RxBytes = sum[cRxPackets], sum[cRxBytes]
	s.LocalPackets, s.ICMPSent = sum[cLocal], sum[cICMP]
	s.GSOSends, s.GROMerged = sum[cGSOSends], sum[cGROMerged]
	for r := wire.Reason(1); r < wire.NumReasons; r++ {
		if v := sum[cDrop+int(r)]; v != 0 {
			s.Drops[r.String()] = v
		}
	}
	return s
}

// queue is the packet path of one TUN queue and its UDP socket, both
// directions on one goroutine (see io_linux.go for why).
type queue struct {
	b        *Backend
	tunFD    ioFD
	sockFD   ioFD
	stopFD   ioFD
	rd       *tunReader
	tx       *txPath
	rx       *rxPath
	recv     *udpReceiver
	txc, rxc *counters
}

func (b *Backend) newQueue(i int, f, sock *os.File, stop ioFD) (*queue, error) {
	tfd, err := fdOf(f)
	if err != nil {
		return nil, err
	}
	sfd, err := fdOf(sock)
	if err != nil {
		return nil, err
	}
	readSize := b.mtu + wire.VirtioNetHdrLen
	if b.tso {
		readSize = wire.VirtioNetHdrLen + wire.MaxPacketLen
	}
	q := &queue{b: b, tunFD: tfd, sockFD: sfd, stopFD: stop, txc: &b.stats[2*i], rxc: &b.stats[2*i+1]}
	q.rd = newTUNReader(tfd, txReadBatch, readSize)
	write := func(p []byte) error { return writeTUN(tfd, p) }
	q.tx = newTxPath(b.vnet, b.now)
	q.tx.writeTUN = write
	q.tx.send = newUDPSender(sfd, txMsgs, txIovecs).send
	q.tx.gso = b.gso.Load
	q.tx.noGSO = b.disableGSO
	q.rx = &rxPath{vnet: b.vnet, writeTUN: write, writev: newTUNWriter(tfd, wire.MaxSegments+1).writev}
	if b.vnet {
		q.rx.coal = wire.NewCoalescer()
	}
	q.recv = newUDPReceiver(sfd, b.opts.RxBatch, maxDatagram)
	return q, nil
}

func (b *Backend) disableGSO(err error) {
	if b.gso.CompareAndSwap(true, false) {
		b.log.Warn("UDP GSO failed on send; falling back to one datagram per packet", "err", err)
	}
}

// run serves the queue until the stop eventfd is readable. poll(2) is
// level-triggered: each round takes one batch from whatever is ready, so
// neither direction starves the other.
func (q *queue) run() error {
	fds := []unix.PollFd{
		{Fd: int32(q.tunFD), Events: unix.POLLIN},
		{Fd: int32(q.sockFD), Events: unix.POLLIN},
		{Fd: int32(q.stopFD), Events: unix.POLLIN},
	}
	for {
		for i := range fds {
			fds[i].Revents = 0
		}
		if _, err := unix.Poll(fds, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			return fmt.Errorf("poll: %w", err)
		}
		if fds[2].Revents != 0 {
			return nil
		}
		if fds[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
			return fmt.Errorf("%s queue: poll events %#x", DeviceName, fds[0].Revents)
		}
		if fds[0].Revents&unix.POLLIN != 0 {
			if err := q.fromTUN(); err != nil {
				return err
			}
		}
		// POLLERR on a UDP socket is a queued ICMP error (a peer's port
		// unreachable): recvmmsg reports and clears it.
		if fds[1].Revents != 0 {
			if err := q.fromPeers(); err != nil {
				return err
			}
		}
	}
}

func (q *queue) fromTUN() error {
	n, err := q.rd.readBatch()
	if err != nil && n == 0 {
		return fmt.Errorf("read %s: %w", DeviceName, err)
	}
	t := q.b.table.Load()
	for i := range n {
		q.tx.handle(t, q.rd.bufs[i][:q.rd.ns[i]])
	}
	q.tx.flush()
	q.tx.cnt.publish(q.txc)
	return nil
}

func (q *queue) fromPeers() error {
	n, err := q.recv.readBatch()
	if err != nil {
		if isTransient(err) {
			return nil
		}
		return fmt.Errorf("receive on port %d: %w", q.b.opts.Port, err)
	}
	t := q.b.table.Load()
	for i := range n {
		src, sport, data, gsoSize, trunc := q.recv.message(i)
		if trunc {
			q.rx.cnt.drop(wire.ReasonShort, 1)
			continue
		}
		q.rx.handle(t, src, sport, data, gsoSize)
	}
	q.rx.flush()
	q.rx.cnt.publish(q.rxc)
	return nil
}

// isTransient reports a socket error that concerns one earlier datagram
// (an ICMP error the kernel queued), not the socket.
func isTransient(err error) bool {
	return errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.EHOSTUNREACH) ||
		errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EMSGSIZE)
}

// Device implements backend.Device.
func (b *Backend) Device() string { return DeviceName }
