// Package packettest builds the packets tests send to probe the data path:
// inner IPv4/UDP packets and the VXLAN and udp-backend datagrams carrying
// them, as a hostile pod or host would craft them. Test code only.
package packettest

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// IPv4UDP is an IPv4 packet (valid header checksum, TTL 64, DF) carrying a
// UDP datagram from src:sport to dst:dport with payload (UDP checksum 0,
// which IPv4 allows). src and dst must be IPv4.
func IPv4UDP(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	p := make([]byte, 28+len(payload))
	p[0], p[8], p[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[6:], 0x4000)
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], checksum(p[:20]))
	u := p[20:]
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	copy(u[8:], payload)
	return p
}

// IPv6UDP is an IPv6 packet (hop limit 64) carrying a UDP datagram from
// src:sport to dst:dport with payload and its checksum, which IPv6
// requires. src and dst must be IPv6.
func IPv6UDP(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	p := make([]byte, 48+len(payload))
	p[0], p[6], p[7] = 0x60, 17, 64
	binary.BigEndian.PutUint16(p[4:], uint16(8+len(payload)))
	s, d := src.As16(), dst.As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	u := p[40:]
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], payload)
	// The pseudo-header: addresses, upper-layer length, next header.
	pseudo := append(append([]byte(nil), p[8:40]...), 0, 0, byte(len(u)>>8), byte(len(u)), 0, 0, 0, 17)
	pseudo = append(pseudo, u...)
	if len(pseudo)%2 == 1 {
		pseudo = append(pseudo, 0) // checksum sums 16-bit words
	}
	c := checksum(pseudo)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return p
}

// SrcMAC is the inner Ethernet source of VXLAN frames built here.
var SrcMAC = net.HardwareAddr{0x0a, 0x58, 0xde, 0xad, 0xbe, 0xef}

// VXLAN is the UDP payload of a VXLAN datagram (RFC 7348) for vni carrying
// an Ethernet frame to dstMAC from SrcMAC with the given EtherType and
// payload (e.g. 0x0800 and an IPv4UDP packet).
func VXLAN(vni uint32, dstMAC net.HardwareAddr, etherType uint16, payload []byte) []byte {
	b := make([]byte, 8+14+len(payload))
	b[0] = 0x08 // I flag: the VNI is valid
	b[4], b[5], b[6] = byte(vni>>16), byte(vni>>8), byte(vni)
	copy(b[8:], dstMAC)
	copy(b[14:], SrcMAC)
	binary.BigEndian.PutUint16(b[20:], etherType)
	copy(b[22:], payload)
	return b
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
