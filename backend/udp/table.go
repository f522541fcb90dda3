package udp

import (
	"cmp"
	"encoding/json"
	"net"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/udp/wire"
	"github.com/weftnet/weft/subnet"
)

// peerHost is one peer node: where to send, which inner sources it may
// use, and whether TCP checksums may travel partial to and from it.
// Immutable once in a table.
type peerHost struct {
	ul       wire.Addr6   // the underlay address of its datagrams (underlayKey)
	addr     *net.UDPAddr // the same with the port, shared read-only by every sender
	subnets  []prefix4
	subnets6 []prefix6
	ip       uint32 // PublicIP when the lease has one (hasIP4)
	hasIP4   bool
	ip6      wire.Addr6 // PublicIPv6 when the lease has one (hasIP6)
	hasIP6   bool
	partial  bool
}

// underlayKey is an underlay address as the packet path keys peers by it:
// an IPv6 address as it is, an IPv4 address in its IPv4-mapped form
// (::ffff:a.b.c.d), so one map serves a tunnel over either family.
func underlayKey(a netip.Addr) wire.Addr6 {
	b := a.As16()
	return wire.Addr6From(b[:])
}

// underlayKey4 is underlayKey of the IPv4 address a (host order).
func underlayKey4(a uint32) wire.Addr6 { return wire.Addr6{Lo: 0xffff<<32 | uint64(a)} }

type prefix6 struct{ base, mask wire.Addr6 }

func toPrefix6(p netip.Prefix) prefix6 {
	m := mask6(p.Bits())
	a := wire.Addr6From(p.Addr().AsSlice())
	return prefix6{base: wire.Addr6{Hi: a.Hi & m.Hi, Lo: a.Lo & m.Lo}, mask: m}
}

// mask6 is the IPv6 netmask of bits (0-128).
func mask6(bits int) wire.Addr6 {
	switch {
	case bits <= 0:
		return wire.Addr6{}
	case bits < 64:
		return wire.Addr6{Hi: ^(^uint64(0) >> bits)}
	case bits == 64:
		return wire.Addr6{Hi: ^uint64(0)}
	case bits < 128:
		return wire.Addr6{Hi: ^uint64(0), Lo: ^(^uint64(0) >> (bits - 64))}
	}
	return wire.Addr6{Hi: ^uint64(0), Lo: ^uint64(0)}
}

func (p prefix6) contains(a wire.Addr6) bool {
	return a.Hi&p.mask.Hi == p.base.Hi && a.Lo&p.mask.Lo == p.base.Lo
}

type prefix4 struct{ base, mask uint32 }

func toPrefix4(p netip.Prefix) prefix4 {
	a := p.Masked().Addr().As4()
	mask := ^uint32(0)
	if p.Bits() < 32 {
		mask = ^(^uint32(0) >> p.Bits())
	}
	if p.Bits() == 0 {
		mask = 0
	}
	return prefix4{base: be32(a), mask: mask}
}

func (p prefix4) contains(a uint32) bool { return a&p.mask == p.base }

func be32(a [4]byte) uint32 {
	return uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
}

// table is the immutable routing state the packet path reads through an
// atomic.Pointer. A new table is built for every change.
type table struct {
	port     uint16 // the tunnel port: peers send from it
	own      prefix4
	hasOwn   bool
	own6     prefix6 // this node's IPv6 subnet (hasOwn6)
	hasOwn6  bool
	lens     []int                    // prefix lengths present, longest first
	byLen    [33]map[uint32]*peerHost // masked destination → peer
	lens6    []int
	byLen6   [129]map[wire.Addr6]*peerHost
	hosts    map[wire.Addr6]*peerHost // underlay address (underlayKey) → peer
	v4, v6   bool                     // the network carries IPv4 (EnableIPv4), IPv6 (EnableIPv6)
	statuses []backend.PeerStatus
}

// parse validates the IP packet b; a family the network does not use
// (IPv6 in an IPv4-only network, IPv4 in an IPv6-only one) is
// ReasonBadVersion, before any lookup.
func (t *table) parse(b []byte) (wire.Header, wire.Reason) {
	h, r := wire.Parse(b)
	if r == wire.OK && (h.Version == 6 && !t.v6 || h.Version == 4 && !t.v4) {
		r = wire.ReasonBadVersion
	}
	return h, r
}

// route returns the peer owning the destination of the packet h, or nil.
func (t *table) route(h *wire.Header) *peerHost {
	if h.Version == 6 {
		return t.lookup6(h.Dst6)
	}
	return t.lookup(h.Dst)
}

// isOwn reports whether the destination of the packet h is in this node's
// subnet of its family.
func (t *table) isOwn(h *wire.Header) bool {
	if h.Version == 6 {
		return t.hasOwn6 && t.own6.contains(h.Dst6)
	}
	return t.hasOwn && t.own.contains(h.Dst)
}

// lookup6 returns the peer owning the IPv6 dst (longest prefix), or nil.
func (t *table) lookup6(dst wire.Addr6) *peerHost {
	for _, l := range t.lens6 {
		m := mask6(l)
		if h, ok := t.byLen6[l][wire.Addr6{Hi: dst.Hi & m.Hi, Lo: dst.Lo & m.Lo}]; ok {
			return h
		}
	}
	return nil
}

