package vxlan

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/internal/nl"
	"github.com/weftnet/weft/subnet"
)

// memPeers are n encapsulated IPv4 peers, each with a VtepMAC of its own,
// as weftd holds them with 10000 vxlan peers, and the env they are planned
// in (the device is ifindex 9, the underlay 2).
func memPeers(t *testing.T, n int) (env, backend.PeerSet) {
	t.Helper()
	cfg, err := subnet.ParseConfig([]byte(`{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	connected := []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")}
	e := env{vni: 1, devIndex: 9, ulIndex: 2, connected: connected,
		node: backend.PeerNode{Config: cfg, Own: subnet.Lease{Subnet: netip.MustParsePrefix("10.255.255.0/24")},
			PublicIP: netip.MustParseAddr("198.18.0.10"), BackendType: "vxlan", Connected: connected}}
	peers := make(backend.PeerSet, n)
	for i := range n {
		l := subnet.Lease{
			Subnet:         netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(1 + i/256), byte(i), 0}), 24),
			CreateRevision: int64(10 + i),
			Attrs: subnet.LeaseAttrs{PublicIP: netip.AddrFrom4([4]byte{198, 19, byte(i / 250), byte(1 + i%250)}), BackendType: "vxlan",
				BackendData: json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":"02:00:00:00:%02x:%02x"}`, i>>8, i&0xff))},
		}
		peers[l.Subnet] = l
	}
	return e, peers
}

// kernelOf is the kernel state that holds what plans want, as a pass that
// programmed them leaves it.
func kernelOf(plans map[netip.Prefix]*plan) kernelState {
	k := newKernelState(nil, nil, nil, nil)
	for _, p := range plans {
		if p.state != backend.PeerProgrammed {
			continue
		}
		k.setRoute(p.route)
		if p.mac != nil {
			k.setNeigh(nl.Neigh{IP: p.route.Gw, MAC: p.mac, LinkIndex: p.route.LinkIndex, Permanent: true})
			k.setFDB(p.claim, nl.FDBEntry{MAC: p.mac, Dst: p.publicIP, LinkIndex: p.route.LinkIndex})
		}
	}
	return k
}

// TestPassUnchangedAllocs: a full pass over peers the kernel holds as
// planned makes no netlink request, and allocates nothing per peer
// (about 4 allocations a peer when each FDB entry and neighbour was
// unpacked to be compared).
func TestPassUnchangedAllocs(t *testing.T) {
	const n = 1000
	e, peers := memPeers(t, n)
	b := &Backend{log: slog.New(slog.DiscardHandler), h: nl.New(nil),
		underlay: &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: e.ulIndex}}}
	d := &device{link: &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Index: e.devIndex}}}
	d.plans, d.claims = planPeers(e, peers)
	d.kernel = kernelOf(d.plans)
	scope := map[netip.Prefix]bool{}
	for sn, p := range d.plans {
		scope[sn], scope[p.route.Dst] = true, true
	}
	macs := map[string]bool{}
	for mac := range d.claims {
		macs[mac] = true
	}
	var err error
	allocs := testing.AllocsPerRun(5, func() { err = b.pass(d, scope, macs, true) })
	if err != nil {
		t.Fatal(err)
	}
	if got := b.h.Requests(); got != 0 {
		t.Errorf("%d netlink requests, want none", got)
	}
	for sn, p := range d.plans {
		if p.state != backend.PeerProgrammed {
			t.Fatalf("%s: %s after the pass", sn, planSummary(p))
		}
	}
	t.Logf("%.0f allocations a pass over %d peers", allocs, n)
	if allocs > n/10 {
		t.Errorf("a full pass over %d unchanged peers allocates %.0f times, want at most %d", n, allocs, n/10)
	}
}
