package udp

import (
	"encoding/binary"
	"errors"
	"net"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/backend/udp/wire"
)

// The packet path does its own system calls on raw descriptors that are
// not registered with the Go poller. Each queue has one goroutine that
// blocks in poll(2) on its TUN queue, its UDP socket and the backend's stop
// eventfd, and serves whichever is ready. Why not the poller:
//
//   - A packet that is ready wakes exactly the thread that will handle it.
//     Through the poller it wakes the thread parked in epoll_wait, which
//     then finds a P and schedules the goroutine: more context switches
//     and scheduler work per batch, which showed as a quarter of weftd's
//     time and most of the ping latency.
//   - One goroutine serves both directions, so what the kernel produces
//     while we write into the TUN (an echo reply, the receiver's TCP ACKs:
//     they are generated synchronously inside the write) is picked up by
//     the next poll without a wake-up at all. TUN flow steering puts the
//     answer on the queue the request was written to.
//
// A descriptor registered with the poller would also wake the thread in
// epoll_wait on every packet even though no goroutine waits for it, so the
// TUN files and sockets are created without it (blocking at creation,
// non-blocking set afterwards on the descriptor).

// ioFD is a descriptor the packet path uses directly.
type ioFD int

// tunReader reads up to len(bufs) packets from a non-blocking TUN queue.
// Owned by one goroutine.
type tunReader struct {
	fd   ioFD
	bufs [][]byte
	ns   []int
}

func newTUNReader(fd ioFD, batch, size int) *tunReader {
	r := &tunReader{fd: fd, bufs: make([][]byte, batch), ns: make([]int, batch)}
	for i := range r.bufs {
		r.bufs[i] = make([]byte, size)
	}
	return r
}

// readBatch reads what is queued, up to the batch size, without blocking.
func (r *tunReader) readBatch() (int, error) {
	n := 0
	for n < len(r.bufs) {
		m, err := unix.Read(int(r.fd), r.bufs[n])
		switch err {
		case nil:
			r.ns[n] = m
			n++
		case unix.EINTR:
		case unix.EAGAIN:
			return n, nil
		default:
			return n, err
		}
	}
	return n, nil
}

// writeTUN writes one packet to a TUN queue. A TUN write does not block
// (the device never runs out of send buffer), so no poll is needed.
func writeTUN(fd ioFD, b []byte) error {
	for {
		_, err := unix.Write(int(fd), b)
		if err != unix.EINTR {
			return err
		}
	}
}

// tunWriter writes one packet gathered from several buffers to a TUN
// queue with writev, through preallocated iovecs (x/sys/unix.Writev
// allocates them per call).
type tunWriter struct {
	fd   ioFD
	iovs []unix.Iovec
}

func newTUNWriter(fd ioFD, bufs int) *tunWriter {
	return &tunWriter{fd: fd, iovs: make([]unix.Iovec, bufs)}
}

var errTooManyBuffers = errors.New("packet in more buffers than the writer holds")

// writev writes bufs as one packet. Like write, a TUN writev does not block.
func (w *tunWriter) writev(bufs [][]byte) error {
	if len(bufs) == 0 || len(bufs) > len(w.iovs) {
		return errTooManyBuffers
	}
	for i, b := range bufs {
		w.iovs[i].Base = unsafe.SliceData(b)
		w.iovs[i].SetLen(len(b))
	}
	var e unix.Errno
	for {
		_, _, e = unix.Syscall(unix.SYS_WRITEV, uintptr(w.fd), uintptr(unsafe.Pointer(&w.iovs[0])), uintptr(len(bufs)))
		if e != unix.EINTR {
			break
		}
	}
	clear(w.iovs[:len(bufs)]) // keep no references to packet buffers
	if e != 0 {
		return e
	}
	return nil
}

// udpReceiver is recvmmsg on a UDP socket of either family with
// preallocated headers, addresses and control buffers (x/net/ipv4's
// ReadBatch allocates a *net.UDPAddr per message).
type udpReceiver struct {
	fd    ioFD
	bufs  [][]byte
	hs    []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // room for either family's address
	oobs  [][]byte
}

