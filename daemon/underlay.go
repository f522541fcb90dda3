package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/backend"
)

// UnderlayChoice is how weftd picks its underlay interface and addresses,
// with flanneld's rules (its ipmatch.LookupExtIface and main.go):
//
//   - With none of Iface, IfaceRegex and IfaceCanReach: the interface
//     holding PublicIP, else (PublicIP is a NAT address, or unset) the
//     interface of the default route.
//   - Else, in this order, the first that matches: each Iface entry (an
//     interface name, or an address: the interface holding it), then each
//     IfaceRegex (the first interface with an IPv4 address the expression
//     matches, else the first whose name it matches), then IfaceCanReach
//     (the interface and source address of the kernel's route to it, as
//     `ip route get` says). An entry whose interface has no IPv4 address
//     does not match. None matching is an error naming what was tried.
//
// An interface matches when it has a global address of either family (an
// IPv6-only node has no IPv4 one); IfaceRegex is matched against IPv4
// addresses, then IPv6 addresses, then names.
//
// The local addresses (backend.Underlay.LocalIP and LocalIPv6, what
// tunnels are sent from) are the matched address for its family, else the
// interface's first global unicast address of each family (an IPv6 one
// that is not deprecated, tentative or failed duplicate address detection).
// PublicIP and PublicIPv6, the addresses peers reach this node at, default
// to them; set apart from them, the node is behind a 1:1 NAT. Which
// families the network needs is checked against its config (checkBackend).
type UnderlayChoice struct {
	Iface         []string
	IfaceRegex    []*regexp.Regexp
	IfaceCanReach netip.Addr
	PublicIP      netip.Addr
	PublicIPv6    netip.Addr
}

// findUnderlay resolves c in the current network namespace.
func findUnderlay(c UnderlayChoice) (backend.Underlay, error) {
	if c.PublicIP.IsValid() && !c.PublicIP.Unmap().Is4() {
		return backend.Underlay{}, fmt.Errorf("--public-ip %s is not an IPv4 address: give an IPv6 one with --public-ipv6", c.PublicIP)
	}
	if c.PublicIPv6.IsValid() && (!c.PublicIPv6.Is6() || c.PublicIPv6.Is4In6()) {
		return backend.Underlay{}, fmt.Errorf("--public-ipv6 %s is not an IPv6 address: give an IPv4 one with --public-ip", c.PublicIPv6)
	}
	c.PublicIP = c.PublicIP.Unmap()
	var (
		link  netlink.Link
		local netip.Addr
		err   error
	)
	if len(c.Iface) == 0 && len(c.IfaceRegex) == 0 && !c.IfaceCanReach.IsValid() {
		link, local, err = defaultUnderlay(c.PublicIP, c.PublicIPv6)
	} else {
		link, local, err = chooseUnderlay(c)
	}
	if err != nil {
		return backend.Underlay{}, err
	}
	attrs := link.Attrs()
	u := backend.Underlay{Link: attrs.Name, Index: attrs.Index, MTU: attrs.MTU, PublicIP: c.PublicIP, PublicIPv6: c.PublicIPv6}
	if local.Is4() {
		u.LocalIP = local
	} else if local.IsValid() {
		u.LocalIPv6 = local
	}
	if !u.LocalIP.IsValid() {
		if u.LocalIP, err = firstGlobal(link, netlink.FAMILY_V4); err != nil {
			return backend.Underlay{}, err
		}
	}
	if !u.LocalIPv6.IsValid() {
		if u.LocalIPv6, err = firstGlobal(link, netlink.FAMILY_V6); err != nil {
			return backend.Underlay{}, err
		}
	}
	if !u.PublicIP.IsValid() {
		u.PublicIP = u.LocalIP
	}
	if !u.PublicIPv6.IsValid() {
		u.PublicIPv6 = u.LocalIPv6
	}
	if !u.PublicIP.IsValid() && !u.PublicIPv6.IsValid() {
		return backend.Underlay{}, fmt.Errorf("interface %s has no IPv4 or IPv6 address: give --public-ip or --public-ipv6, or an --iface that has one", attrs.Name)
	}
	return u, nil
}

// defaultUnderlay is the interface of publicIP, else of the default route.
// (Flannel always takes the default route's interface; weft prefers the one
// holding PublicIP, so its tunnels leave from the address peers know. No
// interface holds a NAT address: the default route's then, as Flannel's.)
func defaultUnderlay(publicIP, publicIPv6 netip.Addr) (netlink.Link, netip.Addr, error) {
	for _, ip := range []netip.Addr{publicIP, publicIPv6} {
		if !ip.IsValid() {
			continue
		}
		if link, err := linkWithAddr(ip); err == nil {
			return link, ip, nil
		}
	}
	// The IPv4 default route, else the IPv6 one (an IPv6-only node).
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteList(nil, fam)
		if err != nil {
			return nil, netip.Addr{}, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if isDefault(r.Dst) && r.LinkIndex > 0 {
				link, err := netlink.LinkByIndex(r.LinkIndex)
				return link, netip.Addr{}, err
			}
		}
	}
	return nil, netip.Addr{}, errors.New("no default route to pick the underlay interface from: give --iface, --iface-regex, --iface-can-reach, --public-ip or --public-ipv6")
}

