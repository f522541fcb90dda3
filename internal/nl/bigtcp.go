package nl

import (
	"fmt"

	"github.com/vishvananda/netlink"
	vnl "github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// BIG TCP lets TCP build GSO packets larger than 64 KiB (IPv6 since Linux
// 5.19, IPv4 since 6.3), so a forwarded stream costs a third or less of the
// per-packet work (route lookup, bridge, netfilter, veth hand-off) on every
// hop. The size a pod's TCP sends at is its eth0's gso_max_size
// (gso_ipv4_max_size for IPv4); every device the packet later leaves by must
// take that size too, or the kernel segments the packet in software into
// MTU-sized frames there (gso_features_check), which costs far more than the
// 64 KiB default ever did. So the size weft gives its bridge and pod veths
// is the smallest one of the devices pod traffic leaves the node by
// (PathGSO), and nothing above the default when one of them keeps it.

// LegacyGSOMaxSize is the kernel's default (and, before BIG TCP, maximum)
// GSO and GRO size, GSO_LEGACY_MAX_SIZE.
const LegacyGSOMaxSize = 65536

// BigTCPSize is the GSO/GRO size weft asks for when BIG TCP is on: 192 KiB,
// three legacy packets. Bigger sizes gained little in the lab (TCP's own
// autosizing keeps the average packet near 160 KB at 10-30 Gbit/s) and
// lengthen the bursts other flows queue behind.
const BigTCPSize = 196608

// GSO is a pair of GSO/GRO sizes: IPv6 (and non-IP) packets use
// gso_max_size/gro_max_size, IPv4 packets gso_ipv4_max_size/
// gro_ipv4_max_size. Zero means "leave the kernel's default".
type GSO struct {
	IPv6 uint32 `json:"ipv6,omitempty"`
	IPv4 uint32 `json:"ipv4,omitempty"`
}

// Zero reports whether g leaves both families at the default.
func (g GSO) Zero() bool { return g == GSO{} }

// PathGSO returns the GSO sizes, at most want, that every one of links
// takes as it is now (their gso_max_size and gso_ipv4_max_size), with a
// family that ends up at or below LegacyGSOMaxSize set to zero (nothing to
// raise). A kernel that does not report gso_ipv4_max_size (before 6.3) has
// no IPv4 BIG TCP, and one that does not report tso_max_size (before 5.19)
// none at all; both come out as zero. It only reads the links.
func PathGSO(want GSO, links ...netlink.Link) GSO {
	got := want
	for _, l := range links {
		a := l.Attrs()
		if a.TSOMaxSize == 0 {
			got.IPv6 = 0
		}
		got.IPv6 = min(got.IPv6, a.GSOMaxSize)
		got.IPv4 = min(got.IPv4, a.GSOIPv4MaxSize)
	}
	if got.IPv6 <= LegacyGSOMaxSize {
		got.IPv6 = 0
	}
	if got.IPv4 <= LegacyGSOMaxSize {
		got.IPv4 = 0
	}
	return got
}

// SetLinkGSO sets the GSO and GRO sizes of each family in g (a zero family
// is left alone) on the link, in one request and only where they differ. It
// acts in the calling thread's network namespace. The kernel refuses a size
// above the link's tso_max_size with EINVAL.
func SetLinkGSO(link netlink.Link, g GSO) error {
	a := link.Attrs()
	req := vnl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	msg := vnl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(a.Index)
	req.AddData(msg)
	n := 0
	add := func(attr int, have, want uint32) {
		if want != 0 && have != want {
			req.AddData(vnl.NewRtAttr(attr, vnl.Uint32Attr(want)))
			n++
		}
	}
	// The kernel applies gso_max_size before gso_ipv4_max_size (setting
	// gso_max_size to 64 KiB or less also sets gso_ipv4_max_size to it),
	// so one request in this order sets both.
	add(unix.IFLA_GSO_MAX_SIZE, a.GSOMaxSize, g.IPv6)
	add(unix.IFLA_GRO_MAX_SIZE, a.GROMaxSize, g.IPv6)
	add(unix.IFLA_GSO_IPV4_MAX_SIZE, a.GSOIPv4MaxSize, g.IPv4)
	add(unix.IFLA_GRO_IPV4_MAX_SIZE, a.GROIPv4MaxSize, g.IPv4)
	if n == 0 {
		return nil
	}
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("set %s gso/gro max size ipv6 %d ipv4 %d: %w", a.Name, g.IPv6, g.IPv4, err)
	}
	return nil
}

// WithGSO returns attrs with g's sizes as the link's creation attributes
// (a zero family is left at the default), so a new link carries them
// without a second request.
func WithGSO(attrs netlink.LinkAttrs, g GSO) netlink.LinkAttrs {
	attrs.GSOMaxSize, attrs.GROMaxSize = g.IPv6, g.IPv6
	attrs.GSOIPv4MaxSize, attrs.GROIPv4MaxSize = g.IPv4, g.IPv4
	return attrs
}
