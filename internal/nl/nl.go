package nl

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteProtocol marks every route weft installs (rtm_protocol). 87 (0x57,
// ASCII 'W') is not assigned in iproute2's rt_protos nor used by the common
// routing daemons (bird 12, zebra 11, bgp 186, calico 80, ...). Full passes
// delete only routes carrying it.
const RouteProtocol netlink.RouteProtocol = 0x57

// Handle issues netlink requests; see the package doc for which network
// namespace they act in. The zero value is ready to use (calling thread's
// namespace). A Handle is safe for concurrent use when the underlying
// *netlink.Handle is nil or used by one goroutine at a time.
type Handle struct {
	nh *netlink.Handle
	// requests counts the netlink requests made through the handle
	// (Requests), opened those that opened a socket of their own
	// (SocketsOpened).
	requests, opened atomic.Uint64
}

// New returns a Handle over nh; nil means per-request sockets in the calling
// thread's network namespace.
func New(nh *netlink.Handle) *Handle { return &Handle{nh: nh} }

// Open returns a Handle over one rtnetlink socket opened now, in the calling
// thread's network namespace, which it keeps acting in whatever thread
// calls it later. A request then costs a send and a receive; a per-request
// socket (New(nil)) adds its socket, bind, getsockname and close, which
// made 3000 deletes take twice as long. Close releases the socket.
func Open() (*Handle, error) {
	h := New(nil)
	if err := h.Persist(); err != nil {
		return nil, err
	}
	return h, nil
}

// Persist gives a per-request Handle one socket, opened now in the calling
// thread's network namespace, as Open's (a backend calls it in Prepare,
// the namespace every later method is called in). It does nothing when h
// already has one. Like Close, it is not to be called while another
// goroutine uses h.
func (h *Handle) Persist() error {
	if h.nh != nil {
		return nil
	}
	nh, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open rtnetlink socket: %w", err)
	}
	h.nh = nh
	return nil
}

// Close closes the socket of a Handle from Open, Persist or New with a
// handle; later requests open one each again. It does nothing for
// per-request sockets.
func (h *Handle) Close() {
	if h != nil && h.nh != nil {
		h.nh.Close()
		h.nh = nil
	}
}

func (h *Handle) n() *netlink.Handle {
	if h != nil {
		h.requests.Add(1)
	}
	if h == nil || h.nh == nil {
		if h != nil {
			h.opened.Add(1)
		}
		// A zero netlink.Handle opens a socket per request in the current
		// thread's namespace, exactly like netlink's package-level functions.
		return &netlink.Handle{}
	}
	return h.nh
}

// SocketsOpened returns how many of h's requests opened a socket of their
// own (all of them for New(nil), none for Open).
func (h *Handle) SocketsOpened() uint64 { return h.opened.Load() }

// Requests returns how many netlink requests (a dump, a write) h has made:
// what tests bound to keep a pass's kernel work proportional to its change.
func (h *Handle) Requests() uint64 { return h.requests.Load() }

// Netlink returns the underlying handle for calls this package does not wrap.
func (h *Handle) Netlink() *netlink.Handle { return h.n() }

// IsNotFound reports whether err means "no such link/route/entry".
func IsNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) ||
		errors.Is(err, unix.ENODEV)
}

// maxDumpAttempts bounds retries of a dump the kernel interrupted.
const maxDumpAttempts = 5

// retryDump calls dump again while the kernel says it was interrupted
// (NLM_F_DUMP_INTR: the table changed while it was read, so the result may
// miss entries), at most maxDumpAttempts times, as CNI's netlinksafe does.
// Any address change in the namespace interrupts an address dump of the
// family, e.g. a pod veth's link-local address during a dual-stack dump.
func retryDump[T any](dump func() (T, error)) (T, error) {
	for attempt := 1; ; attempt++ {
		v, err := dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || attempt == maxDumpAttempts {
			return v, err
		}
	}
}

// ---- conversions between net/netip and the net types netlink uses ----

// IP converts a to a net.IP (4 bytes for IPv4); nil for the zero Addr.
func IP(a netip.Addr) net.IP {
	if !a.IsValid() {
		return nil
	}
	return net.IP(a.Unmap().AsSlice())
}

// Addr converts ip to a netip.Addr, unmapping IPv4-in-IPv6; ok is false for
// nil or malformed input.
func Addr(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

// IPNet converts p to a *net.IPNet, keeping host bits (10.0.0.1/24 stays
// so, as an address needs); mask p first for a route destination. nil for the
// zero Prefix.
func IPNet(p netip.Prefix) *net.IPNet {
	if !p.IsValid() {
		return nil
	}
	a := p.Addr().Unmap()
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(p.Bits(), a.BitLen())}
}

// Prefix converts n to a netip.Prefix, keeping host bits (an address like
// 10.0.0.1/24 stays so); ok is false for nil or malformed input.
func Prefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := Addr(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits != a.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones), true
}

// routeDst returns r's destination, treating a nil Dst as the default route
// of r's family.
func routeDst(r netlink.Route) (netip.Prefix, bool) {
	if r.Dst == nil {
		if r.Family == unix.AF_INET6 {
			return netip.PrefixFrom(netip.IPv6Unspecified(), 0), true
		}
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0), true
	}
	p, ok := Prefix(r.Dst)
	return p.Masked(), ok
}

// ---- links ----

