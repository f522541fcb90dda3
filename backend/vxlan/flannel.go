package vxlan

import (
	"fmt"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/internal/nl"
)

// FlannelDeviceName is the VXLAN device Flannel makes for vni.
func FlannelDeviceName(vni int) string { return fmt.Sprintf("flannel.%d", vni) }

// FlannelDeviceName6 is Flannel's VXLAN device of the IPv6 pod network.
func FlannelDeviceName6(vni int) string { return fmt.Sprintf("flannel-v6.%d", vni) }

// clearConflicts makes room for weft.<VNI>: the kernel refuses a second
// VXLAN device with the same VNI on the same UDP port ("A VXLAN device with
// the specified VNI already exists"). A node moving from Flannel to weft
// still has Flannel's flannel.<VNI> after flanneld stopped (flanneld leaves
// it, with its routes, so pods keep their traffic until weftd takes over):
// that one is deleted, and weft programs its own routes right after. Any
// other device holding the VNI and port is someone else's: an error naming
// it.
//
// The kernel keeps the VNIs of IPv4 and IPv6 VXLAN sockets apart, so a
// device of the other underlay family (weft-v6.<VNI> beside weft.<VNI>) is
// no conflict.
func (b *Backend) clearConflicts(name string, f backend.Family) error {
	links, err := b.h.Netlink().LinkList()
	if err != nil {
		return fmt.Errorf("vxlan: list links: %w", err)
	}
	flannel := FlannelDeviceName(b.opts.VNI)
	if f == backend.IPv6 {
		flannel = FlannelDeviceName6(b.opts.VNI)
	}
	for _, l := range links {
		v, ok := l.(*netlink.Vxlan)
		if !ok || v.Name == name || v.VxlanId != b.opts.VNI || v.Port != b.opts.Port {
			continue
		}
		if src, ok := nl.Addr(v.SrcAddr); ok && (f == backend.IPv6) != (src.Is6() && !src.Is4In6()) {
			continue // the other family's
		}
		if v.Name != flannel {
			return fmt.Errorf("vxlan: device %s already uses VNI %d on UDP port %d, so %s cannot be made: delete it, or give this network another VNI or Port",
				v.Name, b.opts.VNI, b.opts.Port, name)
		}
		// Info, not Warn: this is the documented way from Flannel to weft
		// (migrating-from-flannel.md), which the interop e2e checks runs
		// without a warning.
		b.log.Info("deleting Flannel's VXLAN device, which holds this network's VNI and port; its routes go with it and weft programs its own (flanneld must not run beside weftd)",
			"flannelDevice", v.Name, "vni", b.opts.VNI, "port", b.opts.Port)
		if err := b.h.Netlink().LinkDel(v); err != nil {
			return fmt.Errorf("vxlan: delete Flannel's device %s: %w", v.Name, err)
		}
	}
	return nil
}
