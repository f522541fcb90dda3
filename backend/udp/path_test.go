package udp

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/udp/wire"
	"github.com/weftnet/weft/subnet"
)

var (
	ownSubnet  = netip.MustParsePrefix("10.244.1.0/24")
	peerSubnet = netip.MustParsePrefix("10.244.2.0/24")
	peerIP     = netip.MustParseAddr("198.18.60.12")
)

func ip4(s string) uint32 { return be32(netip.MustParseAddr(s).As4()) }

// ul is the underlay address s as the receive path is given it.
func ul(s string) wire.Addr6 { return underlayKey(netip.MustParseAddr(s)) }

func testTable() *table { return testTableWith(nil) }

// testNode is the node the tables are built for: 10.244.1.0/24 on
// 198.18.60.11 in a udp network.
func testNode() backend.PeerNode {
	cfg, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}`))
	if err != nil {
		panic(err)
	}
	return backend.PeerNode{Config: cfg, Own: subnet.Lease{Subnet: ownSubnet},
		PublicIP: netip.MustParseAddr("198.18.60.11"), BackendType: subnet.BackendUDP}
}

// testTableWith is testTable with peerSubnet's lease carrying data as its
// BackendData.
func testTableWith(data json.RawMessage) *table {
	lease := func(sn, ip, typ string) (netip.Prefix, subnet.Lease) {
		p := netip.MustParsePrefix(sn)
		return p, subnet.Lease{Subnet: p, Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(ip), BackendType: typ}}
	}
	peers := map[netip.Prefix]subnet.Lease{
		peerSubnet: {Subnet: peerSubnet, Attrs: subnet.LeaseAttrs{PublicIP: peerIP, BackendType: "udp", BackendData: data}},
	}
	for _, l := range []struct{ sn, ip, typ string }{
		{"10.244.3.0/24", "198.18.60.13", "vxlan"}, // another backend
		{"10.244.4.0/24", "198.18.60.14", ""},      // Flannel's udp lease: no BackendType
		{"10.244.2.128/25", "198.18.60.15", "udp"}, // inside peerSubnet: not of SubnetLen
		{"10.244.5.0/24", "198.18.60.11", "udp"},   // claims this node's PublicIP
	} {
		sn, ls := lease(l.sn, l.ip, l.typ)
		peers[sn] = ls
	}
	return buildTable(testNode(), peers, DefaultPort, true)
}

var (
	ownSubnet6  = netip.MustParsePrefix("fd00:10:244:1::/64")
	peerSubnet6 = netip.MustParsePrefix("fd00:10:244:2::/64")
)

// testNodeDual is testNode in a dual-stack network, with
// fd00:10:244:1::/64 as well; IPv6 rides the IPv4 underlay.
func testNodeDual() backend.PeerNode {
	cfg, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"udp"}}`))
	if err != nil {
		panic(err)
	}
	return backend.PeerNode{Config: cfg, Own: subnet.Lease{Subnet: ownSubnet, IPv6Subnet: ownSubnet6},
		PublicIP: netip.MustParseAddr("198.18.60.11"), BackendType: subnet.BackendUDP, IPv6Carrier: backend.IPv4}
}

// testTableDual is the dual-stack node's table: peerSubnet and peerSubnet6
// at peerIP (with data as its BackendData), an IPv4-only lease, an
// IPv6-only one, and leases refused in one family.
func testTableDual(data json.RawMessage) *table {
	leases := []subnet.Lease{
		{Subnet: peerSubnet, IPv6Subnet: peerSubnet6, Attrs: subnet.LeaseAttrs{PublicIP: peerIP,
			PublicIPv6: netip.MustParseAddr("fd00:198:19::12"), BackendType: "udp", BackendData: data}},
		// IPv4 only (a Flannel udp lease): a peer in IPv4.
		{Subnet: netip.MustParsePrefix("10.244.4.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("198.18.60.14")}},
		// IPv6 subnet overlapping this node's: a peer in IPv4 only.
		{Subnet: netip.MustParsePrefix("10.244.5.0/24"), IPv6Subnet: ownSubnet6,
			Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("198.18.60.15"), BackendType: "udp"}},
		// IPv6 only, no PublicIPv6: a peer in IPv6 (its datagrams go to PublicIP).
		{IPv6Subnet: netip.MustParsePrefix("fd00:10:244:7::/64"),
			Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("198.18.60.17"), BackendType: "udp"}},
		// IPv6 only, without a PublicIP: refused.
		{IPv6Subnet: netip.MustParsePrefix("fd00:10:244:8::/64"),
			Attrs: subnet.LeaseAttrs{PublicIPv6: netip.MustParseAddr("fd00:198:19::18"), BackendType: "udp"}},
	}
	peers := make(map[netip.Prefix]subnet.Lease)
	for _, l := range leases {
		peers[l.Key()] = l
	}
	return buildTable(testNodeDual(), peers, DefaultPort, true)
}

// peerIP6 is the IPv6-only network's peer's PublicIPv6.
var peerIP6 = netip.MustParseAddr("2001:db8:60::12")

