package packettest

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
)

func TestIPv4UDP(t *testing.T) {
	p := IPv4UDP(netip.MustParseAddr("10.244.1.5"), netip.MustParseAddr("10.244.2.7"), 40000, 9999, []byte("hi"))
	if len(p) != 30 || p[0] != 0x45 || p[9] != 17 || binary.BigEndian.Uint16(p[2:]) != 30 {
		t.Fatalf("header % x", p[:20])
	}
	if checksum(p[:20]) != 0 {
		t.Error("IPv4 header checksum does not verify")
	}
	if netip.AddrFrom4([4]byte(p[12:16])).String() != "10.244.1.5" || binary.BigEndian.Uint16(p[22:]) != 9999 || string(p[28:]) != "hi" {
		t.Errorf("packet % x", p)
	}
}

func TestIPv6UDP(t *testing.T) {
	src, dst := netip.MustParseAddr("fd00:10:244:1::5"), netip.MustParseAddr("fd00:10:244:2::7")
	for _, payload := range []string{"hi", "odd"} {
		p := IPv6UDP(src, dst, 40000, 9999, []byte(payload))
		if len(p) != 48+len(payload) || p[0] != 0x60 || p[6] != 17 || p[7] != 64 || int(binary.BigEndian.Uint16(p[4:])) != 8+len(payload) {
			t.Fatalf("header % x", p[:40])
		}
		if netip.AddrFrom16([16]byte(p[8:24])) != src || netip.AddrFrom16([16]byte(p[24:40])) != dst ||
			binary.BigEndian.Uint16(p[42:]) != 9999 || string(p[48:]) != payload {
			t.Errorf("packet % x", p)
		}
		// The checksum verifies over the pseudo-header and the datagram.
		b := append(append([]byte(nil), p[8:40]...), 0, 0, 0, byte(len(p)-40), 0, 0, 0, 17)
		b = append(b, p[40:]...)
		if len(b)%2 == 1 {
			b = append(b, 0)
		}
		if checksum(b) != 0 {
			t.Errorf("%q: UDP checksum does not verify", payload)
		}
	}
}

func TestVXLAN(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	b := VXLAN(0x010203, mac, 0x0800, []byte{0x45})
	// The offsets the nftables inner check reads, minus the 8-byte UDP
	// header: EtherType at 20, inner IPv4 at 22.
	if b[0] != 0x08 || b[4] != 1 || b[5] != 2 || b[6] != 3 || net.HardwareAddr(b[8:14]).String() != mac.String() ||
		binary.BigEndian.Uint16(b[20:]) != 0x0800 || b[22] != 0x45 || len(b) != 23 {
		t.Fatalf("datagram % x", b)
	}
}
