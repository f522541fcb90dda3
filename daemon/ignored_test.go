package daemon

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/subnet"
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
