package vxlan

import (
	"net"
	"net/netip"

	"github.com/weftnet/weft/internal/nl"
	"github.com/weftnet/weft/internal/packed"
)

// kernelState is what a device's family holds in the kernel as far as the
// backend knows: the dumps of the last pass that read the kernel (a full
// pass, Configure's), updated by every write and delete since. Incremental
// passes work from it and read nothing back, so a batch costs its own
// changes only; what someone else changed meanwhile is the next full
// pass's to repair.
//
// It is kept per peer, so its entries are packed (package packed, khw)
// and hold no pointers the garbage collector would scan: the routes,
// neighbours and FDB entries go in and come out as the nl types.
type kernelState struct {
	routes map[packed.Prefix]kroute
	neighs map[packed.Addr]kneigh
	fdb    map[khw]kfdb // by MAC
	// extraFDB are the entries of a MAC beyond its first (FDB); only full
	// passes delete them.
	extraFDB []nl.FDBEntry
}

// khw is a hardware address of up to 8 bytes (a VXLAN device's, and every
// VtepMAC, are 6), comparable and without pointers: a map key. The zero
// khw is no address.
type khw struct {
	b [8]byte
	n uint8
}

func packHW(m net.HardwareAddr) khw {
	var h khw
	h.n = uint8(copy(h.b[:], m))
	return h
}

// hw is h as netlink takes it: a new slice, nil for no address.
func (h khw) hw() net.HardwareAddr {
	if h.n == 0 {
		return nil
	}
	return net.HardwareAddr(append([]byte(nil), h.b[:h.n]...))
}

// String is net.HardwareAddr's form of h ("" for no address).
func (h khw) String() string { return net.HardwareAddr(h.b[:h.n]).String() }

// kroute is an nl.Route but its destination (the key).
type kroute struct {
	gw, src packed.Addr
	link    int32
	onLink  bool
}

// kneigh is an nl.Neigh but its IP (the key).
type kneigh struct {
	mac       khw
	link      int32
	permanent bool
}

// kfdb is an nl.FDBEntry but its MAC (the key).
type kfdb struct {
	dst  packed.Addr
	link int32
}

// newKernelState packs the dumps of routes, neighbours and FDB (nl.FDB's:
// keyed by the MAC's String, which is not kept).
func newKernelState(routes map[netip.Prefix]nl.Route, neighs map[netip.Addr]nl.Neigh, fdb map[string]nl.FDBEntry, extraFDB []nl.FDBEntry) kernelState {
	k := kernelState{
		routes:   make(map[packed.Prefix]kroute, len(routes)),
		neighs:   make(map[packed.Addr]kneigh, len(neighs)),
		fdb:      make(map[khw]kfdb, len(fdb)),
		extraFDB: extraFDB,
	}
	for _, r := range routes {
		k.setRoute(r)
	}
	for _, n := range neighs {
		k.setNeigh(n)
	}
	for _, fe := range fdb {
		k.setFDB(fe)
	}
	return k
}

func (k *kernelState) route(dst netip.Prefix) (nl.Route, bool) {
	r, ok := k.routes[packed.PrefixOf(dst)]
	if !ok {
		return nl.Route{}, false
	}
	return nl.Route{Dst: dst, Gw: r.gw.Addr(), LinkIndex: int(r.link), OnLink: r.onLink, Src: r.src.Addr()}, true
}

func (k *kernelState) setRoute(r nl.Route) {
	k.routes[packed.PrefixOf(r.Dst)] = kroute{gw: packed.AddrOf(r.Gw), src: packed.AddrOf(r.Src), link: int32(r.LinkIndex), onLink: r.OnLink}
}

func (k *kernelState) deleteRoute(dst netip.Prefix) { delete(k.routes, packed.PrefixOf(dst)) }

func (k *kernelState) neigh(ip netip.Addr) (nl.Neigh, bool) {
	n, ok := k.neighs[packed.AddrOf(ip)]
	if !ok {
		return nl.Neigh{}, false
	}
	return nl.Neigh{IP: ip, MAC: n.mac.hw(), LinkIndex: int(n.link), Permanent: n.permanent}, true
}

func (k *kernelState) setNeigh(n nl.Neigh) {
	k.neighs[packed.AddrOf(n.IP)] = kneigh{mac: packHW(n.MAC), link: int32(n.LinkIndex), permanent: n.Permanent}
}

func (k *kernelState) deleteNeigh(ip netip.Addr) { delete(k.neighs, packed.AddrOf(ip)) }

// neighMAC is the MAC of the neighbour at ip, without unpacking it.
func (k *kernelState) neighMAC(ip netip.Addr) (khw, bool) {
	n, ok := k.neighs[packed.AddrOf(ip)]
	return n.mac, ok
}

// neighIs reports whether the neighbour at ip is a permanent one of mac:
// one nl.EnsureNeigh leaves alone. Asked first, it spares an unchanged peer
// the unpacking.
func (k *kernelState) neighIs(ip netip.Addr, mac khw) bool {
	n, ok := k.neighs[packed.AddrOf(ip)]
	return ok && n.permanent && n.mac == mac
}

func (k *kernelState) fdbEntry(mac khw) (nl.FDBEntry, bool) {
	fe, ok := k.fdb[mac]
	if !ok {
		return nl.FDBEntry{}, false
	}
	return nl.FDBEntry{MAC: mac.hw(), Dst: fe.dst.Addr(), LinkIndex: int(fe.link)}, true
}

// fdbIs reports whether mac's FDB entry goes to dst: one nl.EnsureFDB
// leaves alone (see neighIs).
func (k *kernelState) fdbIs(mac khw, dst packed.Addr) bool {
	fe, ok := k.fdb[mac]
	return ok && fe.dst == dst
}

// fdbDst is the destination of mac's FDB entry.
func (k *kernelState) fdbDst(mac khw) (netip.Addr, bool) {
	fe, ok := k.fdb[mac]
	return fe.dst.Addr(), ok
}

func (k *kernelState) setFDB(fe nl.FDBEntry) {
	k.fdb[packHW(fe.MAC)] = kfdb{dst: packed.AddrOf(fe.Dst), link: int32(fe.LinkIndex)}
}

func (k *kernelState) deleteFDB(mac khw) { delete(k.fdb, mac) }
