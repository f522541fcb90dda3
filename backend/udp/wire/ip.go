package wire

import (
	"encoding/binary"
	"math/bits"
)

// IPv4 header field offsets and sizes.
const (
	IPv4MinHeaderLen = 20
	ipv4TotalLenOff  = 2
	ipv4IDOff        = 4
	ipv4FlagsOff     = 6
	ipv4TTLOff       = 8
	ipv4ProtoOff     = 9
	ipv4CsumOff      = 10
	ipv4SrcOff       = 12
	ipv4DstOff       = 16

	ipv4FlagDF   = 0x4000
	ipv4FlagMF   = 0x2000
	ipv4FragMask = 0x1fff

	// IPv6HeaderLen is the fixed IPv6 header. Extension headers are not
	// walked: to this package they are the payload of a packet whose
	// protocol (next header) is not TCP, which is forwarded as it is.
	IPv6HeaderLen  = 40
	ipv6PayloadOff = 4
	ipv6NextOff    = 6
	ipv6HopOff     = 7
	ipv6SrcOff     = 8
	ipv6DstOff     = 24

	// ProtoICMP, ProtoTCP, ProtoUDP and ProtoICMPv6 are IP protocol
	// numbers (IPv6 next header values); ProtoFragment is IPv6's fragment
	// header.
	ProtoICMP     = 1
	ProtoTCP      = 6
	ProtoUDP      = 17
	ProtoFragment = 44
	ProtoICMPv6   = 58
)

// Reason says why a packet was dropped. The zero value means accepted.
type Reason uint8

// Drop reasons. They index the udp backend's drop counters.
const (
	OK Reason = iota
	// ReasonShort: shorter than an IP header, or the IHL/total length
	// (IPv6: payload length) point past the end of the buffer.
	ReasonShort
	// ReasonBadVersion: the version nibble is neither 4 nor 6, or names a
	// family the network does not use.
	ReasonBadVersion
	// ReasonBadHeader: IHL below 5 or total length below the header
	// length; an IPv6 jumbogram (payload length 0).
	ReasonBadHeader
	// ReasonUnknownPeer: the datagram's source is not a current peer.
	ReasonUnknownPeer
	// ReasonWrongPort: the datagram comes from a peer's address but not
	// from its tunnel port.
	ReasonWrongPort
	// ReasonSpoofedSource: the inner source is outside the sender's subnet.
	ReasonSpoofedSource
	// ReasonNotLocal: the inner destination is outside this node's subnet.
	ReasonNotLocal
	// ReasonNoRoute: no peer owns the destination (ICMP net unreachable sent).
	ReasonNoRoute
	// ReasonTTL: TTL exhausted while forwarding (ICMP time exceeded sent).
	ReasonTTL
	// ReasonBadOffload: a virtio-net header that cannot be honoured.
	ReasonBadOffload
	// ReasonIOError: a send or TUN write failed.
	ReasonIOError
	// NumReasons is the number of reasons including OK.
	NumReasons
)

var reasonNames = [NumReasons]string{
	OK:                  "ok",
	ReasonShort:         "short",
	ReasonBadVersion:    "bad_version",
	ReasonBadHeader:     "bad_header",
	ReasonUnknownPeer:   "unknown_peer",
	ReasonWrongPort:     "wrong_port",
	ReasonSpoofedSource: "spoofed_source",
	ReasonNotLocal:      "not_local",
	ReasonNoRoute:       "no_route",
	ReasonTTL:           "ttl_exceeded",
	ReasonBadOffload:    "bad_offload",
	ReasonIOError:       "io_error",
}

func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Header is the parsed, validated view of an IPv4 or IPv6 header.
type Header struct {
	Version   uint8  // 4 or 6
	HeaderLen int    // IPv4: IHL*4; IPv6: the fixed 40 bytes
	TotalLen  int    // from the header, <= len(packet)
	Proto     uint8  // IPv6: the next header
	TTL       uint8  // IPv6: the hop limit
	Src, Dst  uint32 // IPv4, host order; 0 for IPv6
	// Src6 and Dst6 are the IPv6 addresses; zero for IPv4.
	Src6, Dst6 Addr6
}

// Addr6 is an IPv6 address as two host-order words, so that masking and
// map lookups in the packet path cost two integer operations.
type Addr6 struct{ Hi, Lo uint64 }

// Addr6From reads the 16-byte address at the start of b.
func Addr6From(b []byte) Addr6 {
	return Addr6{Hi: binary.BigEndian.Uint64(b), Lo: binary.BigEndian.Uint64(b[8:])}
}

// Put writes a at the start of b (16 bytes).
func (a Addr6) Put(b []byte) {
	binary.BigEndian.PutUint64(b, a.Hi)
	binary.BigEndian.PutUint64(b[8:], a.Lo)
}

// Parse validates the IP header at the start of b. On success the packet
// is b[:h.TotalLen] (bytes after TotalLen are padding and ignored).
func Parse(b []byte) (h Header, r Reason) {
	if len(b) < IPv4MinHeaderLen {
		return h, ReasonShort
	}
	switch b[0] >> 4 {
	case 4:
	case 6:
		return parseIPv6(b)
	default:
		return h, ReasonBadVersion
	}
	h.Version = 4
	h.HeaderLen = int(b[0]&0x0f) * 4
	if h.HeaderLen < IPv4MinHeaderLen {
		return h, ReasonBadHeader
	}
	h.TotalLen = int(binary.BigEndian.Uint16(b[ipv4TotalLenOff:]))
	if h.TotalLen < h.HeaderLen {
		return h, ReasonBadHeader
	}
	if h.HeaderLen > len(b) || h.TotalLen > len(b) {
		return h, ReasonShort
	}
	h.TTL = b[ipv4TTLOff]
	h.Proto = b[ipv4ProtoOff]
	h.Src = binary.BigEndian.Uint32(b[ipv4SrcOff:])
	h.Dst = binary.BigEndian.Uint32(b[ipv4DstOff:])
	return h, OK
}