// testNodeV6Only is the node of an IPv6-only network: fd00:10:244:1::/64
// on 2001:db8:60::11, the tunnel over IPv6.
func testNodeV6Only() backend.PeerNode {
	cfg, err := subnet.ParseConfig([]byte(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"udp"}}`))
	if err != nil {
		panic(err)
	}
	return backend.PeerNode{Config: cfg, Own: subnet.Lease{IPv6Subnet: ownSubnet6},
		PublicIPv6: netip.MustParseAddr("2001:db8:60::11"), BackendType: subnet.BackendUDP, IPv6Carrier: backend.IPv6}
}

// testTableV6Only is the IPv6-only node's table: peerSubnet6 at peerIP6
// (with data as its BackendData), a peer with a PublicIP as well, and
// refused leases.
func testTableV6Only(data json.RawMessage) *table {
	leases := []subnet.Lease{
		{IPv6Subnet: peerSubnet6, Attrs: subnet.LeaseAttrs{PublicIPv6: peerIP6, BackendType: "udp", BackendData: data}},
		// PublicIP as well (a node that still publishes it): reached at PublicIPv6.
		{IPv6Subnet: netip.MustParsePrefix("fd00:10:244:5::/64"), Attrs: subnet.LeaseAttrs{
			PublicIP: netip.MustParseAddr("198.18.60.15"), PublicIPv6: netip.MustParseAddr("2001:db8:60::15"), BackendType: "udp"}},
		// A Flannel udp lease: PublicIP only, no backend type.
		{IPv6Subnet: netip.MustParsePrefix("fd00:10:244:4::/64"), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("198.18.60.14")}},
		// Claims this node's PublicIPv6.
		{IPv6Subnet: netip.MustParsePrefix("fd00:10:244:6::/64"), Attrs: subnet.LeaseAttrs{
			PublicIPv6: netip.MustParseAddr("2001:db8:60::11"), BackendType: "udp"}},
	}
	peers := make(map[netip.Prefix]subnet.Lease)
	for _, l := range leases {
		peers[l.Key()] = l
	}
	return buildTable(testNodeV6Only(), peers, DefaultPort, true)
}

var partialData = json.RawMessage(`{"PartialChecksums":true}`)

// packet builds a TCP packet with a valid checksum: IPv4, or IPv6 when src
// and dst are IPv6 addresses (TTL is then the hop limit).
func packet(src, dst string, ttl uint8, payload int) []byte {
	if s := netip.MustParseAddr(src); s.Is6() {
		p := make([]byte, 60+payload)
		p[0] = 0x60
		binary.BigEndian.PutUint16(p[4:], uint16(20+payload))
		p[6], p[7] = wire.ProtoTCP, ttl
		copy(p[8:], s.AsSlice())
		copy(p[24:], netip.MustParseAddr(dst).AsSlice())
		p[52] = 5 << 4
		p[53] = 0x10
		h, _ := wire.Parse(p)
		wire.L4Checksum(p, h)
		return p
	}
	p := make([]byte, 40+payload)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[6:], 0x4000)
	p[8], p[9] = ttl, wire.ProtoTCP
	binary.BigEndian.PutUint32(p[12:], ip4(src))
	binary.BigEndian.PutUint32(p[16:], ip4(dst))
	wire.SetIPv4Checksum(p, 20)
	p[32] = 5 << 4
	p[33] = 0x10
	h, _ := wire.Parse(p)
	wire.L4Checksum(p, h)
	return p
}

func TestTable(t *testing.T) {
	tb := testTable()
	tests := []struct {
		dst  string
		want string // peer PublicIP, "" for none
	}{
		{"10.244.2.5", "198.18.60.12"},
		{"10.244.2.200", "198.18.60.12"}, // the /25 inside it is refused
		{"10.244.4.9", "198.18.60.14"},   // a Flannel udp lease is a peer
		{"10.244.3.1", ""},               // refused: other backend
		{"10.244.5.1", ""},               // refused: this node's PublicIP
		{"10.244.9.1", ""},
		{"10.244.1.7", ""}, // own subnet is not a peer
	}
	for _, tt := range tests {
		t.Run(tt.dst, func(t *testing.T) {
			h := tb.lookup(ip4(tt.dst))
			got := ""
			if h != nil {
				got = h.addr.IP.String()
			}
			if got != tt.want {
				t.Fatalf("lookup(%s) = %q, want %q", tt.dst, got, tt.want)
			}
		})
	}
	refused := 0
	for _, s := range tb.statuses {
		if s.State == backend.PeerRefused {
			refused++
		}
	}
	if refused != 3 || len(tb.statuses) != 5 {
		t.Fatalf("statuses %+v", tb.statuses)
	}
}

func TestTableDual(t *testing.T) {
	tb := testTableDual(nil)
	for _, tt := range []struct {
		dst  string
		want string // peer PublicIP, "" for none
	}{
		{"10.244.2.5", "198.18.60.12"},
		{"fd00:10:244:2::5", "198.18.60.12"},
		{"fd00:10:244:2:ffff:ffff:ffff:ffff", "198.18.60.12"},
		{"10.244.4.9", "198.18.60.14"},
		{"10.244.5.9", "198.18.60.15"},
		{"fd00:10:244:7::1", "198.18.60.17"},
		{"fd00:10:244:8::1", ""}, // no PublicIP
		{"10.244.7.1", ""},
		{"fd00:10:244:3::1", ""},
		{"fd00:10:244:1::7", ""}, // own subnet is not a peer
	} {
		t.Run(tt.dst, func(t *testing.T) {
			a := netip.MustParseAddr(tt.dst)
			var h *peerHost
			if a.Is6() {
				h = tb.lookup6(wire.Addr6From(a.AsSlice()))
			} else {
				h = tb.lookup(ip4(tt.dst))
			}
			got := ""
			if h != nil {
				got = h.addr.IP.String()
			}
			if got != tt.want {
				t.Fatalf("lookup(%s) = %q, want %q", tt.dst, got, tt.want)
			}
		})
	}
	states := map[string]backend.PeerState{}
	for _, s := range tb.statuses {
		states[s.Key().String()] = s.State
	}
	want := map[string]backend.PeerState{
		"10.244.2.0/24": backend.PeerProgrammed, "10.244.4.0/24": backend.PeerRefused, "10.244.5.0/24": backend.PeerRefused,
		"fd00:10:244:7::/64": backend.PeerRefused, "fd00:10:244:8::/64": backend.PeerRefused,
	}
	if len(states) != len(want) {
		t.Fatalf("statuses %+v", tb.statuses)
	}
	for k, st := range want {
		if states[k] != st {
			t.Errorf("%s: state %v, want %v (%+v)", k, states[k], st, tb.statuses)
		}
	}
	if !tb.hasOwn6 || !tb.own6.contains(wire.Addr6From(netip.MustParseAddr("fd00:10:244:1::9").AsSlice())) {
		t.Fatal("own IPv6 subnet not in the table")
	}
}

// TestTableV6Only: in an IPv6-only network peers are reached at their
// PublicIPv6 and known by it on receive; a Flannel udp lease (PublicIP
// only) is refused with a reason naming Flannel.
func TestTableV6Only(t *testing.T) {
	tb := testTableV6Only(nil)
	for _, tt := range []struct{ dst, want string }{
		{"fd00:10:244:2::5", "2001:db8:60::12"},
		{"fd00:10:244:5::5", "2001:db8:60::15"},
		{"fd00:10:244:4::5", ""}, // Flannel's
		{"fd00:10:244:6::5", ""}, // this node's PublicIPv6
		{"fd00:10:244:1::5", ""}, // own
	} {
		h := tb.lookup6(wire.Addr6From(netip.MustParseAddr(tt.dst).AsSlice()))
		got := ""
		if h != nil {
			got = h.addr.IP.String()
			if h.addr.Port != DefaultPort || tb.hosts[ul(got)] != h {
				t.Errorf("%s: peer %v not known by its underlay address", tt.dst, h.addr)
			}
		}
		if got != tt.want {
			t.Errorf("lookup6(%s) = %q, want %q", tt.dst, got, tt.want)
		}
	}
	if len(tb.hosts) != 2 || tb.hosts[ul("198.18.60.15")] != nil || tb.hosts[ul("198.18.60.14")] != nil {
		t.Fatalf("hosts %v: want the two peers by PublicIPv6 only", tb.hosts)
	}
	for _, st := range tb.statuses {
		if st.IPv6Subnet.String() == "fd00:10:244:4::/64" &&
			(st.State != backend.PeerRefused || !strings.Contains(st.Reason, "no PublicIPv6") || !strings.Contains(st.Reason, "Flannel udp")) {
			t.Fatalf("Flannel lease: %+v, want refused naming the missing PublicIPv6 and Flannel", st)
		}
	}
	if tb.hasOwn || tb.v4 || !tb.v6 {
		t.Fatalf("table families: own IPv4 %v, v4 %v, v6 %v", tb.hasOwn, tb.v4, tb.v6)
	}
}

func TestTablePartialChecksums(t *testing.T) {
	one := func(data json.RawMessage, ownPartial bool) *table {
		return buildTable(testNode(), map[netip.Prefix]subnet.Lease{
			peerSubnet: {Subnet: peerSubnet, Attrs: subnet.LeaseAttrs{PublicIP: peerIP, BackendType: "udp", BackendData: data}},
		}, DefaultPort, ownPartial)
	}
	for _, tt := range []struct {
		name       string
		data       json.RawMessage
		ownPartial bool
		want       bool
	}{
		{"announced", partialData, true, true},
		{"Flannel lease (none)", nil, true, false},
		{"announced false", json.RawMessage(`{"PartialChecksums":false}`), true, false},
		{"unreadable", json.RawMessage(`[1,2`), true, false},
		{"this node cannot", partialData, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := one(tt.data, tt.ownPartial).lookup(ip4("10.244.2.5"))
			if h == nil {
				t.Fatal("peer refused")
			}
			if h.partial != tt.want {
				t.Fatalf("partial = %v, want %v", h.partial, tt.want)
			}
		})
	}
	// Two leases of one node: partial only if both announce it.
	other := netip.MustParsePrefix("10.244.7.0/24")
	tb := buildTable(testNode(), map[netip.Prefix]subnet.Lease{
		peerSubnet: {Subnet: peerSubnet, Attrs: subnet.LeaseAttrs{PublicIP: peerIP, BackendType: "udp", BackendData: partialData}},
		other:      {Subnet: other, Attrs: subnet.LeaseAttrs{PublicIP: peerIP, BackendType: "udp"}},
	}, DefaultPort, true)
	if tb.lookup(ip4("10.244.2.5")).partial {
		t.Fatal("partial although one of the node's leases does not announce it")
	}
}

type fakeIO struct {
	sent    [][]byte // one per message, copied
	segSize []int
	dst     []string // per message
	tun     [][]byte
}

func (f *fakeIO) send(ms []ipv4.Message) (int, error) {
	for _, m := range ms {
		var d []byte
		for _, b := range m.Buffers {
			d = append(d, b...)
		}
		f.sent = append(f.sent, d)
		seg := 0
		if len(m.OOB) > 0 {
			seg = int(binary.NativeEndian.Uint16(m.OOB[16:]))
		}
		f.segSize = append(f.segSize, seg)
		f.dst = append(f.dst, m.Addr.String())
	}
	return len(ms), nil
}

func (f *fakeIO) write(b []byte) error {
	f.tun = append(f.tun, append([]byte(nil), b...))
	return nil
}

func (f *fakeIO) writev(bufs [][]byte) error {
	var b []byte
	for _, x := range bufs {
		b = append(b, x...)
	}
	f.tun = append(f.tun, b)
	return nil
}

func newTestTx(vnet bool, f *fakeIO) *txPath {
	p := newTxPath(vnet, time.Now)
	p.send, p.writeTUN = f.send, f.write
	p.gso = func() bool { return true }
	p.noGSO = func(error) {}
	return p
}

func TestTxPath(t *testing.T) {
	v4, dual, v6only := testTable(), testTableDual(nil), testTableV6Only(nil)
	tests := []struct {
		name              string
		tb                *table
		pkt               []byte
		wantSent, wantTUN int
		wantDrop          wire.Reason
		wantICMPType      uint8
	}{
		{"to peer", v4, packet("10.244.1.5", "10.244.2.5", 64, 100), 1, 0, wire.OK, 0},
		{"own subnet written back", v4, packet("10.244.9.5", "10.244.1.5", 64, 100), 0, 1, wire.OK, 0},
		{"no peer", v4, packet("10.244.1.5", "10.244.7.5", 64, 100), 0, 1, wire.ReasonNoRoute, wire.ICMPDestUnreachable},
		{"ttl exhausted", v4, packet("10.244.1.5", "10.244.2.5", 1, 100), 0, 1, wire.ReasonTTL, wire.ICMPTimeExceeded},
		{"short", v4, []byte{0x45, 0}, 0, 0, wire.ReasonShort, 0},
		{"version 5", v4, append([]byte{0x50}, make([]byte, 40)...), 0, 0, wire.ReasonBadVersion, 0},
		{"ipv6 in an IPv4 network", v4, packet("fd00:10:244:1::5", "fd00:10:244:2::5", 64, 100), 0, 0, wire.ReasonBadVersion, 0},
		{"dual: ipv4 to peer", dual, packet("10.244.1.5", "10.244.2.5", 64, 100), 1, 0, wire.OK, 0},
		{"ipv6 to peer", dual, packet("fd00:10:244:1::5", "fd00:10:244:2::5", 64, 100), 1, 0, wire.OK, 0},
		{"ipv6 to an IPv6-only peer", dual, packet("fd00:10:244:1::5", "fd00:10:244:7::5", 64, 100), 1, 0, wire.OK, 0},
		{"ipv6 own subnet written back", dual, packet("fd00:10:244:9::5", "fd00:10:244:1::5", 64, 100), 0, 1, wire.OK, 0},
		{"ipv6 no peer", dual, packet("fd00:10:244:1::5", "fd00:10:244:8::5", 64, 100), 0, 1, wire.ReasonNoRoute, wire.ICMPv6DestUnreachable},
		{"ipv6 hop limit exhausted", dual, packet("fd00:10:244:1::5", "fd00:10:244:2::5", 1, 100), 0, 1, wire.ReasonTTL, wire.ICMPv6TimeExceeded},
		{"ipv6 short", dual, packet("fd00:10:244:1::5", "fd00:10:244:2::5", 64, 100)[:50], 0, 0, wire.ReasonShort, 0},
		{"v6-only: to peer", v6only, packet("fd00:10:244:1::5", "fd00:10:244:2::5", 64, 100), 1, 0, wire.OK, 0},
		{"v6-only: to a peer with a PublicIP too", v6only, packet("fd00:10:244:1::5", "fd00:10:244:5::5", 64, 100), 1, 0, wire.OK, 0},
		{"v6-only: to the Flannel node", v6only, packet("fd00:10:244:1::5", "fd00:10:244:4::5", 64, 100), 0, 1, wire.ReasonNoRoute, wire.ICMPv6DestUnreachable},
		{"v6-only: ipv4", v6only, packet("10.244.1.5", "10.244.2.5", 64, 100), 0, 0, wire.ReasonBadVersion, 0},
		{"v6-only: own subnet written back", v6only, packet("fd00:10:244:9::5", "fd00:10:244:1::5", 64, 100), 0, 1, wire.OK, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeIO{}
			p := newTestTx(false, f)
			p.handle(tt.tb, append([]byte(nil), tt.pkt...))
			p.flush()
			if len(f.sent) != tt.wantSent || len(f.tun) != tt.wantTUN {
				t.Fatalf("sent %d, tun %d; want %d, %d", len(f.sent), len(f.tun), tt.wantSent, tt.wantTUN)
			}
			if tt.wantSent == 1 {
				// Both families go to the underlay address of the table's.
				wantDst := "198.18.60.12:8285"
				switch {
				case tt.tb == v6only && tt.pkt[31] == 5: // fd00:10:244:5::
					wantDst = "[2001:db8:60::15]:8285"
				case tt.tb == v6only:
					wantDst = "[2001:db8:60::12]:8285"
				case tt.pkt[0]>>4 == 6 && tt.pkt[31] == 7: // fd00:10:244:7::
					wantDst = "198.18.60.17:8285"
				}
				if f.dst[0] != wantDst {
					t.Fatalf("sent to %s, want %s", f.dst[0], wantDst)
				}
			}
			if tt.wantDrop != wire.OK && p.cnt[cDrop+int(tt.wantDrop)] != 1 {
				t.Fatalf("drop %v not counted: %v", tt.wantDrop, p.cnt)
			}
			if tt.wantSent == 1 {
				if tt.pkt[0]>>4 == 6 {
					want := bytes.Clone(tt.pkt)
					want[7]--
					if !bytes.Equal(f.sent[0], want) {
						t.Fatalf("sent other than the packet with its hop limit decremented")
					}
				} else if f.sent[0][8] != tt.pkt[8]-1 || !wire.ValidIPv4Checksum(f.sent[0], 20) {
					t.Fatalf("TTL not decremented or bad checksum")
				}
			}
			if tt.wantICMPType != 0 {
				icmp := f.tun[0]
				h, r := wire.Parse(icmp)
				orig, _ := wire.Parse(tt.pkt)
				if r != wire.OK || h.Src != orig.Dst || h.Dst != orig.Src || h.Src6 != orig.Dst6 || h.Dst6 != orig.Src6 ||
					icmp[h.HeaderLen] != tt.wantICMPType || h.Proto != map[uint8]uint8{4: wire.ProtoICMP, 6: wire.ProtoICMPv6}[orig.Version] {
					t.Fatalf("bad ICMP error %+v %v type %d", h, r, icmp[h.HeaderLen])
				}
			}
		})
	}
}

func TestICMPRateLimit(t *testing.T) {
	f := &fakeIO{}
	now := time.Unix(1000, 0)
	p := newTestTx(false, f)
	p.lim = limiter{now: func() time.Time { return now }, tokens: icmpBurst, last: now}
	pkt := packet("10.244.1.5", "10.244.7.5", 64, 10)
	for range 3 * icmpBurst {
		p.handle(testTable(), append([]byte(nil), pkt...))
	}
	if len(f.tun) != icmpBurst {
		t.Fatalf("%d ICMP errors in a burst, want %d", len(f.tun), icmpBurst)
	}
	now = now.Add(time.Second)
	p.handle(testTable(), pkt)
	if len(f.tun) != icmpBurst+1 {
		t.Fatalf("limiter did not refill")
	}
}

// tsoRead is what a TUN with TSO hands over: virtio header + super-packet
// with a partial checksum.
func tsoRead(payload, mss int) []byte { return tsoReadTo("10.244.2.5", payload, mss) }

func tsoReadTo(dst string, payload, mss int) []byte {
	src, typ, hl := "10.244.1.5", uint8(wire.VirtioNetHdrGSOTCPv4), uint16(20)
	if netip.MustParseAddr(dst).Is6() {
		src, typ, hl = "fd00:10:244:1::5", wire.VirtioNetHdrGSOTCPv6, 40
	}
	pkt := packet(src, dst, 64, payload)
	vh := wire.VirtioNetHdr{Flags: wire.VirtioNetHdrFNeedsCsum, GSOType: typ,
		HdrLen: hl + 20, GSOSize: uint16(mss), CsumStart: hl, CsumOffset: 16}
	b := make([]byte, wire.VirtioNetHdrLen+len(pkt))
	vh.Encode(b)
	copy(b[wire.VirtioNetHdrLen:], pkt)
	return b
}

func TestTxTSOWithGSO(t *testing.T) {
	f := &fakeIO{}
	p := newTestTx(true, f)
	p.handle(testTable(), tsoRead(60000, 1400))
	p.flush()
	// 43 segments of 1440 bytes: 45 fit in 65000 bytes, so one GSO send.
	if len(f.sent) != 1 || f.segSize[0] != 1440 || len(f.sent[0]) != 60000+43*40 {
		t.Fatalf("sent %d messages, seg %v, len %d", len(f.sent), f.segSize, len(f.sent[0]))
	}
	if p.cnt[cTxPackets] != 43 || p.cnt[cGSOSends] != 1 {
		t.Fatalf("counters %v", p.cnt)
	}
	for off := 0; off < len(f.sent[0]); off += 1440 {
		seg := f.sent[0][off:min(off+1440, len(f.sent[0]))]
		if h, r := wire.Parse(seg); r != wire.OK || h.TTL != 63 || h.TotalLen != len(seg) {
			t.Fatalf("segment at %d: %+v %v", off, h, r)
		}
	}
	// Without GSO each segment is its own message.
	f2 := &fakeIO{}
	p2 := newTestTx(true, f2)
	p2.gso = func() bool { return false }
	p2.handle(testTable(), tsoRead(60000, 1400))
	p2.flush()
	if len(f2.sent) != 43 {
		t.Fatalf("without GSO: %d messages", len(f2.sent))
	}
}

// TestTxTSO6 splits a TCP/IPv6 super-packet: 1460-byte datagrams, each a
// valid segment with its hop limit decremented, its payload length and
// checksum its own; a TSO packet of the other family's GSO type is refused.
func TestTxTSO6(t *testing.T) {
	f := &fakeIO{}
	p := newTestTx(true, f)
	read := tsoReadTo("fd00:10:244:2::5", 20*1400+7, 1400)
	orig := bytes.Clone(read[wire.VirtioNetHdrLen:])
	p.handle(testTableDual(nil), read)
	p.flush()
	if len(f.sent) != 1 || f.segSize[0] != 1460 || len(f.sent[0]) != 20*1400+7+21*60 || p.cnt[cTxPackets] != 21 {
		t.Fatalf("sent %d messages, seg %v, len %d, counters %v", len(f.sent), f.segSize, len(f.sent[0]), p.cnt)
	}
	var payload []byte
	for off := 0; off < len(f.sent[0]); off += 1460 {
		seg := bytes.Clone(f.sent[0][off:min(off+1460, len(f.sent[0]))])
		h, r := wire.Parse(seg)
		if r != wire.OK || h.Version != 6 || h.TTL != 63 || h.TotalLen != len(seg) {
			t.Fatalf("segment at %d: %+v %v", off, h, r)
		}
		if seq := binary.BigEndian.Uint32(seg[44:]); seq != uint32(off/1460*1400) {
			t.Fatalf("segment at %d: seq %d", off, seq)
		}
		want := bytes.Clone(seg)
		wire.L4Checksum(want, h)
		if !bytes.Equal(want, seg) {
			t.Fatalf("segment at %d: bad TCP checksum", off)
		}
		payload = append(payload, seg[60:]...)
	}
	if !bytes.Equal(payload, orig[60:]) {
		t.Fatal("segments do not carry the super-packet's payload")
	}
	bad := tsoReadTo("fd00:10:244:2::5", 3000, 1400)
	bad[1] = wire.VirtioNetHdrGSOTCPv4
	p.handle(testTableDual(nil), bad)
	if p.cnt[cDrop+int(wire.ReasonBadOffload)] != 1 {
		t.Fatalf("IPv6 packet with TCPv4 GSO type not refused: %v", p.cnt)
	}
}

// TestTxJoinsSplits: the segments of consecutive super-packets for one
// peer fill up the previous GSO send instead of each split ending in a
// short one; the datagrams on the wire are the same as without joining.
func TestTxJoinsSplits(t *testing.T) {
	const mss = 1400 // 1440-byte datagrams: 45 per GSO send
	type read struct {
		dst     string
		payload int
	}
	cases := []struct {
		name  string
		reads []read
		want  []int // datagrams per message
	}{
		{"46 + 46 to one peer", []read{{"10.244.2.5", 46 * mss}, {"10.244.2.6", 46 * mss}}, []int{45, 45, 2}},
		{"short last segment closes the send", []read{{"10.244.2.5", 46*mss - 100}, {"10.244.2.5", 46 * mss}}, []int{45, 1, 45, 1}},
		{"another peer in between", []read{{"10.244.2.5", 46 * mss}, {"10.244.4.9", 2 * mss}, {"10.244.2.5", 2 * mss}}, []int{45, 1, 2, 2}},
		{"short tail of a joined split closes the send", []read{{"10.244.2.5", 10 * mss}, {"10.244.2.5", 5*mss - 100}, {"10.244.2.5", 10 * mss}}, []int{15, 10}},
		{"small splits add up", []read{{"10.244.2.5", 10 * mss}, {"10.244.2.5", 10 * mss}, {"10.244.2.5", 30 * mss}}, []int{45, 5}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			run := func(gso bool) *fakeIO {
				f := &fakeIO{}
				p := newTestTx(true, f)
				p.gso = func() bool { return gso }
				for i, r := range tc.reads {
					b := tsoReadTo(r.dst, r.payload, mss)
					for j := wire.VirtioNetHdrLen + 40; j < len(b); j++ {
						b[j] = byte(j + 7*i)
					}
					p.handle(testTable(), b)
				}
				p.flush()
				return f
			}
			f, plain := run(true), run(false)
			var got []int
			var datagrams [][]byte
			for i, m := range f.sent {
				if len(m) > 1440 && f.segSize[i] != 1440 {
					t.Fatalf("message %d: %d bytes with segment size %d", i, len(m), f.segSize[i])
				}
				got = append(got, (len(m)+1439)/1440)
				for off := 0; off < len(m); off += 1440 {
					datagrams = append(datagrams, m[off:min(off+1440, len(m))])
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("datagrams per message %v, want %v", got, tc.want)
			}
			if len(datagrams) != len(plain.sent) {
				t.Fatalf("%d datagrams, %d without GSO", len(datagrams), len(plain.sent))
			}
			for i := range datagrams {
				if !bytes.Equal(datagrams[i], plain.sent[i]) {
					t.Fatalf("datagram %d differs from the one sent without GSO", i)
				}
			}
		})
	}
}

// TestTxJoinAfterGSOOff: another queue may turn GSO off between two reads
// of one batch; the next split then goes out segment by segment.
func TestTxJoinAfterGSOOff(t *testing.T) {
	f := &fakeIO{}
	p := newTestTx(true, f)
	gso := true
	p.gso = func() bool { return gso }
	p.handle(testTable(), tsoRead(10*1400, 1400))
	gso = false
	p.handle(testTable(), tsoRead(3*1400, 1400))
	p.flush()
	if len(f.sent) != 4 || f.segSize[0] != 1440 || len(f.sent[0]) != 10*1440 {
		t.Fatalf("sent %d messages, segment sizes %v", len(f.sent), f.segSize)
	}
	for i, d := range f.sent[1:] {
		if len(d) != 1440 || f.segSize[i+1] != 0 {
			t.Fatalf("message %d: %d bytes, segment size %d", i+1, len(d), f.segSize[i+1])
		}
	}
}

// TestTxTSOManySegments splits two super-packets of one batch into more
// messages than a flush holds, without GSO: every datagram must still be a
// valid segment of its own packet (the headers of a split survive a flush
// in its middle, and the next split does not overwrite them).
func TestTxTSOManySegments(t *testing.T) {
	f := &fakeIO{}
	p := newTestTx(true, f)
	p.gso = func() bool { return false }
	const payload, mss = 60000, 300
	var reads [][]byte
	for k := range 2 {
		b := tsoRead(payload, mss)
		for i := wire.VirtioNetHdrLen + 40; i < len(b); i++ {
			b[i] = byte(i*(k+3) + k)
		}
		binary.BigEndian.PutUint16(b[wire.VirtioNetHdrLen+4:], uint16(1000*(k+1))) // IP ID
		reads = append(reads, b)
		p.handle(testTable(), b)
	}
	p.flush()
	if len(f.sent) != 2*payload/mss {
		t.Fatalf("sent %d datagrams, want %d", len(f.sent), 2*payload/mss)
	}
	for i, d := range f.sent {
		k, seg := i/(payload/mss), i%(payload/mss)
		h, r := wire.Parse(d)
		if r != wire.OK || h.TotalLen != 40+mss || !wire.ValidIPv4Checksum(d, 20) {
			t.Fatalf("datagram %d: %+v %v", i, h, r)
		}
		if id := binary.BigEndian.Uint16(d[4:]); id != uint16(1000*(k+1)+seg) {
			t.Fatalf("datagram %d: IP ID %d", i, id)
		}
		want := reads[k][wire.VirtioNetHdrLen+40+seg*mss : wire.VirtioNetHdrLen+40+(seg+1)*mss]
		if !bytes.Equal(d[40:], want) {
			t.Fatalf("datagram %d: payload is not segment %d of packet %d", i, seg, k)
		}
		c := append([]byte(nil), d...)
		wire.L4Checksum(c, h)
		if !bytes.Equal(c, d) {
			t.Fatalf("datagram %d: bad TCP checksum", i)
		}
	}
}

// TestTxPartialChecksums: to a peer that announces PartialChecksums, TSO
// segments and kernel-partial TCP packets travel with the pseudo-header
// sum in their checksum field; everything else is completed as for a
// Flannel peer.
func TestTxPartialChecksums(t *testing.T) {
	validAfterCompletion := func(t *testing.T, d []byte) {
		t.Helper()
		h, r := wire.Parse(d)
		if r != wire.OK {
			t.Fatal(r)
		}
		want := append([]byte(nil), d...)
		wire.L4Checksum(want, h)
		if bytes.Equal(want, d) {
			t.Fatal("checksum was completed for a partial peer")
		}
		got := append([]byte(nil), d...)
		if r := wire.FinishChecksum(got, h.HeaderLen, wire.TCPChecksumOffset); r != wire.OK || !bytes.Equal(got, want) {
			t.Fatalf("partial checksum does not complete to the right one (%v)", r)
		}
	}
	t.Run("TSO split", func(t *testing.T) {
		f := &fakeIO{}
		p := newTestTx(true, f)
		p.gso = func() bool { return false }
		p.handle(testTableWith(partialData), tsoRead(20000, 1400))
		p.flush()
		if len(f.sent) != 15 {
			t.Fatalf("%d datagrams", len(f.sent))
		}
		for _, d := range f.sent {
			validAfterCompletion(t, d)
		}
	})
	// A packet the kernel left partial (TUN checksum offload): the field
	// holds the folded pseudo-header sum.
	kernelPartial := func(proto uint8, csumOff uint16) []byte {
		pkt := packet("10.244.1.5", "10.244.2.5", 64, 300)
		pkt[9] = proto
		wire.SetIPv4Checksum(pkt, 20)
		ps := uint32(proto) + uint32(len(pkt)-20)
		for i := 12; i < 20; i += 2 {
			ps += uint32(binary.BigEndian.Uint16(pkt[i:]))
		}
		for ps > 0xffff {
			ps = ps>>16 + ps&0xffff
		}
		binary.BigEndian.PutUint16(pkt[20+csumOff:], uint16(ps))
		b := make([]byte, wire.VirtioNetHdrLen+len(pkt))
		wire.VirtioNetHdr{Flags: wire.VirtioNetHdrFNeedsCsum, CsumStart: 20, CsumOffset: csumOff}.Encode(b)
		copy(b[wire.VirtioNetHdrLen:], pkt)
		return b
	}
	complete := func(t *testing.T, d []byte) {
		t.Helper()
		h, _ := wire.Parse(d)
		want := append([]byte(nil), d...)
		wire.L4Checksum(want, h)
		if !bytes.Equal(want, d) {
			t.Fatal("checksum not completed")
		}
	}
	for _, tt := range []struct {
		name     string
		data     json.RawMessage
		proto    uint8
		csumOff  uint16
		complete bool
	}{
		{"TCP to a partial peer", partialData, wire.ProtoTCP, 16, false},
		{"TCP to a Flannel peer", nil, wire.ProtoTCP, 16, true},
		{"UDP to a partial peer", partialData, 17, 6, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeIO{}
			p := newTestTx(true, f)
			p.handle(testTableWith(tt.data), kernelPartial(tt.proto, tt.csumOff))
			p.flush()
			if len(f.sent) != 1 {
				t.Fatalf("%d datagrams", len(f.sent))
			}
			if tt.complete {
				complete(t, f.sent[0])
			} else {
				validAfterCompletion(t, f.sent[0])
			}
		})
	}
}

// TestRxPartialChecksums: from a peer that announces PartialChecksums a
// lone TCP segment is written as CHECKSUM_PARTIAL; from a Flannel peer it
// is written as it came.
func TestRxPartialChecksums(t *testing.T) {
	for _, tt := range []struct {
		name  string
		data  json.RawMessage
		flags uint8
	}{
		{"partial peer", partialData, wire.VirtioNetHdrFNeedsCsum},
		{"Flannel peer", nil, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeIO{}
			p := &rxPath{vnet: true, writeTUN: f.write, writev: f.writev, coal: wire.NewCoalescer()}
			pkt := packet("10.244.2.5", "10.244.1.5", 63, 100)
			p.handle(testTableWith(tt.data), ul("198.18.60.12"), DefaultPort, append([]byte(nil), pkt...), 0)
			p.flush()
			if len(f.tun) != 1 {
				t.Fatalf("%d written", len(f.tun))
			}
			vh := wire.DecodeVirtioNetHdr(f.tun[0])
			if vh.Flags != tt.flags || vh.GSOType != wire.VirtioNetHdrGSONone {
				t.Fatalf("virtio header %+v", vh)
			}
			out := f.tun[0][wire.VirtioNetHdrLen:]
			if tt.flags != 0 {
				if r := wire.FinishChecksum(out, int(vh.CsumStart), int(vh.CsumOffset)); r != wire.OK {
					t.Fatal(r)
				}
			}
			if !bytes.Equal(out, pkt) {
				t.Fatal("packet changed")
			}
		})
	}
}

func TestRxPath(t *testing.T) {
	peer, stranger := ul("198.18.60.12"), ul("198.18.60.99")
	v6only, v4only := ul("198.18.60.17"), ul("198.18.60.14")
	dual := testTableDual(nil)
	type rxCase struct {
		name     string
		src      wire.Addr6
		sport    uint16
		pkt      []byte
		wantTUN  int
		wantDrop wire.Reason
	}
	v4Tests := []rxCase{
		{"from peer", peer, DefaultPort, packet("10.244.2.5", "10.244.1.5", 63, 100), 1, wire.OK},
		{"unknown peer", stranger, DefaultPort, packet("10.244.2.5", "10.244.1.5", 63, 100), 0, wire.ReasonUnknownPeer},
		{"peer address, another port", peer, 40000, packet("10.244.2.5", "10.244.1.5", 63, 100), 0, wire.ReasonWrongPort},
		{"peer address, another port, its own address inside", peer, 8284, packet("198.18.60.12", "10.244.1.5", 63, 100), 0, wire.ReasonWrongPort},
		{"spoofed inner source", peer, DefaultPort, packet("10.244.5.5", "10.244.1.5", 63, 100), 0, wire.ReasonSpoofedSource},
		{"the peer node's own address", peer, DefaultPort, packet("198.18.60.12", "10.244.1.5", 63, 100), 1, wire.OK},
		{"another node's address", peer, DefaultPort, packet("198.18.60.13", "10.244.1.5", 63, 100), 0, wire.ReasonSpoofedSource},
		{"not for our subnet", peer, DefaultPort, packet("10.244.2.5", "10.244.8.5", 63, 100), 0, wire.ReasonNotLocal},
		{"truncated", peer, DefaultPort, packet("10.244.2.5", "10.244.1.5", 63, 100)[:50], 0, wire.ReasonShort},
		{"bad ihl", peer, DefaultPort, append([]byte{0x41}, make([]byte, 30)...), 0, wire.ReasonBadHeader},
		{"empty", peer, DefaultPort, []byte{}, 0, wire.OK},
		{"ipv6 in an IPv4 network", peer, DefaultPort, packet("fd00:10:244:2::5", "fd00:10:244:1::5", 63, 100), 0, wire.ReasonBadVersion},
	}
	type tableCase struct {
		rxCase
		tb *table
	}
	var tests []tableCase
	for _, tt := range v4Tests {
		tests = append(tests, tableCase{tt, testTable()})
	}
	// The IPv4 rows hold in the dual-stack table too; then the IPv6 ones.
	for _, tt := range v4Tests[:len(v4Tests)-1] {
		tests = append(tests, tableCase{tt, dual})
	}
	for _, tt := range []rxCase{
		{"ipv6 from peer", peer, DefaultPort, packet("fd00:10:244:2::5", "fd00:10:244:1::5", 63, 100), 1, wire.OK},
		{"ipv6 from an IPv6-only peer", v6only, DefaultPort, packet("fd00:10:244:7::5", "fd00:10:244:1::5", 63, 100), 1, wire.OK},
		{"ipv6 unknown peer", stranger, DefaultPort, packet("fd00:10:244:2::5", "fd00:10:244:1::5", 63, 100), 0, wire.ReasonUnknownPeer},
		{"ipv6 wrong port", peer, 40000, packet("fd00:10:244:2::5", "fd00:10:244:1::5", 63, 100), 0, wire.ReasonWrongPort},
		{"ipv6 spoofed inner source: another peer's subnet", peer, DefaultPort, packet("fd00:10:244:7::5", "fd00:10:244:1::5", 63, 100), 0, wire.ReasonSpoofedSource},
		{"ipv6 spoofed inner source: outside the network", peer, DefaultPort, packet("2001:db8::5", "fd00:10:244:1::5", 63, 100), 0, wire.ReasonSpoofedSource},
		{"ipv6 from an IPv4-only peer", v4only, DefaultPort, packet("fd00:10:244:4::5", "fd00:10:244:1::5", 63, 100), 0, wire.ReasonSpoofedSource},
		{"ipv6 the peer node's own PublicIPv6", peer, DefaultPort, packet("fd00:198:19::12", "fd00:10:244:1::5", 63, 100), 1, wire.OK},
		{"ipv6 another node's PublicIPv6", peer, DefaultPort, packet("fd00:198:19::18", "fd00:10:244:1::5", 63, 100), 0, wire.ReasonSpoofedSource},
		{"ipv4 from an IPv6-only peer", v6only, DefaultPort, packet("198.18.60.17", "10.244.1.5", 63, 100), 0, wire.ReasonSpoofedSource},
		{"ipv6 not for our subnet", peer, DefaultPort, packet("fd00:10:244:2::5", "fd00:10:244:9::5", 63, 100), 0, wire.ReasonNotLocal},
		{"ipv6 truncated", peer, DefaultPort, packet("fd00:10:244:2::5", "fd00:10:244:1::5", 63, 100)[:70], 0, wire.ReasonShort},
	} {
		tests = append(tests, tableCase{tt, dual})
	}
	// IPv6-only: the tunnel over IPv6, peers known by PublicIPv6.
	v6peer, v6both := ul("2001:db8:60::12"), ul("2001:db8:60::15")
	for _, tt := range []rxCase{
		{"v6-only: from peer", v6peer, DefaultPort, packet("fd00:10:244:2::5", "fd00:10:244:1::5", 63, 100), 1, wire.OK},
		{"v6-only: the peer node's own PublicIPv6", v6peer, DefaultPort, packet("2001:db8:60::12", "fd00:10:244:1::5", 63, 100), 1, wire.OK},
		{"v6-only: from a peer with a PublicIP too", v6both, DefaultPort, packet("fd00:10:244:5::5", "fd00:10:244:1::5", 63, 100), 1, wire.OK},
		{"v6-only: from that peer's PublicIP", ul("198.18.60.15"), DefaultPort, packet("fd00:10:244:5::5", "fd00:10:244:1::5", 63, 100), 0, wire.ReasonUnknownPeer},
		{"v6-only: from the Flannel node", ul("198.18.60.14"), DefaultPort, packet("fd00:10:244:4::5", "fd00:10:244:1::5", 63, 100), 0, wire.ReasonUnknownPeer},
		{"v6-only: unknown peer", ul("2001:db8:60::99"), DefaultPort, packet("fd00:10:244:2::5", "fd00:10:244:1::5", 63, 100), 0, wire.ReasonUnknownPeer},
		{"v6-only: wrong port", v6peer, 40000, packet("fd00:10:244:2::5", "fd00:10:244:1::5", 63, 100), 0, wire.ReasonWrongPort},
		{"v6-only: spoofed inner source", v6peer, DefaultPort, packet("fd00:10:244:5::5", "fd00:10:244:1::5", 63, 100), 0, wire.ReasonSpoofedSource},
		{"v6-only: another node's PublicIPv6 inside", v6peer, DefaultPort, packet("2001:db8:60::15", "fd00:10:244:1::5", 63, 100), 0, wire.ReasonSpoofedSource},
		{"v6-only: ipv4 inside", v6peer, DefaultPort, packet("10.244.2.5", "10.244.1.5", 63, 100), 0, wire.ReasonBadVersion},
		{"v6-only: not for our subnet", v6peer, DefaultPort, packet("fd00:10:244:2::5", "fd00:10:244:9::5", 63, 100), 0, wire.ReasonNotLocal},
	} {
		tests = append(tests, tableCase{tt, testTableV6Only(nil)})
	}
	for _, tt := range tests {
		for _, vnet := range []bool{false, true} {
			t.Run(tt.name, func(t *testing.T) {
				f := &fakeIO{}
				p := &rxPath{vnet: vnet, writeTUN: f.write, writev: f.writev, coal: wire.NewCoalescer()}
				p.handle(tt.tb, tt.src, tt.sport, tt.pkt, 0)
				p.flush()
				if len(f.tun) != tt.wantTUN {
					t.Fatalf("vnet %v: %d written, want %d", vnet, len(f.tun), tt.wantTUN)
				}
				if tt.wantDrop != wire.OK && p.cnt[cDrop+int(tt.wantDrop)] != 1 {
					t.Fatalf("drop %v not counted: %v", tt.wantDrop, p.cnt)
				}
			})
		}
	}
}

// groRun is what UDP GRO returns: n datagrams of one TCP flow back to back.
func groRun(n, payload int) ([]byte, int) { return groRunFrom("10.244.2.5", "10.244.1.5", n, payload) }

// groRunFrom is groRun of a flow from src to dst (either family).
func groRunFrom(src, dst string, n, payload int) ([]byte, int) {
	var run []byte
	seq := uint32(1000)
	hl := 20
	if netip.MustParseAddr(src).Is6() {
		hl = 40
	}
	for range n {
		p := packet(src, dst, 63, payload)
		binary.BigEndian.PutUint32(p[hl+4:], seq)
		h, _ := wire.Parse(p)
		wire.L4Checksum(p, h)
		seq += uint32(payload)
		run = append(run, p...)
	}
	return run, hl + 20 + payload
}

func TestRxGROCoalesces(t *testing.T) {
	f := &fakeIO{}
	p := &rxPath{vnet: true, writeTUN: f.write, writev: f.writev, coal: wire.NewCoalescer()}
	run, seg := groRun(20, 1400)
	p.handle(testTable(), ul("198.18.60.12"), DefaultPort, run, seg)
	p.flush()
	if len(f.tun) != 1 || p.cnt[cRxPackets] != 20 || p.cnt[cGROMerged] != 20 {
		t.Fatalf("%d TUN writes, counters %v", len(f.tun), p.cnt)
	}
	vh := wire.DecodeVirtioNetHdr(f.tun[0])
	if vh.GSOType != wire.VirtioNetHdrGSOTCPv4 || vh.GSOSize != 1400 || len(f.tun[0]) != 10+40+20*1400 {
		t.Fatalf("super-packet %+v len %d", vh, len(f.tun[0]))
	}

	f = &fakeIO{}
	p = &rxPath{vnet: true, writeTUN: f.write, writev: f.writev, coal: wire.NewCoalescer()}
	run, seg = groRunFrom("fd00:10:244:2::5", "fd00:10:244:1::5", 20, 1400)
	p.handle(testTableDual(nil), ul("198.18.60.12"), DefaultPort, run, seg)
	p.flush()
	if len(f.tun) != 1 || p.cnt[cRxPackets] != 20 || p.cnt[cGROMerged] != 20 {
		t.Fatalf("IPv6: %d TUN writes, counters %v", len(f.tun), p.cnt)
	}
	vh = wire.DecodeVirtioNetHdr(f.tun[0])
	if vh.GSOType != wire.VirtioNetHdrGSOTCPv6 || vh.GSOSize != 1400 || vh.CsumStart != 40 || len(f.tun[0]) != 10+60+20*1400 {
		t.Fatalf("IPv6 super-packet %+v len %d", vh, len(f.tun[0]))
	}
	if plen := binary.BigEndian.Uint16(f.tun[0][10+4:]); plen != 20+20*1400 {
		t.Fatalf("IPv6 super-packet payload length %d", plen)
	}
}

// TestZeroAllocs proves the per-packet path allocates nothing in steady
// state: TUN read → split → GSO send, and GRO run → validate → coalesce →
// TUN write, plus the plain single-packet paths.
func TestZeroAllocs(t *testing.T) {
	tbp := testTableWith(partialData)
	nop := func(ms []ipv4.Message) (int, error) { return len(ms), nil }
	nopW := func([]byte) error { return nil }
	// One family's packets: IPv4 in the IPv4 table, IPv6 (over the IPv4
	// underlay) in the dual-stack one. ttlAt is the TTL (hop limit) byte
	// of the IP header, reset each round (IPv4's checksum update is
	// incremental).
	type family struct {
		tb                    *table
		src, dst, dstNoRoute  string
		peerSrc, peerSubnetIP string
		ttlAt                 int
		peer, stranger        wire.Addr6 // underlay sources
	}
	peer4, stranger4 := ul("198.18.60.12"), ul("198.18.60.99")
	fams := []family{
		{testTable(), "10.244.1.5", "10.244.2.5", "10.244.7.5", "10.244.2.5", "10.244.1.5", 8, peer4, stranger4},
		{testTableDual(partialData), "fd00:10:244:1::5", "fd00:10:244:2::5", "fd00:10:244:9::5", "fd00:10:244:2::5", "fd00:10:244:1::5", 7, peer4, stranger4},
		// IPv6 over the IPv6 underlay (an IPv6-only network).
		{testTableV6Only(partialData), "fd00:10:244:1::5", "fd00:10:244:2::5", "fd00:10:244:9::5", "fd00:10:244:2::5", "fd00:10:244:1::5", 7,
			ul("2001:db8:60::12"), ul("2001:db8:60::99")},
	}
	type packets struct {
		single, tso, noRoute, run, one []byte
		seg                            int
	}
	for _, vnet := range []bool{false, true} {
		tx := newTxPath(vnet, time.Now)
		tx.send, tx.writeTUN = nop, nopW
		tx.gso, tx.noGSO = func() bool { return true }, func(error) {}
		rx := &rxPath{vnet: vnet, writeTUN: nopW, writev: func([][]byte) error { return nil }, coal: wire.NewCoalescer()}
		head := 0
		if vnet {
			head = wire.VirtioNetHdrLen
		}
		pkts := make([]packets, len(fams))
		for i, f := range fams {
			p := &pkts[i]
			p.single = append(make([]byte, head), packet(f.src, f.dst, 64, 1400)...)
			p.tso = tsoReadTo(f.dst, 60000, 1400)
			p.noRoute = packet(f.src, f.dstNoRoute, 64, 100)
			p.run, p.seg = groRunFrom(f.peerSrc, f.peerSubnetIP, 40, 1400)
			p.one = packet(f.peerSrc, f.peerSubnetIP, 63, 1400)
		}
		allocs := testing.AllocsPerRun(200, func() {
			for i, f := range fams {
				p := &pkts[i]
				p.single[head+f.ttlAt] = 64
				tx.handle(f.tb, p.single)
				if vnet {
					p.tso[wire.VirtioNetHdrLen+f.ttlAt] = 64
					tx.handle(f.tb, p.tso)
				}
				tx.handle(f.tb, p.noRoute)
				tx.flush()
				rx.handle(f.tb, f.peer, DefaultPort, p.run, p.seg)
				rx.handle(f.tb, f.peer, DefaultPort, p.one, 0)
				rx.handle(f.tb, f.stranger, DefaultPort, p.one, 0)
				rx.flush()
			}
			if vnet { // partial checksums, both ways (IPv4; the dual table announces them too)
				pkts[0].tso[wire.VirtioNetHdrLen+8] = 64
				tx.handle(tbp, pkts[0].tso)
				tx.flush()
				rx.handle(tbp, ul("198.18.60.12"), DefaultPort, pkts[0].one, 0)
				rx.flush()
			}
			tx.cnt.publish(&counters{})
		})
		if allocs != 0 {
			t.Errorf("vnet=%v: %.1f allocations per round, want 0", vnet, allocs)
		}
	}
}

func BenchmarkTxSingle(b *testing.B) {
	tb := testTable()
	tx := newTxPath(false, time.Now)
	tx.send = func(ms []ipv4.Message) (int, error) { return len(ms), nil }
	pkt := packet("10.244.1.5", "10.244.2.5", 64, 1400)
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		pkt[8] = 64
		tx.handle(tb, pkt)
		if tx.nmsgs == len(tx.msgs) {
			tx.flush()
		}
	}
}

func BenchmarkTxTSOSplit(b *testing.B) {
	tb := testTable()
	tx := newTxPath(true, time.Now)
	tx.send = func(ms []ipv4.Message) (int, error) { return len(ms), nil }
	tx.gso = func() bool { return true }
	buf := tsoRead(64000, 1400)
	b.ReportAllocs()
	b.SetBytes(64000)
	for b.Loop() {
		buf[wire.VirtioNetHdrLen+8] = 64
		tx.handle(tb, buf)
		tx.flush()
	}
}

func BenchmarkRxGRO(b *testing.B) {
	tb := testTable()
	rx := &rxPath{vnet: true, writev: func([][]byte) error { return nil }, coal: wire.NewCoalescer()}
	run, seg := groRun(44, 1400)
	b.ReportAllocs()
	b.SetBytes(int64(len(run)))
	for b.Loop() {
		rx.handle(tb, ul("198.18.60.12"), DefaultPort, run, seg)
		rx.flush()
	}
}
