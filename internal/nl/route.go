package nl

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Route is a route weft wants, in netip terms. It always lives in the main
// table with protocol RouteProtocol and metric 0 (IPv6: weftMetric6).
type Route struct {
	Dst       netip.Prefix // masked by the helpers
	Gw        netip.Addr   // zero for a device route
	LinkIndex int
	// OnLink sets RTNH_F_ONLINK: the gateway is reachable on the link even
	// though no address of the link covers it (vxlan's peerSubnet.0).
	OnLink bool
	// Src is the preferred source address; zero for none.
	Src netip.Addr
}

func (r Route) String() string {
	s := r.Dst.Masked().String()
	if r.Gw.IsValid() {
		s += " via " + r.Gw.String()
	}
	s += fmt.Sprintf(" dev #%d", r.LinkIndex)
	if r.OnLink {
		s += " onlink"
	}
	if r.Src.IsValid() {
		s += " src " + r.Src.String()
	}
	return s
}

func (r Route) netlink() *netlink.Route {
	dst := r.Dst.Masked()
	nr := &netlink.Route{
		Dst:       IPNet(dst),
		Gw:        IP(r.Gw),
		Src:       IP(r.Src),
		LinkIndex: r.LinkIndex,
		Protocol:  RouteProtocol,
		Table:     unix.RT_TABLE_MAIN,
		Family:    Family(dst.Addr()),
	}
	nr.Priority = WeftMetric(nr.Family)
	if !r.Gw.IsValid() {
		nr.Scope = netlink.SCOPE_LINK
	}
	if r.OnLink {
		nr.Flags = int(netlink.FLAG_ONLINK)
	}
	return nr
}

// weftMetric6 is the metric of weft's IPv6 routes: the kernel stores an
// IPv6 route added with metric 0 at IP6_RT_PRIO_USER (1024), so weft asks
// for that explicitly and recognises its routes by it, as it recognises its
// IPv4 routes by metric 0.
const weftMetric6 = 1024

// WeftMetric is the metric of weft's routes of family (0 for IPv4, 1024 for
// IPv6).
func WeftMetric(family int) int {
	if family == unix.AF_INET6 {
		return weftMetric6
	}
	return 0
}

