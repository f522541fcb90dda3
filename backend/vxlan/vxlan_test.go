package vxlan

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/subnet"
)

func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		raw     string
		want    Options
		wantErr string
	}{
		{raw: ``, want: Options{VNI: 1, Port: 8472}},
		{raw: `{"Type":"vxlan"}`, want: Options{VNI: 1, Port: 8472}},
		{raw: `{"Type":"vxlan","VNI":42,"Port":4789,"GBP":true,"Learning":true,"MTU":1400,"DirectRouting":true,"DisableTXChecksumOffload":true}`,
			want: Options{VNI: 42, Port: 4789, GBP: true, Learning: true, MTU: 1400, DirectRouting: true, DisableTXChecksumOffload: true}},
		{raw: `{"vni":7,"directrouting":true}`, want: Options{VNI: 7, Port: 8472, DirectRouting: true}}, // case-insensitive like Flannel
		{raw: `{"VNI":16777216}`, wantErr: "VNI"},
		{raw: `{"Port":70000}`, wantErr: "Port"},
		{raw: `{"Port":0}`, want: Options{VNI: 1, Port: 8472}}, // Flannel: 0 is the kernel's default, 8472
		{raw: `{"MTU":130}`, wantErr: "MTU"},
		{raw: `{"MTU":20}`, wantErr: "MTU"},
		{raw: `{"VNI":"x"}`, wantErr: "vxlan options"},
	} {
		t.Run(tc.raw, func(t *testing.T) {
			got, err := ParseOptions(json.RawMessage(tc.raw))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseOptions = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestVtepMAC(t *testing.T) {
	a := netip.MustParseAddr("198.18.0.11")
	m1 := VtepMAC(a, 1)
	if m2 := VtepMAC(netip.MustParseAddr("::ffff:198.18.0.11"), 1); m1.String() != m2.String() {
		t.Errorf("mapped and plain IPv4 give %s and %s", m1, m2)
	}
	if m1.String() != VtepMAC(a, 1).String() {
		t.Error("not deterministic")
	}
	seen := map[string]bool{}
	for _, tc := range []struct {
		ip  string
		vni int
	}{{"198.18.0.11", 1}, {"198.18.0.11", 2}, {"198.18.0.12", 1}, {"fd00::11", 1}, {"10.0.0.1", 4096}} {
		m := VtepMAC(netip.MustParseAddr(tc.ip), tc.vni)
		if len(m) != 6 || m[0]&0x01 != 0 || m[0]&0x02 == 0 {
			t.Errorf("VtepMAC(%s,%d) = %s: want 6-byte locally administered unicast", tc.ip, tc.vni, m)
		}
		if seen[m.String()] {
			t.Errorf("VtepMAC(%s,%d) = %s collides", tc.ip, tc.vni, m)
		}
		seen[m.String()] = true
	}
}

func TestOverhead(t *testing.T) {
	if got := Overhead(netip.MustParseAddr("198.18.0.1")); got != 50 {
		t.Errorf("IPv4 overhead %d, want 50", got)
	}
	if got := Overhead(netip.MustParseAddr("fd00::1")); got != 70 {
		t.Errorf("IPv6 overhead %d, want 70", got)
	}
}

func lease(sn, pub, typ, data string) subnet.Lease {
	l := subnet.Lease{Subnet: netip.MustParsePrefix(sn), Attrs: subnet.LeaseAttrs{BackendType: typ}}
	if pub != "" {
		l.Attrs.PublicIP = netip.MustParseAddr(pub)
	}
	if data != "" {
		l.Attrs.BackendData = json.RawMessage(data)
	}
	return l
}

func TestPlanPeers(t *testing.T) {
	cfg, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16"}`))
	if err != nil {
		t.Fatal(err)
	}
	connected := []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")}
	e := env{
		vni: 1,
		node: backend.PeerNode{Config: cfg, Own: subnet.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24")},
			PublicIP: netip.MustParseAddr("198.18.0.10"), BackendType: "vxlan", Connected: connected},
		devIndex: 9, ulIndex: 2, connected: connected,
	}
	good := `{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}`
	peers := map[netip.Prefix]subnet.Lease{}
	add := func(l subnet.Lease) { peers[l.Subnet] = l }
	add(lease("10.244.2.0/24", "198.18.0.11", "vxlan", good))
	add(lease("10.244.3.0/24", "198.18.0.12", "vxlan", `{"VNI":1,"VtepMAC":"nonsense"}`))
	add(lease("10.244.4.0/24", "198.18.0.13", "vxlan", `{"VNI":1,`))
	add(lease("10.244.5.0/24", "198.18.0.14", "vxlan", ``))
	add(lease("10.244.6.0/24", "198.18.0.15", "vxlan", `{"VNI":2,"VtepMAC":"02:00:00:00:00:06"}`))
	add(lease("10.244.7.0/24", "198.18.0.16", "host-gw", ``))
	add(lease("10.244.8.0/24", "198.18.0.17", "vxlan", `{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}`)) // dup MAC of .2
	add(lease("10.245.0.0/24", "198.18.0.18", "vxlan", `{"VNI":1,"VtepMAC":"02:00:00:00:00:09"}`))
	add(lease("10.244.10.0/24", "198.18.0.10", "vxlan", `{"VNI":1,"VtepMAC":"02:00:00:00:00:0a"}`))
	add(lease("10.244.11.0/24", "fd00::1", "vxlan", `{"VNI":1,"VtepMAC":"02:00:00:00:00:0b"}`))
	add(lease("10.244.12.0/24", "198.18.0.19", "vxlan", `{"VNI":1,"VtepMAC":"01:00:00:00:00:0c"}`))
	add(lease("10.244.1.0/24", "198.18.0.10", "vxlan", `{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}`))
	add(lease("10.244.13.0/24", "203.0.113.5", "vxlan", `{"VNI":1,"VtepMAC":"02:00:00:00:00:0d"}`))
	// Hostile PublicIPs (backend.CheckPeer's rules, applied here too).
	add(lease("10.244.16.0/24", "224.0.0.5", "vxlan", `{"VNI":1,"VtepMAC":"02:00:00:00:00:10"}`))
	add(lease("10.244.17.0/24", "10.244.99.1", "vxlan", `{"VNI":1,"VtepMAC":"02:00:00:00:00:11"}`))
	add(lease("10.244.18.0/24", "198.18.0.255", "vxlan", `{"VNI":1,"VtepMAC":"02:00:00:00:00:12"}`))
	add(lease("10.244.19.0/24", "127.0.0.1", "vxlan", `{"VNI":1,"VtepMAC":"02:00:00:00:00:13"}`))
	add(lease("10.244.21.0/24", "169.254.0.9", "vxlan", `{"VNI":1,"VtepMAC":"02:00:00:00:00:15"}`))
	// A VtepMAC claimed by a newer lease on a lower subnet: the older lease
	// keeps it.
	older := lease("10.244.20.0/24", "203.0.113.20", "vxlan", `{"VNI":1,"VtepMAC":"02:00:00:00:00:14"}`)
	older.CreateRevision = 3
	add(older)
	newer := lease("10.244.15.0/24", "203.0.113.15", "vxlan", `{"VNI":1,"VtepMAC":"02:00:00:00:00:14"}`)
	newer.CreateRevision = 9
	add(newer)

	for _, direct := range []bool{false, true} {
		e.direct = direct
		plans, _ := planPeers(e, peers)
		for _, tc := range []struct {
			sn, reason string // reason "" means programmed
			// directOK: on the underlay's L2, so with DirectRouting it gets
			// a plain route and its BackendData does not matter.
			directOK bool
		}{
			{"10.244.2.0/24", "", true},
			{"10.244.3.0/24", "VtepMAC", true},
			{"10.244.4.0/24", "BackendData", true},
			{"10.244.5.0/24", "missing", true},
			{"10.244.6.0/24", "VNI 2", true},
			{"10.244.7.0/24", `backend "host-gw"`, false},
			{"10.244.8.0/24", "already used by the older lease of peer 10.244.2.0/24", true},
			{"10.245.0.0/24", "outside the network", false},
			{"10.244.10.0/24", "this node's own", false},
			{"10.244.11.0/24", "IPv4", false},
			{"10.244.12.0/24", "unicast", true},
			{"10.244.1.0/24", "own", false},
			{"10.244.13.0/24", "", false},
			{"10.244.16.0/24", "multicast", false},
			{"10.244.17.0/24", "inside the pod network", false},
			{"10.244.18.0/24", "broadcast address of the underlay subnet", false},
			{"10.244.19.0/24", "loopback", false},
			{"10.244.21.0/24", "link-local", false},
			{"10.244.20.0/24", "", false},
			{"10.244.15.0/24", "already used by the older lease of peer 10.244.20.0/24", false},
		} {
			p := plans[netip.MustParsePrefix(tc.sn)]
			if tc.reason == "" || (direct && tc.directOK) {
				if p.state != programmed {
					t.Errorf("direct=%v %s: state %s (%s), want programmed", direct, tc.sn, p.state.peerState(), p.reason)
				}
				continue
			}
			st := backend.NewPeerStatus(nil, peers[netip.MustParsePrefix(tc.sn)], p.outcome(), backend.FamilyOutcome{})
			if st.State != backend.PeerRefused || !strings.Contains(st.Reason, tc.reason) || !strings.Contains(st.Reason, tc.sn) {
				t.Errorf("direct=%v %s: state %s reason %q, want refused naming the peer and %q", direct, tc.sn, st.State, st.Reason, tc.reason)
			}
		}
		p2 := plans[netip.MustParsePrefix("10.244.2.0/24")]
		p13 := plans[netip.MustParsePrefix("10.244.13.0/24")]
		wantEncap := func(p *plan, gw string) {
			t.Helper()
			if r := p.route(); !p.encap() || r.LinkIndex != 9 || !r.OnLink || r.Gw != netip.MustParseAddr(gw) {
				t.Errorf("direct=%v %s: plan %+v, want encapsulated route via %s onlink dev 9", direct, r.Dst, r, gw)
			}
		}
		wantEncap(p13, "10.244.13.0") // not on the underlay's L2: always vxlan
		if !direct {
			wantEncap(p2, "10.244.2.0")
			if p2.mac.String() != "02:00:00:00:00:02" || p2.publicIP() != netip.MustParseAddr("198.18.0.11") {
				t.Errorf("peer 2: mac %s publicIP %s", p2.mac, p2.publicIP())
			}
		} else if r := p2.route(); p2.encap() || r.LinkIndex != 2 || r.OnLink || r.Gw != netip.MustParseAddr("198.18.0.11") {
			t.Errorf("direct peer 2: plan %+v mac %s, want route via 198.18.0.11 dev 2", r, p2.mac)
		}
	}
}

func TestNewValidates(t *testing.T) {
	ul := backend.Underlay{Link: "eth0", Index: 2, PublicIP: netip.MustParseAddr("198.18.0.10"), MTU: 1500}
	if _, err := New(backend.Options{Underlay: ul, Config: &subnet.Config{Backend: json.RawMessage(`{"Port":-1}`)}}); err == nil {
		t.Error("bad options accepted")
	}
	if _, err := New(backend.Options{Underlay: backend.Underlay{Link: "eth0"}}); err == nil {
		t.Error("missing PublicIP accepted")
	}
	b, err := New(backend.Options{Underlay: ul})
	if err != nil {
		t.Fatal(err)
	}
	if got := b.(*Backend).Options(); got.VNI != 1 || got.Port != 8472 {
		t.Errorf("defaults %+v", got)
	}
}

// TestReplanMatchesFullPlan: the incremental pass's planning (replan over a
// batch's keys) leaves the plans and VtepMAC claims a full planPeers over
// the same peer set makes, in each family of a dual-stack network, through
// claims changing hands: an older lease arriving for a MAC a newer one
// holds, the owner leaving, a MAC changing, a lease turning malformed, an
// IPv6 subnet moving; and the kernel slots it returns hold every route
// destination a plan had or has, so none is left behind.
func TestReplanMatchesFullPlan(t *testing.T) {
	cfg, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd10::/56"}`))
	if err != nil {
		t.Fatal(err)
	}
	pfx := netip.MustParsePrefix
	mac := func(n int) string { return fmt.Sprintf(`{"VNI":1,"VtepMAC":"02:00:00:00:00:%02x"}`, n) }
	for _, f := range []backend.Family{backend.IPv4, backend.IPv6} {
		t.Run(f.String(), func(t *testing.T) {
			e := env{f: f, vni: 1, devIndex: 9, ulIndex: 2,
				node: backend.PeerNode{Config: cfg, Own: subnet.Lease{Subnet: pfx("10.244.1.0/24"), IPv6Subnet: pfx("fd10:0:0:1::/64")},
					PublicIP: netip.MustParseAddr("198.18.0.10"), PublicIPv6: netip.MustParseAddr("2001:db8::10"), BackendType: "vxlan"}}
			// atV6 is a dual-stack lease whose family under test carries data
			// (the other family's MAC is the lease's own); v6 is its IPv6
			// subnet's index.
			atV6 := func(sn string, v6 int, rev int64, data string) subnet.Lease {
				n, _ := strconv.Atoi(strings.Split(sn, ".")[2])
				l := lease(sn, fmt.Sprintf("203.0.113.%d", n), "vxlan", "")
				l.IPv6Subnet = pfx(fmt.Sprintf("fd10:0:0:%x::/64", v6))
				l.Attrs.PublicIPv6 = netip.MustParseAddr(fmt.Sprintf("2001:db8:1::%d", n))
				own := json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":"02:00:00:00:01:%02x"}`, n))
				l.Attrs.BackendData, l.Attrs.BackendV6Data = json.RawMessage(data), own
				if f == backend.IPv6 {
					l.Attrs.BackendData, l.Attrs.BackendV6Data = own, json.RawMessage(data)
				}
				l.CreateRevision = rev
				return l
			}
			at := func(sn string, rev int64, data string) subnet.Lease {
				n, _ := strconv.Atoi(strings.Split(sn, ".")[2])
				return atV6(sn, n, rev, data)
			}
			add := func(l subnet.Lease) subnet.Event { return subnet.Event{Type: subnet.EventAdded, Lease: l} }
			del := func(sn string) subnet.Event {
				return subnet.Event{Type: subnet.EventRemoved, Lease: subnet.Lease{Subnet: pfx(sn)}}
			}
			steps := []struct {
				name   string
				events []subnet.Event
			}{
				{"first peers", []subnet.Event{add(at("10.244.2.0/24", 5, mac(2))), add(at("10.244.3.0/24", 6, mac(3)))}},
				{"newer lease claims a held MAC", []subnet.Event{add(at("10.244.4.0/24", 9, mac(2)))}},
				{"older lease claims it on a higher subnet", []subnet.Event{add(at("10.244.9.0/24", 1, mac(2)))}},
				{"oldest owner leaves", []subnet.Event{del("10.244.9.0/24")}},
				{"owner changes its MAC", []subnet.Event{add(at("10.244.2.0/24", 5, mac(7)))}},
				{"owner's lease turns malformed", []subnet.Event{add(at("10.244.3.0/24", 6, `{"VNI":1,`))}},
				{"two leases of one MAC in one batch", []subnet.Event{add(at("10.244.5.0/24", 12, mac(5))), add(at("10.244.6.0/24", 11, mac(5)))}},
				{"an IPv6 subnet moves", []subnet.Event{add(atV6("10.244.5.0/24", 0x55, 12, mac(5)))}},
				{"claimant and owner leave together", []subnet.Event{del("10.244.6.0/24"), del("10.244.4.0/24")}},
				{"everyone leaves", []subnet.Event{del("10.244.2.0/24"), del("10.244.3.0/24"), del("10.244.5.0/24")}},
			}
			peers := backend.PeerSet{}
			plans, claims := planPeers(e, peers)
			for _, st := range steps {
				had := map[netip.Prefix]bool{}
				for _, p := range plans {
					had[p.route().Dst] = true
				}
				_, slots, _ := replan(e, peers, plans, claims, peers.ApplyFamilies(st.events))
				full, fullClaims := planPeers(e, peers)
				if len(plans) != len(full) {
					t.Fatalf("%s: %d plans, full pass has %d", st.name, len(plans), len(full))
				}
				for sn, f := range full {
					p := plans[sn]
					if p == nil || p.state != f.state || p.reason != f.reason || p.mac != f.mac || p.route() != f.route() {
						t.Errorf("%s: %s planned %v, full pass %v", st.name, sn, planSummary(p), planSummary(f))
					}
					delete(had, f.route().Dst)
				}
				for dst := range had {
					if dst.IsValid() && !slots[dst] {
						t.Errorf("%s: %s was a route's destination and is none now, but not among the slots %v", st.name, dst, slots)
					}
				}
				if claims.len() != fullClaims.len() || len(claims.more) != len(fullClaims.more) {
					t.Errorf("%s: claims %v, full pass %v", st.name, claims, fullClaims)
				}
				for m := range fullClaims.macs() {
					// The owner first, the others in any order.
					got, cl := claims.of(m, nil), fullClaims.of(m, nil)
					if len(got) != len(cl) || got[0] != cl[0] || !slices.Equal(slices.SortedFunc(slices.Values(got), backend.ComparePrefix), slices.SortedFunc(slices.Values(cl), backend.ComparePrefix)) {
						t.Errorf("%s: claimants of %s %v, full pass %v", st.name, m, got, cl)
					}
				}
			}
		})
	}
}

func planSummary(p *plan) string {
	if p == nil {
		return "nothing"
	}
	return fmt.Sprintf("%s %q (claim %s)", p.state.peerState(), p.reason, p.mac)
}
