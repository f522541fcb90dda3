package wire

import (
	"bytes"
	"encoding/binary"
)

// TCP header layout.
const (
	tcpMinHeaderLen = 20
	tcpSeqOff       = 4
	tcpAckOff       = 8
	tcpDataOff      = 12
	tcpFlagsOff     = 13
	tcpWindowOff    = 14

	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
	tcpURG = 0x20
	tcpECE = 0x40
	tcpCWR = 0x80

	// MaxSegments bounds the segments of one split or coalesced packet
	// (the kernel's UDP_MAX_SEGMENTS is 64 on older kernels).
	MaxSegments = 64
	// MaxPacketLen is the largest packet handled: IPv4's limit, which the
	// kernel's TSO packets of either family stay under.
	MaxPacketLen = 65535
)

// tcpHeaderLen validates the TCP header of the IP packet pkt (header h)
// and returns its length. For IPv6 the TCP header must follow the fixed
// header directly.
func tcpHeaderLen(pkt []byte, h Header) (int, Reason) {
	if h.Proto != ProtoTCP || h.HeaderLen+tcpMinHeaderLen > h.TotalLen {
		return 0, ReasonBadOffload
	}
	thl := int(pkt[h.HeaderLen+tcpDataOff]>>4) * 4
	if thl < tcpMinHeaderLen || h.HeaderLen+thl > h.TotalLen {
		return 0, ReasonBadOffload
	}
	return thl, OK
}

// SplitTCP splits pkt, a TCP TSO super-packet (IPv4 or IPv6) read from a
// TUN device (header h, gsoSize payload bytes per segment from the
// virtio-net header), into segments written back to back into out, each a
// complete packet with its own length, IPv4 ID and header checksum,
// sequence number, flags and TCP checksum, as the
// kernel's tcp_gso_segment would make them. All segments but the last are
// segSize bytes long, so out[:total] can go to a UDP GSO send as is. It
// returns the number of segments and segSize.
func SplitTCP(pkt []byte, h Header, gsoSize int, out []byte) (n, segSize, total int, r Reason) {
	s, r := planSplit(pkt, h, gsoSize)
	if r != OK {
		return 0, 0, 0, r
	}
	total = s.n*s.hdrLen + len(s.pkt) - s.hdrLen
	if total > len(out) {
		return 0, 0, 0, ReasonBadOffload
	}
	at := 0
	for i := range s.n {
		chunk := s.chunk(i)
		seg := out[at : at+s.hdrLen+len(chunk)]
		copy(seg[s.hdrLen:], chunk)
		s.header(i, seg[:s.hdrLen], false)
		at += len(seg)
	}
	return s.n, s.hdrLen + s.gso, total, OK
}

// SplitTCPHeaders is SplitTCP without copying the payload: it writes
// only the n segment headers, hdrLen bytes each, back to back into hdrs.
// Segment i is hdrs[i*hdrLen:(i+1)*hdrLen] followed by
// pkt[hdrLen+i*gso : min(hdrLen+(i+1)*gso, h.TotalLen)], so a sender can
// gather it from both (an iovec each) and the payload is read only once,
// for its checksum. gso is gsoSize.
//
// With partial, the payload is not read at all: each TCP checksum field
// gets only the segment's pseudo-header sum (the CHECKSUM_PARTIAL
// convention), for a receiver that completes or skips it (see
// Coalescer.Add).
func SplitTCPHeaders(pkt []byte, h Header, gsoSize int, hdrs []byte, partial bool) (n, hdrLen int, r Reason) {
	s, r := planSplit(pkt, h, gsoSize)
	if r != OK {
		return 0, 0, r
	}
	if s.n*s.hdrLen > len(hdrs) {
		return 0, 0, ReasonBadOffload
	}
	for i := range s.n {
		s.header(i, hdrs[i*s.hdrLen:(i+1)*s.hdrLen], partial)
	}
	return s.n, s.hdrLen, OK
}

// tsoSplit is a validated plan for cutting one TSO super-packet.
type tsoSplit struct {
	pkt        []byte // the super-packet, TotalLen long
	hl, hdrLen int    // IP header, IP+TCP header lengths
	gso, n     int
	id         uint16
	seq        uint32
	flags      uint8
}

