package udp

import (
	"encoding/binary"
	"errors"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/backend/udp/wire"
)

const (
	// maxDatagram is the largest UDP payload (and GRO run) we accept.
	maxDatagram = 65535
	// txReadBatch is how many TUN packets one egress round reads.
	txReadBatch = 16
	// txMsgs bounds the messages of one sendmmsg.
	txMsgs = 128
	// splitNeed is the header arena room one TSO split may use: up to
	// 4*MaxSegments headers of at most 120 bytes (60 IP + 60 TCP). The
	// payload is not copied: it is sent from the TUN read buffer.
	splitNeed = 4 * wire.MaxSegments * 120
	// txIovecs bounds the buffers (iovecs) queued between two flushes: a
	// split segment takes two (header, payload), a plain packet one.
	txIovecs = 4 * 2 * 4 * wire.MaxSegments
	// maxGSOBytes keeps a GSO send under the 64 KiB UDP length limit.
	maxGSOBytes = 65000
	// ICMP errors: at most icmpRate per second per queue, bursts of icmpBurst.
	icmpRate  = 100
	icmpBurst = 20
)

var errClosed = errors.New("closed")

// limiter is a token bucket for ICMP errors; owned by one goroutine.
type limiter struct {
	now    func() time.Time
	tokens float64
	last   time.Time
}

