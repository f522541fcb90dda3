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
	h, _ := ParseIPv4(p)
	L4Checksum(p, h)
	return p
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
	h, r := ParseIPv4(p)
	if r != OK {
		t.Fatalf("parse: %v", r)
	}
	if !ValidIPv4Checksum(p, h.HeaderLen) {
		t.Fatalf("bad IPv4 checksum")
	}
	if fold(sum(p[h.HeaderLen:h.TotalLen], pseudoSum(p, h.Proto, h.TotalLen-h.HeaderLen))) != 0xffff {
		t.Fatalf("bad L4 checksum")
	}
}

func TestParseIPv4(t *testing.T) {
	good := tcpPacket(0x0af40101, 0x0af40202, 1, 1, tcpACK, nil, []byte("hello"))
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	tests := []struct {
		name string
		b    []byte
		want Reason
	}{
		{"ok", good, OK},
		{"ok with padding", append(bytes.Clone(good), 0, 0, 0), OK},
		{"empty", nil, ReasonShort},
		{"short", good[:19], ReasonShort},
		{"ipv6", mod(func(b []byte) []byte { b[0] = 0x60; return b }), ReasonNotIPv4},
		{"ihl 4", mod(func(b []byte) []byte { b[0] = 0x44; return b }), ReasonBadHeader},
		{"ihl past end", mod(func(b []byte) []byte { b[0] = 0x4f; binary.BigEndian.PutUint16(b[2:], 60); return b[:40] }), ReasonShort},
		{"total past end", mod(func(b []byte) []byte { return b[:len(b)-1] }), ReasonShort},
		{"total below ihl", mod(func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], 19); return b }), ReasonBadHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, r := ParseIPv4(tt.b); r != tt.want {
				t.Fatalf("ParseIPv4 = %v, want %v", r, tt.want)
			}
		})
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
}

func TestBuildICMPError(t *testing.T) {
	orig := tcpPacket(0x0af40105, 0x0af40909, 1, 1, tcpACK, nil, make([]byte, 1000))
	icmpErr := make([]byte, MaxICMPErrorLen)
	n := 0
	{
		h, _ := ParseIPv4(orig)
		n = BuildICMPError(icmpErr, orig, h, ICMPTimeExceeded, 0, 0x0af40909)
	}
	tests := []struct {
		name   string
		pkt    []byte
		wantOK bool
	}{
		{"tcp", orig, true},
		{"about an icmp error", icmpErr[:n], false},
		{"multicast source", func() []byte {
			b := bytes.Clone(orig)
			binary.BigEndian.PutUint32(b[12:], 0xe0000001)
			return b
		}(), false},
		{"non-first fragment", func() []byte {
			b := bytes.Clone(orig)
			binary.BigEndian.PutUint16(b[6:], 10)
			return b
		}(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, r := ParseIPv4(tt.pkt)
			if r != OK {
				t.Fatal(r)
			}
			out := make([]byte, MaxICMPErrorLen)
			n := BuildICMPError(out, tt.pkt, h, ICMPDestUnreachable, ICMPCodeNetUnreach, 0x0af40909)
			if (n > 0) != tt.wantOK {
				t.Fatalf("built %d bytes, want ok=%v", n, tt.wantOK)
			}
			if n == 0 {
				return
			}
			eh, r := ParseIPv4(out[:n])
			if r != OK || eh.Dst != h.Src || eh.Src != 0x0af40909 || eh.Proto != ProtoICMP || !ValidIPv4Checksum(out, 20) {
				t.Fatalf("bad ICMP header: %+v %v", eh, r)
			}
			if Checksum(out[20:n]) != 0 || out[20] != ICMPDestUnreachable {
				t.Fatalf("bad ICMP body")
			}
			if !bytes.Equal(out[28:n], tt.pkt[:n-28]) || n != MaxICMPErrorLen {
				t.Fatalf("quote wrong: n=%d", n)
			}
		})
	}
}

func TestFinishChecksum(t *testing.T) {
	p := tcpPacket(0x0af40101, 0x0af40202, 1, 1, tcpACK, nil, []byte("odd length payload!"))
	h, _ := ParseIPv4(p)
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
	for _, tt := range []struct {
		name          string
		payload, mss  int
		flags         uint8
		wantSegs, gro int
	}{
		{"exact multiple", 1400 * 10, 1400, tcpACK, 10, 10},
		{"short last", 1400*10 + 7, 1400, tcpACK | tcpPSH, 11, 11},
		{"single", 100, 1400, tcpACK, 1, 1},
		{"big", 64000, 1360, tcpACK, 48, 48},
	} {
		t.Run(tt.name, func(t *testing.T) {
			payload := make([]byte, tt.payload)
			for i := range payload {
				payload[i] = byte(i * 7)
			}
			big := tcpPacket(0x0af40105, 0x0af40909, 100, 1e9, tt.flags, opts, payload)
			h, _ := ParseIPv4(big)
			out := make([]byte, 2*MaxPacketLen)
			n, segSize, total, r := SplitTCP4(big, h, tt.mss, out)
			if r != OK || n != tt.wantSegs {
				t.Fatalf("split: n=%d r=%v", n, r)
			}
			c := NewCoalescer()
			var got []byte
			for i := range n {
				seg := out[i*segSize : min((i+1)*segSize, total)]
				validL4(t, seg)
				sh, _ := ParseIPv4(seg)
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
				if vh.GSOType != VirtioNetHdrGSOTCPv4 || int(vh.GSOSize) != tt.mss || vh.Flags != VirtioNetHdrFNeedsCsum {
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCoalescer()
			ha, _ := ParseIPv4(a)
			hb, _ := ParseIPv4(tt.b)
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
	h, _ := ParseIPv4(seg)
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
		h, r := ParseIPv4(b)
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
