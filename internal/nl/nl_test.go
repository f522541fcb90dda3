package nl

import (
	"net"
	"net/netip"
	"testing"
)

func TestConversions(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // IPNet String()
	}{
		{"10.244.3.0/24", "10.244.3.0/24"},
		{"10.244.3.1/24", "10.244.3.1/24"}, // host bits kept (addresses)
		{"198.18.0.10/32", "198.18.0.10/32"},
		{"fd00::1/64", "fd00::1/64"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			p := netip.MustParsePrefix(tc.in)
			n := IPNet(p)
			if n.String() != tc.want {
				t.Fatalf("IPNet(%s) = %s, want %s", p, n, tc.want)
			}
			if p.Addr().Is4() && len(n.IP) != net.IPv4len {
				t.Errorf("IPv4 IPNet has %d-byte IP", len(n.IP))
			}
			back, ok := Prefix(n)
			if !ok || back != p {
				t.Fatalf("Prefix(IPNet(%s)) = %s, %v", p, back, ok)
			}
		})
	}
	if IPNet(netip.Prefix{}) != nil || IP(netip.Addr{}) != nil {
		t.Error("zero values must convert to nil")
	}
	if _, ok := Prefix(nil); ok {
		t.Error("Prefix(nil) ok")
	}
	a, ok := Addr(net.ParseIP("198.18.0.1")) // 16-byte form
	if !ok || !a.Is4() || a.String() != "198.18.0.1" {
		t.Errorf("Addr(16-byte v4) = %s, %v; want unmapped 198.18.0.1", a, ok)
	}
	if _, ok := Addr(net.IP{1, 2, 3}); ok {
		t.Error("Addr(3 bytes) ok")
	}
	// Mask/IP family mismatch is rejected.
	if _, ok := Prefix(&net.IPNet{IP: net.IPv4(1, 2, 3, 4).To4(), Mask: net.CIDRMask(64, 128)}); ok {
		t.Error("Prefix with v6 mask on v4 IP ok")
	}
}

func TestRouteEqual(t *testing.T) {
	base := Route{Dst: netip.MustParsePrefix("10.244.3.0/24"), Gw: netip.MustParseAddr("10.244.3.0"), LinkIndex: 5, OnLink: true}
	for _, tc := range []struct {
		name string
		mod  func(*Route)
		want bool
	}{
		{"same", func(*Route) {}, true},
		{"unmasked dst", func(r *Route) { r.Dst = netip.MustParsePrefix("10.244.3.7/24") }, true},
		{"gw", func(r *Route) { r.Gw = netip.MustParseAddr("198.18.0.1") }, false},
		{"dev", func(r *Route) { r.LinkIndex = 6 }, false},
		{"onlink", func(r *Route) { r.OnLink = false }, false},
		{"dst", func(r *Route) { r.Dst = netip.MustParsePrefix("10.244.4.0/24") }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			tc.mod(&o)
			if got := base.Equal(o); got != tc.want {
				t.Errorf("Equal = %v, want %v", got, tc.want)
			}
		})
	}
}
