package daemon

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/subnettest"
)

// gaugeValue reads a gauge of the daemon's registry (0 if absent).
func gaugeValue(t *testing.T, d *Daemon, name string) float64 {
	t.Helper()
	mfs, err := d.metrics.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestIgnoredLeasesInStatus: the leases of Flannel backends weft does not
// have (and of a weft backend this network does not run) in a vxlan
// network are each logged once, listed in /status with the lease's
// backend and the reason, and counted in weft_peer_leases_ignored; the
// peers beside them are used; a lease that goes away leaves the list.
func TestIgnoredLeasesInStatus(t *testing.T) {
	logs := &syncBuffer{}
	g := testGeneration(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, logs)
	flannel := func(sn, ip, typ string) subnet.Lease {
		l := aLease(sn, ip, typ)
		l.Attrs.BackendData = []byte(`{}`)
		return l
	}
	leases := []subnet.Lease{
		aLease("10.244.2.0/24", "198.18.0.2", "vxlan"), // served
		flannel("10.244.3.0/24", "198.18.0.3", "ipip"),
		flannel("10.244.4.0/24", "198.18.0.4", "ipsec"),
		flannel("10.244.5.0/24", "198.18.0.5", "extension"),
		flannel("10.244.6.0/24", "198.18.0.6", "tencent-vpc"),
		aLease("10.244.7.0/24", "198.18.0.7", "host-gw"),
		aLease("10.244.8.0/24", "198.18.0.8", ""), // Flannel's udp (and alloc) lease
	}
	for range 2 {
		g.replacePeers(leases)
		g.publishIgnored()
	}
	if _, ok := g.peers[leases[0].Subnet]; !ok || len(g.peers) != 1 {
		t.Errorf("peers %v, want only the vxlan lease %s", g.peers, leases[0].Subnet)
	}
	st := g.d.Status()
	if len(st.Ignored) != len(leases)-1 {
		t.Fatalf("status lists %d ignored leases, want %d: %+v", len(st.Ignored), len(leases)-1, st.Ignored)
	}
	for i, ig := range st.Ignored {
		l := leases[i+1]
		if ig.Subnet != l.Subnet || ig.PublicIP != l.Attrs.PublicIP || ig.BackendType != l.Attrs.BackendType ||
			!strings.Contains(ig.Reason, `this network uses "vxlan"`) {
			t.Errorf("ignored[%d] = %+v, want %s %s backend %q with the reason", i, ig, l.Subnet, l.Attrs.PublicIP, l.Attrs.BackendType)
		}
		if n := logs.count("subnet=" + l.Subnet.String()); n != 1 {
			t.Errorf("%s logged %d times, want once", l.Subnet, n)
		}
	}
	if v := gaugeValue(t, g.d, "weft_peer_leases_ignored"); v != float64(len(leases)-1) {
		t.Errorf("weft_peer_leases_ignored = %v, want %d", v, len(leases)-1)
	}
	// The ipip node leaves: gone from the list and the gauge.
	g.applyEvents([]subnet.Event{{Type: subnet.EventRemoved, Lease: subnet.Lease{Subnet: netip.MustParsePrefix("10.244.3.0/24")}}})
	g.publishIgnored()
	if st := g.d.Status(); len(st.Ignored) != len(leases)-2 || st.Ignored[0].BackendType != "ipsec" {
		t.Errorf("after the ipip lease went: %+v", st.Ignored)
	}
	g.replacePeers(leases[:1])
	g.publishIgnored()
	if st := g.d.Status(); len(st.Ignored) != 0 || gaugeValue(t, g.d, "weft_peer_leases_ignored") != 0 {
		t.Errorf("after every ignored lease went: %+v", st.Ignored)
	}
}

// relistingStore is the fake store whose lease watch sends only what the
// test pushes into batches: re-lists (snapshots) and events on demand, as
// etcd's watch does after a compaction or a broken connection.
type relistingStore struct {
	*subnettest.Manager
	batches chan subnet.LeaseBatch
}

func (s *relistingStore) WatchLeases(ctx context.Context, out chan<- subnet.LeaseBatch) error {
	for {
		select {
		case b := <-s.batches:
			select {
			case out <- b:
			case <-ctx.Done():
				return ctx.Err()
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// snapshot is a re-list of the store as it is, plus extra leases.
func (s *relistingStore) snapshot(t *testing.T, extra ...subnet.Lease) subnet.LeaseBatch {
	t.Helper()
	leases, rev, err := s.ListLeases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return subnet.LeaseBatch{Snapshot: true, Leases: append(leases, extra...), Revision: rev}
}

// TestIgnoredLeaseLoggedOnceAcrossRelists: through a running daemon, a
// lease it cannot serve is logged once, however often the watch re-lists
// the store and however often the lease is rewritten unchanged (a renewal);
// a change of its reason is logged again.
func TestIgnoredLeaseLoggedOnceAcrossRelists(t *testing.T) {
	s := &relistingStore{Manager: newStore(t, allocConfig), batches: make(chan subnet.LeaseBatch)}
	logs := &syncBuffer{}
	n := startNodeOpts(t, nodeOpts{store: s, ip: "198.18.0.1", logs: logs})
	push := func(b subnet.LeaseBatch) {
		t.Helper()
		select {
		case s.batches <- b:
		case <-time.After(10 * time.Second):
			t.Fatal("the daemon did not take a lease batch within 10s")
		}
	}
	push(s.snapshot(t))
	waitFor(t, "ready", n.ready)

	bad := aLease("10.244.200.0/24", "198.18.0.77", "ipip")
	bad.Attrs.BackendData = []byte(`{}`)
	for range 5 {
		push(s.snapshot(t, bad))
		push(subnet.LeaseBatch{Events: []subnet.Event{{Type: subnet.EventAdded, Lease: bad}}})
	}
	// A good peer in the last re-list: once it is programmed, every batch
	// before it has been handled.
	marker := aLease("10.244.201.0/24", "198.18.0.78", "alloc")
	push(s.snapshot(t, bad, marker))
	waitFor(t, "the marker peer", func() bool { _, ok := n.peers()[marker.Subnet]; return ok })
	if got := logs.count("subnet=" + bad.Subnet.String()); got != 1 {
		t.Errorf("the ignored lease was logged %d times over 5 re-lists and 5 rewrites, want once:\n%s", got, logs.String())
	}
	if st := n.d.Status(); len(st.Ignored) != 1 || st.Ignored[0].Subnet != bad.Subnet {
		t.Errorf("status lists ignored leases %+v, want only %s", st.Ignored, bad.Subnet)
	}

	// Another reason (the same subnet now claims a multicast address) is
	// news: logged, once.
	worse := bad
	worse.Attrs.BackendType, worse.Attrs.PublicIP = "alloc", netip.MustParseAddr("224.0.0.77")
	marker2 := aLease("10.244.202.0/24", "198.18.0.79", "alloc")
	for range 3 {
		push(s.snapshot(t, worse, marker))
	}
	push(s.snapshot(t, worse, marker, marker2))
	waitFor(t, "the second marker peer", func() bool { _, ok := n.peers()[marker2.Subnet]; return ok })
	if got := logs.count("subnet=" + bad.Subnet.String()); got != 2 {
		t.Errorf("after its reason changed the lease was logged %d times in all, want twice:\n%s", got, logs.String())
	}
}