func parseIPv6(b []byte) (h Header, r Reason) {
	if len(b) < IPv6HeaderLen {
		return h, ReasonShort
	}
	plen := int(binary.BigEndian.Uint16(b[ipv6PayloadOff:]))
	if plen == 0 {
		return h, ReasonBadHeader // a jumbogram, or nothing: never on a 64 KiB path
	}
	h.Version, h.HeaderLen, h.TotalLen = 6, IPv6HeaderLen, IPv6HeaderLen+plen
	if h.TotalLen > len(b) {
		return h, ReasonShort
	}
	h.Proto, h.TTL = b[ipv6NextOff], b[ipv6HopOff]
	h.Src6, h.Dst6 = Addr6From(b[ipv6SrcOff:]), Addr6From(b[ipv6DstOff:])
	return h, OK
}

// DecrementTTL decrements the TTL (IPv6: the hop limit) of the valid IP
// header at the start of b; IPv4's header checksum is patched
// incrementally (RFC 1624), IPv6 has none. The caller has checked TTL > 1.
func DecrementTTL(b []byte) {
	if b[0]>>4 == 6 {
		b[ipv6HopOff]--
		return
	}
	b[ipv4TTLOff]--
	// The TTL is the high byte of the 16-bit word at offset 8, so the word
	// dropped by 0x0100: HC' = ~(~HC + ~m + m') with m' = m - 0x100.
	sum := uint32(^binary.BigEndian.Uint16(b[ipv4CsumOff:])) + 0xfeff // ~0x0100
	sum = (sum & 0xffff) + (sum >> 16)
	sum = (sum & 0xffff) + (sum >> 16)
	binary.BigEndian.PutUint16(b[ipv4CsumOff:], ^uint16(sum))
}

// sum adds b as big-endian 16-bit words to initial without folding.
//
// The one's complement sum does not depend on byte order (RFC 1071 §2(B)):
// b is summed as little-endian 64-bit words, which needs no byte swap per
// load, four words per round with one carry chain, and the folded result is
// swapped once at the end. This is the hottest loop of the send path (one
// pass over every payload byte for the TCP checksums of TSO segments).
func sum(b []byte, initial uint64) uint64 {
	var s, c uint64
	for len(b) >= 32 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[8:]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[16:]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[24:]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b), c)
		b = b[8:]
	}
	if len(b) >= 4 {
		s, c = bits.Add64(s, uint64(binary.LittleEndian.Uint32(b)), c)
		b = b[4:]
	}
	if len(b) >= 2 {
		s, c = bits.Add64(s, uint64(binary.LittleEndian.Uint16(b)), c)
		b = b[2:]
	}
	if len(b) == 1 {
		s, c = bits.Add64(s, uint64(b[0]), c)
	}
	s, c = bits.Add64(s, 0, c)
	s += c
	return initial + uint64(bits.ReverseBytes16(fold(s)))
}

func fold(s uint64) uint16 {
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	return uint16(s)
}

// Checksum is the Internet checksum (RFC 1071) of b, ready to store.
func Checksum(b []byte) uint16 { return ^fold(sum(b, 0)) }

// pseudoSum is the unfolded TCP/UDP/ICMPv6 pseudo-header sum of the IP
// packet b (either family; l4len < 64 KiB).
func pseudoSum(b []byte, proto uint8, l4len int) uint64 {
	var s uint64
	if b[0]>>4 == 6 {
		s = sum(b[ipv6SrcOff:ipv6DstOff+16], 0)
	} else {
		s = sum(b[ipv4SrcOff:ipv4SrcOff+8], 0)
	}
	return s + uint64(proto) + uint64(l4len)
}

// SetIPv4Checksum recomputes the header checksum of the IPv4 header at b.
func SetIPv4Checksum(b []byte, hdrLen int) {
	b[ipv4CsumOff], b[ipv4CsumOff+1] = 0, 0
	binary.BigEndian.PutUint16(b[ipv4CsumOff:], Checksum(b[:hdrLen]))
}

// ValidIPv4Checksum reports whether the header checksum is right.
func ValidIPv4Checksum(b []byte, hdrLen int) bool { return fold(sum(b[:hdrLen], 0)) == 0xffff }

// IsFragment reports whether the valid IP packet b is a fragment (IPv6:
// its first header after the fixed one is a fragment header).
func IsFragment(b []byte) bool {
	if b[0]>>4 == 6 {
		return b[ipv6NextOff] == ProtoFragment
	}
	return binary.BigEndian.Uint16(b[ipv4FlagsOff:])&(ipv4FlagMF|ipv4FragMask) != 0
}

// L4Checksum computes and stores the TCP or UDP checksum of the valid IP
// packet b (len(b) is the total length). It is a no-op for other protocols
// and for too-short transport headers.
func L4Checksum(b []byte, h Header) {
	var off int
	switch h.Proto {
	case ProtoTCP:
		off = 16
	case ProtoUDP:
		off = 6
	default:
		return
	}
	l4 := b[h.HeaderLen:]
	if len(l4) < off+2 {
		return
	}
	l4[off], l4[off+1] = 0, 0
	c := ^fold(sum(l4, pseudoSum(b, h.Proto, len(l4))))
	if h.Proto == ProtoUDP && c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[off:], c)
}
