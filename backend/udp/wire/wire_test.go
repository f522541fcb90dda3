package wire

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// tcpPacket builds a valid TCP/IPv4 packet with payload and DF set.
func tcpPacket(src, dst uint32, id uint16, seq uint32, flags uint8, opts, payload []byte) []byte {
	thl := tcpMinHeaderLen + len(opts)
	p := make([]byte, IPv4MinHeaderLen+thl+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[4:], id)
	binary.BigEndian.PutUint16(p[6:], ipv4FlagDF)
	p[8] = 64
	p[9] = ProtoTCP
	binary.BigEndian.PutUint32(p[12:], src)
	binary.BigEndian.PutUint32(p[16:], dst)
	SetIPv4Checksum(p, IPv4MinHeaderLen)
	t := p[IPv4MinHeaderLen:]
	binary.BigEndian.PutUint16(t[0:], 40000)
	binary.BigEndian.PutUint16(t[2:], 5201)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], 777)
	t[12] = uint8(thl/4) << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], 512)
	copy(t[20:], opts)
	copy(t[thl:], payload)
	h, _ := Parse(p)
	L4Checksum(p, h)
	return p
}

// Two IPv6 pod addresses (fd00:10:244:1::5, fd00:10:244:9::9).
var (
	v6a = Addr6{Hi: 0xfd00_0010_0244_0001, Lo: 5}
	v6b = Addr6{Hi: 0xfd00_0010_0244_0009, Lo: 9}
)

// to6 is the IPv4 packet p (TCP or UDP) as an IPv6 packet from src to dst
// with flow label flow: the same hop limit, protocol and transport bytes,
// the transport checksum redone.
func to6(p []byte, src, dst Addr6, flow uint32) []byte {
	h, _ := Parse(p)
	l4 := p[h.HeaderLen:h.TotalLen]
	q := make([]byte, IPv6HeaderLen+len(l4))
	binary.BigEndian.PutUint32(q, 6<<28|flow&0xfffff)
	binary.BigEndian.PutUint16(q[ipv6PayloadOff:], uint16(len(l4)))
	q[ipv6NextOff], q[ipv6HopOff] = h.Proto, h.TTL
	src.Put(q[ipv6SrcOff:])
	dst.Put(q[ipv6DstOff:])
	copy(q[IPv6HeaderLen:], l4)
	h6, _ := Parse(q)
	L4Checksum(q, h6)
	return q
}

// tcp6Packet is tcpPacket over IPv6 (no IP ID) from v6a to dst.
func tcp6Packet(dst Addr6, seq uint32, flags uint8, opts, payload []byte) []byte {
	return to6(tcpPacket(1, 2, 0, seq, flags, opts, payload), v6a, dst, 0x12345)
}

// flatten is what a writev of bufs puts on the wire.
func flatten(bufs [][]byte) []byte {
	var out []byte
	for _, b := range bufs {
		out = append(out, b...)
	}
	return out
}

func validL4(t *testing.T, p []byte) {
	t.Helper()
	h, r := Parse(p)
	if r != OK {
		t.Fatalf("parse: %v", r)
	}
	if h.Version == 4 && !ValidIPv4Checksum(p, h.HeaderLen) {
		t.Fatalf("bad IPv4 checksum")
	}
	if fold(sum(p[h.HeaderLen:h.TotalLen], pseudoSum(p, h.Proto, h.TotalLen-h.HeaderLen))) != 0xffff {
		t.Fatalf("bad L4 checksum")
	}
}

