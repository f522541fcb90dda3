package udp

import (
	"encoding/binary"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// tunReader reads up to len(bufs) packets from a TUN queue per wake-up:
// one poller round trip for a whole batch. Owned by one goroutine.
type tunReader struct {
	rc   syscall.RawConn
	bufs [][]byte
	ns   []int
	n    int
	err  error
	fn   func(uintptr) bool // bound once: no closure per call
}

func newTUNReader(rc syscall.RawConn, batch, size int) *tunReader {
	r := &tunReader{rc: rc, bufs: make([][]byte, batch), ns: make([]int, batch)}
	for i := range r.bufs {
		r.bufs[i] = make([]byte, size)
	}
	r.fn = r.read
	return r
}

func (r *tunReader) read(fd uintptr) bool {
	for r.n < len(r.bufs) {
		n, err := unix.Read(int(fd), r.bufs[r.n])
		switch err {
		case nil:
			r.ns[r.n] = n
			r.n++
		case unix.EINTR:
		case unix.EAGAIN:
			return r.n > 0 // nothing yet: wait for the poller
		default:
			r.err = err
			return true
		}
	}
	return true
}

// readBatch blocks until at least one packet is read.
func (r *tunReader) readBatch() (int, error) {
	r.n, r.err = 0, nil
	if err := r.rc.Read(r.fn); err != nil {
		return 0, err
	}
	if r.n > 0 {
		return r.n, nil
	}
	return 0, r.err
}

// tunWriter writes one packet per call to a TUN queue.
type tunWriter struct {
	rc  syscall.RawConn
	buf []byte
	err error
	fn  func(uintptr) bool
}

func newTUNWriter(rc syscall.RawConn) *tunWriter {
	w := &tunWriter{rc: rc}
	w.fn = w.do
	return w
}

func (w *tunWriter) do(fd uintptr) bool {
	for {
		_, err := unix.Write(int(fd), w.buf)
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		w.err = err
		return true
	}
}

func (w *tunWriter) write(b []byte) error {
	w.buf, w.err = b, nil
	if err := w.rc.Write(w.fn); err != nil {
		return err
	}
	return w.err
}

// udpReceiver is recvmmsg on a UDP socket with preallocated headers,
// addresses and control buffers. It is ours rather than x/net/ipv4's
// ReadBatch because that one allocates a *net.UDPAddr per message.
type udpReceiver struct {
	rc    syscall.RawConn
	bufs  [][]byte
	hs    []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet4
	oobs  [][]byte
	n     int
	err   error
	fn    func(uintptr) bool
}

func newUDPReceiver(rc syscall.RawConn, batch, size int) *udpReceiver {
	r := &udpReceiver{
		rc:    rc,
		bufs:  make([][]byte, batch),
		hs:    make([]unix.Mmsghdr, batch),
		iovs:  make([]unix.Iovec, batch),
		names: make([]unix.RawSockaddrInet4, batch),
		oobs:  make([][]byte, batch),
	}
	oobLen := unix.CmsgSpace(4)
	for i := range r.bufs {
		r.bufs[i] = make([]byte, size)
		r.oobs[i] = make([]byte, oobLen)
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(size)
		r.hs[i].Hdr.Iov = &r.iovs[i]
		r.hs[i].Hdr.SetIovlen(1)
		r.hs[i].Hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		r.hs[i].Hdr.Control = &r.oobs[i][0]
	}
	r.fn = r.recv
	return r
}

func (r *udpReceiver) recv(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hs[0])),
			uintptr(len(r.hs)), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			r.n = int(n)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		r.err = e
		return true
	}
}

// readBatch blocks until at least one datagram is received.
func (r *udpReceiver) readBatch() (int, error) {
	for i := range r.hs {
		r.hs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
		r.hs[i].Hdr.SetControllen(len(r.oobs[i]))
		r.hs[i].Hdr.Flags = 0
		r.hs[i].Len = 0
	}
	r.n, r.err = 0, nil
	if err := r.rc.Read(r.fn); err != nil {
		return 0, err
	}
	return r.n, r.err
}

// message returns datagram i: its source (host order; 0 if not IPv4), its
// bytes, the GRO segment size (0 when not coalesced) and whether it was
// truncated.
func (r *udpReceiver) message(i int) (src uint32, data []byte, gsoSize int, trunc bool) {
	h := &r.hs[i]
	if r.names[i].Family == unix.AF_INET && h.Hdr.Namelen >= unix.SizeofSockaddrInet4 {
		src = be32(r.names[i].Addr)
	}
	data = r.bufs[i][:min(int(h.Len), len(r.bufs[i]))]
	trunc = h.Hdr.Flags&unix.MSG_TRUNC != 0
	oob := r.oobs[i][:min(int(h.Hdr.Controllen), len(r.oobs[i]))]
	for len(oob) >= unix.SizeofCmsghdr {
		c := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(c.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			break
		}
		if c.Level == unix.SOL_UDP && c.Type == unix.UDP_GRO && l >= unix.CmsgLen(2) {
			if l >= unix.CmsgLen(4) {
				gsoSize = int(binary.NativeEndian.Uint32(oob[unix.CmsgLen(0):]))
			} else {
				gsoSize = int(binary.NativeEndian.Uint16(oob[unix.CmsgLen(0):]))
			}
		}
		next := unix.CmsgSpace(l - unix.CmsgLen(0))
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	return src, data, gsoSize, trunc
}