func newUDPReceiver(fd ioFD, batch, size int) *udpReceiver {
	r := &udpReceiver{
		fd:    fd,
		bufs:  make([][]byte, batch),
		hs:    make([]unix.Mmsghdr, batch),
		iovs:  make([]unix.Iovec, batch),
		names: make([]unix.RawSockaddrInet6, batch),
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
	return r
}

// readBatch receives what is queued without blocking (0 when nothing is).
func (r *udpReceiver) readBatch() (int, error) {
	for i := range r.hs {
		r.hs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		r.hs[i].Hdr.SetControllen(len(r.oobs[i]))
		r.hs[i].Hdr.Flags = 0
		r.hs[i].Len = 0
	}
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(r.fd), uintptr(unsafe.Pointer(&r.hs[0])),
			uintptr(len(r.hs)), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, nil
		}
		return 0, e
	}
}

// message returns datagram i: its source address (underlayKey's form;
// zero if neither IPv4 nor IPv6) and port (host order), its bytes, the GRO
// segment size (0 when not coalesced) and whether it was truncated.
func (r *udpReceiver) message(i int) (src wire.Addr6, sport uint16, data []byte, gsoSize int, trunc bool) {
	h := &r.hs[i]
	name := &r.names[i]
	port := (*[2]byte)(unsafe.Pointer(&name.Port)) // network byte order, at the same offset in both families
	switch {
	case name.Family == unix.AF_INET && h.Hdr.Namelen >= unix.SizeofSockaddrInet4:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(name))
		src = underlayKey4(be32(sa.Addr))
		sport = uint16(port[0])<<8 | uint16(port[1])
	case name.Family == unix.AF_INET6 && h.Hdr.Namelen >= unix.SizeofSockaddrInet6:
		src = wire.Addr6From(name.Addr[:])
		sport = uint16(port[0])<<8 | uint16(port[1])
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
	return src, sport, data, gsoSize, trunc
}

// udpSender is sendmmsg on a blocking UDP socket with preallocated
// headers, iovecs and addresses.
type udpSender struct {
	fd    ioFD
	hs    []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // room for either family's address
}

func newUDPSender(fd ioFD, msgs, iovs int) *udpSender {
	return &udpSender{
		fd:    fd,
		hs:    make([]unix.Mmsghdr, msgs),
		iovs:  make([]unix.Iovec, iovs),
		names: make([]unix.RawSockaddrInet6, msgs),
	}
}

var errNotUDP = errors.New("destination is not a UDP address")

// send sends ms with one sendmmsg. Like sendmmsg, it reports the messages
// sent; an error only when the first of ms could not be sent.
func (s *udpSender) send(ms []ipv4.Message) (int, error) {
	ms = ms[:min(len(ms), len(s.hs))]
	iov := 0
	for i := range ms {
		m := &ms[i]
		a, ok := m.Addr.(*net.UDPAddr)
		if !ok || len(a.IP) != net.IPv4len && len(a.IP) != net.IPv6len || iov+len(m.Buffers) > len(s.iovs) {
			if i == 0 {
				return 0, errNotUDP
			}
			ms = ms[:i]
			break
		}
		// An IPv4 address (4 bytes, or 16 in its IPv4-mapped form) goes
		// as AF_INET, for the IPv4 socket; any other as AF_INET6. The
		// socket of the other family refuses it (EAFNOSUPPORT).
		name := &s.names[i]
		h := &s.hs[i]
		h.Hdr.Name = (*byte)(unsafe.Pointer(name))
		port := (*[2]byte)(unsafe.Pointer(&name.Port)) // network byte order, at the same offset in both families
		port[0], port[1] = byte(a.Port>>8), byte(a.Port)
		if ip4 := a.IP.To4(); ip4 != nil {
			sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(name))
			sa.Family = unix.AF_INET
			copy(sa.Addr[:], ip4)
			sa.Zero = [8]uint8{}
			h.Hdr.Namelen = unix.SizeofSockaddrInet4
		} else {
			name.Family = unix.AF_INET6
			copy(name.Addr[:], a.IP)
			name.Flowinfo, name.Scope_id = 0, 0
			h.Hdr.Namelen = unix.SizeofSockaddrInet6
		}
		first := iov
		for _, b := range m.Buffers {
			s.iovs[iov].Base = unsafe.SliceData(b)
			s.iovs[iov].SetLen(len(b))
			iov++
		}
		h.Hdr.Iov = &s.iovs[first]
		h.Hdr.SetIovlen(iov - first)
		h.Hdr.Control, h.Hdr.Controllen = nil, 0
		if len(m.OOB) > 0 {
			h.Hdr.Control = &m.OOB[0]
			h.Hdr.SetControllen(len(m.OOB))
		}
		h.Len = 0
	}
	for {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.hs[0])),
			uintptr(len(ms)), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		clear(s.iovs[:iov]) // keep no references to packet buffers
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}
