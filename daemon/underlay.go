package daemon

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/backend"
)

// findUnderlay resolves the node's underlay link and public address from
// --iface and --public-ip, in the current network namespace.
func findUnderlay(iface string, publicIP netip.Addr) (backend.Underlay, error) {
	link, err := underlayLink(iface, publicIP)
	if err != nil {
		return backend.Underlay{}, err
	}
	attrs := link.Attrs()
	u := backend.Underlay{Link: attrs.Name, Index: attrs.Index, MTU: attrs.MTU, PublicIP: publicIP}
	if !u.PublicIP.IsValid() {
		addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return u, fmt.Errorf("list addresses of %s: %w", attrs.Name, err)
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && ip.IsGlobalUnicast() {
				u.PublicIP = ip
				break
			}
		}
		if !u.PublicIP.IsValid() {
			return u, fmt.Errorf("interface %s has no IPv4 address: give --public-ip", attrs.Name)
		}
	}
	return u, nil
}

func underlayLink(iface string, publicIP netip.Addr) (netlink.Link, error) {
	if iface != "" {
		if ip, err := netip.ParseAddr(iface); err == nil {
			return linkWithAddr(ip)
		}
		link, err := netlink.LinkByName(iface)
		if err != nil {
			return nil, fmt.Errorf("underlay interface %q: %w", iface, err)
		}
		return link, nil
	}
	if publicIP.IsValid() {
		if link, err := linkWithAddr(publicIP); err == nil {
			return link, nil
		}
		// The public address may be a NAT address that no local link holds;
		// fall back to the default route.
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.LinkIndex > 0 {
			return netlink.LinkByIndex(r.LinkIndex)
		}
	}
	return nil, fmt.Errorf("no default route to pick the underlay interface from: give --iface or --public-ip")
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
