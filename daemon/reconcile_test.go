package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/alloc"
	"github.com/weftnet/weft/daemon/laststate"
	"github.com/weftnet/weft/daemon/masq"
	"github.com/weftnet/weft/daemon/masq/masqtest"
	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/subnettest"
)

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// testGeneration is a generation of a daemon logging to logs, holding own
// on 198.18.0.1 in cfg, for driving the peer bookkeeping directly.
func testGeneration(t *testing.T, cfg string, logs *syncBuffer) *generation {
	t.Helper()
	d, err := New(Config{}, Deps{Manager: subnettest.New(subnettest.Options{}),
		Backends: map[string]backend.Constructor{alloc.Type: alloc.New}, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return &generation{d: d, cfg: subnettest.MustConfig(t, cfg),
		own:      subnet.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("198.18.0.1")}},
		underlay: backend.Underlay{PublicIP: netip.MustParseAddr("198.18.0.1")},
		peers:    map[netip.Prefix]subnet.Lease{}, ignored: map[netip.Prefix]string{}, checkOwn: make(chan struct{}, 1)}
}

func aLease(sn, ip, typ string) subnet.Lease {
	return subnet.Lease{Subnet: netip.MustParsePrefix(sn), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(ip), BackendType: typ}}
}

// TestIgnoredLeasesLoggedOnceAndForgotten: a refused lease is logged and
// counted once however often the store is re-listed, and what is remembered
// of refusals follows the store: a lease gone from it is forgotten, and the
// memory is bounded.
func TestIgnoredLeasesLoggedOnceAndForgotten(t *testing.T) {
	logs := &syncBuffer{}
	g := testGeneration(t, allocConfig, logs)
	bad := aLease("10.244.7.0/24", "224.0.0.9", "alloc")
	good := aLease("10.244.2.0/24", "198.18.0.2", "alloc")
	for range 3 {
		g.replacePeers([]subnet.Lease{bad, good})
	}
	if n := logs.count("ignoring a lease"); n != 1 {
		t.Errorf("a bad lease re-listed 3 times logged %d times, want 1:\n%s", n, logs.String())
	}
	if v := counterValue(t, g.d.metrics.peersIgnored); v != 1 {
		t.Errorf("weft_peer_leases_ignored_total = %v, want 1", v)
	}
	if _, ok := g.peers[good.Subnet]; !ok || len(g.peers) != 1 {
		t.Errorf("peers %v, want only %s", g.peers, good.Subnet)
	}
	// Gone from the store (a snapshot without it, or its removal): forgotten.
	g.replacePeers([]subnet.Lease{good})
	if len(g.ignored) != 0 {
		t.Errorf("after a snapshot without it the bad lease is still remembered: %v", g.ignored)
	}
	g.applyEvents([]subnet.Event{{Type: subnet.EventAdded, Lease: bad}})
	g.applyEvents([]subnet.Event{{Type: subnet.EventRemoved, Lease: subnet.Lease{Subnet: bad.Subnet}}})
	if len(g.ignored) != 0 {
		t.Errorf("after its removal the bad lease is still remembered: %v", g.ignored)
	}
	// A flood of bad keys: remembered up to maxIgnored, counted beyond, and
	// said once.
	flood := make([]subnet.Lease, 0, maxIgnored+10)
	for i := range maxIgnored + 10 {
		flood = append(flood, aLease(fmt.Sprintf("10.244.%d.%d/32", i/256, i%256), "198.18.0.9", "alloc"))
	}
	before := counterValue(t, g.d.metrics.peersIgnored)
	g.replacePeers(flood)
	if len(g.ignored) != maxIgnored {
		t.Errorf("%d refusals remembered, want the bound %d", len(g.ignored), maxIgnored)
	}
	if n := counterValue(t, g.d.metrics.peersIgnored) - before; n != float64(len(flood)) {
		t.Errorf("%v refusals counted, want %d", n, len(flood))
	}
	if n := logs.count("many unusable leases"); n != 1 {
		t.Errorf("the flood was announced %d times, want 1", n)
	}
}