// isDefault reports whether dst (as netlink lists it: nil or a zero-length
// prefix) is a default route's.
func isDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0
}

// chooseUnderlay tries c's Iface, IfaceRegex and IfaceCanReach in order.
func chooseUnderlay(c UnderlayChoice) (netlink.Link, netip.Addr, error) {
	var tried []string
	usable := func(link netlink.Link, local netip.Addr) bool {
		if local.IsValid() {
			return true
		}
		v4, err4 := firstGlobal(link, netlink.FAMILY_V4)
		v6, err6 := firstGlobal(link, netlink.FAMILY_V6)
		return err4 == nil && err6 == nil && (v4.IsValid() || v6.IsValid())
	}
	for _, s := range c.Iface {
		link, local, err := ifaceEntry(s)
		if err == nil && !usable(link, local) {
			err = fmt.Errorf("%s has no IPv4 or IPv6 address", link.Attrs().Name)
		}
		if err == nil {
			return link, local, nil
		}
		tried = append(tried, fmt.Sprintf("--iface %s (%v)", s, err))
	}
	if len(c.IfaceRegex) > 0 {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, netip.Addr{}, fmt.Errorf("list links: %w", err)
		}
		for _, re := range c.IfaceRegex {
			link, local, why := regexEntry(re, links)
			if link != nil && usable(link, local) {
				return link, local, nil
			}
			if link != nil {
				why = link.Attrs().Name + " matches but has no IPv4 or IPv6 address"
			}
			tried = append(tried, fmt.Sprintf("--iface-regex %s (%s)", re, why))
		}
	}
	if c.IfaceCanReach.IsValid() {
		link, local, err := canReach(c.IfaceCanReach)
		if err == nil && !usable(link, local) {
			err = fmt.Errorf("%s has no IPv4 or IPv6 address", link.Attrs().Name)
		}
		if err == nil {
			return link, local, nil
		}
		tried = append(tried, fmt.Sprintf("--iface-can-reach %s (%v)", c.IfaceCanReach, err))
	}
	return nil, netip.Addr{}, fmt.Errorf("no underlay interface matches: tried %s; give an --iface that exists on this node", strings.Join(tried, ", "))
}

// ifaceEntry resolves one --iface value: an address (the interface holding
// it, and that address) or a name.
func ifaceEntry(s string) (netlink.Link, netip.Addr, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		link, err := linkWithAddr(ip)
		return link, ip.Unmap(), err
	}
	link, err := netlink.LinkByName(s)
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("no such interface: %w", err)
	}
	return link, netip.Addr{}, nil
}

// regexEntry finds the first link with an IPv4 address re matches (and
// that address), else with such an IPv6 address, else the first whose name
// it matches; why says why none.
func regexEntry(re *regexp.Regexp, links []netlink.Link) (netlink.Link, netip.Addr, string) {
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		for _, l := range links {
			addrs, err := netlink.AddrList(l, fam)
			if err != nil {
				continue
			}
			for _, a := range addrs {
				if ip, ok := netip.AddrFromSlice(a.IP); ok && usableAddr(a, fam) && re.MatchString(ip.Unmap().String()) {
					return l, ip.Unmap(), ""
				}
			}
		}
	}
	var names []string
	for _, l := range links {
		if re.MatchString(l.Attrs().Name) {
			return l, netip.Addr{}, ""
		}
		names = append(names, l.Attrs().Name)
	}
	return nil, netip.Addr{}, "matches no interface's address or name among " + strings.Join(names, ", ")
}

// canReach is the link and source address of the kernel's route to dst.
func canReach(dst netip.Addr) (netlink.Link, netip.Addr, error) {
	routes, err := netlink.RouteGet(net.IP(dst.AsSlice()))
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("no route: %w", err)
	}
	for _, r := range routes {
		link, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			return nil, netip.Addr{}, fmt.Errorf("link of the route: %w", err)
		}
		src, _ := netip.AddrFromSlice(r.Src)
		return link, src.Unmap(), nil
	}
	return nil, netip.Addr{}, errors.New("no route")
}

// firstGlobal is the first global unicast address of family on link that
// is usable now (usableAddr); zero when there is none.
func firstGlobal(link netlink.Link, family int) (netip.Addr, error) {
	addrs, err := netlink.AddrList(link, family)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("list addresses of %s: %w", link.Attrs().Name, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && usableAddr(a, family) {
			return ip.Unmap(), nil
		}
	}
	return netip.Addr{}, nil
}

// usableAddr reports whether a is a global unicast address of family that
// can carry traffic now: an IPv6 address that is deprecated, tentative or
// failed duplicate address detection cannot (nor can a link-local one).
func usableAddr(a netlink.Addr, family int) bool {
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return false
	}
	ip = ip.Unmap()
	if family == netlink.FAMILY_V6 && (ip.Is4() || a.Flags&(unix.IFA_F_DEPRECATED|unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0) {
		return false
	}
	return (family == netlink.FAMILY_V6 || ip.Is4()) && ip.IsGlobalUnicast()
}

func linkWithAddr(ip netip.Addr) (netlink.Link, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IP.Equal(net.IP(ip.AsSlice())) {
			return netlink.LinkByIndex(a.LinkIndex)
		}
	}
	return nil, fmt.Errorf("no interface has address %s", ip)
}
