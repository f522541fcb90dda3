package udp

import (
	"cmp"
	"encoding/json"
	"net"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/subnet"
)

// peerHost is one peer node: where to send, which inner sources it may
// use, and whether TCP checksums may travel partial to and from it.
// Immutable once in a table.
type peerHost struct {
	ip      uint32
	addr    *net.UDPAddr // shared read-only by every sender
	subnets []prefix4
	partial bool
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
	lens     []int                    // prefix lengths present, longest first
	byLen    [33]map[uint32]*peerHost // masked destination → peer
	hosts    map[uint32]*peerHost     // PublicIP → peer
	statuses []backend.PeerStatus
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

// buildTable makes the table for node's own lease and peers. Peers are
// judged by backend.CheckPeer (its IPv4 verdict): the rules every backend
// shares, with a lease of no backend type taken as a (Flannel) udp peer.
// ownPartial says this node takes partial TCP checksums (it announces
// PartialChecksums); only then are they used with peers that announce it.
func buildTable(node backend.PeerNode, peers map[netip.Prefix]subnet.Lease, port int, ownPartial bool) *table {
	t := &table{port: uint16(port), hosts: make(map[uint32]*peerHost)}
	if own := node.Own.Subnet; own.IsValid() && own.Addr().Is4() {
		t.own, t.hasOwn = toPrefix4(own), true
	}
	keys := make([]netip.Prefix, 0, len(peers))
	for k := range peers {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	for _, sn := range keys {
		l := peers[sn]
		st := backend.PeerStatus{Subnet: sn, PublicIP: l.Attrs.PublicIP, State: backend.PeerProgrammed}
		v := backend.CheckPeer(node, l)
		switch fv := v.Family(backend.IPv4); {
		case v.Own:
			st.State, st.Reason = backend.PeerRefused, "subnet is this node's own"
		case !fv.Usable:
			st.State, st.Reason = backend.PeerRefused, cmp.Or(fv.Reason, "the network does not use IPv4")
		}
		t.statuses = append(t.statuses, st)
		if st.State != backend.PeerProgrammed {
			continue
		}
		l.Attrs.PublicIP = l.Attrs.PublicIP.Unmap()
		ip := be32(l.Attrs.PublicIP.As4())
		partial := partialChecksums(l.Attrs.BackendData) && ownPartial
		h := t.hosts[ip]
		if h == nil {
			h = &peerHost{ip: ip, addr: &net.UDPAddr{IP: l.Attrs.PublicIP.AsSlice(), Port: port}, partial: partial}
			t.hosts[ip] = h
		}
		h.partial = h.partial && partial // one lease of the node without it is enough to say no
		p := toPrefix4(sn)
		h.subnets = append(h.subnets, p)
		bits := sn.Bits()
		if t.byLen[bits] == nil {
			t.byLen[bits] = make(map[uint32]*peerHost)
			t.lens = append(t.lens, bits)
		}
		t.byLen[bits][p.base] = h
	}
	slices.SortFunc(t.lens, func(a, b int) int { return b - a })
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
