package cniplugin

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/nl"
)

// bridgeMAC is a fixed, locally administered MAC derived from the node's
// gateway address: 0a:58:<IPv4 gateway>, or for an IPv6-only node 0a:58 and
// four bytes of a hash of the IPv6 gateway. A Linux bridge without an
// explicit MAC takes the lowest MAC of its ports, so the gateway's MAC would
// change as pods come and go and pods' ARP and neighbour caches would go
// stale.
func bridgeMAC(nd node) net.HardwareAddr {
	if nd.v4.ok() {
		b := nd.v4.gateway.As4()
		return net.HardwareAddr{0x0a, 0x58, b[0], b[1], b[2], b[3]}
	}
	b := nd.v6.gateway.As16()
	h := sha256.Sum256(b[:])
	return net.HardwareAddr{0x0a, 0x58, h[0], h[1], h[2], h[3]}
}

// gatewayPrefixes are the bridge's addresses: the gateway of each family the
// node has.
func (n node) gatewayPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, f := range n.families() {
		out = append(out, f.gatewayPrefix())
	}
	return out
}

// ensureBridge makes sure the node bridge exists, is up, and carries the
// gateway address of each family the node has as its only addresses (a
// subnet change replaces the old gateway; the kernel's IPv6 link-local
// address stays). It runs in the node namespace. Concurrent plugin processes
// may race to create it; the loser uses the winner's bridge.
func ensureBridge(name string, nd node, mtu int) (netlink.Link, error) {
	h := nl.New(nil)
	link, err := netlinksafe.LinkByName(name)
	if err != nil && !nl.IsNotFound(err) {
		return nil, fmt.Errorf("look up bridge %s: %w", name, err)
	}
	if err != nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		attrs.MTU = mtu
		attrs.HardwareAddr = bridgeMAC(nd)
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		if link, err = netlinksafe.LinkByName(name); err != nil {
			return nil, fmt.Errorf("look up bridge %s: %w", name, err)
		}
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("link %s exists and is a %s, not a bridge; set \"bridge\" in the network config to a free name", name, link.Type()), "")
	}
	if link, err = h.EnsureLinkState(link, nl.LinkState{MTU: mtu, Up: true}); err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	// Both families in one listing: a dual-stack gateway costs no extra
	// round trip, and an IPv4-only node still drops an IPv6 gateway left
	// from a dual-stack network (and the other way round).
	if err := h.EnsureAddrs(link, unix.AF_UNSPEC, nd.gatewayPrefixes()); err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	return link, nil
}

// setupVeth returns the veth pair of a pod interface, creating it unless a
// previous ADD for the same attachment already did (then created is false).
// The pod end is created with gso's sizes (see addVeth; errGSORefused comes
// with a usable pair); the node end gets them in attachHostVeth. It is
// called in the node namespace (hostNS).
func setupVeth(netns, hostNS ns.NetNS, ifName, hostName string, mtu int, gso nl.GSO) (host, cont netlink.Link, created bool, err error) {
	host, err = netlinksafe.LinkByName(hostName)
	if err != nil && !nl.IsNotFound(err) {
		return nil, nil, false, fmt.Errorf("look up %s: %w", hostName, err)
	}
	hostIdx := -1
	var refused error // errGSORefused, returned with the pair
	if err == nil {
		hostIdx = host.Attrs().Index
	}
	err = netns.Do(func(ns.NetNS) error {
		existing, err := netlinksafe.LinkByName(ifName)
		if err != nil && !nl.IsNotFound(err) {
			return fmt.Errorf("look up %s: %w", ifName, err)
		}
		if err == nil {
			// A repeated ADD: keep the pair if it is ours.
			if v, ok := existing.(*netlink.Veth); ok && hostIdx > 0 && v.Attrs().ParentIndex == hostIdx {
				cont = existing
				return nil
			}
			return fmt.Errorf("interface %s already exists in %s and is not weft's veth %s", ifName, netns.Path(), hostName)
		}
		if hostIdx > 0 {
			// The node end of a killed ADD whose pod end is elsewhere.
			if err := hostNS.Do(func(ns.NetNS) error { return nl.New(nil).DeleteLink(hostName) }); err != nil {
				return err
			}
		}
		if err := addVeth(ifName, hostName, mtu, gso, hostNS); errors.Is(err, errGSORefused) {
			refused = err
		} else if err != nil {
			return err
		}
		created = true
		cont, err = netlinksafe.LinkByName(ifName)
		return err
	})
	if err != nil {
		return nil, nil, false, err
	}
	if host, err = netlinksafe.LinkByName(hostName); err != nil {
		err = fmt.Errorf("look up %s: %w", hostName, err)
		if created {
			err = errors.Join(err, netns.Do(func(ns.NetNS) error { return nl.New(nil).DeleteLink(ifName) }))
		}
		return nil, nil, false, err
	}
	return host, cont, created, refused
}

