package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/weftnet/weft/subnet"
)

// Underlay is the node's link to the other nodes.
type Underlay struct {
	// Link is the name of the underlay interface (e.g. eth0).
	Link string
	// Index is its interface index.
	Index int
	// PublicIP is the IPv4 address peers reach this node at; zero when the
	// underlay has none (an IPv6-only node).
	PublicIP netip.Addr
	// LocalIP is the link's address tunnels are sent from and received at
	// (Flannel's interface address). It differs from PublicIP on a node
	// behind a 1:1 NAT; zero means PublicIP (see Local).
	LocalIP netip.Addr
	// PublicIPv6 is the IPv6 address peers reach this node at (Flannel's
	// PublicIPv6); zero when the underlay has none.
	PublicIPv6 netip.Addr
	// LocalIPv6 is the link's IPv6 address tunnels over IPv6 use; zero
	// means PublicIPv6 (see Local6).
	LocalIPv6 netip.Addr
	// MTU of the underlay link.
	MTU int
}

// Local is the address the node's tunnels use on the underlay link:
// LocalIP, or PublicIP when LocalIP is unset.
func (u Underlay) Local() netip.Addr {
	if u.LocalIP.IsValid() {
		return u.LocalIP
	}
	return u.PublicIP
}

// BehindNAT reports whether the node is behind a NAT: peers reach it at a
// PublicIP that is not its local address.
func (u Underlay) BehindNAT() bool { return u.LocalIP.IsValid() && u.LocalIP != u.PublicIP }

// Local6 is the IPv6 address the node's tunnels use on the underlay link:
// LocalIPv6, or PublicIPv6 when LocalIPv6 is unset.
func (u Underlay) Local6() netip.Addr {
	if u.LocalIPv6.IsValid() {
		return u.LocalIPv6
	}
	return u.PublicIPv6
}

// BehindNAT6 reports whether peers reach the node at a PublicIPv6 that is
// not its local IPv6 address.
func (u Underlay) BehindNAT6() bool {
	return u.LocalIPv6.IsValid() && u.LocalIPv6 != u.PublicIPv6
}

// LeaseAttrs is what a backend whose pod traffic of each family goes over
// the underlay address of that family publishes, before its backend data:
// PublicIP when the network enables IPv4, PublicIPv6 when it enables IPv6,
// as Flannel publishes them (a family the network does not use is left
// out, so its lease reads "PublicIPv6":null).
func (u Underlay) LeaseAttrs(cfg *subnet.Config) subnet.LeaseAttrs {
	var a subnet.LeaseAttrs
	if cfg == nil || cfg.EnableIPv4 {
		a.PublicIP = u.PublicIP
	}
	if cfg != nil && cfg.EnableIPv6 {
		a.PublicIPv6 = u.PublicIPv6
	}
	return a
}

// Options is what every backend constructor gets.
type Options struct {
	Logger   *slog.Logger
	Underlay Underlay
	// Config is the network config; Config.Backend holds this backend's
	// options as raw JSON.
	Config *subnet.Config
	// StateDir is the node's state directory (weftd --state-dir, mode
	// 0700), where a backend keeps what must survive restarts (the
	// wireguard private key). Empty when the node has none.
	StateDir string
}

// Constructor builds a backend. It must not touch the kernel or start
// goroutines: that happens in Prepare and Run.
type Constructor func(Options) (Backend, error)

// Backend programs one node's data plane. Methods are called from a single
// goroutine of the daemon (never concurrently with each other), except Run,
// which runs on its own goroutine, and Peers, which may be called at any
// time. All of them are called from the network namespace weftd runs in.
type Backend interface {
	// Prepare creates or adopts the node-level kernel state that does not
	// depend on the subnet (e.g. the VXLAN devices) and returns what to
	// publish in this node's lease: the underlay addresses peers reach it
	// at (PublicIP, PublicIPv6: see Underlay.LeaseAttrs) and the
	// BackendData and BackendV6Data (nil if none). BackendType is the
	// daemon's to set. A device that exists with compatible settings is
	// reused, not re-created, so a restart does not disturb traffic.
	// Prepare is idempotent.
	Prepare(ctx context.Context) (subnet.LeaseAttrs, error)

	// Configure is called once this node holds own, and again whenever the
	// lease changes (e.g. re-acquired on another subnet). It assigns what
	// depends on the subnet, e.g. the device address.
	Configure(ctx context.Context, own subnet.Lease) error

	// MTU is the MTU pods must use (underlay MTU minus encapsulation
	// overhead). Valid after Prepare.
	MTU() int

	// Sync is a full pass: it makes the kernel state match peers exactly,
	// adding what is missing, replacing what differs and deleting weft state
	// for subnets not in peers (including state left from before a restart).
	// peers never contains this node's own lease. It must be idempotent and
	// must not disturb entries that are already right.
	Sync(ctx context.Context, peers []subnet.Lease) error

	// Apply applies a batch of changes incrementally. EventAdded of a known
	// subnet replaces its state when it changed. Errors for one peer do not
	// stop the others; the next Sync repairs anything left.
	Apply(ctx context.Context, events []subnet.Event) error

	// Run does the backend's background work (the udp packet path) until ctx
	// is done. Kernel backends return nil when ctx is done. An error
	// wrapping ErrLeaseDataChanged asks for a new backend: the BackendData
	// Prepare returned is out of date.
	Run(ctx context.Context) error

	// Peers reports the state of each known peer. Safe for concurrent use.
	Peers() []PeerStatus

	// Close releases userspace resources. Kernel state is left in place so
	// that a restart keeps traffic flowing. Safe to call more than once.
	Close() error
}

