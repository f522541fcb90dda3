package wireguard

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/subnet"
)

// TestLayout: which devices each Mode makes of each network, and the modes
// a network cannot have.
func TestLayout(t *testing.T) {
	o := Options{ListenPort: 51820, ListenPortV6: 51821}
	dual := &subnet.Config{EnableIPv4: true, EnableIPv6: true}
	only6 := &subnet.Config{EnableIPv6: true}
	only4 := &subnet.Config{EnableIPv4: true}
	for _, tc := range []struct {
		mode Mode
		cfg  *subnet.Config
		want string // name:port:families:via per device, or the error
	}{
		{ModeSeparate, only4, "weft-wg:51820:[IPv4]:IPv4"},
		{ModeSeparate, dual, "weft-wg:51820:[IPv4]:IPv4 weft-wg-v6:51821:[IPv6]:IPv6"},
		{ModeSeparate, only6, "weft-wg-v6:51821:[IPv6]:IPv6"},
		{ModeAuto, only4, "weft-wg:51820:[IPv4]:IPv4"},
		{ModeAuto, dual, "weft-wg:51820:[IPv4 IPv6]:per peer"},
		{ModeAuto, only6, "weft-wg:51820:[IPv6]:IPv6"},
		{ModeIPv4, dual, "weft-wg:51820:[IPv4 IPv6]:IPv4"},
		{ModeIPv4, only6, "Mode ipv4 reaches peers over their IPv4"},
		{ModeIPv6, dual, "weft-wg:51820:[IPv4 IPv6]:IPv6"},
		{ModeIPv6, only4, "Mode ipv6 reaches peers over their IPv6"},
		{ModeSeparate, &subnet.Config{}, "enables no address family"},
	} {
		o.Mode = tc.mode
		devs, err := layout(o, tc.cfg)
		var got []string
		for _, d := range devs {
			via := "per peer"
			if d.via != 0 {
				via = d.via.String()
			}
			got = append(got, d.name+":"+strconv.Itoa(d.port)+":"+fmt.Sprint(d.fams)+":"+via)
		}
		s := strings.Join(got, " ")
		if err != nil {
			s = err.Error()
		}
		if !strings.Contains(s, tc.want) {
			t.Errorf("%s, %+v: %s, want %s", tc.mode, *tc.cfg, s, tc.want)
		}
	}
}

// TestAutoVia: Mode auto's endpoint choice, Flannel's.
func TestAutoVia(t *testing.T) {
	pub4, priv4 := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("10.0.0.2")
	pub6, ula6 := netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("fd00::2")
	for _, tc := range []struct {
		name         string
		ours4, ours6 netip.Addr
		peer4, peer6 netip.Addr
		want         backend.Family
	}{
		{"only IPv4", pub4, pub6, pub4, netip.Addr{}, backend.IPv4},
		{"only IPv6", pub4, pub6, netip.Addr{}, pub6, backend.IPv6},
		{"public IPv4", pub4, pub6, pub4, pub6, backend.IPv4},
		{"private IPv4, public IPv6", pub4, pub6, priv4, pub6, backend.IPv6},
		{"private IPv4, our IPv6 a ULA", pub4, ula6, priv4, pub6, backend.IPv4},
		{"both private", pub4, ula6, priv4, ula6, backend.IPv4},
	} {
		n := backend.PeerNode{PublicIP: tc.ours4, PublicIPv6: tc.ours6}
		l := subnet.Lease{Attrs: subnet.LeaseAttrs{PublicIP: tc.peer4, PublicIPv6: tc.peer6}}
		if got := autoVia(n, l); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
