package udp

import (
	"testing"

	"github.com/weftnet/weft/backend/udp/wire"
)

// FuzzTxPath feeds the send path three reads of one batch (a, b, a again),
// with GSO on or off and possibly switched between them, and checks what
// the kernel would put on the wire: every message, cut at its segment
// size, is a run of whole IPv4 packets. A split joined onto the wrong send
// (other datagram size, a short datagram in the middle) breaks this.
func FuzzTxPath(f *testing.F) {
	f.Add(tsoRead(46*1400, 1400), tsoRead(46*1400, 1400), uint8(0))
	f.Add(tsoRead(10*1400, 1400), tsoRead(5*1400-100, 1400), uint8(0))
	f.Add(tsoRead(10*1400, 1400), tsoReadTo("10.244.4.9", 3*1400, 1400), uint8(2))
	f.Add(tsoRead(3*1400, 1400), []byte{}, uint8(1))
	f.Fuzz(func(t *testing.T, a, b []byte, flags uint8) {
		io := &fakeIO{}
		p := newTestTx(true, io)
		gso := flags&1 == 0
		p.gso = func() bool { return gso }
		tb := testTable()
		p.handle(tb, append([]byte(nil), a...))
		if flags&2 != 0 {
			gso = !gso
		}
		p.handle(tb, append([]byte(nil), b...))
		p.handle(tb, append([]byte(nil), a...))
		p.flush()
		for i, m := range io.sent {
			seg := io.segSize[i]
			if seg == 0 {
				seg = len(m)
			}
			for off := 0; off < len(m); off += seg {
				d := m[off:min(off+seg, len(m))]
				if h, r := wire.Parse(d); r != wire.OK || h.TotalLen != len(d) {
					t.Fatalf("message %d (%d bytes, segment size %d): datagram at %d is not one packet: %+v %v",
						i, len(m), io.segSize[i], off, h, r)
				}
			}
		}
	})
}
