package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/etcd"
	"github.com/weftnet/weft/subnet/etcd/etcdtest"
	"github.com/weftnet/weft/subnet/subnettest"
)

var prefixN atomic.Int64

// newManager returns a Manager on a fresh prefix of e.
func newManager(t *testing.T, cli *clientv3.Client) (*etcd.Manager, string) {
	prefix := fmt.Sprintf("/weft-test/%d", prefixN.Add(1))
	return etcd.New(cli, etcd.Options{Prefix: prefix, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))}), prefix
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestManagerContract runs the lease-store suite with the default page size
// and with pages of 2 keys, so every listing of the suite is paginated too.
func TestManagerContract(t *testing.T) {
	e := etcdtest.Start(t)
	for _, pageSize := range []int{0, 2} {
		t.Run(fmt.Sprintf("page size %d", pageSize), func(t *testing.T) {
			subnettest.TestManager(t, func(t *testing.T) subnet.Manager {
				prefix := fmt.Sprintf("/weft-test/%d", prefixN.Add(1))
				return etcd.New(e.Client, etcd.Options{Prefix: prefix, PageSize: pageSize,
					Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
			})
		})
	}
}

// TestAcquireRace: 100 nodes race for a network with exactly 100 subnets,
// through several clients: every one gets a subnet, no two the same, and
// the store holds exactly those; one more node gets ErrNoFreeSubnet.
func TestAcquireRace(t *testing.T) {
	e := etcdtest.Start(t)
	cfg := subnettest.MustConfig(t, `{"Network":"10.40.0.0/16","SubnetMin":"10.40.1.0","SubnetMax":"10.40.100.0"}`)
	if cfg.Subnets() != 100 {
		t.Fatalf("config has %d subnets, want 100", cfg.Subnets())
	}
	_, prefix := newManager(t, e.Client)
	var ms []*etcd.Manager
	for range 4 {
		ms = append(ms, etcd.New(e.NewClient(t), etcd.Options{Prefix: prefix}))
	}
	const racers = 100
	ctx := ctxT(t, 60*time.Second)
	start := make(chan struct{})
	var wg sync.WaitGroup
	got := make([]*subnet.Lease, racers)
	errs := make([]error, racers)
	for i := range racers {
		wg.Go(func() {
			<-start
			attrs := subnettest.Node(40, i+1)
			got[i], errs[i] = ms[i%len(ms)].AcquireLease(ctx, subnet.AcquireRequest{Config: cfg, Attrs: attrs, TTL: time.Hour})
		})
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	t.Logf("%d acquirers took %v", racers, time.Since(t0))
	seen := make(map[netip.Prefix]int)
	for i := range racers {
		if errs[i] != nil {
			t.Fatalf("acquirer %d: %v", i, errs[i])
		}
		if j, dup := seen[got[i].Subnet]; dup {
			t.Fatalf("acquirers %d and %d both got %s", j, i, got[i].Subnet)
		}
		seen[got[i].Subnet] = i
	}
	ls, _, err := ms[0].ListLeases(ctx)
	if err != nil || len(ls) != racers {
		t.Fatalf("ListLeases = %d leases, %v; want %d", len(ls), err, racers)
	}
	for _, l := range ls {
		if i, ok := seen[l.Subnet]; !ok || l.Attrs.PublicIP != subnettest.Node(40, i+1).PublicIP {
			t.Fatalf("stored lease %s belongs to %s, not to the acquirer that got it", l.Subnet, l.Attrs.PublicIP)
		}
	}
	_, err = ms[1].AcquireLease(ctx, subnet.AcquireRequest{Config: cfg, Attrs: subnettest.Node(41, 1)})
	if !errors.Is(err, subnet.ErrNoFreeSubnet) {
		t.Fatalf("acquirer 101: %v, want ErrNoFreeSubnet", err)
	}
	t.Logf("exhaustion error: %v", err)
}

// TestRestartReuse: a node that restarts (new client, new Manager) gets its
// lease back by PublicIP, and by the previous subnet file when its lease
// was released meanwhile; a previous subnet another node holds is not taken.
func TestRestartReuse(t *testing.T) {
	e := etcdtest.Start(t)
	ctx := ctxT(t, 30*time.Second)
	cfg := subnettest.MustConfig(t, `{"Network":"10.41.0.0/16"}`)
	m1, prefix := newManager(t, e.Client)
	l1, err := m1.AcquireLease(ctx, subnet.AcquireRequest{Config: cfg, Attrs: subnettest.Node(41, 1), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	l2, err := m1.AcquireLease(ctx, subnet.AcquireRequest{Config: cfg, Attrs: subnettest.Node(41, 2), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}

	// Restart of node 1: etcd restarts too, for good measure.
	e.Restart()
	m2 := etcd.New(e.NewClient(t), etcd.Options{Prefix: prefix})
	again, err := m2.AcquireLease(ctx, subnet.AcquireRequest{Config: cfg, Attrs: subnettest.Node(41, 1), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if again.Subnet != l1.Subnet {
		t.Fatalf("after restart node 1 got %s, want %s", again.Subnet, l1.Subnet)
	}
	// The old etcd lease was replaced, not leaked next to the new one.
	if again.LeaseID == l1.LeaseID {
		t.Fatal("reuse kept the old etcd lease")
	}

	// Lease gone (e.g. expired while the node was down): the subnet file
	// brings it back.
	if err := m2.ReleaseLease(ctx, l1.Subnet); err != nil {
		t.Fatal(err)
	}
	prev, err := m2.AcquireLease(ctx, subnet.AcquireRequest{Config: cfg, Attrs: subnettest.Node(41, 1), Previous: l1.Subnet})
	if err != nil {
		t.Fatal(err)
	}
	if prev.Subnet != l1.Subnet {
		t.Fatalf("with Previous=%s node got %s", l1.Subnet, prev.Subnet)
	}

	// Node 3 remembers node 2's subnet: it must get another one.
	l3, err := m2.AcquireLease(ctx, subnet.AcquireRequest{Config: cfg, Attrs: subnettest.Node(41, 3), Previous: l2.Subnet})
	if err != nil {
		t.Fatal(err)
	}
	if l3.Subnet == l2.Subnet {
		t.Fatalf("node 3 took %s from node 2", l2.Subnet)
	}
	resp, err := e.Client.Get(ctx, m2.Key(l2.Subnet, netip.Prefix{}))
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].ModRevision != l2.Revision {
		t.Fatalf("node 2's key was touched: %v %v", resp, err)
	}
}

// TestRenewCASForeignWriter: a lease overwritten by another writer (say a
// Flannel node that got the same subnet) is lost for its old holder: renew
// fails with ErrLeaseLost and leaves the foreign value alone.
func TestRenewCASForeignWriter(t *testing.T) {
	e := etcdtest.Start(t)
	ctx := ctxT(t, 30*time.Second)
	cfg := subnettest.MustConfig(t, `{"Network":"10.42.0.0/16"}`)
	m, _ := newManager(t, e.Client)
	l, err := m.AcquireLease(ctx, subnet.AcquireRequest{Config: cfg, Attrs: subnettest.Node(42, 1), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.RenewLease(ctx, l, time.Hour); err != nil {
		t.Fatal(err)
	}
	key := m.Key(l.Subnet, netip.Prefix{})
	foreign := `{"PublicIP":"198.18.42.99","BackendType":"vxlan"}`
	if _, err := e.Client.Put(ctx, key, foreign); err != nil {
		t.Fatal(err)
	}
	if err := m.RenewLease(ctx, l, time.Hour); !errors.Is(err, subnet.ErrLeaseLost) {
		t.Fatalf("RenewLease after a foreign write = %v, want ErrLeaseLost", err)
	}
	resp, err := e.Client.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != foreign {
		t.Fatalf("foreign lease overwritten: %v %v", resp.Kvs, err)
	}
}

// TestWatchCompaction: the watcher lags (does not read) while leases change
// and the store is compacted past its revision; it must re-list and deliver
// a snapshot with the current set.
func TestWatchCompaction(t *testing.T) {
	e := etcdtest.Start(t)
	ctx := ctxT(t, 30*time.Second)
	cfg := subnettest.MustConfig(t, `{"Network":"10.43.0.0/16"}`)
	cli := e.NewClient(t)
	kv := &countingKV{KV: cli.KV}
	cli.KV = kv
	m, _ := newManager(t, cli)
	l1, err := m.AcquireLease(ctx, subnet.AcquireRequest{Config: cfg, Attrs: subnettest.Node(43, 1)})
	if err != nil {
		t.Fatal(err)
	}
	listed := kv.gets.Load()
	out := make(chan subnet.LeaseBatch)
	go m.WatchLeases(ctx, out)
	w := subnettest.NewWatchState(out)
	// Once the watcher has listed, it holds its first snapshot, blocked on
	// the unbuffered channel: it has not started its etcd watch yet.
	for deadline := time.Now().Add(10 * time.Second); kv.gets.Load() == listed; {
		if time.Now().After(deadline) {
			t.Fatal("watcher never listed")
		}
		time.Sleep(time.Millisecond)
	}
	var later []netip.Prefix
	for i := 2; i <= 4; i++ {
		l, err := m.AcquireLease(ctx, subnet.AcquireRequest{Config: cfg, Attrs: subnettest.Node(43, i)})
		if err != nil {
			t.Fatal(err)
		}
		later = append(later, l.Subnet)
	}
	if err := m.ReleaseLease(ctx, l1.Subnet); err != nil {
		t.Fatal(err)
	}
	cur, err := e.Client.Get(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.Compact(ctx, cur.Header.Revision); err != nil {
		t.Fatal(err)
	}
	first := w.Next(t, 10*time.Second)
	if !first.Snapshot || len(first.Leases) != 1 {
		t.Fatalf("first batch = %+v, want the 1-lease snapshot", first)
	}
	w.WaitFor(t, 10*time.Second, func(s map[netip.Prefix]subnet.Lease) bool {
		if len(s) != len(later) {
			return false
		}
		for _, sn := range later {
			if _, ok := s[sn]; !ok {
				return false
			}
		}
		return true
	})
	if w.SnapshotCount() != 2 {
		t.Fatalf("%d snapshots, want 2 (the first and the re-list)", w.SnapshotCount())
	}
	if m.Relists() < 1 {
		t.Fatal("Relists not counted")
	}
}

// TestWatchSurvivesEtcdRestart: stop etcd, start it again on the same data
// dir and port; the watch delivers changes made afterwards.
func TestWatchSurvivesEtcdRestart(t *testing.T) {
	e := etcdtest.Start(t)
	ctx := ctxT(t, 60*time.Second)
	cfg := subnettest.MustConfig(t, `{"Network":"10.44.0.0/16"}`)
	cli, err := etcd.Dial(ctx, etcd.ClientConfig{Endpoints: e.Endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	m, prefix := newManager(t, cli)
	l1, err := m.AcquireLease(ctx, subnet.AcquireRequest{Config: cfg, Attrs: subnettest.Node(44, 1)})
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan subnet.LeaseBatch, 16)
	go m.WatchLeases(ctx, out)
	w := subnettest.NewWatchState(out)
	w.WaitFor(t, 10*time.Second, func(s map[netip.Prefix]subnet.Lease) bool { return len(s) == 1 })

	e.Stop()
	e.Restart()
	other := etcd.New(e.NewClient(t), etcd.Options{Prefix: prefix})
	l2, err := other.AcquireLease(ctx, subnet.AcquireRequest{Config: cfg, Attrs: subnettest.Node(44, 2)})
	if err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 30*time.Second, func(s map[netip.Prefix]subnet.Lease) bool {
		_, a := s[l1.Subnet]
		_, b := s[l2.Subnet]
		return a && b
	})
}

// TestTTLExpiry: a lease that is not renewed disappears after its TTL and
// the watch reports the removal; renewing it then is ErrLeaseLost.
func TestTTLExpiry(t *testing.T) {
	e := etcdtest.Start(t)
	ctx := ctxT(t, 30*time.Second)
	cfg := subnettest.MustConfig(t, `{"Network":"10.45.0.0/16"}`)
	m, _ := newManager(t, e.Client)
	keep, err := m.AcquireLease(ctx, subnet.AcquireRequest{Config: cfg, Attrs: subnettest.Node(45, 1), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan subnet.LeaseBatch, 16)
	go m.WatchLeases(ctx, out)
	w := subnettest.NewWatchState(out)
	t0 := time.Now()
	short, err := m.AcquireLease(ctx, subnet.AcquireRequest{Config: cfg, Attrs: subnettest.Node(45, 2), TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 10*time.Second, func(s map[netip.Prefix]subnet.Lease) bool { _, ok := s[short.Subnet]; return ok })
	w.WaitFor(t, 15*time.Second, func(s map[netip.Prefix]subnet.Lease) bool {
		_, gone := s[short.Subnet]
		_, kept := s[keep.Subnet]
		return !gone && kept
	})
	if d := time.Since(t0); d < time.Second {
		t.Fatalf("lease with a 2s TTL gone after %v", d)
	}
	if err := m.RenewLease(ctx, short, time.Hour); !errors.Is(err, subnet.ErrLeaseLost) {
		t.Fatalf("renew expired lease = %v, want ErrLeaseLost", err)
	}
	ls, _, err := m.ListLeases(ctx)
	if err != nil || len(ls) != 1 || ls[0].Subnet != keep.Subnet {
		t.Fatalf("ListLeases = %+v, %v", ls, err)
	}
	if left := time.Until(ls[0].Expiration); left < 50*time.Minute || left > time.Hour+time.Minute {
		t.Fatalf("listed expiry in %v, want about 1h", left)
	}
}

// TestMalformedSkipped: garbage under the subnets prefix is skipped and
// counted; it never breaks listing or the watch.
func TestMalformedSkipped(t *testing.T) {
	e := etcdtest.Start(t)
	ctx := ctxT(t, 30*time.Second)
	cfg := subnettest.MustConfig(t, `{"Network":"10.46.0.0/16"}`)
	m, prefix := newManager(t, e.Client)
	if _, err := e.Client.Put(ctx, prefix+"/subnets/10.46.9.0-24", `{"PublicIP":"not an ip"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.Put(ctx, prefix+"/subnets/garbage", `{}`); err != nil {
		t.Fatal(err)
	}
	out := make(chan subnet.LeaseBatch, 16)
	go m.WatchLeases(ctx, out)
	w := subnettest.NewWatchState(out)
	b := w.Next(t, 10*time.Second)
	if !b.Snapshot || len(b.Leases) != 0 {
		t.Fatalf("snapshot = %+v, want empty", b)
	}
	// A valid lease that turns malformed is reported removed.
	l, err := m.AcquireLease(ctx, subnet.AcquireRequest{Config: cfg, Attrs: subnettest.Node(46, 1)})
	if err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 10*time.Second, func(s map[netip.Prefix]subnet.Lease) bool { return len(s) == 1 })
	if _, err := e.Client.Put(ctx, m.Key(l.Subnet, netip.Prefix{}), `{"BackendType":"vxlan"}`); err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 10*time.Second, func(s map[netip.Prefix]subnet.Lease) bool { return len(s) == 0 })
	// And the watch still works.
	l2, err := m.AcquireLease(ctx, subnet.AcquireRequest{Config: cfg, Attrs: subnettest.Node(46, 2)})
	if err != nil {
		t.Fatal(err)
	}
	w.WaitFor(t, 10*time.Second, func(s map[netip.Prefix]subnet.Lease) bool { _, ok := s[l2.Subnet]; return ok })
	if m.Malformed() < 3 {
		t.Fatalf("Malformed = %d, want at least 3", m.Malformed())
	}
	if w.SnapshotCount() != 1 {
		t.Fatalf("malformed values caused %d snapshots, want 1", w.SnapshotCount())
	}
}

// TestSessionOnEtcd: a Session keeps a short lease alive well past its TTL
// on a real etcd, and Done closes once another writer takes the key.
func TestSessionOnEtcd(t *testing.T) {
	e := etcdtest.Start(t)
	ctx := ctxT(t, 30*time.Second)
	cfg := subnettest.MustConfig(t, `{"Network":"10.47.0.0/16"}`)
	m, _ := newManager(t, e.Client)
	const ttl = 3 * time.Second
	l, err := m.AcquireLease(ctx, subnet.AcquireRequest{Config: cfg, Attrs: subnettest.Node(47, 1), TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	s := subnet.NewSession(m, l, ttl, subnet.SessionOptions{})
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	deadline := time.Now().Add(2 * ttl)
	for time.Now().Before(deadline) {
		ls, _, err := m.ListLeases(ctx)
		if err != nil || len(ls) != 1 {
			t.Fatalf("lease gone while the session runs: %v %v", ls, err)
		}
		select {
		case <-s.Done():
			t.Fatalf("Done closed: %v", s.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	if _, err := e.Client.Put(ctx, m.Key(l.Subnet, netip.Prefix{}), `{"PublicIP":"198.18.47.99"}`); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed after the lease was taken over")
	}
	if err := <-errc; !errors.Is(err, subnet.ErrLeaseLost) {
		t.Fatalf("Run = %v", err)
	}
}

// countingKV counts completed Gets, so a test knows a list has happened.
type countingKV struct {
	clientv3.KV
	gets atomic.Int64
}

func (k *countingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	r, err := k.KV.Get(ctx, key, opts...)
	k.gets.Add(1)
	return r, err
}