func (l *limiter) allow() bool {
	now := l.now()
	l.tokens = min(icmpBurst, l.tokens+now.Sub(l.last).Seconds()*icmpRate)
	l.last = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// txPath turns packets read from the TUN into datagrams for peers. It is
// owned by one goroutine; its buffers are preallocated.
type txPath struct {
	vnet     bool
	gso      func() bool // GSO currently usable
	noGSO    func(error) // GSO failed at run time: turn it off
	send     func([]ipv4.Message) (int, error)
	writeTUN func([]byte) error

	// arena holds the headers of split segments; their payloads stay in
	// the buffers handle was given, which must stay untouched until flush.
	arena    []byte
	arenaOff int
	iov      [][]byte // backing of every message's Buffers
	iovOff   int
	msgs     []ipv4.Message
	segs     []int // datagrams in each message
	bytes    []int // bytes in each message
	nmsgs    int
	// The last queued message takes more datagrams while it goes to
	// joinUL (a peer's underlay address) and every datagram in it is
	// joinSeg bytes (0: closed).
	joinUL  wire.Addr6
	joinSeg int
	oob     [][]byte // per message: a ready UDP_SEGMENT control message
	icmp    []byte   // virtio header room + ICMP error
	lim     limiter
	cnt     local
}

func newTxPath(vnet bool, now func() time.Time) *txPath {
	p := &txPath{
		vnet:  vnet,
		arena: make([]byte, 4*splitNeed),
		iov:   make([][]byte, txIovecs),
		msgs:  make([]ipv4.Message, txMsgs),
		segs:  make([]int, txMsgs),
		bytes: make([]int, txMsgs),
		oob:   make([][]byte, txMsgs),
		icmp:  make([]byte, wire.VirtioNetHdrLen+wire.MaxICMPErrorLen),
		lim:   limiter{now: now, tokens: icmpBurst, last: now()},
	}
	space := unix.CmsgSpace(2)
	oobBacking := make([]byte, txMsgs*space)
	for i := range p.msgs {
		o := oobBacking[i*space : (i+1)*space : (i+1)*space]
		h := (*unix.Cmsghdr)(unsafe.Pointer(&o[0]))
		h.Level = unix.SOL_UDP
		h.Type = unix.UDP_SEGMENT
		h.SetLen(unix.CmsgLen(2))
		p.oob[i] = o
	}
	return p
}

// handle processes one read from the TUN (with its virtio-net header when
// vnet). Datagrams are queued; flush sends them. Queued datagrams may point
// into buf: the caller keeps buf unchanged until flush.
func (p *txPath) handle(t *table, buf []byte) {
	pkt := buf
	var vh wire.VirtioNetHdr
	if p.vnet {
		if len(buf) < wire.VirtioNetHdrLen {
			p.cnt.drop(wire.ReasonShort, 1)
			return
		}
		vh = wire.DecodeVirtioNetHdr(buf)
		pkt = buf[wire.VirtioNetHdrLen:]
	}
	h, r := t.parse(pkt)
	if r != wire.OK {
		p.cnt.drop(r, 1)
		return
	}
	pkt = pkt[:h.TotalLen]
	gsoType := vh.GSOType &^ wire.VirtioNetHdrGSOECN
	if gsoType != wire.VirtioNetHdrGSONone && gsoType != tcpGSO(h.Version) {
		p.cnt.drop(wire.ReasonBadOffload, 1)
		return
	}
	needsCsum := gsoType == wire.VirtioNetHdrGSONone && vh.Flags&wire.VirtioNetHdrFNeedsCsum != 0
	if t.isOwn(&h) {
		// Our own subnet lives on the bridge; if the kernel handed it to
		// us anyway (no bridge yet), route it back as a router would.
		if h.TTL <= 1 {
			p.icmpError(pkt, h, wire.ErrTTL, wire.ReasonTTL)
			return
		}
		wire.DecrementTTL(pkt)
		out := pkt
		if p.vnet {
			out = buf[:wire.VirtioNetHdrLen+h.TotalLen] // header kept: the kernel takes GSO back
		}
		if err := p.writeTUN(out); err != nil {
			p.cnt.drop(wire.ReasonIOError, 1)
			return
		}
		p.cnt[cLocal]++
		return
	}
	peer := t.route(&h)
	if peer == nil {
		p.icmpError(pkt, h, wire.ErrNoRoute, wire.ReasonNoRoute)
		return
	}
	if h.TTL <= 1 {
		p.icmpError(pkt, h, wire.ErrTTL, wire.ReasonTTL)
		return
	}
	wire.DecrementTTL(pkt) // before a split, so every segment inherits it
	if gsoType == wire.VirtioNetHdrGSONone {
		// A partial TCP checksum may travel as it is to a peer that
		// completes it (the kernel's convention: csum_start at the TCP
		// header, the field at offset 16, the pseudo-header sum in it).
		keep := peer.partial && h.Proto == wire.ProtoTCP &&
			int(vh.CsumStart) == h.HeaderLen && vh.CsumOffset == wire.TCPChecksumOffset
		if needsCsum && !keep {
			if r := wire.FinishChecksum(pkt, int(vh.CsumStart), int(vh.CsumOffset)); r != wire.OK {
				p.cnt.drop(r, 1)
				return
			}
		}
		if p.nmsgs == len(p.msgs) || p.iovOff == len(p.iov) {
			p.flush()
		}
		p.iov[p.iovOff] = pkt
		p.queue(peer, 1, len(pkt), 0, 1)
		return
	}
	if len(p.arena)-p.arenaOff < splitNeed || len(p.iov)-p.iovOff < 2*4*wire.MaxSegments {
		p.flush()
	}
	gso := int(vh.GSOSize)
	n, hdrLen, r := wire.SplitTCPHeaders(pkt, h, gso, p.arena[p.arenaOff:], peer.partial)
	if r != wire.OK {
		p.cnt.drop(r, 1)
		return
	}
	hdrs := p.arena[p.arenaOff : p.arenaOff+n*hdrLen]
	p.arenaOff += n * hdrLen
	hdrsEnd := p.arenaOff
	payload := pkt[hdrLen:]
	segSize := hdrLen + gso
	per := 1
	if p.gso() {
		per = min(wire.MaxSegments, maxGSOBytes/segSize)
	}
	// The kernel's TSO packets are up to 64 KB, a few segments more than
	// one GSO send may carry, so each split would end in a short send.
	// Filling the previous send first saves underlay packets (and the
	// per-packet work on both nodes) when a read batch holds several
	// super-packets for one peer.
	i := 0
	if p.joinSeg == segSize && p.joinUL == peer.ul {
		// per can have shrunk since: another queue may have turned GSO off.
		i = max(0, min(n, per-p.segs[p.nmsgs-1]))
	}
	if i > 0 {
		p.joinLast(2*i, p.gather(hdrs, payload, hdrLen, gso, 0, i), i)
	}
	for ; i < n; i += per {
		k := min(per, n-i)
		if p.nmsgs == len(p.msgs) {
			p.flush()
			p.arenaOff = hdrsEnd // the rest of this split's headers stay reserved
		}
		p.queue(peer, 2*k, p.gather(hdrs, payload, hdrLen, gso, i, i+k), segSize, k)
	}
	p.joinSeg = 0
	if last := len(payload) - (n-1)*gso; last == gso && per > 1 {
		p.joinUL, p.joinSeg = peer.ul, segSize // the last datagram is full-size
	}
}

// gather points the next iovecs at segments [from, to) of a split: header
// from hdrs, payload chunk from the super-packet. It returns their bytes.
func (p *txPath) gather(hdrs, payload []byte, hdrLen, gso, from, to int) int {
	bytes := 0
	for j := from; j < to; j++ {
		chunk := payload[min(j*gso, len(payload)):min((j+1)*gso, len(payload))]
		p.iov[p.iovOff+2*(j-from)] = hdrs[j*hdrLen : (j+1)*hdrLen]
		p.iov[p.iovOff+2*(j-from)+1] = chunk
		bytes += hdrLen + len(chunk)
	}
	return bytes
}

// joinLast appends k datagrams of joinSeg bytes, gathered in the next nbuf
// entries of p.iov, to the last queued message. Its buffers end at iovOff,
// so the joined buffers stay contiguous.
func (p *txPath) joinLast(nbuf, bytes, k int) {
	i := p.nmsgs - 1
	m := &p.msgs[i]
	start := p.iovOff - len(m.Buffers)
	p.iovOff += nbuf
	m.Buffers = p.iov[start:p.iovOff:p.iovOff]
	if m.OOB == nil {
		binary.NativeEndian.PutUint16(p.oob[i][unix.CmsgLen(0):], uint16(p.joinSeg))
		m.OOB = p.oob[i]
	}
	p.segs[i] += k
	p.bytes[i] += bytes
}

// queue adds one message of k datagrams (segSize each but the last),
// gathered from the next nbuf entries of p.iov, which the caller filled.
// The caller has made room (p.nmsgs < len(p.msgs)).
func (p *txPath) queue(peer *peerHost, nbuf, bytes, segSize, k int) {
	p.joinSeg = 0
	m := &p.msgs[p.nmsgs]
	m.Buffers = p.iov[p.iovOff : p.iovOff+nbuf : p.iovOff+nbuf]
	p.iovOff += nbuf
	m.Addr = peer.addr
	m.OOB = nil
	if k > 1 {
		o := p.oob[p.nmsgs]
		binary.NativeEndian.PutUint16(o[unix.CmsgLen(0):], uint16(segSize))
		m.OOB = o
	}
	p.segs[p.nmsgs] = k
	p.bytes[p.nmsgs] = bytes
	p.nmsgs++
}

// flush sends every queued message, one sendmmsg per run.
func (p *txPath) flush() {
	sent := 0
	for sent < p.nmsgs {
		n, err := p.send(p.msgs[sent:p.nmsgs])
		for i := sent; i < sent+n; i++ {
			p.account(i)
		}
		sent += n
		if err != nil {
			if sent < p.nmsgs {
				// sendmmsg reports an error only for the first message
				// it could not send: drop that one and go on.
				if p.segs[sent] > 1 && errors.Is(err, unix.EIO) {
					p.noGSO(err) // the device cannot checksum: no GSO
				}
				p.cnt.drop(wire.ReasonIOError, uint64(p.segs[sent]))
				sent++
			}
			if errors.Is(err, errClosed) || errors.Is(err, syscall.EBADF) {
				break
			}
		}
	}
	clear(p.iov[:p.iovOff]) // keep no references to read buffers
	p.nmsgs, p.arenaOff, p.iovOff = 0, 0, 0
	p.joinSeg = 0
}

func (p *txPath) account(i int) {
	p.cnt[cTxPackets] += uint64(p.segs[i])
	p.cnt[cTxBytes] += uint64(p.bytes[i])
	if p.segs[i] > 1 {
		p.cnt[cGSOSends]++
	}
}

// icmpError drops pkt for reason r and, within the rate limit, writes an
// ICMP (ICMPv6) error e about it into the TUN. Its source is the original
// destination (as Flannel does): a local address would be dropped as
// martian.
func (p *txPath) icmpError(pkt []byte, h wire.Header, e wire.ICMPError, r wire.Reason) {
	p.cnt.drop(r, 1)
	if !p.lim.allow() {
		return
	}
	off := 0
	if p.vnet {
		off = wire.VirtioNetHdrLen
		clear(p.icmp[:off])
	}
	n := wire.BuildICMPError(p.icmp[off:], pkt, h, e)
	if n == 0 {
		return
	}
	if p.writeTUN(p.icmp[:off+n]) == nil {
		p.cnt[cICMP]++
	}
}

// rxPath validates datagrams from peers and writes their inner packets
// into the TUN. Owned by one goroutine.
type rxPath struct {
	vnet     bool
	coal     *wire.Coalescer
	writeTUN func([]byte) error   // one packet (no virtio header)
	writev   func([][]byte) error // one packet gathered from buffers (vnet)
	cnt      local
}

// handle processes one received UDP payload from src:sport (src as
// underlayKey gives it, the port in host order): a run of gsoSize-byte
// datagrams when the kernel coalesced them (UDP GRO), else one.
//
// A peer is its PublicIP and the tunnel port together: every node sends
// from the port it listens on, which its weftd holds. Another process on
// that node (an unprivileged one cannot bind the port), or a pod whose
// datagram left masqueraded with the node's address, sends from another
// port and is dropped (wrong_port) before its inner packet is read.
func (p *rxPath) handle(t *table, src wire.Addr6, sport uint16, data []byte, gsoSize int) {
	if gsoSize <= 0 || gsoSize > len(data) {
		gsoSize = len(data)
	}
	peer := t.hosts[src]
	why := wire.OK
	switch {
	case peer == nil:
		why = wire.ReasonUnknownPeer
	case sport != t.port:
		why = wire.ReasonWrongPort
	}
	for off := 0; off < len(data); off += gsoSize {
		d := data[off:min(off+gsoSize, len(data))]
		if why != wire.OK {
			p.cnt.drop(why, 1)
			continue
		}
		h, r := t.parse(d)
		if r != wire.OK {
			p.cnt.drop(r, 1)
			continue
		}
		if !peer.allows(&h) {
			p.cnt.drop(wire.ReasonSpoofedSource, 1)
			continue
		}
		if !t.isOwn(&h) {
			p.cnt.drop(wire.ReasonNotLocal, 1)
			continue
		}
		d = d[:h.TotalLen]
		p.cnt[cRxPackets]++
		p.cnt[cRxBytes] += uint64(len(d))
		if !p.vnet {
			if err := p.writeTUN(d); err != nil {
				p.cnt.drop(wire.ReasonIOError, 1)
			}
			continue
		}
		if !p.coal.Add(d, h, peer.partial) {
			p.flush()
			p.coal.Add(d, h, peer.partial)
		}
	}
}

// flush writes the pending coalesced packet, if any. Its payloads are
// still in the receive buffers: flush runs before the next recvmmsg.
func (p *rxPath) flush() {
	if p.coal == nil || p.coal.Empty() {
		return
	}
	segs := p.coal.Segments()
	if err := p.writev(p.coal.Flush()); err != nil {
		p.cnt.drop(wire.ReasonIOError, uint64(segs))
		return
	}
	if segs > 1 {
		p.cnt[cGROMerged] += uint64(segs)
	}
}

// allows reports whether the peer may send the inner packet h: its source
// is in one of the peer's subnets of that family.
func (h *peerHost) allows(ph *wire.Header) bool {
	// The peer node itself may send from its PublicIP (PublicIPv6): it
	// answers a pod that reached it on its underlay address with that
	// address as source, and the answer is routed into the tunnel. A peer
	// can claim only its own address, so this opens no spoofing.
	if ph.Version == 6 {
		if h.hasIP6 && ph.Src6 == h.ip6 && len(h.subnets6) > 0 {
			return true
		}
		for _, p := range h.subnets6 {
			if p.contains(ph.Src6) {
				return true
			}
		}
		return false
	}
	if h.hasIP4 && ph.Src == h.ip && len(h.subnets) > 0 {
		return true
	}
	for _, p := range h.subnets {
		if p.contains(ph.Src) {
			return true
		}
	}
	return false
}

// tcpGSO is the virtio-net GSO type of a TCP super-packet of IP version v.
func tcpGSO(v uint8) uint8 {
	if v == 6 {
		return wire.VirtioNetHdrGSOTCPv6
	}
	return wire.VirtioNetHdrGSOTCPv4
}
