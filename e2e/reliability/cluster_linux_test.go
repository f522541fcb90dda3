package reliability

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/lab"
)

// TestEtcdLeaderKill runs a 3-member etcd cluster and SIGKILLs its leader
// while a pod pings a pod on another node. weftd has every endpoint and a
// 10s lease TTL, so it must renew through the new leader while the old one
// stays down (20s). Measured: ping loss (zero expected), lease losses and
// re-acquisitions (zero), the leases in etcd (the same subnets, still
// attached to live etcd leases), and the time to a new leader.
func TestEtcdLeaderKill(t *testing.T) {
	t.Parallel()
	l := up(t, lab.Options{Name: labName("lk"), Nodes: 2, PodsPerNode: 1, Backend: "vxlan", EtcdMembers: 3,
		WeftdArgs: []string{"--subnet-lease-ttl", "10s"}})
	cli := etcdClient(t, l)
	leader := func(ctx context.Context) (string, uint64) {
		for _, m := range l.Etcd.Members {
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			st, err := cli.Status(sctx, strings.TrimPrefix(m.ClientURL, "http://"))
			cancel()
			if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
				return m.Name, st.Leader
			}
		}
		return "", 0
	}
	var old string
	var oldID uint64
	if !lab.Poll(t.Context(), 10*time.Second, 100*time.Millisecond, func() bool { old, oldID = leader(t.Context()); return old != "" }) {
		t.Fatal("no etcd leader")
	}
	leases := func() []string {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		resp, err := cli.Get(ctx, prefix+"/subnets/", clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
		if err != nil {
			t.Fatalf("list leases: %v", err)
		}
		var out []string
		for _, kv := range resp.Kvs {
			out = append(out, string(kv.Key))
		}
		return out
	}
	before := leases()
	src, dst := l.Node("n1").Pods[0], l.Node("n2").Pods[0]
	const down = 20 * time.Second
	p := startPing(t, l, src.Name, dst.IP, 50*time.Millisecond, down+5*time.Second)
	if err := l.StopEtcdMember(t.Context(), old, true); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var nu string
	var nuID uint64
	if !lab.Poll(t.Context(), 15*time.Second, 50*time.Millisecond, func() bool {
		nu, nuID = leader(t.Context())
		return nu != "" && nuID != oldID
	}) {
		t.Fatal("no new leader within 15s")
	}
	election := time.Since(killed)
	// Stay on the new leader for two lease TTLs: renewals must go through it.
	lab.Poll(t.Context(), down-time.Since(killed), time.Second, func() bool { return false })
	st := p.Wait(t)
	after := leases()
	var losses, acquisitions float64
	for _, n := range []string{"n1", "n2"} {
		losses += metric(t, l, n, "weft_lease_losses_total")
		acquisitions += metric(t, l, n, "weft_lease_acquisitions_total")
	}
	alive := 0
	for _, k := range after {
		// A renewal swaps the key onto a fresh etcd lease and revokes the
		// old one, so the key is read again until key and lease agree.
		var id int64
		var err error
		if lab.Poll(t.Context(), 5*time.Second, 100*time.Millisecond, func() bool {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			resp, gerr := cli.Get(ctx, k)
			if err = gerr; err != nil || len(resp.Kvs) != 1 {
				return false
			}
			id = resp.Kvs[0].Lease
			ttl, terr := cli.TimeToLive(ctx, clientv3.LeaseID(id))
			err = terr
			return err == nil && ttl.TTL > 0
		}) {
			alive++
		} else {
			t.Errorf("lease %s: etcd lease %x not alive (%v)", k, id, err)
		}
	}
	record(t, "etcd 3 members, leader %s SIGKILLed and kept down %v, weftd lease TTL 10s: new leader %s after %v; ping n1→n2 %v; lease losses %v, acquisitions %v (2 at start); lease keys %d before, %d after, %d on live etcd leases",
		old, down, nu, election.Round(10*time.Millisecond), st, losses, acquisitions, len(before), len(after), alive)
	if st.Lost() != 0 {
		t.Errorf("lost %d pings across the leader change", st.Lost())
	}
	if losses != 0 || acquisitions != 2 {
		t.Errorf("lease losses %v, acquisitions %v: want 0 and 2", losses, acquisitions)
	}
	if !slices.Equal(before, after) {
		t.Errorf("lease keys changed: %v → %v", before, after)
	}
	if err := l.StartEtcdMember(t.Context(), old); err != nil {
		t.Fatalf("restart the old leader: %v", err)
	}
	requireMatrix(t, l, "after the leader change")
}

func keys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
