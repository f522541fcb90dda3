package wire

import "encoding/binary"

// ICMP types and codes the backend sends, as a router would.
const (
	ICMPDestUnreachable = 3
	ICMPTimeExceeded    = 11
	ICMPCodeNetUnreach  = 0
	ICMPCodeTTLTransit  = 0

	icmpHeaderLen = 8
	// MaxICMPErrorLen bounds an ICMP error: RFC 1812 4.3.2.3 says to quote
	// as much of the original as fits in 576 bytes.
	MaxICMPErrorLen = 576
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

// BuildICMPError writes into out an ICMP error of type typ/code about the
// valid IPv4 packet orig (header h), sent from src to orig's source, and
// returns its length. It returns 0 when no error may be sent: orig is a
// non-first fragment or an ICMP error, or its source is unspecified,
// broadcast or multicast. out must hold MaxICMPErrorLen bytes.
func BuildICMPError(out, orig []byte, h IPv4, typ, code uint8, src uint32) int {
	if len(out) < MaxICMPErrorLen || h.TotalLen > len(orig) {
		return 0
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
	quote := min(h.TotalLen, MaxICMPErrorLen-IPv4MinHeaderLen-icmpHeaderLen)
	total := IPv4MinHeaderLen + icmpHeaderLen + quote
	ip := out[:IPv4MinHeaderLen]
	ip[0] = 0x45
	ip[1] = 0xc0 // internetwork control, as Linux sends ICMP errors
	binary.BigEndian.PutUint16(ip[ipv4TotalLenOff:], uint16(total))
	binary.BigEndian.PutUint32(ip[ipv4IDOff:], 0)
	ip[ipv4TTLOff] = 64
	ip[ipv4ProtoOff] = ProtoICMP
	binary.BigEndian.PutUint32(ip[ipv4SrcOff:], src)
	binary.BigEndian.PutUint32(ip[ipv4DstOff:], h.Src)
	SetIPv4Checksum(ip, IPv4MinHeaderLen)
	icmp := out[IPv4MinHeaderLen:total]
	icmp[0], icmp[1], icmp[2], icmp[3] = typ, code, 0, 0
	binary.BigEndian.PutUint32(icmp[4:], 0)
	copy(icmp[icmpHeaderLen:], orig[:quote])
	binary.BigEndian.PutUint16(icmp[2:], Checksum(icmp))
	return total
}