// Family is the netlink address family of a (AF_INET for an IPv4-mapped
// address).
func Family(a netip.Addr) int {
	if a.Is4() || a.Is4In6() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// FromNetlinkRoute converts a kernel route to a Route; ok is false for routes
// this package cannot express (multipath, no destination family).
func FromNetlinkRoute(nr netlink.Route) (Route, bool) {
	if len(nr.MultiPath) != 0 {
		return Route{}, false
	}
	dst, ok := routeDst(nr)
	if !ok {
		return Route{}, false
	}
	r := Route{Dst: dst, LinkIndex: nr.LinkIndex, OnLink: nr.Flags&int(netlink.FLAG_ONLINK) != 0}
	if nr.Gw != nil {
		if r.Gw, ok = Addr(nr.Gw); !ok {
			return Route{}, false
		}
	}
	if nr.Src != nil {
		if r.Src, ok = Addr(nr.Src); !ok {
			return Route{}, false
		}
	}
	return r, true
}

// Equal reports whether r and o program the same forwarding.
func (r Route) Equal(o Route) bool {
	return r.Dst.Masked() == o.Dst.Masked() && r.Gw == o.Gw && r.LinkIndex == o.LinkIndex && r.OnLink == o.OnLink && r.Src == o.Src
}

// WeftRoutes lists the main-table routes of family that carry RouteProtocol,
// keyed by destination. Routes with the same destination but another metric
// are not weft's (weft always uses metric 0, IPv6 weftMetric6) and are
// skipped.
func (h *Handle) WeftRoutes(family int) (map[netip.Prefix]Route, error) {
	nrs, err := h.n().RouteListFiltered(family,
		&netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list weft routes: %w", err)
	}
	out := make(map[netip.Prefix]Route, len(nrs))
	for _, nr := range nrs {
		if nr.Priority != WeftMetric(nr.Family) {
			continue
		}
		if r, ok := FromNetlinkRoute(nr); ok {
			out[r.Dst] = r
		}
	}
	return out, nil
}

// ErrForeignRoute is wrapped by EnsureRoute's error when the main table
// holds a route to the destination (same metric) that weft did not install.
var ErrForeignRoute = errors.New("a route weft did not install is in the way")

// EnsureRoute installs want unless have, weft's route to the destination as
// the kernel holds it now (nil if none), already equals it. It reports
// whether it wrote. It replaces only weft's own route (RouteProtocol): when
// another route to the destination and metric is in the main table (the
// underlay's connected route, an operator's), it changes nothing and
// returns an error wrapping ErrForeignRoute that names that route.
func (h *Handle) EnsureRoute(want Route, have *Route) (bool, error) {
	if have != nil && have.Equal(want) {
		return false, nil
	}
	nr := want.netlink()
	if have != nil {
		// The kernel keys routes by destination, TOS and metric: the one
		// replaced is have, ours.
		if err := h.n().RouteReplace(nr); err != nil {
			return false, fmt.Errorf("replace route %s: %w", want, err)
		}
		return true, nil
	}
	// Nothing of ours there: add, never replace, so a route someone else
	// owns is left alone.
	err := h.n().RouteAdd(nr)
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, unix.EEXIST) {
		return false, fmt.Errorf("add route %s: %w", want, err)
	}
	other, err := h.routeAt(want.Dst.Masked())
	if err != nil {
		return false, fmt.Errorf("add route %s: %w", want, err)
	}
	if other == nil || other.Protocol == RouteProtocol {
		// Ours after all (the caller's snapshot was older), or gone.
		if err := h.n().RouteReplace(nr); err != nil {
			return false, fmt.Errorf("replace route %s: %w", want, err)
		}
		return true, nil
	}
	todo := "remove it, or change the network config so that pod subnets do not overlap it"
	if o, ok := FromNetlinkRoute(*other); ok && o.Equal(want) {
		// What Flannel's host-gw leaves behind when flanneld stops: the
		// same forwarding, without a protocol. Handing it over is the
		// operator's call (migrating-from-flannel.md).
		todo = fmt.Sprintf("it forwards as weft's would (a route Flannel left?): hand it to weft with `ip route replace %s proto %d`", h.describe(*other), RouteProtocol)
	}
	return false, fmt.Errorf("route %s: the main table already has %s (protocol %s), which weft did not install, and weft never replaces or deletes such a route: %w; %s",
		want.Dst.Masked(), h.describe(*other), other.Protocol, ErrForeignRoute, todo)
}

// routeAt returns the main-table route to dst with weft's metric, or nil.
func (h *Handle) routeAt(dst netip.Prefix) (*netlink.Route, error) {
	nrs, err := h.n().RouteListFiltered(Family(dst.Addr()),
		&netlink.Route{Dst: IPNet(dst), Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes to %s: %w", dst, err)
	}
	for _, nr := range nrs {
		if nr.Priority == WeftMetric(Family(dst.Addr())) {
			return &nr, nil
		}
	}
	return nil, nil
}

// describe renders a kernel route the way `ip route` would, roughly.
func (h *Handle) describe(nr netlink.Route) string {
	s := "route"
	if d, ok := routeDst(nr); ok {
		s = d.String()
	}
	if nr.Gw != nil {
		s += " via " + nr.Gw.String()
	}
	if l, err := h.n().LinkByIndex(nr.LinkIndex); err == nil {
		s += " dev " + l.Attrs().Name
	} else if nr.LinkIndex > 0 {
		s += fmt.Sprintf(" dev #%d", nr.LinkIndex)
	}
	return s
}

// DeleteRoute deletes the weft route r; a route that is already gone is not
// an error. Only a route carrying RouteProtocol matches: the kernel compares
// the protocol of a delete request, so a route weft did not install is never
// removed.
func (h *Handle) DeleteRoute(r Route) error {
	err := h.n().RouteDel(r.netlink())
	if err != nil && !IsNotFound(err) {
		return fmt.Errorf("delete route %s: %w", r, err)
	}
	return nil
}

// UnreachableMetric is the metric of weft's unreachable routes for the pod
// network. Every other route weft installs has metric 0, so a peer route,
// or the udp backend's route of the whole network into its device, wins
// over the unreachable one; it only catches what nothing else routes.
const UnreachableMetric = 4242

// UnreachableRoutes lists weft's unreachable routes of family (main table,
// RouteProtocol, UnreachableMetric) by destination.
func (h *Handle) UnreachableRoutes(family int) (map[netip.Prefix]bool, error) {
	nrs, err := h.n().RouteListFiltered(family,
		&netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNREACHABLE},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE|netlink.RT_FILTER_TYPE)
	if err != nil {
		return nil, fmt.Errorf("list weft unreachable routes: %w", err)
	}
	out := make(map[netip.Prefix]bool, len(nrs))
	for _, nr := range nrs {
		if d, ok := routeDst(nr); ok && nr.Priority == UnreachableMetric {
			out[d] = true
		}
	}
	return out, nil
}

