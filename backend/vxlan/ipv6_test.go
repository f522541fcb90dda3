package vxlan

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/subnet"
)

// TestPlanPeersIPv6: the IPv6 family is planned from the lease's IPv6 half:
// IPv6Subnet via <IPv6Subnet>:: onlink on weft-v6.<VNI> with the VtepMAC of
// BackendV6Data towards PublicIPv6, or (DirectRouting, same segment) via
// PublicIPv6 on the underlay; the IPv4 BackendData plays no part.
func TestPlanPeersIPv6(t *testing.T) {
	cfg, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	pfx, addr := netip.MustParsePrefix, netip.MustParseAddr
	connected := []netip.Prefix{pfx("2001:db8::/64")}
	e := env{
		f: backend.IPv6, vni: 1,
		node: backend.PeerNode{Config: cfg, Own: subnet.Lease{Subnet: pfx("10.244.1.0/24"), IPv6Subnet: pfx("fd10:0:0:1::/64")},
			PublicIP: addr("198.18.0.10"), PublicIPv6: addr("2001:db8::10"), BackendType: "vxlan",
			Connected: append([]netip.Prefix{pfx("198.18.0.0/24")}, connected...)},
		devIndex: 9, ulIndex: 2, connected: connected,
	}
	v4data := `{"VNI":1,"VtepMAC":"02:00:00:00:00:04"}`
	dual := func(sn, sn6, pub6, data6 string) subnet.Lease {
		l := lease(sn, "198.18.0."+strings.Split(sn, ".")[2], "vxlan", v4data)
		l.IPv6Subnet, l.Attrs.PublicIPv6 = pfx(sn6), addr(pub6)
		if data6 != "" {
			l.Attrs.BackendV6Data = json.RawMessage(data6)
		}
		return l
	}
	peers := map[netip.Prefix]subnet.Lease{}
	for _, l := range []subnet.Lease{
		dual("10.244.2.0/24", "fd10:0:0:2::/64", "2001:db8::11", `{"VNI":1,"VtepMAC":"02:00:00:00:00:62"}`),
		dual("10.244.3.0/24", "fd10:0:0:3::/64", "2001:db8:1::12", `{"VNI":1,"VtepMAC":"02:00:00:00:00:63"}`), // another segment
		dual("10.244.4.0/24", "fd10:0:0:4::/64", "2001:db8:1::13", ""),                                        // no BackendV6Data
		dual("10.244.5.0/24", "fd10:0:0:5::/64", "2001:db8:1::14", `{"VNI":1,"VtepMAC":"02:00:00:00:00:63"}`), // MAC of .3's, newer
	} {
		peers[l.Key()] = l
	}
	peers[pfx("10.244.3.0/24")] = func() subnet.Lease { l := peers[pfx("10.244.3.0/24")]; l.CreateRevision = 2; return l }()
	peers[pfx("10.244.5.0/24")] = func() subnet.Lease { l := peers[pfx("10.244.5.0/24")]; l.CreateRevision = 5; return l }()
	for _, direct := range []bool{false, true} {
		e.direct = direct
		plans, _ := planPeers(e, peers)
		p2, p3 := plans[pfx("10.244.2.0/24")], plans[pfx("10.244.3.0/24")]
		if direct {
			if r := p2.route(); p2.state != programmed || p2.encap() || r.Dst != pfx("fd10:0:0:2::/64") || r.Gw != addr("2001:db8::11") || r.LinkIndex != 2 {
				t.Errorf("direct same-segment peer: %s %+v", planSummary(p2), r)
			}
		} else if r := p2.route(); p2.state != programmed || p2.mac.String() != "02:00:00:00:00:62" || p2.publicIP() != addr("2001:db8::11") ||
			r.Dst != pfx("fd10:0:0:2::/64") || r.Gw != addr("fd10:0:0:2::") || !r.OnLink || r.LinkIndex != 9 {
			t.Errorf("encapsulated peer: %s %+v", planSummary(p2), r)
		}
		if r := p3.route(); p3.state != programmed || p3.mac.String() != "02:00:00:00:00:63" || r.Gw != addr("fd10:0:0:3::") || r.LinkIndex != 9 {
			t.Errorf("direct=%v, peer on another segment: %s %+v, want encapsulated", direct, planSummary(p3), r)
		}
		for sn, want := range map[string]string{"10.244.4.0/24": "BackendV6Data: bad vxlan BackendData: missing", "10.244.5.0/24": "already used by the older lease of peer 10.244.3.0/24 (2001:db8:1::12)"} {
			p := plans[pfx(sn)]
			st := backend.NewPeerStatus(cfg, peers[pfx(sn)], backend.Outcome(backend.PeerProgrammed, ""), p.outcome())
			if st.State != backend.PeerRefused || !strings.Contains(st.Reason, "IPv6: ") || !strings.Contains(st.Reason, want) || !strings.Contains(st.Reason, sn) {
				t.Errorf("direct=%v %s: %s %q, want refused: IPv6: %s", direct, sn, st.State, st.Reason, want)
			}
		}
	}
}

// TestNewIPv6 checks the devices New plans per family and what it refuses.
func TestNewIPv6(t *testing.T) {
	ul := backend.Underlay{Link: "eth0", Index: 2, PublicIP: netip.MustParseAddr("198.18.0.10"), PublicIPv6: netip.MustParseAddr("2001:db8::10"), MTU: 1500}
	for _, tc := range []struct {
		cfg     string
		ul      backend.Underlay
		devs    []string
		wantErr string
	}{
		{cfg: `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, ul: ul, devs: []string{"weft.1"}},
		{cfg: `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"vxlan","VNI":7}}`, ul: ul, devs: []string{"weft.7", "weft-v6.7"}},
		{cfg: `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"vxlan"}}`, ul: backend.Underlay{Link: "eth0", Index: 2, PublicIPv6: ul.PublicIPv6}, devs: []string{"weft-v6.1"}},
		{cfg: `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"vxlan"}}`, ul: backend.Underlay{Link: "eth0", Index: 2, PublicIP: ul.PublicIP}, wantErr: "no IPv6 address"},
	} {
		cfg, err := subnet.ParseConfig([]byte(tc.cfg))
		if err != nil {
			t.Fatal(err)
		}
		b, err := New(backend.Options{Underlay: tc.ul, Config: cfg})
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err %v, want %q", tc.cfg, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.cfg, err)
		}
		var got []string
		for _, d := range b.(*Backend).devs {
			got = append(got, d.name)
		}
		if strings.Join(got, " ") != strings.Join(tc.devs, " ") || b.(*Backend).Device() != tc.devs[0] {
			t.Errorf("%s: devices %v (Device %s), want %v", tc.cfg, got, b.(*Backend).Device(), tc.devs)
		}
	}
}