func TestParse(t *testing.T) {
	good := tcpPacket(0x0af40101, 0x0af40202, 1, 1, tcpACK, nil, []byte("hello"))
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	good6 := tcp6Packet(v6b, 1, tcpACK, nil, []byte("hello"))
	mod6 := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good6)) }
	tests := []struct {
		name string
		b    []byte
		want Reason
	}{
		{"ok", good, OK},
		{"ok with padding", append(bytes.Clone(good), 0, 0, 0), OK},
		{"empty", nil, ReasonShort},
		{"short", good[:19], ReasonShort},
		{"version 5", mod(func(b []byte) []byte { b[0] = 0x55; return b }), ReasonBadVersion},
		{"ipv6 ok", good6, OK},
		{"ipv6 ok with padding", append(bytes.Clone(good6), 0, 0), OK},
		{"ipv6 short header", good6[:39], ReasonShort},
		{"ipv6 payload past end", good6[:len(good6)-1], ReasonShort},
		{"ipv6 jumbogram", mod6(func(b []byte) []byte { b[4], b[5] = 0, 0; return b }), ReasonBadHeader},
		{"ihl 4", mod(func(b []byte) []byte { b[0] = 0x44; return b }), ReasonBadHeader},
		{"ihl past end", mod(func(b []byte) []byte { b[0] = 0x4f; binary.BigEndian.PutUint16(b[2:], 60); return b[:40] }), ReasonShort},
		{"total past end", mod(func(b []byte) []byte { return b[:len(b)-1] }), ReasonShort},
		{"total below ihl", mod(func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], 19); return b }), ReasonBadHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, r := Parse(tt.b); r != tt.want {
				t.Fatalf("Parse = %v, want %v", r, tt.want)
			}
		})
	}
	h, _ := Parse(good6)
	if h.Version != 6 || h.HeaderLen != 40 || h.TotalLen != len(good6) || h.Proto != ProtoTCP || h.TTL != 64 ||
		h.Src6 != v6a || h.Dst6 != v6b || h.Src != 0 || h.Dst != 0 {
		t.Fatalf("IPv6 header parsed as %+v", h)
	}
}

func TestDecrementTTL(t *testing.T) {
	for ttl := 2; ttl < 256; ttl++ {
		p := tcpPacket(0x0af40101, 0x0af40202, uint16(ttl*977), 1, tcpACK, nil, nil)
		p[ipv4TTLOff] = uint8(ttl)
		SetIPv4Checksum(p, 20)
		DecrementTTL(p)
		if p[ipv4TTLOff] != uint8(ttl-1) || !ValidIPv4Checksum(p, 20) {
			t.Fatalf("ttl %d: got ttl %d, checksum valid %v", ttl, p[ipv4TTLOff], ValidIPv4Checksum(p, 20))
		}
	}
	p := tcp6Packet(v6b, 1, tcpACK, nil, []byte("x"))
	want := bytes.Clone(p)
	want[ipv6HopOff]--
	if DecrementTTL(p); !bytes.Equal(p, want) {
		t.Fatal("IPv6: only the hop limit may change, by one")
	}
}