// EnsureLink makes sure a link named want.Attrs().Name exists and returns it
// as the kernel reports it. An existing link of the same type for which
// compatible returns true is reused untouched (created false); any other link
// of that name is deleted and want is created in its place. compatible may be
// nil, meaning "same type is enough". Attributes such as MTU, MAC and up state
// are not reconciled here: use EnsureLinkState.
func (h *Handle) EnsureLink(want netlink.Link, compatible func(have netlink.Link) bool) (netlink.Link, bool, error) {
	name := want.Attrs().Name
	have, err := h.n().LinkByName(name)
	switch {
	case err == nil:
		if have.Type() == want.Type() && (compatible == nil || compatible(have)) {
			return have, false, nil
		}
		if err := h.n().LinkDel(have); err != nil && !IsNotFound(err) {
			return nil, false, fmt.Errorf("delete incompatible link %s: %w", name, err)
		}
	case !IsNotFound(err):
		return nil, false, fmt.Errorf("look up link %s: %w", name, err)
	}
	if err := h.n().LinkAdd(want); err != nil {
		return nil, false, fmt.Errorf("add link %s: %w", name, err)
	}
	got, err := h.n().LinkByName(name)
	if err != nil {
		return nil, true, fmt.Errorf("look up new link %s: %w", name, err)
	}
	return got, true, nil
}

// LinkState is what EnsureLinkState reconciles; zero fields are left alone.
type LinkState struct {
	MAC net.HardwareAddr
	MTU int
	Up  bool
}

// EnsureLinkState sets the link's MAC, MTU and up state where they differ
// from want, and returns the refreshed link.
func (h *Handle) EnsureLinkState(link netlink.Link, want LinkState) (netlink.Link, error) {
	a := link.Attrs()
	if len(want.MAC) != 0 && !slices.Equal(a.HardwareAddr, want.MAC) {
		if err := h.n().LinkSetHardwareAddr(link, want.MAC); err != nil {
			return nil, fmt.Errorf("set %s address %s: %w", a.Name, want.MAC, err)
		}
	}
	if want.MTU != 0 && a.MTU != want.MTU {
		if err := h.n().LinkSetMTU(link, want.MTU); err != nil {
			return nil, fmt.Errorf("set %s mtu %d: %w", a.Name, want.MTU, err)
		}
	}
	if want.Up && a.Flags&net.FlagUp == 0 {
		if err := h.n().LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("set %s up: %w", a.Name, err)
		}
	}
	got, err := h.n().LinkByIndex(a.Index)
	if err != nil {
		return nil, fmt.Errorf("look up link %s: %w", a.Name, err)
	}
	return got, nil
}

// DeleteLink deletes the named link; a missing link is not an error.
func (h *Handle) DeleteLink(name string) error {
	l, err := h.n().LinkByName(name)
	if err != nil {
		if IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("look up link %s: %w", name, err)
	}
	if err := h.n().LinkDel(l); err != nil && !IsNotFound(err) {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	return nil
}

// ---- addresses ----

// EnsureAddrs makes the addresses of family (unix.AF_INET, AF_INET6, or
// AF_UNSPEC for both) on link exactly want: missing ones are added, others
// deleted, with one listing whatever the family. IPv6 link-local addresses
// are never touched. Every prefix in want must be of family.
//
// IPv6 addresses are added with IFA_F_NODAD: weft's addresses are unique by
// construction (a node's lease, a pod's IPAM reservation), and duplicate
// address detection would only hold each one tentative, unusable, for a
// second or more, and fail it outright on a bridge port in hairpin mode,
// which echoes the node's own probe back.
func (h *Handle) EnsureAddrs(link netlink.Link, family int, want []netip.Prefix) error {
	name := link.Attrs().Name
	have, err := retryDump(func() ([]netlink.Addr, error) { return h.n().AddrList(link, family) })
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", name, err)
	}
	present := make(map[netip.Prefix]bool, len(have))
	for _, a := range have {
		p, ok := Prefix(a.IPNet)
		if !ok || p.Addr().IsLinkLocalUnicast() {
			continue
		}
		if slices.Contains(want, p) {
			present[p] = true
			continue
		}
		if err := h.n().AddrDel(link, &a); err != nil && !IsNotFound(err) && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("delete address %s from %s: %w", p, name, err)
		}
	}
	for _, p := range want {
		if present[p] {
			continue
		}
		a := &netlink.Addr{IPNet: IPNet(p)}
		if !p.Addr().Unmap().Is4() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.n().AddrAdd(link, a); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add address %s to %s: %w", p, name, err)
		}
	}
	return nil
}

// Addrs lists the prefixes (with host bits, e.g. 198.18.0.10/24) of family
// (AF_INET, AF_INET6, or AF_UNSPEC for both) on link, skipping IPv6
// link-local addresses.
func (h *Handle) Addrs(link netlink.Link, family int) ([]netip.Prefix, error) {
	have, err := retryDump(func() ([]netlink.Addr, error) { return h.n().AddrList(link, family) })
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", link.Attrs().Name, err)
	}
	var out []netip.Prefix
	for _, a := range have {
		if p, ok := Prefix(a.IPNet); ok && !p.Addr().IsLinkLocalUnicast() {
			out = append(out, p)
		}
	}
	return out, nil
}

// ConnectedPrefixes returns the subnets directly reachable through link:
// the prefixes of its addresses of family plus main-table routes on it that
// have no gateway (scope link), excluding weft's own routes. A peer address
// inside one of them is on the same L2 segment.
func (h *Handle) ConnectedPrefixes(link netlink.Link, family int) ([]netip.Prefix, error) {
	addrs, err := h.Addrs(link, family)
	if err != nil {
		return nil, err
	}
	out := make([]netip.Prefix, 0, len(addrs))
	for _, p := range addrs {
		out = append(out, p.Masked())
	}
	routes, err := h.n().RouteListFiltered(family,
		&netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes of %s: %w", link.Attrs().Name, err)
	}
	for _, r := range routes {
		if r.Gw != nil || r.Scope != netlink.SCOPE_LINK || r.Protocol == RouteProtocol || r.Dst == nil {
			continue
		}
		if p, ok := routeDst(r); ok && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}
