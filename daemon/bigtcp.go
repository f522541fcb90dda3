package daemon

import (
	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/internal/nl"
)

// bigTCP decides the BIG TCP sizes the CNI plugin gives the bridge and the
// pod veths (the conflist's "bigTCP"), and logs the decision when it
// differs from the last generation's. With Config.BigTCP it probes, by
// reading them only, the devices pod traffic leaves the node by: the
// underlay and the backend's device (the vxlan, TUN or WireGuard device;
// host-gw's is the underlay). The IPv4 size is nl.BigTCPSize capped at what
// every one of them takes (nl.PathGSO): a bigger packet would be segmented
// in software at the first device that does not take it, which costs more
// than BIG TCP saves. weftd never raises the sizes of the underlay, which
// it does not own: an operator whose NIC does BIG TCP sets its
// gso_max_size/gso_ipv4_max_size (ip link set ... gso_max_size ...).
func (d *Daemon) bigTCP(be backend.Backend, underlay backend.Underlay) nl.GSO {
	names := []string{underlay.Link}
	if dev, ok := be.(backend.Device); ok && dev.Device() != "" && dev.Device() != underlay.Link {
		names = append(names, dev.Device())
	}
	got, reason := probeBigTCP(d.cfg.BigTCP, names)
	if got != d.lastBigTCP || reason != d.lastBigTCPReason {
		d.lastBigTCP, d.lastBigTCPReason = got, reason
		if got.Zero() {
			d.log.Info("BIG TCP off: pods keep the kernel's 64 KiB GSO/GRO size", "reason", reason)
		} else {
			d.log.Info("BIG TCP on: bridge and pod veths get raised GSO/GRO sizes", "ipv6", got.IPv6, "ipv4", got.IPv4, "limitedBy", reason)
		}
	}
	return got
}

// probeBigTCP returns the BIG TCP sizes the named egress links take (all
// zero when on is false) and why they are what they are. It reads the links
// in the calling thread's network namespace.
func probeBigTCP(on bool, names []string) (nl.GSO, string) {
	if !on {
		return nl.GSO{}, "turned off (--big-tcp=false)"
	}
	// IPv4 only: IPv6 BIG TCP packets forwarded by a node (pod → bridge →
	// route → underlay) crawl on Linux 6.18 (17 Mbit/s against 6-7 Gbit/s
	// at 64 KiB, host-gw dual-stack lab), so IPv6 keeps the default.
	want := nl.GSO{IPv4: nl.BigTCPSize}
	got := want
	reason := "the default size"
	for _, name := range names {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return nl.GSO{}, "look up " + name + ": " + err.Error()
		}
		if g := nl.PathGSO(want, l); g.IPv6 < got.IPv6 || g.IPv4 < got.IPv4 {
			got = nl.GSO{IPv6: min(got.IPv6, g.IPv6), IPv4: min(got.IPv4, g.IPv4)}
			reason = name + "'s gso_max_size/gso_ipv4_max_size"
		}
	}
	return got, reason
}