func TestBuildICMPError(t *testing.T) {
	orig := tcpPacket(0x0af40105, 0x0af40909, 1, 1, tcpACK, nil, make([]byte, 1400))
	orig6 := tcp6Packet(v6b, 1, tcpACK, nil, make([]byte, 1400))
	icmpErr := make([]byte, MaxICMPErrorLen)
	icmp6Err := make([]byte, MaxICMPErrorLen)
	h, _ := Parse(orig)
	n := BuildICMPError(icmpErr, orig, h, ErrTTL)
	h6, _ := Parse(orig6)
	n6 := BuildICMPError(icmp6Err, orig6, h6, ErrTTL)
	clone := func(b []byte, f func(b []byte)) []byte { b = bytes.Clone(b); f(b); return b }
	echo6 := to6(tcpPacket(1, 2, 0, 1, tcpACK, nil, nil), v6a, v6b, 0)
	echo6[ipv6NextOff], echo6[IPv6HeaderLen] = ProtoICMPv6, 128 // an echo request: errors may be sent about it
	frag6 := func(off uint16) []byte {
		return clone(orig6, func(b []byte) {
			b[ipv6NextOff] = ProtoFragment
			binary.BigEndian.PutUint16(b[IPv6HeaderLen+2:], off<<3)
		})
	}
	tests := []struct {
		name     string
		pkt      []byte
		e        ICMPError
		wantType uint8 // 0: no error may be sent
		wantLen  int
	}{
		{"tcp", orig, ErrNoRoute, ICMPDestUnreachable, 576},
		{"ttl", orig, ErrTTL, ICMPTimeExceeded, 576},
		{"about an icmp error", icmpErr[:n], ErrNoRoute, 0, 0},
		{"multicast source", clone(orig, func(b []byte) { binary.BigEndian.PutUint32(b[12:], 0xe0000001) }), ErrNoRoute, 0, 0},
		{"non-first fragment", clone(orig, func(b []byte) { binary.BigEndian.PutUint16(b[6:], 10) }), ErrNoRoute, 0, 0},
		{"ipv6 tcp", orig6, ErrNoRoute, ICMPv6DestUnreachable, 1280},
		{"ipv6 hop limit", orig6, ErrTTL, ICMPv6TimeExceeded, 1280},
		{"ipv6 short packet quoted whole", echo6, ErrNoRoute, ICMPv6DestUnreachable, 48 + len(echo6)},
		{"ipv6 first fragment", frag6(0), ErrNoRoute, ICMPv6DestUnreachable, 1280},
		{"ipv6 non-first fragment", frag6(185), ErrNoRoute, 0, 0},
		{"ipv6 about an icmpv6 error", icmp6Err[:n6], ErrNoRoute, 0, 0},
		{"ipv6 multicast source", clone(orig6, func(b []byte) { b[ipv6SrcOff] = 0xff }), ErrNoRoute, 0, 0},
		{"ipv6 unspecified source", clone(orig6, func(b []byte) { clear(b[ipv6SrcOff : ipv6SrcOff+16]) }), ErrNoRoute, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, r := Parse(tt.pkt)
			if r != OK {
				t.Fatal(r)
			}
			out := make([]byte, MaxICMPErrorLen)
			n := BuildICMPError(out, tt.pkt, h, tt.e)
			if (n > 0) != (tt.wantType != 0) || n != tt.wantLen {
				t.Fatalf("built %d bytes, want %d (type %d)", n, tt.wantLen, tt.wantType)
			}
			if n == 0 {
				return
			}
			eh, r := Parse(out[:n])
			if r != OK || eh.Version != h.Version || eh.TotalLen != n || eh.TTL != 64 {
				t.Fatalf("bad ICMP header: %+v %v", eh, r)
			}
			body := out[eh.HeaderLen:n]
			if h.Version == 4 {
				if eh.Dst != h.Src || eh.Src != h.Dst || eh.Proto != ProtoICMP || !ValidIPv4Checksum(out, 20) || Checksum(body) != 0 {
					t.Fatalf("bad ICMP error: %+v", eh)
				}
			} else if eh.Dst6 != h.Src6 || eh.Src6 != h.Dst6 || eh.Proto != ProtoICMPv6 ||
				fold(sum(body, pseudoSum(out, ProtoICMPv6, len(body)))) != 0xffff {
				t.Fatalf("bad ICMPv6 error: %+v", eh)
			}
			if body[0] != tt.wantType || body[1] != 0 {
				t.Fatalf("type/code %d/%d, want %d/0", body[0], body[1], tt.wantType)
			}
			if q := body[8:]; !bytes.Equal(q, tt.pkt[:len(q)]) {
				t.Fatal("quote differs from the original's start")
			}
		})
	}
}

func TestFinishChecksum(t *testing.T) {
	p := tcpPacket(0x0af40101, 0x0af40202, 1, 1, tcpACK, nil, []byte("odd length payload!"))
	h, _ := Parse(p)
	want := bytes.Clone(p)
	// What a TUN with TUN_F_CSUM hands over: pseudo-header sum only.
	binary.BigEndian.PutUint16(p[20+tcpCsumOff:], fold(pseudoSum(p, ProtoTCP, h.TotalLen-20)))
	if r := FinishChecksum(p, 20, tcpCsumOff); r != OK || !bytes.Equal(p, want) {
		t.Fatalf("FinishChecksum: %v, equal %v", r, bytes.Equal(p, want))
	}
	if r := FinishChecksum(p, 20, len(p)); r != ReasonBadOffload {
		t.Fatalf("out of range offset accepted: %v", r)
	}
}

