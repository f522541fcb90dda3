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

	// ProtoICMP, ProtoTCP and ProtoUDP are IP protocol numbers.
	ProtoICMP = 1
	ProtoTCP  = 6
	ProtoUDP  = 17
)

// Reason says why a packet was dropped. The zero value means accepted.
type Reason uint8

// Drop reasons. They index the udp backend's drop counters.
const (
	OK Reason = iota
	// ReasonShort: shorter than an IPv4 header, or the IHL/total length
	// point past the end of the buffer.
	ReasonShort
	// ReasonNotIPv4: the version nibble is not 4.
	ReasonNotIPv4
	// ReasonBadHeader: IHL below 5 or total length below the header length.
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
	ReasonNotIPv4:       "not_ipv4",
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

// IPv4 is the parsed, validated view of an IPv4 header.
type IPv4 struct {
	HeaderLen int // IHL*4
	TotalLen  int // from the header, <= len(packet)
	Proto     uint8
	TTL       uint8
	Src, Dst  uint32 // host order
}

// ParseIPv4 validates the IPv4 header at the start of b. On success the
// packet is b[:h.TotalLen] (bytes after TotalLen are padding and ignored).
func ParseIPv4(b []byte) (h IPv4, r Reason) {
	if len(b) < IPv4MinHeaderLen {
		return h, ReasonShort
	}
	if b[0]>>4 != 4 {
		return h, ReasonNotIPv4
	}
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

// DecrementTTL decrements the TTL of the valid IPv4 header at the start of
// b and patches the header checksum incrementally (RFC 1624). The caller
// has checked TTL > 1.
func DecrementTTL(b []byte) {
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

// pseudoSum is the unfolded TCP/UDP pseudo-header sum.
func pseudoSum(b []byte, proto uint8, l4len int) uint64 {
	s := sum(b[ipv4SrcOff:ipv4SrcOff+8], 0)
	return s + uint64(proto) + uint64(l4len)
}

// SetIPv4Checksum recomputes the header checksum of the IPv4 header at b.
func SetIPv4Checksum(b []byte, hdrLen int) {
	b[ipv4CsumOff], b[ipv4CsumOff+1] = 0, 0
	binary.BigEndian.PutUint16(b[ipv4CsumOff:], Checksum(b[:hdrLen]))
}

// ValidIPv4Checksum reports whether the header checksum is right.
func ValidIPv4Checksum(b []byte, hdrLen int) bool { return fold(sum(b[:hdrLen], 0)) == 0xffff }

// IsFragment reports whether the valid IPv4 packet b is a fragment.
func IsFragment(b []byte) bool {
	return binary.BigEndian.Uint16(b[ipv4FlagsOff:])&(ipv4FlagMF|ipv4FragMask) != 0
}

// L4Checksum computes and stores the TCP or UDP checksum of the valid IPv4
// packet b (len(b) is the total length). It is a no-op for other protocols
// and for too-short transport headers.
func L4Checksum(b []byte, h IPv4) {
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