// TestPeerLeasesCheckedByTheSharedRules: the daemon filters with
// backend.CheckPeer, so it refuses what the backends refuse, including the
// PublicIP rules its own copy lacked.
func TestPeerLeasesCheckedByTheSharedRules(t *testing.T) {
	logs := &syncBuffer{}
	g := testGeneration(t, allocConfig, logs)
	for _, tc := range []struct {
		l      subnet.Lease
		reason string // "" accepted
	}{
		{aLease("10.244.2.0/24", "198.18.0.2", "alloc"), ""},
		{aLease("10.244.3.0/24", "198.18.0.1", "alloc"), "this node's own"},
		{aLease("10.244.4.0/24", "239.1.2.3", "alloc"), "multicast"},
		{aLease("10.244.5.0/24", "127.0.0.1", "alloc"), "loopback"},
		{aLease("10.244.6.0/24", "10.244.9.9", "alloc"), "inside the pod network"},
		{aLease("10.244.7.0/24", "169.254.1.1", "alloc"), "link-local"},
		{aLease("10.244.8.0/24", "255.255.255.255", "alloc"), "broadcast"},
		{aLease("10.244.9.0/24", "198.18.0.9", "vxlan"), "this network uses"},
		{aLease("10.244.1.0/24", "198.18.0.1", "alloc"), ""}, // own: skipped, not logged
	} {
		ok := g.accept(tc.l)
		if want := tc.reason == "" && tc.l.Subnet != g.own.Subnet; ok != want {
			t.Errorf("%s (%s): accepted %v, want %v", tc.l.Subnet, tc.l.Attrs.PublicIP, ok, want)
		}
		if tc.reason != "" && g.ignored[tc.l.Subnet] == "" {
			t.Errorf("%s: not recorded as ignored", tc.l.Subnet)
		}
		if tc.reason != "" && logs.count(tc.reason) == 0 {
			t.Errorf("%s: no log line naming %q:\n%s", tc.l.Subnet, tc.reason, logs.String())
		}
	}
	if _, ok := g.ignored[g.own.Subnet]; ok {
		t.Error("this node's own lease was recorded as ignored")
	}
}

