package nl

import (
	"testing"

	"github.com/vishvananda/netlink"
)

func TestPathGSO(t *testing.T) {
	link := func(tso, gso, gso4 uint32) netlink.Link {
		return &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{TSOMaxSize: tso, GSOMaxSize: gso, GSOIPv4MaxSize: gso4}}
	}
	want := GSO{IPv6: BigTCPSize, IPv4: BigTCPSize}
	big := link(524280, 524280, 524280)
	for _, tc := range []struct {
		name  string
		links []netlink.Link
		got   GSO
	}{
		{"every device takes more", []netlink.Link{big, big}, want},
		{"one keeps the default", []netlink.Link{big, link(524280, 65536, 65536)}, GSO{}},
		{"the vxlan device's 64 KiB cap", []netlink.Link{big, link(65536, 65536, 65536)}, GSO{}},
		{"IPv4 only", []netlink.Link{link(524280, 65536, 131072)}, GSO{IPv4: 131072}},
		{"smaller than wanted", []netlink.Link{link(524280, 100000, 150000)}, GSO{IPv6: 100000, IPv4: 150000}},
		{"kernel before 6.3: no gso_ipv4_max_size", []netlink.Link{link(524280, 524280, 0)}, GSO{IPv6: BigTCPSize}},
		{"kernel before 5.19: no tso_max_size", []netlink.Link{link(0, 65536, 0)}, GSO{}},
		{"no devices", nil, want},
	} {
		if got := PathGSO(want, tc.links...); got != tc.got {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.got)
		}
	}
}