// EnsureUnreachable makes weft's unreachable routes of family exactly dsts:
// the missing ones are added, the others deleted. Unreachable routes that
// are not weft's are left alone. It reports whether it changed anything.
func (h *Handle) EnsureUnreachable(family int, dsts []netip.Prefix) (bool, error) {
	have, err := h.UnreachableRoutes(family)
	if err != nil {
		return false, err
	}
	want := make(map[netip.Prefix]bool, len(dsts))
	changed := false
	for _, d := range dsts {
		d = d.Masked()
		want[d] = true
		if have[d] {
			continue
		}
		if err := h.n().RouteAdd(unreachable(d)); err != nil && !errors.Is(err, unix.EEXIST) {
			return changed, fmt.Errorf("add unreachable route %s: %w", d, err)
		}
		changed = true
	}
	for d := range have {
		if want[d] {
			continue
		}
		if err := h.n().RouteDel(unreachable(d)); err != nil && !IsNotFound(err) {
			return changed, fmt.Errorf("delete unreachable route %s: %w", d, err)
		}
		changed = true
	}
	return changed, nil
}

func unreachable(dst netip.Prefix) *netlink.Route {
	return &netlink.Route{
		Dst: IPNet(dst), Type: unix.RTN_UNREACHABLE, Protocol: RouteProtocol, Priority: UnreachableMetric,
		Table: unix.RT_TABLE_MAIN, Family: Family(dst.Addr()),
	}
}

// ---- neighbours (ARP/NDP) ----

// Neigh is one neighbour entry: IP → MAC on a link.
type Neigh struct {
	IP        netip.Addr
	MAC       net.HardwareAddr
	LinkIndex int
	// Permanent is NUD_PERMANENT: never expires, never re-resolved.
	Permanent bool
}

// Neighs lists the IPv4/IPv6 neighbour entries on link (family AF_INET or
// AF_INET6), keyed by IP.
func (h *Handle) Neighs(linkIndex, family int) (map[netip.Addr]Neigh, error) {
	ns, err := h.n().NeighList(linkIndex, family)
	if err != nil {
		return nil, fmt.Errorf("list neighbours of link %d: %w", linkIndex, err)
	}
	out := make(map[netip.Addr]Neigh, len(ns))
	for _, n := range ns {
		ip, ok := Addr(n.IP)
		if !ok || n.LinkIndex != linkIndex {
			continue
		}
		out[ip] = Neigh{IP: ip, MAC: n.HardwareAddr, LinkIndex: n.LinkIndex, Permanent: n.State&netlink.NUD_PERMANENT != 0}
	}
	return out, nil
}

// EnsureNeigh makes a permanent entry ip → mac on link unless have (the
// current entry, nil if none) already is one. It reports whether it wrote.
func (h *Handle) EnsureNeigh(linkIndex int, ip netip.Addr, mac net.HardwareAddr, have *Neigh) (bool, error) {
	if have != nil && have.Permanent && macEqual(have.MAC, mac) {
		return false, nil
	}
	err := h.n().NeighSet(&netlink.Neigh{
		LinkIndex:    linkIndex,
		Family:       Family(ip),
		State:        netlink.NUD_PERMANENT,
		Type:         unix.RTN_UNICAST,
		IP:           IP(ip),
		HardwareAddr: mac,
	})
	if err != nil {
		return false, fmt.Errorf("set neighbour %s lladdr %s: %w", ip, mac, err)
	}
	return true, nil
}