// TestSplitCoalesceRoundTrip splits a TSO super-packet as the TUN hands it
// over and coalesces the segments back: the result must be the original.
func TestSplitCoalesceRoundTrip(t *testing.T) {
	opts := []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2} // NOP NOP timestamps
	type test struct {
		name          string
		v6            bool
		payload, mss  int
		flags         uint8
		wantSegs, gro int
	}
	tests := []test{
		{"exact multiple", false, 1400 * 10, 1400, tcpACK, 10, 10},
		{"short last", false, 1400*10 + 7, 1400, tcpACK | tcpPSH, 11, 11},
		{"single", false, 100, 1400, tcpACK, 1, 1},
		{"big", false, 64000, 1360, tcpACK, 48, 48},
	}
	for _, tt := range tests {
		tt.name, tt.v6 = "ipv6 "+tt.name, true
		tests = append(tests, tt)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload := make([]byte, tt.payload)
			for i := range payload {
				payload[i] = byte(i * 7)
			}
			big := tcpPacket(0x0af40105, 0x0af40909, 100, 1e9, tt.flags, opts, payload)
			wantGSO := uint8(VirtioNetHdrGSOTCPv4)
			if tt.v6 {
				big, wantGSO = tcp6Packet(v6b, 1e9, tt.flags, opts, payload), VirtioNetHdrGSOTCPv6
			}
			h, _ := Parse(big)
			out := make([]byte, 2*MaxPacketLen)
			n, segSize, total, r := SplitTCP(big, h, tt.mss, out)
			if r != OK || n != tt.wantSegs {
				t.Fatalf("split: n=%d r=%v", n, r)
			}
			c := NewCoalescer()
			var got []byte
			for i := range n {
				seg := out[i*segSize : min((i+1)*segSize, total)]
				validL4(t, seg)
				sh, _ := Parse(seg)
				if sh.TotalLen != len(seg) {
					t.Fatalf("segment %d length %d != %d", i, sh.TotalLen, len(seg))
				}
				if !c.Add(seg, sh, false) {
					t.Fatalf("segment %d did not coalesce", i)
				}
			}
			if c.Segments() != tt.gro {
				t.Fatalf("coalesced %d segments, want %d", c.Segments(), tt.gro)
			}
			got = flatten(c.Flush())
			vh := DecodeVirtioNetHdr(got)
			p := got[VirtioNetHdrLen:]
			if n > 1 {
				if vh.GSOType != wantGSO || int(vh.GSOSize) != tt.mss || vh.Flags != VirtioNetHdrFNeedsCsum ||
					int(vh.CsumStart) != len(big)-len(payload)-len(opts)-tcpMinHeaderLen {
					t.Fatalf("virtio header %+v", vh)
				}
				if r := FinishChecksum(p, int(vh.CsumStart), int(vh.CsumOffset)); r != OK {
					t.Fatal(r)
				}
				// Split sets the sequence of IDs; the merged one keeps the first.
			}
			if !bytes.Equal(p, big) {
				t.Fatalf("round trip differs (len %d vs %d)", len(p), len(big))
			}
		})
	}
}

func TestCoalescerRefuses(t *testing.T) {
	a := tcpPacket(1, 2, 1, 1000, tcpACK, nil, make([]byte, 100))
	tests := []struct {
		name string
		b    []byte
	}{
		{"gap in sequence", tcpPacket(1, 2, 2, 1101, tcpACK, nil, make([]byte, 100))},
		{"other flow", tcpPacket(1, 3, 2, 1100, tcpACK, nil, make([]byte, 100))},
		{"larger segment", tcpPacket(1, 2, 2, 1100, tcpACK, nil, make([]byte, 101))},
		{"fin", tcpPacket(1, 2, 2, 1100, tcpACK|tcpFIN, nil, make([]byte, 100))},
		{"options differ", tcpPacket(1, 2, 2, 1100, tcpACK, []byte{1, 1, 1, 1}, make([]byte, 96))},
		{"pure ack", tcpPacket(1, 2, 2, 1100, tcpACK, nil, nil)},
		{"ipv6 after ipv4", tcp6Packet(v6b, 1100, tcpACK, nil, make([]byte, 100))},
		{"ipv6 flow label differs", to6(tcpPacket(1, 2, 0, 1100, tcpACK, nil, make([]byte, 100)), v6a, v6b, 7)},
		{"ipv6 other destination", tcp6Packet(v6a, 1100, tcpACK, nil, make([]byte, 100))},
		{"ipv6 gap in sequence", tcp6Packet(v6b, 1101, tcpACK, nil, make([]byte, 100))},
		{"ipv6 hop limit differs", func() []byte {
			b := tcp6Packet(v6b, 1100, tcpACK, nil, make([]byte, 100))
			b[ipv6HopOff]--
			return b
		}()},
	}
	a6 := tcp6Packet(v6b, 1000, tcpACK, nil, make([]byte, 100))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := a
			if tt.b[0]>>4 == 6 && tt.name != "ipv6 after ipv4" {
				a = a6
			}
			c := NewCoalescer()
			ha, _ := Parse(a)
			hb, _ := Parse(tt.b)
			c.Add(a, ha, false)
			if c.Add(tt.b, hb, false) {
				t.Fatal("coalesced a packet GRO must not merge")
			}
			if out := flatten(c.Flush()); !bytes.Equal(out[VirtioNetHdrLen:], a) || DecodeVirtioNetHdr(out) != (VirtioNetHdr{}) {
				t.Fatal("single packet changed")
			}
		})
	}
}

