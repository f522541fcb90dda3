package reliability

import (
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/lab"
)

// TestLeaseExpiry SIGKILLs weftd on n3 (lease TTL 10s) and leaves it dead.
// Measured: the time until etcd expires its lease, the time until every
// other node has dropped its route, neighbour and FDB entry, that the other
// pods keep reaching each other, and that its subnet can be taken again.
func TestLeaseExpiry(t *testing.T) {
	t.Parallel()
	const ttl = 10 * time.Second
	l := up(t, lab.Options{Name: labName("le"), Nodes: 3, PodsPerNode: 1, Backend: "vxlan",
		WeftdArgs: []string{"--subnet-lease-ttl", ttl.String()}})
	cli := etcdClient(t, l)
	n3 := l.Node("n3")
	gone, goneIP := n3.Subnet, n3.Underlay
	for _, n := range []string{"n1", "n2"} {
		if !kernelVXLAN(t, l, n).Routes[gone] {
			t.Fatalf("%s has no route to n3's subnet %s before the fault", n, gone)
		}
	}
	src, dst := l.Node("n1").Pods[0], l.Node("n2").Pods[0]
	p := startPing(t, l, src.Name, dst.IP, 50*time.Millisecond, ttl+10*time.Second)
	if err := l.StopWeftd(t.Context(), "n3", true); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var expired time.Duration
	if !lab.Poll(t.Context(), 3*ttl, 100*time.Millisecond, func() bool {
		resp, err := cli.Get(t.Context(), leaseKey(gone))
		return err == nil && len(resp.Kvs) == 0
	}) {
		t.Fatalf("n3's lease %s still in etcd %v after the kill (TTL %v)", gone, 3*ttl, ttl)
	}
	expired = time.Since(killed)
	var cleaned time.Duration
	for _, n := range []string{"n1", "n2"} {
		var s vxlanState
		if !lab.Poll(t.Context(), 20*time.Second, 100*time.Millisecond, func() bool {
			s = kernelVXLAN(t, l, n)
			if s.Routes[gone] || s.Neigh[gone.Addr()] != "" {
				return false
			}
			for _, ip := range s.FDB {
				if ip == goneIP {
					return false
				}
			}
			return true
		}) {
			t.Fatalf("%s still has n3's entries 20s after its lease expired: %+v", n, s)
		}
		cleaned = max(cleaned, time.Since(killed))
	}
	st := p.Wait(t)
	// No default route in a lab node: "unreachable" is the answer wanted.
	if out, err := l.Run(t.Context(), "n1", "ip", "route", "get", gone.Addr().Next().String()); err == nil && strings.Contains(out, "weft.1") {
		t.Errorf("n1 still routes %s into the overlay: %s", gone, out)
	}
	// The subnet is free: a create-if-absent transaction takes it.
	resp, err := cli.Txn(t.Context()).If(clientv3.Compare(clientv3.CreateRevision(leaseKey(gone)), "=", 0)).
		Then(clientv3.OpPut(leaseKey(gone), `{"PublicIP":"198.19.0.99","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:58:00:00:00:99"}}`)).Commit()
	if err != nil || !resp.Succeeded {
		t.Fatalf("taking the expired subnet %s: %v (succeeded %v)", gone, err, resp != nil && resp.Succeeded)
	}
	if _, err := cli.Delete(t.Context(), leaseKey(gone)); err != nil {
		t.Fatal(err)
	}
	record(t, "weftd on n3 SIGKILLed for good, lease TTL %v: lease gone from etcd %v after the kill; n1 and n2 dropped its route, neighbour and FDB entry %v after the kill; ping n1→n2 %v; subnet %s free again",
		ttl, expired.Round(100*time.Millisecond), cleaned.Round(100*time.Millisecond), st, gone)
	if st.Lost() != 0 {
		t.Errorf("lost %d pings between the surviving nodes", st.Lost())
	}
}