func planSplit(pkt []byte, h Header, gsoSize int) (tsoSplit, Reason) {
	if h.TotalLen > len(pkt) {
		return tsoSplit{}, ReasonShort
	}
	pkt = pkt[:h.TotalLen]
	thl, r := tcpHeaderLen(pkt, h)
	if r != OK {
		return tsoSplit{}, r
	}
	if gsoSize <= 0 {
		return tsoSplit{}, ReasonBadOffload
	}
	s := tsoSplit{pkt: pkt, hl: h.HeaderLen, hdrLen: h.HeaderLen + thl, gso: gsoSize}
	s.n = max(1, (len(pkt)-s.hdrLen+gsoSize-1)/gsoSize)
	if s.n > MaxSegments*4 {
		return tsoSplit{}, ReasonBadOffload
	}
	if h.Version == 4 {
		s.id = binary.BigEndian.Uint16(pkt[ipv4IDOff:])
	}
	s.seq = binary.BigEndian.Uint32(pkt[h.HeaderLen+tcpSeqOff:])
	s.flags = pkt[h.HeaderLen+tcpFlagsOff]
	return s, OK
}

// chunk is the payload of segment i.
func (s *tsoSplit) chunk(i int) []byte {
	payload := s.pkt[s.hdrLen:]
	return payload[min(i*s.gso, len(payload)):min((i+1)*s.gso, len(payload))]
}

// header writes the headers of segment i into dst (hdrLen bytes), with
// the TCP checksum over them and the segment's payload, or with only the
// pseudo-header sum when partial. The header length is even (IHL and data
// offset count 32-bit words), so the sum of header and payload is the sum
// of their separate sums.
func (s *tsoSplit) header(i int, dst []byte, partial bool) {
	chunk := s.chunk(i)
	copy(dst, s.pkt[:s.hdrLen])
	setLen(dst, s.hdrLen+len(chunk))
	if dst[0]>>4 == 4 {
		binary.BigEndian.PutUint16(dst[ipv4IDOff:], s.id+uint16(i))
		SetIPv4Checksum(dst, s.hl)
	}
	tcp := dst[s.hl:]
	binary.BigEndian.PutUint32(tcp[tcpSeqOff:], s.seq+uint32(i*s.gso))
	f := s.flags
	if i != s.n-1 {
		f &^= tcpFIN | tcpPSH
	}
	if i != 0 {
		f &^= tcpCWR
	}
	tcp[tcpFlagsOff] = f
	tcp[tcpCsumOff], tcp[tcpCsumOff+1] = 0, 0
	tcpLen := len(tcp) + len(chunk)
	if partial {
		binary.BigEndian.PutUint16(tcp[tcpCsumOff:], fold(pseudoSum(dst, ProtoTCP, tcpLen)))
		return
	}
	binary.BigEndian.PutUint16(tcp[tcpCsumOff:], ^fold(sum(chunk, sum(tcp, pseudoSum(dst, ProtoTCP, tcpLen)))))
}

// Coalescer merges consecutive in-order TCP segments of one flow into one
// super-packet that a TUN device with IFF_VNET_HDR accepts as a GSO packet,
// so the kernel handles one skb instead of dozens (what GRO does for a
// NIC). It only merges what GRO would: IPv4 without options or
// fragmentation and with DF set, or IPv6 with TCP right after the fixed
// header; same addresses, TOS (IPv6: traffic class and flow label), TTL,
// ports, ack, options and flags (ACK, with PSH allowed on the last
// segment), contiguous sequence numbers and equal segment sizes (the last
// may be shorter).
//
// Payloads are not copied: the merged packet is a list of buffers (a copy
// of the first segment's headers behind the virtio-net header, then each
// segment's payload where it lies) for one writev. The packets added must
// stay unchanged until the buffers Flush returns have been written.
//
// Use: Add each packet; when Add returns false, write Flush() and Add again.
// A Coalescer is owned by one goroutine.
type Coalescer struct {
	hdr     []byte   // virtio-net header, then the first TCP segment's IP and TCP headers
	iov     [][]byte // the pending packet: hdr, then payloads (or the whole packet)
	n       int      // packet bytes pending (the merged IP total length); 0 = empty
	hl, thl int      // thl is 0 unless the first packet is unfragmented TCP
	gso     int      // payload bytes of the first segment
	segs    int
	nextSeq uint32
	closed  bool // nothing may join any more
	partial bool // a single TCP segment goes out with a partial checksum
}

