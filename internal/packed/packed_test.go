package packed

import (
	"net/netip"
	"testing"
	"unsafe"
)

func TestRoundTrip(t *testing.T) {
	for _, s := range []string{"10.1.2.3", "0.0.0.0", "::", "fd00::1", "::ffff:10.1.2.3", "2001:db8::ffff"} {
		a := netip.MustParseAddr(s)
		if got := AddrOf(a).Addr(); got != a {
			t.Errorf("address %s came back as %s", a, got)
		}
		for _, bits := range []int{0, 8, a.BitLen()} {
			p := netip.PrefixFrom(a, bits)
			if got := PrefixOf(p).Prefix(); got != p {
				t.Errorf("prefix %s came back as %s", p, got)
			}
		}
	}
	if got := AddrOf(netip.Addr{}).Addr(); got != (netip.Addr{}) {
		t.Errorf("the zero Addr came back as %s", got)
	}
	for _, p := range []netip.Prefix{{}, netip.PrefixFrom(netip.MustParseAddr("10.0.0.0"), 33)} {
		if got := PrefixOf(p).Prefix(); got != p {
			t.Errorf("invalid prefix %#v came back as %#v", p, got)
		}
	}
	// Distinct values stay distinct as map keys.
	v4, v6 := netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("::ffff:10.1.2.3")
	if AddrOf(v4) == AddrOf(v6) || AddrOf(netip.IPv4Unspecified()) == AddrOf(netip.Addr{}) {
		t.Error("distinct addresses pack the same")
	}
	if PrefixOf(netip.PrefixFrom(v4, 24)) == PrefixOf(netip.PrefixFrom(v4, 25)) {
		t.Error("distinct prefixes pack the same")
	}
	if a, p := unsafe.Sizeof(Addr{}), unsafe.Sizeof(Prefix{}); a != 17 || p != 18 {
		t.Errorf("Addr is %d bytes, Prefix %d: want 17 and 18", a, p)
	}
}
