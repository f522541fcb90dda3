// Package packed holds addresses and prefixes in a form without pointers,
// for what weft keeps per peer: a netip.Addr is 24 bytes, one of them a
// pointer the garbage collector follows, a netip.Prefix 32; an Addr here is
// 17 bytes, a Prefix 18, and a map of them is not scanned. Zones are not
// kept (the addresses of leases and of netlink have none).
package packed

import "net/netip"

// Addr is a netip.Addr without its zone. The zero Addr is the zero
// netip.Addr.
type Addr struct {
	b [16]byte
	v uint8 // 4, 6, or 0: the zero netip.Addr
}

// AddrOf packs a.
func AddrOf(a netip.Addr) Addr {
	switch {
	case a.Is4():
		return Addr{b: a.As16(), v: 4}
	case a.Is6():
		return Addr{b: a.As16(), v: 6}
	}
	return Addr{}
}

// Addr unpacks a.
func (a Addr) Addr() netip.Addr {
	switch a.v {
	case 4:
		return netip.AddrFrom16(a.b).Unmap()
	case 6:
		return netip.AddrFrom16(a.b)
	}
	return netip.Addr{}
}

// Prefix is a netip.Prefix without its address's zone. The zero Prefix is
// the zero netip.Prefix.
type Prefix struct {
	a    Addr
	bits uint8 // Bits()+1: 0 for an invalid prefix
}

// PrefixOf packs p.
func PrefixOf(p netip.Prefix) Prefix { return Prefix{a: AddrOf(p.Addr()), bits: uint8(p.Bits() + 1)} }

// Prefix unpacks p.
func (p Prefix) Prefix() netip.Prefix { return netip.PrefixFrom(p.a.Addr(), int(p.bits)-1) }
