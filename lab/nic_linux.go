package lab

import (
	"fmt"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/nl"
)

// NICGSOSize is the IPv4 GSO/GRO size (gso_ipv4_max_size,
// gro_ipv4_max_size) of the lab's underlay veths, both ends: the lab models
// NICs that do IPv4 BIG TCP (mlx5, ice and others on Linux 6.3 and later,
// once the operator raises those sizes), at the most a veth takes (its
// tso_max_size, the kernel's GSO_MAX_SIZE). IPv6 stays at the default:
// forwarded IPv6 BIG TCP does not work on 6.18 (Documentation/backends.md,
// BIG TCP). weftd itself never touches the underlay; it only reads these
// sizes to cap what it gives pods. Weft and Flannel nodes of a lab get the
// same underlay.
const NICGSOSize = 524280

// modelNIC gives link (in namespace nsName) the lab's NIC IPv4 GSO/GRO size.
// A kernel that refuses them (before BIG TCP) leaves the defaults: the lab
// then models a NIC without BIG TCP.
func modelNIC(nsName, link string) error {
	return ns.WithNetNSPath(nsPath(nsName), func(ns.NetNS) error {
		l, err := netlink.LinkByName(link)
		if err != nil {
			return fmt.Errorf("look up %s in %s: %w", link, nsName, err)
		}
		if l.Attrs().TSOMaxSize < NICGSOSize {
			return nil
		}
		return nl.SetLinkGSO(l, nl.GSO{IPv4: NICGSOSize})
	})
}
