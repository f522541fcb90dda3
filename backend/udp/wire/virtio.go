package wire

import "encoding/binary"

// virtio-net header, prepended to every packet read from or written to a
// TUN device opened with IFF_VNET_HDR (struct virtio_net_hdr in
// <linux/virtio_net.h>). Legacy TUN uses host byte order.
const (
	VirtioNetHdrLen = 10

	VirtioNetHdrFNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM

	VirtioNetHdrGSONone  = 0    // VIRTIO_NET_HDR_GSO_NONE
	VirtioNetHdrGSOTCPv4 = 1    // VIRTIO_NET_HDR_GSO_TCPV4
	VirtioNetHdrGSOTCPv6 = 4    // VIRTIO_NET_HDR_GSO_TCPV6
	VirtioNetHdrGSOECN   = 0x80 // VIRTIO_NET_HDR_GSO_ECN

	// TCPChecksumOffset is where the checksum sits in a TCP header (a
	// partial checksum's csum_offset).
	TCPChecksumOffset = 16
	tcpCsumOff        = TCPChecksumOffset
)

// VirtioNetHdr is struct virtio_net_hdr.
type VirtioNetHdr struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16
	GSOSize    uint16
	CsumStart  uint16
	CsumOffset uint16
}

// DecodeVirtioNetHdr reads the header from b (len(b) >= VirtioNetHdrLen).
func DecodeVirtioNetHdr(b []byte) VirtioNetHdr {
	_ = b[VirtioNetHdrLen-1]
	return VirtioNetHdr{
		Flags:      b[0],
		GSOType:    b[1],
		HdrLen:     binary.NativeEndian.Uint16(b[2:]),
		GSOSize:    binary.NativeEndian.Uint16(b[4:]),
		CsumStart:  binary.NativeEndian.Uint16(b[6:]),
		CsumOffset: binary.NativeEndian.Uint16(b[8:]),
	}
}

// Encode writes h into b (len(b) >= VirtioNetHdrLen).
func (h VirtioNetHdr) Encode(b []byte) {
	_ = b[VirtioNetHdrLen-1]
	b[0], b[1] = h.Flags, h.GSOType
	binary.NativeEndian.PutUint16(b[2:], h.HdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.GSOSize)
	binary.NativeEndian.PutUint16(b[6:], h.CsumStart)
	binary.NativeEndian.PutUint16(b[8:], h.CsumOffset)
}

// FinishChecksum completes a partial checksum the kernel left for us
// (VIRTIO_NET_HDR_F_NEEDS_CSUM): the 16-bit field at csumStart+csumOffset
// holds the pseudo-header sum, and the checksum covers csumStart to the end
// of pkt.
func FinishChecksum(pkt []byte, csumStart, csumOffset int) Reason {
	at := csumStart + csumOffset
	if csumStart < 0 || csumOffset < 0 || at+2 > len(pkt) || csumStart > len(pkt) {
		return ReasonBadOffload
	}
	binary.BigEndian.PutUint16(pkt[at:], ^fold(sum(pkt[csumStart:], 0)))
	return OK
}
