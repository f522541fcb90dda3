package wire

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// FuzzDecode feeds arbitrary datagrams through everything the receive and
// send paths do with a packet: it must never panic, and whatever
// Parse accepts must be self-consistent.
func FuzzDecode(f *testing.F) {
	f.Add(tcpPacket(1, 2, 3, 4, tcpACK, nil, []byte("payload")))
	f.Add([]byte{0x45, 0, 0, 20})
	f.Add([]byte{0x4f, 0, 0xff, 0xff, 0, 0, 0, 0, 1, 6})
	f.Add(tcp6Packet(v6b, 4, tcpACK, nil, []byte("payload")))
	f.Add(append([]byte{0x60, 0, 0, 0, 0, 8, ProtoFragment, 64}, make([]byte, 40)...))
	icmp := make([]byte, MaxICMPErrorLen)
	out := make([]byte, 4*MaxPacketLen)
	c := NewCoalescer()
	f.Fuzz(func(t *testing.T, b []byte) {
		h, r := Parse(b)
		if r != OK {
			return
		}
		if h.HeaderLen < 20 || h.TotalLen < h.HeaderLen || h.TotalLen > len(b) ||
			h.Version != b[0]>>4 || h.Version == 6 && h.HeaderLen != IPv6HeaderLen {
			t.Fatalf("accepted inconsistent header %+v len %d", h, len(b))
		}
		BuildICMPError(icmp, b, h, ICMPError(h.TTL&1))
		if h.TTL > 1 {
			DecrementTTL(b)
		}
		SplitTCP(b, h, 1+int(h.TTL)*5, out)
		partial := h.TTL&1 == 0
		if !c.Add(b, h, partial) {
			c.Flush()
			c.Add(b, h, partial)
		}
		if c.Segments() > 3 {
			c.Flush()
		}
		FinishChecksum(b[:h.TotalLen], h.HeaderLen, int(h.Proto))
	})
}

// FuzzSplitTCP checks the TSO splitter on arbitrary super-packets: no
// panic, every segment it produces is a valid packet, the headers-only
// splitter gathers into the same bytes, and its partial checksums complete
// to the same checksums.
func FuzzSplitTCP(f *testing.F) {
	f.Add(make([]byte, 3000), uint16(1000), uint8(5), false)
	f.Add(make([]byte, 60), uint16(1), uint8(15), false)
	f.Add(make([]byte, 3000), uint16(1000), uint8(5), true)
	out := make([]byte, 4*MaxPacketLen)
	hdrs := make([]byte, 4*MaxSegments*120)
	partial := make([]byte, len(hdrs))
	var gathered []byte
	f.Fuzz(func(t *testing.T, payload []byte, mss uint16, doff uint8, v6 bool) {
		if len(payload) > 60000 {
			return
		}
		p := tcpPacket(1, 2, 3, 4, tcpACK|tcpPSH, nil, payload)
		if v6 {
			p = tcp6Packet(v6b, 4, tcpACK|tcpPSH, nil, payload)
		}
		h, r := Parse(p)
		if r != OK {
			t.Fatal(r)
		}
		p[h.HeaderLen+tcpDataOff] = doff << 4
		h, r = Parse(p)
		if r != OK {
			t.Fatal(r)
		}
		n, segSize, total, r := SplitTCP(p, h, int(mss), out)
		if r != OK {
			return
		}
		at := 0
		for i := range n {
			seg := out[at:min(at+segSize, total)]
			sh, r := Parse(seg)
			if r != OK || sh.TotalLen != len(seg) {
				t.Fatalf("segment %d invalid: %v", i, r)
			}
			if seq := binary.BigEndian.Uint32(seg[h.HeaderLen+tcpSeqOff:]); seq != 4+uint32(i)*uint32(mss) {
				t.Fatalf("segment %d seq %d", i, seq)
			}
			at += len(seg)
		}
		if at != total {
			t.Fatalf("segments cover %d of %d", at, total)
		}
		hn, hdrLen, r := SplitTCPHeaders(p, h, int(mss), hdrs, false)
		if r != OK || hn != n {
			t.Fatalf("headers-only split: %d segments, %v; full split: %d", hn, r, n)
		}
		if pn, _, r := SplitTCPHeaders(p, h, int(mss), partial, true); r != OK || pn != n {
			t.Fatalf("partial split: %d segments, %v; full split: %d", pn, r, n)
		}
		gathered = gathered[:0]
		for i := range n {
			chunk := p[hdrLen+min(i*int(mss), len(p)-hdrLen) : hdrLen+min((i+1)*int(mss), len(p)-hdrLen)]
			gathered = append(gathered, hdrs[i*hdrLen:(i+1)*hdrLen]...)
			gathered = append(gathered, chunk...)
			// The kernel completes a partial checksum by summing from
			// csum_start to the end, the field (pseudo-header sum) included.
			ph := partial[i*hdrLen : (i+1)*hdrLen]
			full := hdrs[i*hdrLen : (i+1)*hdrLen]
			if !bytes.Equal(ph[:h.HeaderLen+tcpCsumOff], full[:h.HeaderLen+tcpCsumOff]) ||
				!bytes.Equal(ph[h.HeaderLen+tcpCsumOff+2:], full[h.HeaderLen+tcpCsumOff+2:]) {
				t.Fatalf("segment %d: partial header differs beyond the checksum", i)
			}
			done := ^fold(sum(chunk, sum(ph[h.HeaderLen:], 0)))
			if got := binary.BigEndian.Uint16(full[h.HeaderLen+tcpCsumOff:]); done != got {
				t.Fatalf("segment %d: partial checksum completes to %#04x, full split has %#04x", i, done, got)
			}
		}
		if !bytes.Equal(gathered, out[:total]) {
			t.Fatal("headers-only split gathers into other bytes than the full split")
		}
	})
}