// maxHeaderLen bounds an IPv4 header plus a TCP header (60 bytes each).
const maxHeaderLen = 120

// NewCoalescer allocates the header buffer and the buffer list.
func NewCoalescer() *Coalescer {
	return &Coalescer{hdr: make([]byte, VirtioNetHdrLen+maxHeaderLen), iov: make([][]byte, 0, MaxSegments+1)}
}

// Empty reports whether nothing is pending.
func (c *Coalescer) Empty() bool { return c.n == 0 }

// Segments is the number of packets pending.
func (c *Coalescer) Segments() int { return c.segs }

// head is the first segment's IP and TCP headers (ours to change).
func (c *Coalescer) head() []byte { return c.hdr[VirtioNetHdrLen : VirtioNetHdrLen+c.hl+c.thl] }

// Add appends pkt (a valid IP packet, header h) to the pending
// super-packet, or starts one when empty. It returns false, changing
// nothing, when pkt cannot join; the caller then flushes and adds again.
//
// partial says pkt's TCP checksum may hold only the pseudo-header sum (its
// sender split it with SplitTCPHeaders(..., partial=true)). Such a packet
// is handed to the kernel as CHECKSUM_PARTIAL even when nothing joins it,
// as a merged run always is: the kernel then trusts the payload, which the
// outer UDP checksum covered in transit.
func (c *Coalescer) Add(pkt []byte, h Header, partial bool) bool {
	pkt = pkt[:h.TotalLen]
	if c.n == 0 {
		c.start(pkt, h, partial)
		return true
	}
	if c.closed || !c.canJoin(pkt, h) {
		return false
	}
	payload := pkt[c.hl+c.thl:]
	c.iov = append(c.iov, payload)
	c.n += len(payload)
	c.segs++
	c.nextSeq += uint32(len(payload))
	p := c.head()
	// The newest window is the receiver's latest word; a PSH ends the run.
	copy(p[c.hl+tcpWindowOff:c.hl+tcpWindowOff+2], pkt[c.hl+tcpWindowOff:])
	if pkt[c.hl+tcpFlagsOff]&tcpPSH != 0 {
		p[c.hl+tcpFlagsOff] |= tcpPSH
		c.closed = true
	}
	if len(payload) < c.gso || c.segs == MaxSegments {
		c.closed = true
	}
	return true
}

func (c *Coalescer) start(pkt []byte, h Header, partial bool) {
	c.n = len(pkt)
	c.segs = 1
	c.closed = true
	c.hl, c.thl, c.partial = h.HeaderLen, 0, false
	c.iov = c.iov[:0]
	thl, r := tcpHeaderLen(pkt, h)
	if h.Proto != ProtoTCP || IsFragment(pkt) || r != OK {
		c.iov = append(c.iov, c.hdr[:VirtioNetHdrLen], pkt)
		return
	}
	c.thl, c.partial = thl, partial
	hdrLen := c.hl + thl
	copy(c.hdr[VirtioNetHdrLen:], pkt[:hdrLen])
	c.iov = append(c.iov, c.hdr[:VirtioNetHdrLen+hdrLen])
	if len(pkt) > hdrLen {
		c.iov = append(c.iov, pkt[hdrLen:])
	}
	if h.Version == 4 && (h.HeaderLen != IPv4MinHeaderLen || binary.BigEndian.Uint16(pkt[ipv4FlagsOff:])&ipv4FlagDF == 0) {
		return
	}
	c.gso = h.TotalLen - hdrLen
	if c.gso == 0 || pkt[h.HeaderLen+tcpFlagsOff] != tcpACK {
		return
	}
	c.nextSeq = binary.BigEndian.Uint32(pkt[h.HeaderLen+tcpSeqOff:]) + uint32(c.gso)
	c.closed = false
}