// DeleteNeigh deletes the neighbour entry for ip on link; a missing entry is
// not an error.
func (h *Handle) DeleteNeigh(linkIndex int, ip netip.Addr) error {
	err := h.n().NeighDel(&netlink.Neigh{LinkIndex: linkIndex, Family: Family(ip), IP: IP(ip)})
	if err != nil && !IsNotFound(err) {
		return fmt.Errorf("delete neighbour %s: %w", ip, err)
	}
	return nil
}

// ---- forwarding database (vxlan remote VTEPs) ----

// FDBEntry is one bridge forwarding entry on a vxlan device, added with
// NTF_SELF: frames for MAC are encapsulated towards Dst.
type FDBEntry struct {
	MAC       net.HardwareAddr
	Dst       netip.Addr
	LinkIndex int
}

// FDB lists the NTF_SELF forwarding entries of link that have a
// destination, keyed by MAC string. A MAC with several destinations (not
// something weft creates) is returned once per destination in extra.
func (h *Handle) FDB(linkIndex int) (byMAC map[string]FDBEntry, extra []FDBEntry, err error) {
	ns, err := h.n().NeighList(linkIndex, unix.AF_BRIDGE)
	if err != nil {
		return nil, nil, fmt.Errorf("list fdb of link %d: %w", linkIndex, err)
	}
	byMAC = make(map[string]FDBEntry, len(ns))
	for _, n := range ns {
		if n.LinkIndex != linkIndex || n.Flags&netlink.NTF_SELF == 0 {
			continue
		}
		dst, ok := Addr(n.IP)
		if !ok {
			continue
		}
		e := FDBEntry{MAC: n.HardwareAddr, Dst: dst, LinkIndex: linkIndex}
		if _, dup := byMAC[e.MAC.String()]; dup {
			extra = append(extra, e)
			continue
		}
		byMAC[e.MAC.String()] = e
	}
	return byMAC, extra, nil
}

// EnsureFDB makes frames for mac go to dst (permanent, NTF_SELF) unless have
// (the current entry for mac, nil if none) already does. A changed dst
// replaces the old entry rather than adding a second destination. It reports
// whether it wrote.
func (h *Handle) EnsureFDB(linkIndex int, mac net.HardwareAddr, dst netip.Addr, have *FDBEntry) (bool, error) {
	if have != nil && have.Dst == dst && macEqual(have.MAC, mac) {
		return false, nil
	}
	if have != nil {
		// NLM_F_REPLACE on a vxlan fdb entry only rewrites its first
		// remote; delete explicitly so no stale remote can survive.
		if err := h.DeleteFDB(*have); err != nil {
			return false, err
		}
	}
	err := h.n().NeighSet(fdbNeigh(FDBEntry{MAC: mac, Dst: dst, LinkIndex: linkIndex}))
	if err != nil {
		return false, fmt.Errorf("set fdb %s dst %s: %w", mac, dst, err)
	}
	return true, nil
}

// DeleteFDB deletes e; a missing entry is not an error.
func (h *Handle) DeleteFDB(e FDBEntry) error {
	err := h.n().NeighDel(fdbNeigh(e))
	if err != nil && !IsNotFound(err) {
		return fmt.Errorf("delete fdb %s dst %s: %w", e.MAC, e.Dst, err)
	}
	return nil
}

func fdbNeigh(e FDBEntry) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex:    e.LinkIndex,
		Family:       unix.AF_BRIDGE,
		Flags:        netlink.NTF_SELF,
		State:        netlink.NUD_PERMANENT,
		IP:           IP(e.Dst),
		HardwareAddr: e.MAC,
	}
}

func macEqual(a, b net.HardwareAddr) bool { return string(a) == string(b) }