// TestCoalescerPartial: a lone TCP segment added as partial goes to the
// kernel as CHECKSUM_PARTIAL (whatever its checksum field held); other
// packets added as partial go out as they are.
func TestCoalescerPartial(t *testing.T) {
	seg := tcpPacket(1, 2, 1, 1000, tcpACK|tcpPSH, nil, []byte("hello, partial"))
	want := append([]byte(nil), seg...)
	binary.BigEndian.PutUint16(seg[IPv4MinHeaderLen+tcpCsumOff:], 0xdead) // as a partial sender leaves it
	c := NewCoalescer()
	h, _ := Parse(seg)
	c.Add(seg, h, true)
	out := flatten(c.Flush())
	vh := DecodeVirtioNetHdr(out)
	if vh.Flags != VirtioNetHdrFNeedsCsum || vh.GSOType != VirtioNetHdrGSONone ||
		vh.CsumStart != IPv4MinHeaderLen || vh.CsumOffset != TCPChecksumOffset {
		t.Fatalf("virtio header %+v", vh)
	}
	p := out[VirtioNetHdrLen:]
	if r := FinishChecksum(p, int(vh.CsumStart), int(vh.CsumOffset)); r != OK || !bytes.Equal(p, want) {
		t.Fatalf("completed packet differs from the original (%v)", r)
	}
	if binary.BigEndian.Uint16(seg[IPv4MinHeaderLen+tcpCsumOff:]) != 0xdead {
		t.Fatal("the coalescer changed the packet it was given")
	}

	udp := make([]byte, 28)
	udp[0], udp[9] = 0x45, 17
	binary.BigEndian.PutUint16(udp[2:], 28)
	SetIPv4Checksum(udp, IPv4MinHeaderLen)
	frag := tcpPacket(1, 2, 1, 1000, tcpACK, nil, make([]byte, 8))
	binary.BigEndian.PutUint16(frag[ipv4FlagsOff:], 0x2000) // MF
	SetIPv4Checksum(frag, IPv4MinHeaderLen)
	for name, b := range map[string][]byte{"udp": udp, "fragment": frag} {
		h, r := Parse(b)
		if r != OK {
			t.Fatal(name, r)
		}
		c.Add(b, h, true)
		if out := flatten(c.Flush()); DecodeVirtioNetHdr(out) != (VirtioNetHdr{}) || !bytes.Equal(out[VirtioNetHdrLen:], b) {
			t.Fatalf("%s: changed or marked partial", name)
		}
	}
}

func TestVirtioNetHdrRoundTrip(t *testing.T) {
	h := VirtioNetHdr{Flags: 1, GSOType: 1, HdrLen: 52, GSOSize: 1398, CsumStart: 20, CsumOffset: 16}
	b := make([]byte, VirtioNetHdrLen)
	h.Encode(b)
	if got := DecodeVirtioNetHdr(b); got != h {
		t.Fatalf("got %+v", got)
	}
}
