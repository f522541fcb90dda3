package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"

	"github.com/vishvananda/netlink"

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
// The local address (backend.Underlay.LocalIP, what tunnels are sent from)
// is the matched address, else the interface's first global unicast IPv4
// address. PublicIP, the address peers reach this node at, defaults to it;
// set apart from it, the node is behind a 1:1 NAT.
type UnderlayChoice struct {
	Iface         []string
	IfaceRegex    []*regexp.Regexp
	IfaceCanReach netip.Addr
	PublicIP      netip.Addr
}

// findUnderlay resolves c in the current network namespace.
func findUnderlay(c UnderlayChoice) (backend.Underlay, error) {
	var (
		link  netlink.Link
		local netip.Addr
		err   error
	)
	if len(c.Iface) == 0 && len(c.IfaceRegex) == 0 && !c.IfaceCanReach.IsValid() {
		link, local, err = defaultUnderlay(c.PublicIP)
	} else {
		link, local, err = chooseUnderlay(c)
	}
	if err != nil {
		return backend.Underlay{}, err
	}
	attrs := link.Attrs()
	if !local.IsValid() {
		if local, err = firstIPv4(link); err != nil {
			return backend.Underlay{}, err
		}
	}
	u := backend.Underlay{Link: attrs.Name, Index: attrs.Index, MTU: attrs.MTU, LocalIP: local, PublicIP: c.PublicIP}
	if !u.PublicIP.IsValid() {
		u.PublicIP = local
	}
	return u, nil
}

// defaultUnderlay is the interface of publicIP, else of the default route.
// (Flannel always takes the default route's interface; weft prefers the one
// holding PublicIP, so its tunnels leave from the address peers know. No
// interface holds a NAT address: the default route's then, as Flannel's.)
func defaultUnderlay(publicIP netip.Addr) (netlink.Link, netip.Addr, error) {
	if publicIP.IsValid() {
		if link, err := linkWithAddr(publicIP); err == nil {
			return link, publicIP, nil
		}
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.LinkIndex > 0 {
			link, err := netlink.LinkByIndex(r.LinkIndex)
			return link, netip.Addr{}, err
		}
	}
	return nil, netip.Addr{}, errors.New("no default route to pick the underlay interface from: give --iface, --iface-regex, --iface-can-reach or --public-ip")
}

// chooseUnderlay tries c's Iface, IfaceRegex and IfaceCanReach in order.
func chooseUnderlay(c UnderlayChoice) (netlink.Link, netip.Addr, error) {
	var tried []string
	usable := func(link netlink.Link, local netip.Addr) bool {
		if local.IsValid() {
			return true
		}
		_, err := firstIPv4(link)
		return err == nil
	}
	for _, s := range c.Iface {
		link, local, err := ifaceEntry(s)
		if err == nil && !usable(link, local) {
			err = fmt.Errorf("%s has no IPv4 address", link.Attrs().Name)
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
				why = link.Attrs().Name + " matches but has no IPv4 address"
			}
			tried = append(tried, fmt.Sprintf("--iface-regex %s (%s)", re, why))
		}
	}
	if c.IfaceCanReach.IsValid() {
		link, local, err := canReach(c.IfaceCanReach)
		if err == nil && !usable(link, local) {
			err = fmt.Errorf("%s has no IPv4 address", link.Attrs().Name)
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
// that address), else the first whose name it matches; why says why none.
func regexEntry(re *regexp.Regexp, links []netlink.Link) (netlink.Link, netip.Addr, string) {
	for _, l := range links {
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && re.MatchString(ip.String()) {
				return l, ip, ""
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
	return nil, netip.Addr{}, "matches no interface's IPv4 address or name among " + strings.Join(names, ", ")
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
		src, _ := netip.AddrFromSlice(r.Src.To4())
		return link, src, nil
	}
	return nil, netip.Addr{}, errors.New("no route")
}

// firstIPv4 is the link's first global unicast IPv4 address.
func firstIPv4(link netlink.Link) (netip.Addr, error) {
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("list addresses of %s: %w", link.Attrs().Name, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && ip.IsGlobalUnicast() {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("interface %s has no IPv4 address: give --iface with an interface that has one", link.Attrs().Name)
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