// ErrLeaseDataChanged, returned (wrapped) by Run, means the node's
// BackendData changed (e.g. its wireguard key was rotated): the daemon closes
// the backend, builds and prepares a new one and republishes the lease with
// its BackendData, as for a changed network config.
var ErrLeaseDataChanged = errors.New("backend data changed")

// PeerState is how a backend handled one peer.
type PeerState string

const (
	// PeerProgrammed means the kernel holds the peer's state.
	PeerProgrammed PeerState = "programmed"
	// PeerRefused means the backend declined the peer; Reason says why.
	PeerRefused PeerState = "refused"
	// PeerFailed means programming failed; the next Sync retries.
	PeerFailed PeerState = "failed"
)

// PeerStatus is one peer as a backend sees it. State is the peer's as a
// whole: programmed only when every family the network enables is;
// otherwise the state of a family that is not (failed before refused), with
// Reason saying which family and why.
type PeerStatus struct {
	Subnet     netip.Prefix `json:"subnet"`
	PublicIP   netip.Addr   `json:"publicIP"`
	IPv6Subnet netip.Prefix `json:"ipv6Subnet,omitzero"`
	PublicIPv6 netip.Addr   `json:"publicIPv6,omitzero"`
	State      PeerState    `json:"state"`
	Reason     string       `json:"reason,omitempty"`
}

// Key is the peer's key: Subnet, or IPv6Subnet for an IPv6-only peer (as
// subnet.Lease.Key).
func (s PeerStatus) Key() netip.Prefix {
	if s.Subnet.IsValid() {
		return s.Subnet
	}
	return s.IPv6Subnet
}

// DecodeOptions decodes raw (the config's "Backend" object) into v, which
// holds a backend's defaults already; unknown keys are ignored as Flannel
// does.
func DecodeOptions(raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		return nil
	}
	return json.Unmarshal(raw, v)
}

// PeerFiltered is implemented by backends whose encapsulated traffic should
// be accepted only from current peers' PublicIPs. The daemon then keeps a
// firewall filter on port in step with the peer set, updated before the
// backend programs a new peer.
type PeerFiltered interface {
	// FilterPort returns the UDP port to filter and whether the filter is on.
	FilterPort() (port uint16, on bool)
}

// Tunneled is implemented by backends that carry pod traffic in UDP to one
// port on every node (vxlan, udp). The daemon drops forwarded traffic from
// the pod network to that port, so a pod cannot have a tunnel packet it
// crafted leave (masqueraded) with this node's address.
type Tunneled interface {
	TunnelPort() uint16
}

// RepairCounter is implemented by backends that count the kernel changes
// their full passes (Sync) had to make: drift someone caused, or changes the
// incremental path missed. Safe for concurrent use.
type RepairCounter interface {
	Repairs() uint64
}

// Device is implemented by backends that carry pod traffic over one device
// (weft.<VNI>, weft-udp, or the underlay for host-gw), so status and
// diagnosis can name it.
type Device interface {
	Device() string
}

// RequireAddrs checks that u has an underlay address of each family cfg
// enables, as a backend that carries each family over the underlay of the
// same family needs (name prefixes the error). A node without one is told
// what to do.
func (u Underlay) RequireAddrs(name string, cfg *subnet.Config) error {
	link := u.Link
	if link == "" {
		link = "link"
	}
	if (cfg == nil || cfg.EnableIPv4) && !u.PublicIP.Unmap().Is4() {
		return fmt.Errorf("%s: the network enables IPv4 but the underlay %s has no IPv4 address: add one, or give weftd --public-ip", name, link)
	}
	if cfg != nil && cfg.EnableIPv6 && (!u.PublicIPv6.Is6() || u.PublicIPv6.Is4In6()) {
		return fmt.Errorf("%s: the network enables IPv6 (EnableIPv6) but the underlay %s has no IPv6 address: add one, or give weftd --public-ipv6", name, link)
	}
	return nil
}

// IPv6Carrier is implemented by backends that carry IPv6 pod traffic over
// an underlay of another family (the udp backend: IPv6 pods in IPv4
// datagrams), so peers are judged by the right address (PeerNode.IPv6Carrier).
// Backends that do not implement it carry each family over its own.
type IPv6Carrier interface {
	IPv6Carrier() Family
}
