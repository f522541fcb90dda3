package udp

import (
	"sync/atomic"

	"github.com/weftnet/weft/backend/udp/wire"
)

// Stats are the backend's packet counters since New, summed over queues.
// Packets and bytes count inner IPv4 packets (after TSO splitting, before
// GRO coalescing).
type Stats struct {
	TxPackets, TxBytes uint64 // TUN → peers
	RxPackets, RxBytes uint64 // peers → TUN
	// LocalPackets were read from the TUN for this node's own subnet and
	// written back.
	LocalPackets uint64
	// ICMPSent counts ICMP errors written into the TUN.
	ICMPSent uint64
	// GSOSends counts sends that carried several datagrams; GROMerged
	// counts packets merged into a TUN super-packet.
	GSOSends, GROMerged uint64
	// Drops by reason (see wire.Reason's String: "unknown_peer",
	// "wrong_port", "spoofed_source", "not_local", "short", "bad_version", "bad_header",
	// "no_route", "ttl_exceeded", "bad_offload", "io_error").
	Drops map[string]uint64
	// Offloads in force: Queues, TSO (TUN super-packets), GSO, GRO.
	Queues        int
	TSO, GSO, GRO bool
}

// counter indices.
const (
	cTxPackets = iota
	cTxBytes
	cRxPackets
	cRxBytes
	cLocal
	cICMP
	cGSOSends
	cGROMerged
	cDrop       // + wire.Reason
	numCounters = cDrop + int(wire.NumReasons)
)

// counters are one goroutine's totals, published once per batch.
type counters struct {
	v [numCounters]atomic.Uint64
	_ [64]byte // keep queues off each other's cache lines
}

// local accumulates a batch's counts without atomics.
type local [numCounters]uint64

func (l *local) drop(r wire.Reason, n uint64) { l[cDrop+int(r)] += n }

func (l *local) publish(c *counters) {
	for i, v := range l {
		if v != 0 {
			c.v[i].Add(v)
			l[i] = 0
		}
	}
}