func (c *Coalescer) canJoin(pkt []byte, h Header) bool {
	first := c.head()
	if h.Proto != ProtoTCP || h.HeaderLen != c.hl || first[0]>>4 != h.Version || IsFragment(pkt) {
		return false
	}
	if h.Version == 6 {
		// Version, traffic class, flow label; next header, hop limit;
		// addresses.
		if !bytes.Equal(first[:ipv6PayloadOff], pkt[:ipv6PayloadOff]) ||
			!bytes.Equal(first[ipv6NextOff:IPv6HeaderLen], pkt[ipv6NextOff:IPv6HeaderLen]) {
			return false
		}
	} else if first[0] != pkt[0] || first[1] != pkt[1] || // version/IHL, TOS
		first[ipv4FlagsOff] != pkt[ipv4FlagsOff] || // DF
		first[ipv4TTLOff] != pkt[ipv4TTLOff] ||
		!bytes.Equal(first[ipv4SrcOff:ipv4DstOff+4], pkt[ipv4SrcOff:ipv4DstOff+4]) {
		return false
	}
	thl, r := tcpHeaderLen(pkt, h)
	if r != OK || thl != c.thl {
		return false
	}
	a, b := first[c.hl:c.hl+thl], pkt[c.hl:c.hl+thl]
	f := b[tcpFlagsOff]
	if f != tcpACK && f != tcpACK|tcpPSH {
		return false
	}
	if !bytes.Equal(a[:tcpSeqOff], b[:tcpSeqOff]) || // ports
		!bytes.Equal(a[tcpAckOff:tcpAckOff+4], b[tcpAckOff:tcpAckOff+4]) ||
		!bytes.Equal(a[tcpMinHeaderLen:], b[tcpMinHeaderLen:]) { // options
		return false
	}
	plen := h.TotalLen - c.hl - thl
	if plen == 0 || plen > c.gso || binary.BigEndian.Uint32(b[tcpSeqOff:]) != c.nextSeq {
		return false
	}
	return c.n+plen <= MaxPacketLen
}

// Flush finalises the pending packet and returns it as buffers for one
// writev to the TUN device (virtio-net header first), and empties c. The
// buffers are valid until the next Add. A single segment goes out as it
// came (its checksums came intact over the wire) unless it was added as
// partial; a merged one goes out as a TCPv4 or TCPv6 GSO packet. Both of those
// carry a partial checksum the kernel completes when it needs to.
func (c *Coalescer) Flush() [][]byte {
	hdr := VirtioNetHdr{}
	if c.thl > 0 {
		p := c.head()
		if c.segs > 1 {
			setLen(p, c.n)
			hdr.GSOType, hdr.GSOSize = VirtioNetHdrGSOTCPv4, uint16(c.gso)
			if p[0]>>4 == 6 {
				hdr.GSOType = VirtioNetHdrGSOTCPv6
			} else {
				SetIPv4Checksum(p, c.hl)
			}
		}
		if c.segs > 1 || c.partial {
			// CHECKSUM_PARTIAL convention: the field holds the folded,
			// uncomplemented pseudo-header sum.
			binary.BigEndian.PutUint16(p[c.hl+tcpCsumOff:], fold(pseudoSum(p, ProtoTCP, c.n-c.hl)))
			hdr.Flags = VirtioNetHdrFNeedsCsum
			hdr.HdrLen, hdr.CsumStart, hdr.CsumOffset = uint16(c.hl+c.thl), uint16(c.hl), tcpCsumOff
		}
	}
	hdr.Encode(c.hdr)
	out := c.iov
	c.iov = c.iov[:0]
	c.n, c.segs, c.closed, c.partial = 0, 0, false, false
	return out
}

// setLen stores the length of the packet whose IP header starts b: IPv4's
// total length (the header checksum is the caller's), IPv6's payload
// length.
func setLen(b []byte, n int) {
	if b[0]>>4 == 6 {
		binary.BigEndian.PutUint16(b[ipv6PayloadOff:], uint16(n-IPv6HeaderLen))
		return
	}
	binary.BigEndian.PutUint16(b[ipv4TotalLenOff:], uint16(n))
}
