package vxlan

import (
	"net"
	"net/netip"
	"reflect"
	"testing"

	"github.com/weftnet/weft/internal/nl"
	"github.com/weftnet/weft/internal/packed"
)

// TestKernelStateRoundTrip: what goes into a kernelState (the dumps, or a
// write) comes out as it went in, and a delete removes only its entry.
func TestKernelStateRoundTrip(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0x01, 0x02}
	routes := map[netip.Prefix]nl.Route{}
	for _, r := range []nl.Route{
		{Dst: netip.MustParsePrefix("10.5.0.0/24"), Gw: netip.MustParseAddr("10.5.0.0"), LinkIndex: 7, OnLink: true},
		{Dst: netip.MustParsePrefix("10.6.0.0/24"), Gw: netip.MustParseAddr("198.18.0.6"), LinkIndex: 2},
		{Dst: netip.MustParsePrefix("10.7.0.0/24"), LinkIndex: 3, Src: netip.MustParseAddr("10.0.0.1")},
		{Dst: netip.MustParsePrefix("fd00:5::/64"), Gw: netip.MustParseAddr("fd00:5::"), LinkIndex: 8, OnLink: true},
		{Dst: netip.MustParsePrefix("fd00:6::/64"), Gw: netip.MustParseAddr("::ffff:10.0.0.6"), LinkIndex: 8},
	} {
		routes[r.Dst] = r
	}
	neighs := map[netip.Addr]nl.Neigh{}
	for _, n := range []nl.Neigh{
		{IP: netip.MustParseAddr("10.5.0.0"), MAC: mac, LinkIndex: 7, Permanent: true},
		{IP: netip.MustParseAddr("10.8.0.0"), MAC: net.HardwareAddr{1, 2, 3, 4, 5, 6, 7, 8}, LinkIndex: 7},
		{IP: netip.MustParseAddr("fd00:5::"), LinkIndex: 8},
	} {
		neighs[n.IP] = n
	}
	fdb := map[string]nl.FDBEntry{ // as nl.FDB dumps it: by the MAC's String
		mac.String():        {MAC: mac, Dst: netip.MustParseAddr("198.18.0.5"), LinkIndex: 7},
		"02:00:00:00:01:03": {MAC: net.HardwareAddr{0x02, 0, 0, 0, 0x01, 0x03}, Dst: netip.MustParseAddr("fd00::5"), LinkIndex: 8},
	}
	k := newKernelState(routes, neighs, fdb, nil)
	check := func() {
		t.Helper()
		if len(k.routes) != len(routes) || len(k.neighs) != len(neighs) || len(k.fdb) != len(fdb) {
			t.Fatalf("%d routes, %d neighbours, %d fdb entries; want %d, %d, %d",
				len(k.routes), len(k.neighs), len(k.fdb), len(routes), len(neighs), len(fdb))
		}
		for dst, want := range routes {
			if got, ok := k.route(dst); !ok || !reflect.DeepEqual(got, want) {
				t.Errorf("route %s: %+v, %v; want %+v", dst, got, ok, want)
			}
		}
		for ip, want := range neighs {
			if got, ok := k.neigh(ip); !ok || !reflect.DeepEqual(got, want) {
				t.Errorf("neighbour %s: %+v, %v; want %+v", ip, got, ok, want)
			}
			if k.neighIs(ip, packHW(want.MAC)) != want.Permanent || k.neighIs(ip, packHW(net.HardwareAddr{9, 9, 9, 9, 9, 9})) {
				t.Errorf("neighbour %s: neighIs says otherwise than %+v", ip, want)
			}
			if mac, ok := k.neighMAC(ip); !ok || mac != packHW(want.MAC) {
				t.Errorf("neighbour %s: MAC %s, %v; want %s", ip, mac, ok, want.MAC)
			}
		}
		for m, want := range fdb {
			h := packHW(want.MAC)
			if h.String() != m {
				t.Errorf("fdb %s: packed, %s", m, h)
			}
			if got, ok := k.fdbEntry(h); !ok || !reflect.DeepEqual(got, want) {
				t.Errorf("fdb %s: %+v, %v; want %+v", m, got, ok, want)
			}
			if dst, ok := k.fdbDst(h); !ok || dst != want.Dst || !k.fdbIs(h, packed.AddrOf(want.Dst)) || k.fdbIs(h, packed.AddrOf(netip.MustParseAddr("192.0.2.1"))) {
				t.Errorf("fdb %s: destination %s, %v (fdbIs %v); want %s", m, dst, ok, k.fdbIs(h, packed.AddrOf(want.Dst)), want.Dst)
			}
		}
	}
	check()

	r := nl.Route{Dst: netip.MustParsePrefix("10.5.0.0/24"), Gw: netip.MustParseAddr("198.18.0.9"), LinkIndex: 2}
	k.setRoute(r)
	routes[r.Dst] = r
	n := nl.Neigh{IP: netip.MustParseAddr("10.9.0.0"), MAC: mac, LinkIndex: 7, Permanent: true}
	k.setNeigh(n)
	neighs[n.IP] = n
	fe := nl.FDBEntry{MAC: mac, Dst: netip.MustParseAddr("198.18.0.9"), LinkIndex: 7}
	k.setFDB(fe)
	fdb[mac.String()] = fe
	check()

	k.deleteRoute(netip.MustParsePrefix("10.6.0.0/24"))
	delete(routes, netip.MustParsePrefix("10.6.0.0/24"))
	k.deleteNeigh(netip.MustParseAddr("10.8.0.0"))
	delete(neighs, netip.MustParseAddr("10.8.0.0"))
	k.deleteFDB(packHW(mac))
	delete(fdb, mac.String())
	check()
	if _, ok := k.route(netip.MustParsePrefix("10.6.0.0/25")); ok {
		t.Error("a route to 10.6.0.0/25 is found")
	}
	if _, ok := k.neigh(netip.MustParseAddr("::ffff:10.5.0.0")); ok {
		t.Error("a neighbour ::ffff:10.5.0.0 is found")
	}
}
