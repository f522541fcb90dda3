package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/lab"
)

// vxlanState is what a vxlan node programs for its peers on weft.1.
type vxlanState struct {
	Routes map[netip.Prefix]bool
	Neigh  map[netip.Addr]string // subnet.0 → VTEP MAC
	FDB    map[string]netip.Addr // VTEP MAC → PublicIP
}

func (s vxlanState) String() string {
	return fmt.Sprintf("%d routes, %d neighbours, %d FDB entries", len(s.Routes), len(s.Neigh), len(s.FDB))
}

func (s vxlanState) equal(o vxlanState) bool {
	return maps.Equal(s.Routes, o.Routes) && maps.Equal(s.Neigh, o.Neigh) && maps.Equal(s.FDB, o.FDB)
}

// kernelVXLAN reads node's peer state on weft.1.
func kernelVXLAN(t *testing.T, l *lab.Lab, node string) vxlanState {
	t.Helper()
	s := vxlanState{Routes: map[netip.Prefix]bool{}, Neigh: map[netip.Addr]string{}, FDB: map[string]netip.Addr{}}
	for _, line := range strings.Split(run(t, l, node, "ip", "-4", "route", "show", "dev", "weft.1"), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			if p, err := netip.ParsePrefix(f[0]); err == nil {
				s.Routes[p] = true
			}
		}
	}
	for _, line := range strings.Split(run(t, l, node, "ip", "-4", "neigh", "show", "dev", "weft.1"), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[1] == "lladdr" {
			if a, err := netip.ParseAddr(f[0]); err == nil {
				s.Neigh[a] = f[2]
			}
		}
	}
	for _, line := range strings.Split(run(t, l, node, "bridge", "fdb", "show", "dev", "weft.1"), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[1] == "dst" {
			if a, err := netip.ParseAddr(f[2]); err == nil {
				s.FDB[f[0]] = a
			}
		}
	}
	return s
}

type leaseValue struct {
	PublicIP    string
	BackendType string
	BackendData struct {
		VNI     int
		VtepMAC string
	}
}

// etcdVXLAN is the state a node should program: every vxlan lease in etcd
// but its own.
func etcdVXLAN(t *testing.T, cli *clientv3.Client, own netip.Prefix) vxlanState {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, prefix+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	s := vxlanState{Routes: map[netip.Prefix]bool{}, Neigh: map[netip.Addr]string{}, FDB: map[string]netip.Addr{}}
	for _, kv := range resp.Kvs {
		name := strings.TrimPrefix(string(kv.Key), prefix+"/subnets/")
		sn, err := netip.ParsePrefix(strings.Replace(name, "-", "/", 1))
		if err != nil || sn == own {
			continue
		}
		var v leaseValue
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			continue
		}
		s.Routes[sn] = true
		s.Neigh[sn.Addr()] = v.BackendData.VtepMAC
		s.FDB[v.BackendData.VtepMAC] = netip.MustParseAddr(v.PublicIP)
	}
	return s
}

// TestPeerChurn adds 50 peer leases and removes and changes them in random
// order (bound to an etcd lease, as a node's are) while a pod pings a pod on
// the other node. Measured: ping loss (zero), weftd alive, and at the end
// the kernel's routes, neighbours and FDB on every node exactly matching
// the leases in etcd, and the time to converge.
func TestPeerChurn(t *testing.T) {
	t.Parallel()
	l := up(t, lab.Options{Name: labName("pc"), Nodes: 2, PodsPerNode: 1, Backend: "vxlan"})
	cli := etcdClient(t, l)
	ctx := ctxFor(t, 2*time.Minute)
	grant, err := cli.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	const peers = 50
	subnets := freeSubnets(l, peers)
	put := func(i int, gen int) {
		mac := fmt.Sprintf("0a:58:%02x:%02x:00:%02x", gen, i, i)
		ip := l.Underlay.Addr().As4()
		ip[3] = byte(100 + i)
		v := fmt.Sprintf(`{"PublicIP":%q,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":%q}}`, netip.AddrFrom4(ip), mac)
		if _, err := cli.Put(ctx, leaseKey(subnets[i]), v, clientv3.WithLease(grant.ID)); err != nil {
			t.Fatal(err)
		}
	}
	src, dst := l.Node("n1").Pods[0], l.Node("n2").Pods[0]
	p := startPing(t, l, src.Name, dst.IP, 20*time.Millisecond, 10*time.Second)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	added := map[int]bool{}
	ops := map[string]int{}
	for next := 0; next < peers || len(added) > peers/2; {
		switch r := rng.IntN(10); {
		case next < peers && (r < 6 || len(added) == 0):
			put(next, 0)
			added[next] = true
			next++
			ops["add"]++
		case r < 8 && len(added) > 0:
			i := pick(rng, added)
			put(i, 1+rng.IntN(200)) // a node re-registering with a new VTEP MAC
			ops["change"]++
		default:
			if len(added) == 0 {
				continue
			}
			i := pick(rng, added)
			if _, err := cli.Delete(ctx, leaseKey(subnets[i])); err != nil {
				t.Fatal(err)
			}
			delete(added, i)
			ops["remove"]++
		}
		// Pace the events so they spread over the ping run.
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(time.Duration(rng.IntN(100)) * time.Millisecond):
		}
	}
	churnDone := time.Now()
	var converged time.Duration
	for _, n := range l.Nodes {
		want := etcdVXLAN(t, cli, n.Subnet)
		var got vxlanState
		if !lab.Poll(t.Context(), 30*time.Second, 100*time.Millisecond, func() bool {
			got = kernelVXLAN(t, l, n.Name)
			return got.equal(want)
		}) {
			t.Fatalf("node %s: kernel %v does not match etcd %v:\nkernel %+v\netcd %+v", n.Name, got, want, got, want)
		}
		converged = max(converged, time.Since(churnDone))
		if len(want.Routes) != len(added)+1 {
			t.Fatalf("etcd holds %d peers for %s, want %d", len(want.Routes), n.Name, len(added)+1)
		}
	}
	st := p.Wait(t)
	var errs float64
	for _, n := range l.Nodes {
		if !l.WeftdAlive(n.Name) {
			t.Errorf("weftd on %s died", n.Name)
		}
		errs += metric(t, l, n.Name, `weft_reconcile_errors_total{kind="incremental"}`) + metric(t, l, n.Name, `weft_reconcile_errors_total{kind="full"}`)
	}
	record(t, "%d peer leases, %d adds, %d changes, %d removes in random order: ping n1→n2 %v; kernel matched etcd (%d peers) on both nodes %v after the last change; reconcile errors %v",
		peers, ops["add"], ops["change"], ops["remove"], st, len(added)+1, converged.Round(10*time.Millisecond), errs)
	if st.Lost() != 0 {
		t.Errorf("lost %d pings during the churn", st.Lost())
	}
}

func pick(rng *rand.Rand, m map[int]bool) int {
	k := rng.IntN(len(m))
	for i := range m {
		if k == 0 {
			return i
		}
		k--
	}
	panic("unreachable")
}