// TestFlannelUDPLeaseIsAPeer: Flannel's udp backend writes its lease with no
// BackendType ({"PublicIP":"…","PublicIPv6":null}); in a udp network that is
// a peer, not a lease of "another backend" (issue 14: a mixed udp cluster
// passed no traffic).
func TestFlannelUDPLeaseIsAPeer(t *testing.T) {
	m := newStore(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}`)
	u := backend.Underlay{Link: "eth0", Index: 2, MTU: 1500, PublicIP: netip.MustParseAddr("198.18.0.1")}
	dir := t.TempDir()
	d, err := New(Config{SubnetFile: dir + "/subnet.env", CNIConfDir: dir + "/net.d", CNIIPAMDir: dir + "/ipam", HealthzAddr: "off"},
		Deps{Manager: m, Backends: map[string]backend.Constructor{subnet.BackendUDP: alloc.New}, Underlay: &u})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{d: d, dir: dir, ip: u.PublicIP, stop: cancel, done: make(chan error, 1)}
	go func() { n.done <- d.Run(ctx) }()
	t.Cleanup(func() { n.shutdown(t) })
	waitFor(t, "ready", n.ready)

	var attrs subnet.LeaseAttrs
	if err := json.Unmarshal([]byte(`{"PublicIP":"198.18.0.9","PublicIPv6":null}`), &attrs); err != nil {
		t.Fatal(err)
	}
	flannel := netip.MustParsePrefix("10.244.200.0/24")
	if n.subnetFile(t).Subnet.Masked() == flannel {
		flannel = netip.MustParsePrefix("10.244.201.0/24")
	}
	m.Put(subnet.Lease{Subnet: flannel, Attrs: attrs, Expiration: time.Now().Add(time.Hour)})
	waitFor(t, "the Flannel udp lease as a peer", func() bool {
		for _, p := range n.d.Status().Peers {
			if p.Subnet == flannel && p.State == backend.PeerProgrammed {
				return true
			}
		}
		return false
	})
}

// tunneledAlloc is the alloc backend claiming vxlan's tunnel port and peer
// filter.
type tunneledAlloc struct{ backend.Backend }

func (tunneledAlloc) FilterPort() (uint16, bool) { return 8472, true }
func (tunneledAlloc) TunnelPort() uint16         { return 8472 }

// TestTunnelRulesFollowThePeers: the forwarding rules guard the backend's
// tunnel port, and the peer filter lets each peer's tunnel traffic carry
// only its own pod subnet or its own address as inner source.
func TestTunnelRulesFollowThePeers(t *testing.T) {
	m := newStore(t, allocConfig)
	fake := &masqtest.Fake{}
	a := startNodeWith(t, m, "198.18.0.1", "", fake, func(o backend.Options) (backend.Backend, error) {
		b, err := alloc.New(o)
		return tunneledAlloc{b}, err
	})
	b := startNode(t, m, "198.18.0.2", "", nil)
	waitFor(t, "both ready", func() bool { return a.ready() && b.ready() })
	if r, ok := fake.Rules(); !ok || !slices.Equal(r.TunnelPorts, []uint16{8472}) {
		t.Errorf("rules %+v, want the tunnel port 8472 guarded", r)
	}
	bSubnet := b.subnetFile(t).Subnet.Masked()
	want := []netip.Prefix{netip.MustParsePrefix("198.18.0.2/32"), bSubnet}
	slices.SortFunc(want, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	waitFor(t, "b's inner sources in the filter", func() bool {
		return slices.Equal(fake.PeerFilterSources()[b.ip], want)
	})
}

// TestPeerFilterGrowsBeforeAndShrinksAfterApply: a batch that replaces a
// peer first has the filter let in both (before the backend programs the
// newcomer), and only the newcomer once the update without grow (the
// trim, after the backend removed the other) ran, so the slower removal
// from the firewall never delays the routes.
func TestPeerFilterGrowsBeforeAndShrinksAfterApply(t *testing.T) {
	g := testGeneration(t, allocConfig, &syncBuffer{})
	fake := &masqtest.Fake{}
	g.masq, g.be, g.others = fake, tunneledAlloc{}, map[netip.Prefix]subnet.Lease{}
	a, b := aLease("10.244.2.0/24", "198.18.0.2", "alloc"), aLease("10.244.3.0/24", "198.18.0.3", "alloc")
	g.applyEvents([]subnet.Event{{Type: subnet.EventAdded, Lease: a}})
	g.updatePeerFilter(t.Context(), false)
	g.applyEvents([]subnet.Event{{Type: subnet.EventRemoved, Lease: a}, {Type: subnet.EventAdded, Lease: b}})
	g.updatePeerFilter(t.Context(), true)
	if got := fake.PeerFilterSources(); len(got) != 2 || got[a.Attrs.PublicIP] == nil || got[b.Attrs.PublicIP] == nil {
		t.Errorf("before the backend's pass the filter holds %v, want both peers", got)
	}
	g.updatePeerFilter(t.Context(), false)
	if got := fake.PeerFilterSources(); len(got) != 1 || got[b.Attrs.PublicIP] == nil {
		t.Errorf("after it the filter holds %v, want only %s", got, b.Attrs.PublicIP)
	}
}

// TestPeerFilterRemovalsWaitForTheGrace is the regression guard of
// single-lease convergence: passes over removals and adds, one lease at a
// time, take nothing out of the peer filter (taking an nftables element
// out waits for an RCU grace period with the nftables lock held, ~10 ms,
// and the next peer's pass waited behind it: 4× Flannel's time from a
// write to the kernel state), each add is let in by its own pass, and one
// change takes out everything the removals left once the grace is over.
// TestPeerFilterFollowsPeers sees the grace's timer do it.
func TestPeerFilterRemovalsWaitForTheGrace(t *testing.T) {
	g := testGeneration(t, `{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"alloc"}}`, &syncBuffer{})
	g.d.cfg.ResyncInterval, g.d.cfg.PeerFilterGrace = time.Hour, time.Hour
	b, err := alloc.New(backend.Options{Config: g.cfg, Underlay: g.underlay})
	if err != nil {
		t.Fatal(err)
	}
	be := passSignal{tunneledAlloc{b}, make(chan struct{}, 1)}
	fake := &masqtest.Fake{}
	g.masq, g.be, g.others, g.programmed = fake, be, map[netip.Prefix]subnet.Lease{}, make(chan struct{})
	lease := func(i int) subnet.Lease {
		return aLease(fmt.Sprintf("10.100.%d.0/24", i), fmt.Sprintf("198.19.0.%d", i), "alloc")
	}
	var leases []subnet.Lease
	for i := range 20 {
		leases = append(leases, lease(i))
	}
	ctx, cancel := context.WithCancel(t.Context())
	batches := make(chan subnet.LeaseBatch)
	done := make(chan error, 1)
	go func() { done <- g.reconcile(ctx, batches, nil) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	pass := func(b subnet.LeaseBatch) {
		t.Helper()
		batches <- b
		select {
		case <-be.done:
		case <-time.After(10 * time.Second):
			t.Fatal("no pass within 10 s")
		}
	}
	pass(subnet.LeaseBatch{Snapshot: true, Leases: leases})
	for i := range 10 {
		pass(subnet.LeaseBatch{Events: []subnet.Event{{Type: subnet.EventRemoved, Lease: lease(i)}}})
		added := lease(100 + i)
		pass(subnet.LeaseBatch{Events: []subnet.Event{{Type: subnet.EventAdded, Lease: added}}})
		if _, ok := fake.PeerFilterSources()[added.Attrs.PublicIP]; !ok {
			t.Fatalf("after its pass, peer %s is not let in", added.Attrs.PublicIP)
		}
	}
	if n := fake.Shrinks(); n != 0 {
		t.Errorf("10 removals and 10 adds within the grace took something out of the filter %d times, want 0", n)
	}
	if got := len(fake.PeerFilterSources()); got != 30 {
		t.Errorf("within the grace the filter holds %d addresses, want the 20 peers and the 10 gone ones", got)
	}
	stop()
	if !g.filterTrimPending() {
		t.Fatal("no trim pending with 10 gone peers in the filter")
	}
	g.updatePeerFilter(t.Context(), false) // what the grace's timer runs
	if n := fake.Shrinks(); n != 1 {
		t.Errorf("the trim took out in %d changes, want 1", n)
	}
	if got, want := fake.PeerFilterSources(), filterSources(filterPeers(g.peers)); !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("after the trim the filter holds %d addresses, the peers need %d (or their sources differ)", len(got), len(want))
	}
	if g.filterTrimPending() {
		t.Error("a trim still pending after the trim")
	}
}

func TestUnionFilterPeers(t *testing.T) {
	p := netip.MustParsePrefix
	x, y, z := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3")
	got := unionFilterPeers(
		[]masq.FilterPeer{{Addr: x, Sources: []netip.Prefix{p("10.244.1.0/24")}}, {Addr: z, Sources: []netip.Prefix{p("10.244.3.0/24")}}},
		[]masq.FilterPeer{{Addr: x, Sources: []netip.Prefix{p("10.244.1.0/24"), p("10.244.9.0/24")}}, {Addr: y, Sources: []netip.Prefix{p("10.244.2.0/24")}}})
	want := []masq.FilterPeer{
		{Addr: x, Sources: []netip.Prefix{p("10.244.1.0/24"), p("10.244.9.0/24")}},
		{Addr: y, Sources: []netip.Prefix{p("10.244.2.0/24")}},
		{Addr: z, Sources: []netip.Prefix{p("10.244.3.0/24")}},
	}
	if !slices.EqualFunc(got, want, sameFilterPeer) {
		t.Errorf("union = %v, want %v", got, want)
	}
}

// TestReconcileDurationIsThePass: weft_reconcile_duration_seconds times each
// pass from the work it woke for, not from the end of the one before: the
// periodic passes of an idle node (every 200 ms here) take far less than
// the wait between them.
func TestReconcileDurationIsThePass(t *testing.T) {
	n := startNode(t, newStore(t, allocConfig), "198.18.0.1", "", nil)
	full := n.d.metrics.reconcileSeconds.WithLabelValues("full").(prometheus.Histogram)
	var m dto.Metric
	waitFor(t, "five full passes", func() bool {
		if err := full.Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetHistogram().GetSampleCount() >= 5
	})
	h := m.GetHistogram()
	if mean := h.GetSampleSum() / float64(h.GetSampleCount()); mean > 0.1 {
		t.Errorf("full passes took %.3f s on average (%d passes), want well under the 0.2 s between them", mean, h.GetSampleCount())
	}
}

// manyPeersGeneration is a generation whose firewall is a fake, with n
// tunneled leases to hand it (not yet applied); lease(i) is the i-th.
func manyPeersGeneration(t *testing.T, n int) (*generation, *masqtest.Fake, func(int) subnet.Lease, []subnet.Lease) {
	g := testGeneration(t, `{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"alloc"}}`, &syncBuffer{})
	fake := &masqtest.Fake{}
	g.masq, g.be, g.others = fake, tunneledAlloc{}, map[netip.Prefix]subnet.Lease{}
	lease := func(i int) subnet.Lease {
		return aLease(fmt.Sprintf("10.%d.%d.0/24", 100+i/256, i%256), fmt.Sprintf("198.19.%d.%d", i/256, i%256), "alloc")
	}
	leases := make([]subnet.Lease, 0, n)
	for i := range n {
		leases = append(leases, lease(i))
	}
	return g, fake, lease, leases
}

// TestPeerFilterWorkPerEventIsFlat is the regression guard of the
// incremental peer filter: among 2000 peers, a batch of one event hands the
// firewall the entry of that peer's address alone (before the backend's
// pass for a newcomer, after it for a removal), not the whole set, and the
// filter ends as a full update would set it.
func TestPeerFilterWorkPerEventIsFlat(t *testing.T) {
	g, fake, lease, leases := manyPeersGeneration(t, 2000)
	pass := func(full bool, evs ...subnet.Event) int {
		before := fake.FilterPeersHanded()
		g.applyEvents(evs)
		if full {
			g.filterIdx = nil
		}
		g.updatePeerFilter(t.Context(), true)
		g.updatePeerFilter(t.Context(), false)
		return fake.FilterPeersHanded() - before
	}
	g.replacePeers(leases)
	if n := pass(true); n != 2000 {
		t.Fatalf("the first full pass handed %d filter peers, want 2000", n)
	}
	added := func(l subnet.Lease) subnet.Event { return subnet.Event{Type: subnet.EventAdded, Lease: l} }
	removed := func(l subnet.Lease) subnet.Event { return subnet.Event{Type: subnet.EventRemoved, Lease: l} }
	moved := lease(7)
	moved.Attrs.PublicIP = lease(8).Attrs.PublicIP // now shares 198.19.0.8 with lease 8
	for _, tc := range []struct {
		name string
		evs  []subnet.Event
		want int
	}{
		{"a new peer", []subnet.Event{added(lease(3000))}, 1},
		{"the same lease again", []subnet.Event{added(lease(3000))}, 0},
		{"a peer removed", []subnet.Event{removed(lease(3000))}, 1},
		{"a peer moving to another's address: the shared one grown, then its old one out", []subnet.Event{added(moved)}, 2},
		{"ten removed", []subnet.Event{removed(lease(10)), removed(lease(11)), removed(lease(12)), removed(lease(13)), removed(lease(14)),
			removed(lease(15)), removed(lease(16)), removed(lease(17)), removed(lease(18)), removed(lease(19))}, 10},
	} {
		if n := pass(false, tc.evs...); n != tc.want {
			t.Errorf("%s: %d filter peers handed to the firewall, want %d", tc.name, n, tc.want)
		}
		if got, want := fake.PeerFilterSources(), filterSources(filterPeers(g.peers)); !maps.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("%s: the filter holds %d addresses, a full update %d (or their sources differ)", tc.name, len(got), len(want))
		}
	}
	if n := pass(true); n != 0 {
		t.Errorf("a full pass finding the filter right handed %d filter peers, want 0", n)
	}
}

// TestPeerFilterRemovalsPendingKeepPassesFlat is the regression guard of
// removing many peers one event at a time (a Kubernetes store deletes one
// Node per event): the removals wait for the trim, and a pass must not
// visit the ones earlier passes left waiting. Before, each pass sorted and
// looked up every address still waiting, so removing 5000 Nodes made
// ~12.5 M visits and allocated gigabytes.
func TestPeerFilterRemovalsPendingKeepPassesFlat(t *testing.T) {
	g, fake, lease, leases := manyPeersGeneration(t, 2000)
	g.replacePeers(leases)
	g.updatePeerFilter(t.Context(), true)
	remove := func(i int) {
		g.applyEvents([]subnet.Event{{Type: subnet.EventRemoved, Lease: lease(i)}})
		g.updatePeerFilter(t.Context(), true)
	}
	for i := range 1000 { // 1000 removals waiting for the trim
		remove(i)
	}
	const events = 200
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range events {
		remove(1000 + i)
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / events; per > 2<<10 {
		t.Errorf("a pass over one removal with 1000 removals waiting allocated %d bytes, want well under 2 kB", per)
	} else {
		t.Logf("%d bytes per removal", per)
	}
	if !g.filterTrimPending() {
		t.Fatal("no trim pending after 1200 removals")
	}
	g.updatePeerFilter(t.Context(), false)
	if got, want := fake.PeerFilterSources(), filterSources(filterPeers(g.peers)); !maps.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("after the trim the filter holds %d addresses, a full update %d (or their sources differ)", len(got), len(want))
	}
	if g.filterTrimPending() {
		t.Error("a trim is still pending after the trim")
	}
}

// TestPeerLeaseHeldOnce is the regression guard of the daemon's memory per
// peer: a peer's lease is kept once (the leases that are no peers apart),
// not in a map of every lease and again in the peer set (~600 bytes of
// live heap per peer then, ~300 now).
func TestPeerLeaseHeldOnce(t *testing.T) {
	const n = 5000
	g := testGeneration(t, `{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"alloc"}}`, &syncBuffer{})
	leases := make([]subnet.Lease, n)
	for i := range leases {
		leases[i] = aLease(fmt.Sprintf("10.%d.%d.0/24", 100+i/256, i%256), fmt.Sprintf("198.19.%d.%d", i/250, 1+i%250), "alloc")
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g.replacePeers(leases)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if len(g.peers) != n {
		t.Fatalf("%d peers, want %d", len(g.peers), n)
	}
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	t.Logf("%d bytes of live heap per peer", per)
	if per > 450 {
		t.Errorf("the daemon keeps %d bytes per peer, want at most 450: is a lease held twice?", per)
	}
	runtime.KeepAlive(leases)
}

func filterSources(ps []masq.FilterPeer) map[netip.Addr][]netip.Prefix {
	out := make(map[netip.Addr][]netip.Prefix, len(ps))
	for _, p := range ps {
		out[p.Addr] = p.Sources
	}
	return out
}

// passSignal is a filtered alloc backend that says when each pass ends.
type passSignal struct {
	tunneledAlloc
	done chan struct{}
}

func (b passSignal) Sync(ctx context.Context, peers []subnet.Lease) error {
	defer func() { b.done <- struct{}{} }()
	return b.tunneledAlloc.Sync(ctx, peers)
}

func (b passSignal) Apply(ctx context.Context, events []subnet.Event) error {
	defer func() { b.done <- struct{}{} }()
	return b.tunneledAlloc.Apply(ctx, events)
}

// TestReconcileMemoryPerEventIsFlat is the regression guard of the
// daemon's per-event cost when events trickle in one at a time (a
// Kubernetes store delivers one per Node): among 2000 peers, a pass over
// one event allocates a few kilobytes, not something that grows with the
// peer count (the whole peer filter rebuilt, every peer collected for the
// last known state: ~1 MB per event before).
func TestReconcileMemoryPerEventIsFlat(t *testing.T) {
	g := testGeneration(t, `{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"alloc"}}`, &syncBuffer{})
	g.d.cfg.ResyncInterval = time.Hour
	g.d.lastState = laststate.NewWriter(filepath.Join(t.TempDir(), "state.json"), laststate.WriterOptions{})
	b, err := alloc.New(backend.Options{Config: g.cfg, Underlay: g.underlay})
	if err != nil {
		t.Fatal(err)
	}
	be := passSignal{tunneledAlloc{b}, make(chan struct{}, 1)}
	g.masq, g.be, g.others, g.ownConfirmed, g.programmed = &masqtest.Fake{}, be, map[netip.Prefix]subnet.Lease{}, true, make(chan struct{})
	lease := func(i int) subnet.Lease {
		return aLease(fmt.Sprintf("10.%d.%d.0/24", 100+i/256, i%256), fmt.Sprintf("198.19.%d.%d", i/256, i%256), "alloc")
	}
	var leases []subnet.Lease
	for i := range 2000 {
		leases = append(leases, lease(i))
	}
	ctx, cancel := context.WithCancel(t.Context())
	batches := make(chan subnet.LeaseBatch)
	done := make(chan error, 1)
	go func() { done <- g.reconcile(ctx, batches, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	pass := func(b subnet.LeaseBatch) {
		t.Helper()
		batches <- b
		select {
		case <-be.done:
		case <-time.After(10 * time.Second):
			t.Fatal("no pass within 10 s")
		}
	}
	pass(subnet.LeaseBatch{Snapshot: true, Leases: leases})
	event := func(i int) subnet.LeaseBatch {
		typ := subnet.EventAdded
		if i%2 == 1 {
			typ = subnet.EventRemoved
		}
		return subnet.LeaseBatch{Events: []subnet.Event{{Type: typ, Lease: lease(3000 + i/2)}}}
	}
	for i := range 20 { // warm up: maps grown, the first state offered
		pass(event(i))
	}
	const events = 200
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range events {
		pass(event(20 + i))
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / events; per > 16<<10 {
		t.Errorf("a pass over one event among 2000 peers allocated %d bytes, want a few kB", per)
	} else {
		t.Logf("%d bytes per event", per)
	}
}

// TestApplyEventsInPlace: the events for the backend are written over the
// batch's own array (a burst of 10000 leases was copied twice more), and
// they are the right ones: accepted peers, and a removal for a peer whose
// lease turned unacceptable.
func TestApplyEventsInPlace(t *testing.T) {
	g := testGeneration(t, allocConfig, &syncBuffer{})
	g.others = map[netip.Prefix]subnet.Lease{}
	a, b := aLease("10.244.2.0/24", "198.18.0.2", "alloc"), aLease("10.244.3.0/24", "198.18.0.3", "alloc")
	g.applyEvents([]subnet.Event{{Type: subnet.EventAdded, Lease: b}})
	badB := aLease("10.244.3.0/24", "224.0.0.9", "alloc")
	batch := []subnet.Event{
		{Type: subnet.EventAdded, Lease: aLease("10.244.7.0/24", "224.0.0.9", "alloc")}, // refused: dropped
		{Type: subnet.EventAdded, Lease: a},
		{Type: subnet.EventAdded, Lease: badB}, // b turned bad: removed
	}
	out := g.applyEvents(batch)
	if len(out) != 2 || &out[0] != &batch[0] {
		t.Fatalf("applyEvents returned %d events, in the batch's array: %v; want 2, in it", len(out), len(out) > 0 && &out[0] == &batch[0])
	}
	if out[0].Type != subnet.EventAdded || out[0].Lease.Subnet != a.Subnet || out[1].Type != subnet.EventRemoved || out[1].Lease.Subnet != b.Subnet {
		t.Errorf("events for the backend: %+v", out)
	}
	if _, ok := g.peers[b.Subnet]; ok || len(g.peers) != 1 {
		t.Errorf("peers %v, want only %s", g.peers, a.Subnet)
	}
}
