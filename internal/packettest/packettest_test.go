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