// lookup returns the peer owning dst (longest prefix), or nil.
func (t *table) lookup(dst uint32) *peerHost {
	for _, l := range t.lens {
		mask := ^uint32(0)
		if l < 32 {
			mask = ^(^uint32(0) >> l)
		}
		if l == 0 {
			mask = 0
		}
		if h, ok := t.byLen[l][dst&mask]; ok {
			return h
		}
	}
	return nil
}

// buildTable makes the table for node's own lease and peers (keyed by
// subnet.Lease.Key). Peers are judged by backend.CheckPeer per family, with
// IPv6 carried over the underlay family node.IPv6Carrier names (IPv4 in a
// network with IPv4, IPv6 in an IPv6-only one; see underlayFamily): the
// rules every backend shares, with a lease of no backend type taken as a
// (Flannel) udp peer. A lease usable in one family only is a peer in that
// family. Both families of a peer travel to its address of the underlay
// family. ownPartial says this node takes partial TCP checksums (it
// announces PartialChecksums); only then are they used with peers that
// announce it.
func buildTable(node backend.PeerNode, peers map[netip.Prefix]subnet.Lease, port int, ownPartial bool) *table {
	t := &table{port: uint16(port), hosts: make(map[wire.Addr6]*peerHost)}
	if c := node.Config; c != nil {
		t.v4, t.v6 = c.EnableIPv4, c.EnableIPv6
	}
	// The peers are judged by the addresses the datagrams go to.
	node.IPv6Carrier = underlayFamily(node.Config)
	overIPv6 := node.IPv6Carrier == backend.IPv6 && !t.v4
	if own := node.Own.Subnet; own.IsValid() && own.Addr().Is4() {
		t.own, t.hasOwn = toPrefix4(own), true
	}
	if own := node.Own.IPv6Subnet; own.IsValid() && own.Addr().Is6() && !own.Addr().Is4In6() {
		t.own6, t.hasOwn6 = toPrefix6(own), true
	}
	keys := make([]netip.Prefix, 0, len(peers))
	for k := range peers {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b netip.Prefix) int { return cmp.Or(a.Addr().Compare(b.Addr()), a.Bits()-b.Bits()) })
	for _, key := range keys {
		l := peers[key]
		v := backend.CheckPeer(node, l)
		o4, o6 := v.Outcomes()
		t.statuses = append(t.statuses, backend.NewPeerStatus(node.Config, l, o4, o6))
		if !v.Usable() {
			continue
		}
		// CheckPeer made sure the address of the underlay family is a
		// usable unicast one.
		ulAddr := l.Attrs.PublicIP.Unmap()
		if overIPv6 {
			ulAddr = l.Attrs.PublicIPv6
		}
		ul := underlayKey(ulAddr)
		partial := partialChecksums(l.Attrs.BackendData) && ownPartial
		h := t.hosts[ul]
		if h == nil {
			h = &peerHost{ul: ul, addr: &net.UDPAddr{IP: ulAddr.AsSlice(), Port: port}, partial: partial}
			t.hosts[ul] = h
		}
		h.partial = h.partial && partial // one lease of the node without it is enough to say no
		if a := l.Attrs.PublicIP.Unmap(); a.Is4() {
			h.ip, h.hasIP4 = be32(a.As4()), true
		}
		if v.V4.Usable {
			sn := l.Subnet.Masked()
			p := toPrefix4(sn)
			h.subnets = append(h.subnets, p)
			if t.byLen[sn.Bits()] == nil {
				t.byLen[sn.Bits()] = make(map[uint32]*peerHost)
				t.lens = append(t.lens, sn.Bits())
			}
			t.byLen[sn.Bits()][p.base] = h
		}
		if v.V6.Usable {
			sn := l.IPv6Subnet.Masked()
			p := toPrefix6(sn)
			h.subnets6 = append(h.subnets6, p)
			if a := l.Attrs.PublicIPv6; a.Is6() && !a.Is4In6() {
				h.ip6, h.hasIP6 = wire.Addr6From(a.AsSlice()), true
			}
			if t.byLen6[sn.Bits()] == nil {
				t.byLen6[sn.Bits()] = make(map[wire.Addr6]*peerHost)
				t.lens6 = append(t.lens6, sn.Bits())
			}
			t.byLen6[sn.Bits()][p.base] = h
		}
	}
	slices.SortFunc(t.lens, func(a, b int) int { return b - a })
	slices.SortFunc(t.lens6, func(a, b int) int { return b - a })
	return t
}

// BackendData is the udp backend's lease attribute. Flannel's udp leases
// carry none, and a lease without it means a peer that sends and expects
// complete inner checksums.
type BackendData struct {
	// PartialChecksums announces that this node writes the TCP packets it
	// receives from a peer that also announces it into its TUN as
	// CHECKSUM_PARTIAL (the kernel trusts their payload, which the outer
	// UDP checksum covered in transit), so that peer may leave the TCP
	// checksums of the segments it cuts from a TSO packet unfilled and
	// skip reading every payload byte. Needs the TUN virtio header.
	PartialChecksums bool `json:",omitempty"`
}

// partialChecksums reads a peer's BackendData. Anything unreadable counts
// as a peer without the feature: it is still a valid (Flannel) udp peer.
func partialChecksums(raw json.RawMessage) bool {
	var d BackendData
	if len(raw) == 0 || json.Unmarshal(raw, &d) != nil {
		return false
	}
	return d.PartialChecksums
}