// addVeth creates the veth pair ifName (in the calling thread's namespace,
// the pod's) and hostName (in hostNS), the pod end with gso's GSO/GRO sizes
// in the same request: the pod's eth0 sets the size its TCP sends at. A
// kernel that refuses the sizes (EINVAL: above the veth's tso_max_size)
// gets the pair without them and errGSORefused in the result, for the
// caller to warn about.
func addVeth(ifName, hostName string, mtu int, gso nl.GSO, hostNS ns.NetNS) error {
	add := func(g nl.GSO) error {
		attrs := nl.WithGSO(netlink.NewLinkAttrs(), g)
		attrs.Name, attrs.MTU = ifName, mtu
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: hostName, PeerNamespace: netlink.NsFd(int(hostNS.Fd()))})
	}
	err := add(gso)
	if errors.Is(err, unix.EINVAL) && !gso.Zero() {
		if err = add(nl.GSO{}); err == nil {
			return errGSORefused
		}
	}
	if err != nil {
		return fmt.Errorf("create veth %s/%s: %w", hostName, ifName, err)
	}
	return nil
}

// errGSORefused says the kernel refused the BIG TCP sizes of a link and it
// kept the default ones; the ADD goes on.
var errGSORefused = errors.New("the kernel refused the GSO/GRO sizes")

// configurePod sets the pod interface's addresses (one per family) and
// routes and brings it up. It runs in the pod's namespace and is idempotent.
//
// With an IPv6 address, duplicate address detection is turned off on the
// interface first (accept_dad=0, as the CNI bridge plugin does), so neither
// the kernel's link-local address nor the pod's waits a second or more as
// tentative, and a hairpin bridge port echoing the probes back cannot fail
// them; the pod's address is unique by its IPAM reservation.
func configurePod(ifName string, pod []netip.Prefix, routes []*types.Route) error {
	h := nl.New(nil)
	link, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("look up %s: %w", ifName, err)
	}
	if slices.ContainsFunc(pod, func(p netip.Prefix) bool { return p.Addr().Is6() }) && link.Attrs().Flags&net.FlagUp == 0 {
		// One write, no read back: the file is per interface of the
		// calling thread's network namespace.
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+ifName+"/accept_dad", []byte("0"), 0); err != nil {
			return fmt.Errorf("turn off IPv6 duplicate address detection on %s (does the kernel have IPv6?): %w", ifName, err)
		}
	}
	if err := h.EnsureAddrs(link, unix.AF_UNSPEC, pod); err != nil {
		return err
	}
	if _, err := h.EnsureLinkState(link, nl.LinkState{Up: true}); err != nil {
		return err
	}
	for _, r := range routes {
		nr := &netlink.Route{
			LinkIndex: link.Attrs().Index,
			Dst:       &net.IPNet{IP: r.Dst.IP, Mask: r.Dst.Mask},
			Gw:        r.GW,
			Priority:  r.Priority,
			MTU:       r.MTU,
			Family:    unix.AF_INET,
		}
		if r.Dst.IP.To4() == nil {
			nr.Family = unix.AF_INET6
		}
		if ones, _ := r.Dst.Mask.Size(); ones == 0 {
			nr.Dst = nil // the default route
		}
		if err := netlink.RouteReplace(nr); err != nil {
			return fmt.Errorf("add route %s via %s: %w", r.Dst.String(), r.GW, err)
		}
	}
	return nil
}

// attachHostVeth puts the node end of the pair into the bridge and gives it
// and the bridge gso's GSO/GRO sizes (the bridge only once it has a veth
// port: until then its tso_max_size is the legacy 64 KiB). It runs in the
// node namespace. A kernel refusing the sizes makes it return
// errGSORefused after everything else is done.
func attachHostVeth(host, br netlink.Link, mtu int, hairpin bool, gso nl.GSO) error {
	name := host.Attrs().Name
	if host.Attrs().MasterIndex != br.Attrs().Index {
		if err := netlink.LinkSetMaster(host, br); err != nil {
			return fmt.Errorf("attach %s to %s: %w", name, br.Attrs().Name, err)
		}
	}
	if err := netlink.LinkSetHairpin(host, hairpin); err != nil {
		return fmt.Errorf("set hairpin on %s: %w", name, err)
	}
	var refused error
	for _, l := range []netlink.Link{host, br} {
		if err := nl.SetLinkGSO(l, gso); errors.Is(err, unix.EINVAL) {
			refused = errGSORefused
		} else if err != nil {
			return err
		}
	}
	if _, err := nl.New(nil).EnsureLinkState(host, nl.LinkState{MTU: mtu, Up: true}); err != nil {
		return err
	}
	return refused
}

// sameNetNS reports whether a and b are one network namespace: the same
// nsfs inode on the same device. Paths cannot tell: /proc/self/ns/net,
// /proc/1/ns/net and a bind mount under /run/netns can all be the node's.
func sameNetNS(a, b ns.NetNS) (bool, error) {
	var sa, sb unix.Stat_t
	if err := unix.Fstat(int(a.Fd()), &sa); err != nil {
		return false, fmt.Errorf("stat netns %s: %w", a.Path(), err)
	}
	if err := unix.Fstat(int(b.Fd()), &sb); err != nil {
		return false, fmt.Errorf("stat netns %s: %w", b.Path(), err)
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino, nil
}
