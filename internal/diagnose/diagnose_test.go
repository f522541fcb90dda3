package diagnose_test

import (
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/diagnose"
	"github.com/weftnet/weft/internal/diagnose/diagnosetest"
	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/subnettest"
)

var (
	ownSubnet  = netip.MustParsePrefix("10.244.1.0/24")
	peerSubnet = netip.MustParsePrefix("10.244.2.0/24")
	ownIP      = netip.MustParseAddr("198.18.100.10")
	peerIP     = netip.MustParseAddr("198.18.100.11")
	peerMAC, _ = net.ParseMAC("0e:00:00:00:00:02")
	// The IPv6 side of the dual-stack cluster.
	ownSubnet6  = netip.MustParsePrefix("fd00:10:244:1::/64")
	peerSubnet6 = netip.MustParsePrefix("fd00:10:244:2::/64")
	ownIP6      = netip.MustParseAddr("fd00:198:18::10")
	peerIP6     = netip.MustParseAddr("fd00:198:18::11")
	peerMAC6, _ = net.ParseMAC("0e:00:00:00:06:02")
	now         = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

func leases(backendType string) []subnet.Lease {
	data := json.RawMessage(`{"VNI":1,"VtepMAC":"` + peerMAC.String() + `"}`)
	data6 := json.RawMessage(`{"VNI":1,"VtepMAC":"` + peerMAC6.String() + `"}`)
	if backendType != "vxlan" {
		data, data6 = nil, nil
	}
	return []subnet.Lease{
		{Subnet: ownSubnet, IPv6Subnet: ownSubnet6, Attrs: subnet.LeaseAttrs{PublicIP: ownIP, PublicIPv6: ownIP6, BackendType: backendType},
			Expiration: now.Add(time.Hour), LeaseID: 1},
		{Subnet: peerSubnet, IPv6Subnet: peerSubnet6, Attrs: subnet.LeaseAttrs{PublicIP: peerIP, PublicIPv6: peerIP6, BackendType: backendType,
			BackendData: data, BackendV6Data: data6}, Expiration: now.Add(2 * time.Hour), LeaseID: 2},
	}
}

// node builds the kernel state weft programs on node 1 of a two-node
// dual-stack cluster, for backendType.
func node(backendType string) *diagnosetest.Kernel {
	k := diagnosetest.New()
	k.AddLink("eth0", "veth", 1500, pfx("198.18.100.10/24"))
	k.AddRoute(diagnose.Route{Dst: pfx("198.18.100.0/24"), Dev: "eth0"})
	k.AddRoute(diagnose.Route{Dst: pfx("0.0.0.0/0"), Gw: ip("198.18.100.1"), Dev: "eth0"})
	k.AddLink("weft0", "bridge", 1450, pfx("10.244.1.1/24"))
	k.AddRoute(diagnose.Route{Dst: ownSubnet, Dev: "weft0"})
	k.AddNeigh("weft0", ip("10.244.1.5"), net.HardwareAddr{2, 0, 0, 0, 0, 5}, "reachable")
	// IPv6: the link gets its addresses after the fact, so the link
	// indices stay those of an IPv4 cluster.
	k.Links[0].Addrs = append(k.Links[0].Addrs, pfx("fd00:198:18::10/64"))
	k.Links[1].Addrs = append(k.Links[1].Addrs, pfx("fd00:10:244:1::1/64"))
	k.AddRoute(diagnose.Route{Dst: pfx("fd00:198:18::/64"), Dev: "eth0"})
	k.AddRoute(diagnose.Route{Dst: ownSubnet6, Dev: "weft0"})
	k.AddNeigh("weft0", ip("fd00:10:244:1::5"), net.HardwareAddr{2, 0, 0, 0, 6, 5}, "reachable")
	switch backendType {
	case "vxlan":
		k.AddLink("weft.1", "vxlan", 1450, pfx("10.244.1.0/32"))
		k.AddRoute(diagnose.Route{Dst: peerSubnet, Gw: peerSubnet.Addr(), Dev: "weft.1", OnLink: true, Protocol: 0x57})
		k.AddNeigh("weft.1", peerSubnet.Addr(), peerMAC, "permanent")
		k.AddFDB("weft.1", peerMAC, peerIP)
		k.AddLink("weft-v6.1", "vxlan", 1430, pfx("fd00:10:244:1::/128"))
		k.AddRoute(diagnose.Route{Dst: peerSubnet6, Gw: peerSubnet6.Addr(), Dev: "weft-v6.1", OnLink: true, Protocol: 0x57})
		k.AddNeigh("weft-v6.1", peerSubnet6.Addr(), peerMAC6, "permanent")
		k.AddFDB("weft-v6.1", peerMAC6, peerIP6)
	case "host-gw":
		k.AddRoute(diagnose.Route{Dst: peerSubnet, Gw: peerIP, Dev: "eth0", Protocol: 0x57})
		k.AddRoute(diagnose.Route{Dst: peerSubnet6, Gw: peerIP6, Dev: "eth0", Protocol: 0x57})
	case "udp":
		k.AddLink("weft-udp", "tuntap", 1472, pfx("10.244.1.0/32"), pfx("fd00:10:244:1::/128"))
		k.AddRoute(diagnose.Route{Dst: pfx("10.244.0.0/16"), Dev: "weft-udp"})
		k.AddRoute(diagnose.Route{Dst: pfx("fd00:10:244::/56"), Dev: "weft-udp"})
	}
	return k
}

func query(t *testing.T, backendType, addr string) diagnose.Query {
	return diagnose.Query{
		IP:     ip(addr),
		Config: subnettest.MustConfig(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"`+backendType+`"}}`),
		Leases: leases(backendType),
		Node: diagnose.Node{
			Subnet: ownSubnet, IPv6Subnet: ownSubnet6, Backend: backendType, VXLANDevice: "weft.1", VXLANDevice6: "weft-v6.1",
			UDPDevice: "weft-udp", Bridge: "weft0",
			Peers: map[netip.Prefix]diagnose.PeerState{peerSubnet: {State: "programmed"}},
		},
		Now: now,
	}
}

// failed returns the What of every failed check.
func failed(r diagnose.Report) []string {
	var out []string
	for _, c := range r.Checks {
		if c.Result == diagnose.Fail {
			out = append(out, c.What)
		}
	}
	return out
}

func TestDiagnose(t *testing.T) {
	tests := []struct {
		name    string
		backend string
		ip      string
		change  func(k *diagnosetest.Kernel, q *diagnose.Query)
		local   bool
		// wantFail are substrings of the failed checks, in order; empty
		// means every check passes.
		wantFail []string
		wantWarn string // a substring of some warning, if set
	}{
		{name: "vxlan peer all present", backend: "vxlan", ip: "10.244.2.7"},
		{name: "vxlan route deleted", backend: "vxlan", ip: "10.244.2.7",
			change:   func(k *diagnosetest.Kernel, _ *diagnose.Query) { k.DeleteRoutes(peerSubnet) },
			wantFail: []string{"route 10.244.2.0/24 via 10.244.2.0 dev weft.1 onlink", "kernel sends 10.244.2.7 out of weft.1"}},
		{name: "vxlan neighbour and fdb missing", backend: "vxlan", ip: "10.244.2.7",
			change: func(k *diagnosetest.Kernel, _ *diagnose.Query) {
				k.Neighs = map[int][]diagnose.Neigh{}
				k.FDBs = map[int]map[string][]netip.Addr{}
			},
			wantFail: []string{"neighbour 10.244.2.0 lladdr 0e:00:00:00:00:02", "fdb 0e:00:00:00:00:02 dst 198.18.100.11"}},
		{name: "vxlan stale fdb", backend: "vxlan", ip: "10.244.2.7",
			change: func(k *diagnosetest.Kernel, _ *diagnose.Query) {
				k.FDBs = map[int]map[string][]netip.Addr{}
				k.AddFDB("weft.1", peerMAC, ip("198.18.100.99"))
			},
			wantFail: []string{"fdb 0e:00:00:00:00:02 dst 198.18.100.11"}},
		{name: "vxlan device down", backend: "vxlan", ip: "10.244.2.7",
			change:   func(k *diagnosetest.Kernel, _ *diagnose.Query) { k.Links[2].Up = false },
			wantFail: []string{"vxlan device weft.1 is up"}},
		{name: "vxlan device missing", backend: "vxlan", ip: "10.244.2.7",
			change: func(k *diagnosetest.Kernel, _ *diagnose.Query) {
				k.Links = k.Links[:2]
				k.DeleteRoutes(peerSubnet)
			},
			wantFail: []string{"vxlan device weft.1 exists", "route 10.244.2.0/24 via"}},
		{name: "vxlan direct routing", backend: "vxlan", ip: "10.244.2.7",
			change: func(k *diagnosetest.Kernel, q *diagnose.Query) {
				q.Node.DirectRouting = true
				k.DeleteRoutes(peerSubnet)
				k.AddRoute(diagnose.Route{Dst: peerSubnet, Gw: peerIP, Dev: "eth0"})
			}},
		{name: "peer refused by weftd", backend: "vxlan", ip: "10.244.2.7",
			change: func(_ *diagnosetest.Kernel, q *diagnose.Query) {
				q.Node.Peers[peerSubnet] = diagnose.PeerState{State: "refused", Reason: "PublicIP of another family"}
			},
			wantFail: []string{"weftd programmed peer 10.244.2.0/24"}},
		{name: "weftd unreachable is a warning", backend: "vxlan", ip: "10.244.2.7",
			change: func(_ *diagnosetest.Kernel, q *diagnose.Query) {
				q.Node.Peers, q.Node.PeersErr = nil, "weftd not reachable"
			},
			wantWarn: "weftd programmed peer"},
		{name: "peer of another backend", backend: "vxlan", ip: "10.244.2.7",
			change: func(_ *diagnosetest.Kernel, q *diagnose.Query) {
				q.Leases[1].Attrs.BackendType = "host-gw"
				delete(q.Node.Peers, peerSubnet)
			},
			wantFail: []string{"peer uses this node's backend vxlan", "weftd programmed peer"}},
		{name: "forwarding off", backend: "vxlan", ip: "10.244.2.7",
			change:   func(k *diagnosetest.Kernel, _ *diagnose.Query) { k.IPForward = false },
			wantFail: []string{"IPv4 forwarding on"}},
		{name: "outside the network", backend: "vxlan", ip: "10.96.0.1",
			wantFail: []string{"in the pod network 10.244.0.0/16"}},
		{name: "no lease owns it", backend: "vxlan", ip: "10.244.9.9",
			wantFail: []string{"a lease owns 10.244.9.9"}},
		{name: "local pod", backend: "vxlan", ip: "10.244.1.5", local: true},
		{name: "local pod without neighbour entry", backend: "vxlan", ip: "10.244.1.6", local: true,
			wantWarn: "neighbour 10.244.1.6 on weft0"},
		{name: "local pod neighbour failed", backend: "vxlan", ip: "10.244.1.6", local: true,
			change: func(k *diagnosetest.Kernel, _ *diagnose.Query) {
				k.AddNeigh("weft0", ip("10.244.1.6"), nil, "failed")
			},
			wantFail: []string{"neighbour 10.244.1.6 on weft0"}},
		{name: "local without bridge", backend: "vxlan", ip: "10.244.1.5", local: true,
			change: func(k *diagnosetest.Kernel, _ *diagnose.Query) {
				k.Links = k.Links[:1]
				k.DeleteRoutes(ownSubnet)
			},
			wantFail: []string{"bridge weft0 exists"}},
		{name: "local bridge with wrong gateway", backend: "vxlan", ip: "10.244.1.5", local: true,
			change: func(k *diagnosetest.Kernel, _ *diagnose.Query) {
				k.Links[1].Addrs = []netip.Prefix{pfx("10.244.7.1/24")}
			},
			wantFail: []string{"bridge weft0 has gateway 10.244.1.1/24"}},
		{name: "host-gw peer", backend: "host-gw", ip: "10.244.2.7"},
		{name: "host-gw route missing", backend: "host-gw", ip: "10.244.2.7",
			change:   func(k *diagnosetest.Kernel, _ *diagnose.Query) { k.DeleteRoutes(peerSubnet) },
			wantFail: []string{"route 10.244.2.0/24 via 198.18.100.11", "kernel sends 10.244.2.7 out of eth0 via 198.18.100.11"}},
		{name: "host-gw peer behind a router", backend: "host-gw", ip: "10.244.2.7",
			change: func(k *diagnosetest.Kernel, q *diagnose.Query) {
				q.Leases[1].Attrs.PublicIP = ip("198.19.5.5")
				k.DeleteRoutes(peerSubnet)
				k.AddRoute(diagnose.Route{Dst: peerSubnet, Gw: ip("198.19.5.5"), Dev: "eth0"})
			},
			wantFail: []string{"peer 198.19.5.5 is directly connected"}},
		{name: "udp peer", backend: "udp", ip: "10.244.2.7"},
		{name: "udp route missing", backend: "udp", ip: "10.244.2.7",
			change:   func(k *diagnosetest.Kernel, _ *diagnose.Query) { k.DeleteRoutes(pfx("10.244.0.0/16")) },
			wantFail: []string{"route 10.244.0.0/16 dev weft-udp", "kernel sends 10.244.2.7 out of weft-udp"}},
		{name: "ipv6 vxlan peer all present", backend: "vxlan", ip: "fd00:10:244:2::7"},
		{name: "ipv6 vxlan route deleted", backend: "vxlan", ip: "fd00:10:244:2::7",
			change: func(k *diagnosetest.Kernel, _ *diagnose.Query) { k.DeleteRoutes(peerSubnet6) },
			wantFail: []string{"route fd00:10:244:2::/64 via fd00:10:244:2:: dev weft-v6.1 onlink",
				"kernel sends fd00:10:244:2::7 out of weft-v6.1 via fd00:10:244:2::"}},
		{name: "ipv6 vxlan neighbour and fdb missing", backend: "vxlan", ip: "fd00:10:244:2::7",
			change: func(k *diagnosetest.Kernel, _ *diagnose.Query) {
				k.Neighs[4] = nil // weft-v6.1's
				k.FDBs[4] = nil
			},
			wantFail: []string{"neighbour fd00:10:244:2:: lladdr 0e:00:00:00:06:02 permanent on weft-v6.1", "fdb 0e:00:00:00:06:02 dst fd00:198:18::11 on weft-v6.1"}},
		{name: "ipv6 vxlan lease without BackendV6Data", backend: "vxlan", ip: "fd00:10:244:2::7",
			change:   func(_ *diagnosetest.Kernel, q *diagnose.Query) { q.Leases[1].Attrs.BackendV6Data = nil },
			wantFail: []string{"peer lease has a VtepMAC"}},
		{name: "ipv6 vxlan: the IPv4 entries do not stand in", backend: "vxlan", ip: "fd00:10:244:2::7",
			change: func(k *diagnosetest.Kernel, _ *diagnose.Query) {
				k.Links = k.Links[:3] // no weft-v6.1
				k.DeleteRoutes(peerSubnet6)
			},
			wantFail: []string{"vxlan device weft-v6.1 exists", "route fd00:10:244:2::/64 via"}},
		{name: "ipv6 forwarding off", backend: "vxlan", ip: "fd00:10:244:2::7",
			change:   func(k *diagnosetest.Kernel, _ *diagnose.Query) { k.IPv6Forward = false },
			wantFail: []string{"IPv6 forwarding on"}},
		{name: "ipv4 forwarding off does not fail an IPv6 pod", backend: "vxlan", ip: "fd00:10:244:2::7",
			change: func(k *diagnosetest.Kernel, _ *diagnose.Query) { k.IPForward = false }},
		{name: "ipv6 host-gw peer", backend: "host-gw", ip: "fd00:10:244:2::7"},
		{name: "ipv6 host-gw route missing", backend: "host-gw", ip: "fd00:10:244:2::7",
			change:   func(k *diagnosetest.Kernel, _ *diagnose.Query) { k.DeleteRoutes(peerSubnet6) },
			wantFail: []string{"route fd00:10:244:2::/64 via fd00:198:18::11", "kernel sends fd00:10:244:2::7 out of eth0 via fd00:198:18::11"}},
		{name: "ipv6 udp peer", backend: "udp", ip: "fd00:10:244:2::7"},
		{name: "ipv6 udp route missing", backend: "udp", ip: "fd00:10:244:2::7",
			change:   func(k *diagnosetest.Kernel, _ *diagnose.Query) { k.DeleteRoutes(pfx("fd00:10:244::/56")) },
			wantFail: []string{"route fd00:10:244::/56 dev weft-udp", "kernel sends fd00:10:244:2::7 out of weft-udp"}},
		{name: "ipv6 local pod", backend: "vxlan", ip: "fd00:10:244:1::5", local: true},
		{name: "ipv6 local bridge without the IPv6 gateway", backend: "vxlan", ip: "fd00:10:244:1::5", local: true,
			change:   func(k *diagnosetest.Kernel, _ *diagnose.Query) { k.Links[1].Addrs = k.Links[1].Addrs[:1] },
			wantFail: []string{"bridge weft0 has gateway fd00:10:244:1::1/64"}},
		{name: "ipv6 outside the network", backend: "vxlan", ip: "fd00:99::1",
			wantFail: []string{"in the pod network fd00:10:244::/56"}},
		{name: "ipv6 in a network without IPv6", backend: "vxlan", ip: "fd00:10:244:2::7",
			change: func(_ *diagnosetest.Kernel, q *diagnose.Query) {
				q.Config = subnettest.MustConfig(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`)
			},
			wantFail: []string{"the network has IPv6"}},
		{name: "ipv6-only peer is found by its IPv6 key", backend: "host-gw", ip: "fd00:10:244:2::7",
			change: func(_ *diagnosetest.Kernel, q *diagnose.Query) {
				q.Leases[1].Subnet = netip.Prefix{}
				q.Node.Peers = map[netip.Prefix]diagnose.PeerState{peerSubnet6: {State: "programmed"}}
			}},
		{name: "own subnet unknown", backend: "vxlan", ip: "10.244.2.7",
			change:   func(_ *diagnosetest.Kernel, q *diagnose.Query) { q.Node.Subnet = netip.Prefix{} },
			wantWarn: "this node's subnet is known"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := node(tt.backend)
			q := query(t, tt.backend, tt.ip)
			if tt.change != nil {
				tt.change(k, &q)
			}
			r := diagnose.Diagnose(k, q)
			var text bytes.Buffer
			if err := r.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			t.Log("\n" + text.String())
			if r.Local != tt.local {
				t.Errorf("Local = %v, want %v", r.Local, tt.local)
			}
			got := failed(r)
			if len(got) != len(tt.wantFail) {
				t.Fatalf("failed checks %q, want ones matching %q", got, tt.wantFail)
			}
			for i, w := range tt.wantFail {
				if !strings.Contains(got[i], w) {
					t.Errorf("failed check %d = %q, want it to contain %q", i, got[i], w)
				}
			}
			for _, c := range r.Checks {
				if c.Result != diagnose.OK && c.Fix == "" && c.Result == diagnose.Fail && !strings.Contains(c.Found, "err") {
					t.Errorf("failed check %q has no fix", c.What)
				}
			}
			if tt.wantWarn != "" {
				found := false
				for _, c := range r.Checks {
					found = found || (c.Result == diagnose.Warn && strings.Contains(c.What, tt.wantWarn))
				}
				if !found {
					t.Errorf("no warning about %q", tt.wantWarn)
				}
			}
			if r.Problems() != len(tt.wantFail) {
				t.Errorf("Problems() = %d, want %d", r.Problems(), len(tt.wantFail))
			}
			if len(tt.wantFail) == 0 && !strings.Contains(text.String(), "No problem found") {
				t.Errorf("text does not say no problem was found")
			}
			if n := strings.Count(text.String(), "✗"); n != len(tt.wantFail) {
				t.Errorf("text has %d ✗, want %d", n, len(tt.wantFail))
			}
		})
	}
}

func TestReportText(t *testing.T) {
	k := node("vxlan")
	k.DeleteRoutes(peerSubnet)
	r := diagnose.Diagnose(k, query(t, "vxlan", "10.244.2.7"))
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"10.244.2.7: a pod of node 198.18.100.11 (subnet 10.244.2.0/24, backend vxlan)",
		"✓ a lease owns 10.244.2.7  [10.244.2.0/24 of node 198.18.100.11 (vxlan), expires in 2h0m0s]",
		"✗ route 10.244.2.0/24 via 10.244.2.0 dev weft.1 onlink  [missing]",
		"      fix: weftd re-adds it on its next full pass",
		"✓ neighbour 10.244.2.0 lladdr 0e:00:00:00:00:02 permanent on weft.1",
		"2 problems found.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back diagnose.Report
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if back.Problems() != 2 || back.Owner == nil || back.Owner.PublicIP != peerIP {
		t.Errorf("JSON round trip lost data: %s", js)
	}
}
