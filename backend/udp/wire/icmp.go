package wire

import "encoding/binary"

// ICMP types and codes the backend sends, as a router would.
const (
	ICMPDestUnreachable = 3
	ICMPTimeExceeded    = 11
	ICMPCodeNetUnreach  = 0
	ICMPCodeTTLTransit  = 0

	// ICMPv6DestUnreachable (code 0: no route to destination) and
	// ICMPv6TimeExceeded (code 0: hop limit exceeded in transit), RFC 4443.
	ICMPv6DestUnreachable = 1
	ICMPv6TimeExceeded    = 3

	icmpHeaderLen = 8
	// icmpMaxLen bounds an IPv4 ICMP error: RFC 1812 4.3.2.3 says to quote
	// as much of the original as fits in 576 bytes.
	icmpMaxLen = 576
	// icmpv6MaxLen bounds an ICMPv6 error: as much as fits in the minimum
	// IPv6 MTU (RFC 4443 2.4 (c)).
	icmpv6MaxLen = 1280
	// MaxICMPErrorLen is the buffer BuildICMPError needs.
	MaxICMPErrorLen = icmpv6MaxLen
)

// ICMPError is an error the backend reports about a packet it drops.
type ICMPError uint8

const (
	// ErrNoRoute: no peer owns the destination. IPv4: destination
	// unreachable, net unreachable; IPv6: destination unreachable, no
	// route to destination.
	ErrNoRoute ICMPError = iota
	// ErrTTL: the TTL (hop limit) ran out while forwarding: time exceeded
	// in transit.
	ErrTTL
)

// isICMPError reports whether the ICMP packet b (IPv4 header length hl)
// is itself an error, about which no error may be sent (RFC 1122 3.2.2).
func isICMPError(b []byte, hl int) bool {
	if len(b) <= hl {
		return true // cannot tell: stay silent
	}
	switch b[hl] {
	case 3, 4, 5, 11, 12:
		return true
	}
	return false
}

// BuildICMPError writes into out an ICMP (IPv6: ICMPv6) error e about the
// valid IP packet orig (header h), sent from orig's destination (as
// Flannel does: a local address of this node would be dropped as martian
// by the pod's node) to orig's source, and returns its length. It returns
// 0 when no error may be sent: orig is a non-first fragment or an ICMP
// error itself, or its source is unspecified, broadcast or multicast. out
// must hold MaxICMPErrorLen bytes.
func BuildICMPError(out, orig []byte, h Header, e ICMPError) int {
	if len(out) < MaxICMPErrorLen || h.TotalLen > len(orig) {
		return 0
	}
	if h.Version == 6 {
		return buildICMPv6Error(out, orig, h, e)
	}
	if binary.BigEndian.Uint16(orig[ipv4FlagsOff:])&ipv4FragMask != 0 {
		return 0
	}
	if h.Proto == ProtoICMP && isICMPError(orig[:h.TotalLen], h.HeaderLen) {
		return 0
	}
	if h.Src == 0 || h.Src == 0xffffffff || h.Src>>28 == 0xe {
		return 0
	}
	typ, code := uint8(ICMPDestUnreachable), uint8(ICMPCodeNetUnreach)
	if e == ErrTTL {
		typ, code = ICMPTimeExceeded, ICMPCodeTTLTransit
	}
	quote := min(h.TotalLen, icmpMaxLen-IPv4MinHeaderLen-icmpHeaderLen)
	total := IPv4MinHeaderLen + icmpHeaderLen + quote
	ip := out[:IPv4MinHeaderLen]
	ip[0] = 0x45
	ip[1] = 0xc0 // internetwork control, as Linux sends ICMP errors
	binary.BigEndian.PutUint16(ip[ipv4TotalLenOff:], uint16(total))
	binary.BigEndian.PutUint32(ip[ipv4IDOff:], 0)
	ip[ipv4TTLOff] = 64
	ip[ipv4ProtoOff] = ProtoICMP
	binary.BigEndian.PutUint32(ip[ipv4SrcOff:], h.Dst)
	binary.BigEndian.PutUint32(ip[ipv4DstOff:], h.Src)
	SetIPv4Checksum(ip, IPv4MinHeaderLen)
	icmp := out[IPv4MinHeaderLen:total]
	icmp[0], icmp[1], icmp[2], icmp[3] = typ, code, 0, 0
	binary.BigEndian.PutUint32(icmp[4:], 0)
	copy(icmp[icmpHeaderLen:], orig[:quote])
	binary.BigEndian.PutUint16(icmp[2:], Checksum(icmp))
	return total
}

func buildICMPv6Error(out, orig []byte, h Header, e ICMPError) int {
	switch {
	case h.Proto == ProtoFragment && (len(orig) < IPv6HeaderLen+4 ||
		binary.BigEndian.Uint16(orig[IPv6HeaderLen+2:])&0xfff8 != 0):
		return 0 // not the first fragment (or cannot tell)
	case h.Proto == ProtoICMPv6 && (h.TotalLen <= IPv6HeaderLen || orig[IPv6HeaderLen] < 128):
		return 0 // an ICMPv6 error (types 0-127), RFC 4443 2.4 (e.1)
	case h.Src6 == Addr6{} || h.Src6.Hi>>56 == 0xff:
		return 0 // unspecified or multicast source
	}
	typ := uint8(ICMPv6DestUnreachable)
	if e == ErrTTL {
		typ = ICMPv6TimeExceeded
	}
	quote := min(h.TotalLen, icmpv6MaxLen-IPv6HeaderLen-icmpHeaderLen)
	total := IPv6HeaderLen + icmpHeaderLen + quote
	ip := out[:IPv6HeaderLen]
	binary.BigEndian.PutUint32(ip, 6<<28) // traffic class 0, no flow label
	binary.BigEndian.PutUint16(ip[ipv6PayloadOff:], uint16(total-IPv6HeaderLen))
	ip[ipv6NextOff], ip[ipv6HopOff] = ProtoICMPv6, 64
	h.Dst6.Put(ip[ipv6SrcOff:])
	h.Src6.Put(ip[ipv6DstOff:])
	icmp := out[IPv6HeaderLen:total]
	icmp[0], icmp[1], icmp[2], icmp[3] = typ, 0, 0, 0
	binary.BigEndian.PutUint32(icmp[4:], 0)
	copy(icmp[icmpHeaderLen:], orig[:quote])
	binary.BigEndian.PutUint16(icmp[2:], ^fold(sum(icmp, pseudoSum(out, ProtoICMPv6, len(icmp)))))
	return total
}
