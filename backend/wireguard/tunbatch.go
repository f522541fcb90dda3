package wireguard

import (
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// maxTSOSegments is how many packets one TUN read can split into: a TSO
// super-packet of up to 64 KiB cut at an MSS of at least 536 bytes (IPv4's
// default MSS; IPv6's is larger). wireguard-go drops a read that splits
// into more packets than its buffers hold (tun.ErrTooManySegments).
const maxTSOSegments = (65535-40)/536 + 1

// batchTUN is wireguard-go's TUN device with reads batched across packets.
//
// Why: one read(2) of the TUN returns one packet, a TSO super-packet split
// into many or a plain one, and wireguard-go runs its whole pipeline per Read
// call (hand-off to an encryption worker, then to the peer's sender, one
// sendmmsg). Small packets, which the kernel cannot merge (UDP, TCP with
// little data in flight, ICMP), so cost a pipeline pass each: iperf3 UDP at
// 500 Mbit/s overflowed the TUN queue (txqueuelen 500) while weftd kept up
// with TCP at four times the rate. Read takes the packet wireguard-go waits
// for and then, while more are queued and the buffers left can hold
// whatever the next read may split into, the next ones: one pass for
// several packets.
//
// It never waits for a packet beyond the first (poll with a zero timeout),
// so latency is unchanged. All other methods are the inner device's.
type batchTUN struct {
	tun.Device
	// queued reports whether a read of the device would not block now.
	queued func() bool
}

// newBatchTUN wraps t; a device whose descriptor cannot be polled (not a
// native TUN) is returned as it is.
func newBatchTUN(t tun.Device) tun.Device {
	nt, ok := t.(*tun.NativeTun)
	if !ok {
		return t
	}
	// File().SyscallConn, not File().Fd: Fd would put the descriptor in
	// blocking mode and take it out of the Go poller wireguard-go reads with.
	rc, err := nt.File().SyscallConn()
	if err != nil {
		return t
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil || fd < 0 {
		return t
	}
	// The number is kept past Control: after Close it may name another
	// file, which poll(2) only looks at; the inner Read then fails as closed.
	fds := make([]unix.PollFd, 1) // wireguard-go reads from one goroutine
	return &batchTUN{Device: t, queued: func() bool { return pollIn(fd, fds) }}
}

// Read reads at least one packet, blocking like the inner Read, then more
// while they are queued and fit (see batchTUN).
func (b *batchTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := b.Device.Read(bufs, sizes, offset)
	for err == nil && n > 0 && len(bufs)-n >= maxTSOSegments && b.queued() {
		var m int
		m, err = b.Device.Read(bufs[n:], sizes[n:], offset)
		n += m
	}
	// With an error, wireguard-go still sends the n packets read, then
	// acts on the error as on one from a single read.
	return n, err
}

// pollIn reports whether fd is readable now; fds is poll(2)'s scratch
// space, of length 1.
func pollIn(fd int, fds []unix.PollFd) bool {
	fds[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	n, err := unix.Poll(fds, 0)
	return err == nil && n == 1 && fds[0].Revents&unix.POLLIN != 0
}
