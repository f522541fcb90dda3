package etcd_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/etcd"
	"github.com/weftnet/weft/subnet/etcd/etcdtest"
	"github.com/weftnet/weft/subnet/subnettest"
)

// pagingKV records the Gets of a lease listing (the range under dir) and
// runs between once, after the first page of the first listing.
type pagingKV struct {
	clientv3.KV
	dir     string
	between func(ctx context.Context)

	mu    sync.Mutex
	pages []int // keys per page read under dir
	once  sync.Once
}

func (k *pagingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	r, err := k.KV.Get(ctx, key, opts...)
	if err != nil || !strings.HasPrefix(key, k.dir) {
		return r, err
	}
	k.mu.Lock()
	k.pages = append(k.pages, len(r.Kvs))
	between := k.between
	k.mu.Unlock()
	if key == k.dir && r.More && between != nil {
		k.once.Do(func() { between(ctx) })
	}
	return r, err
}

func (k *pagingKV) pagesRead() []int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.pages)
}

// pagedStore is a Manager listing pageSize keys per request on a fresh
// prefix of e, with n reservations (10.47.1.0/24 ... 10.47.n.0/24) in it,
// and kv seeing its Gets from then on: between runs after the first page
// of the next listing.
func pagedStore(t *testing.T, e *etcdtest.Etcd, pageSize, n int, between func(ctx context.Context, prefix string)) (*etcd.Manager, *pagingKV, []netip.Prefix) {
	t.Helper()
	prefix := fmt.Sprintf("/weft-test/paging-%d", prefixN.Add(1))
	cli := e.NewClient(t)
	kv := &pagingKV{KV: cli.KV, dir: prefix + "/subnets/"}
	cli.KV = kv
	m := etcd.New(cli, etcd.Options{Prefix: prefix, PageSize: pageSize, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	var sns []netip.Prefix
	for i := 1; i <= n; i++ {
		sn := netip.MustParsePrefix(fmt.Sprintf("10.47.%d.0/24", i))
		if err := m.ReserveSubnet(ctxT(t, 10*time.Second), sn, netip.MustParseAddr(fmt.Sprintf("198.18.47.%d", i))); err != nil {
			t.Fatal(err)
		}
		sns = append(sns, sn)
	}
	// Armed after the reservations, which list too.
	kv.mu.Lock()
	kv.pages = nil
	kv.between = func(ctx context.Context) { between(ctx, prefix) }
	kv.mu.Unlock()
	slices.SortFunc(sns, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return m, kv, sns
}

func subnetsOf(leases []subnet.Lease) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(leases))
	for _, l := range leases {
		out = append(out, l.Subnet)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// TestListPaginated: more leases than a page are listed in pages of at
// most the page size, every lease once; changes made between two pages
// (a lease written after the listed page, one deleted ahead of it) do not
// leak into the snapshot, which is of the first page's revision, and the
// watch from that revision delivers them: nothing lost, nothing twice.
func TestListPaginated(t *testing.T) {
	e := etcdtest.Start(t)
	ctx := ctxT(t, 30*time.Second)
	const pageSize, n = 3, 10
	added := netip.MustParsePrefix("10.47.99.0/24")    // key sorts after page 1
	deleted := netip.MustParsePrefix("10.47.8.0/24")   // read in a later page
	rewritten := netip.MustParsePrefix("10.47.1.0/24") // read in page 1
	var mu sync.Mutex
	var changedAt int64
	m, kv, sns := pagedStore(t, e, pageSize, n, func(ctx context.Context, prefix string) {
		if _, err := e.Client.Put(ctx, prefix+"/subnets/10.47.99.0-24", `{"PublicIP":"198.18.47.99"}`); err != nil {
			t.Error(err)
		}
		if _, err := e.Client.Delete(ctx, prefix+"/subnets/10.47.8.0-24"); err != nil {
			t.Error(err)
		}
		r, err := e.Client.Put(ctx, prefix+"/subnets/10.47.1.0-24", `{"PublicIP":"198.18.47.101"}`)
		if err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		changedAt = r.Header.Revision
		mu.Unlock()
	})

	out := make(chan subnet.LeaseBatch, 16)
	go m.WatchLeases(ctx, out)
	w := subnettest.NewWatchState(out)
	snap := w.Next(t, 10*time.Second)
	if !snap.Snapshot {
		t.Fatalf("first batch %+v is not a snapshot", snap)
	}
	if got := subnetsOf(snap.Leases); !slices.Equal(got, sns) {
		t.Errorf("snapshot lists %v, want exactly the %d leases of its revision %v", got, n, sns)
	}
	for _, l := range snap.Leases {
		if l.Subnet == rewritten && l.Attrs.PublicIP != netip.MustParseAddr("198.18.47.1") {
			t.Errorf("snapshot has %s's value written after its revision: %+v", rewritten, l.Attrs)
		}
	}
	pages := kv.pagesRead()
	if len(pages) != (n+pageSize-1)/pageSize {
		t.Errorf("read %d pages %v for %d leases at %d per page", len(pages), pages, n, pageSize)
	}
	for _, p := range pages {
		if p > pageSize {
			t.Errorf("a page of %d keys (pages %v), above the page size %d", p, pages, pageSize)
		}
	}
	mu.Lock()
	at := changedAt
	mu.Unlock()
	if at == 0 || snap.Revision >= at {
		t.Fatalf("snapshot revision %d, changes between pages at %d: the test changed nothing between pages", snap.Revision, at)
	}
	// The watch resumes from the snapshot's revision: the three changes
	// arrive as events.
	w.WaitFor(t, 10*time.Second, func(s map[netip.Prefix]subnet.Lease) bool {
		_, hasAdded := s[added]
		_, hasDeleted := s[deleted]
		return hasAdded && !hasDeleted && s[rewritten].Attrs.PublicIP == netip.MustParseAddr("198.18.47.101")
	})
	if got := w.SnapshotCount(); got != 1 {
		t.Errorf("%d snapshots, want 1", got)
	}

	// ListLeases pages the same way and sees the store as it is now.
	before := len(kv.pagesRead())
	leases, _, err := m.ListLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.DeleteFunc(append(slices.Clone(sns), added), func(p netip.Prefix) bool { return p == deleted })
	slices.SortFunc(want, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	if got := subnetsOf(leases); !slices.Equal(got, want) {
		t.Errorf("ListLeases = %v, want %v", got, want)
	}
	if got := len(kv.pagesRead()) - before; got != (len(want)+pageSize-1)/pageSize {
		t.Errorf("ListLeases of %d leases read %d pages at %d per page", len(want), got, pageSize)
	}
}

// TestListCompactedBetweenPages: when the revision the first page pinned
// is compacted before the last page, the listing starts over and returns
// one complete, newer snapshot, every lease once.
func TestListCompactedBetweenPages(t *testing.T) {
	e := etcdtest.Start(t)
	ctx := ctxT(t, 30*time.Second)
	added := netip.MustParsePrefix("10.47.50.0/24")
	m, kv, sns := pagedStore(t, e, 2, 5, func(ctx context.Context, prefix string) {
		r, err := e.Client.Put(ctx, prefix+"/subnets/10.47.50.0-24", `{"PublicIP":"198.18.47.50"}`)
		if err != nil {
			t.Error(err)
			return
		}
		if _, err := e.Client.Compact(ctx, r.Header.Revision); err != nil {
			t.Error(err)
		}
	})
	leases, rev, err := m.ListLeases(ctx)
	if err != nil {
		t.Fatalf("ListLeases after a compaction between pages: %v", err)
	}
	want := append(slices.Clone(sns), added)
	slices.SortFunc(want, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	if got := subnetsOf(leases); !slices.Equal(got, want) {
		t.Errorf("listed %v, want every lease once: %v", got, want)
	}
	cur, err := e.Client.Get(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	if rev != cur.Header.Revision {
		t.Errorf("snapshot revision %d, want the store's %d (the listing after the compaction)", rev, cur.Header.Revision)
	}
	if pages := kv.pagesRead(); len(pages) < 4 {
		t.Errorf("pages read %v: want the first page, the compacted one's failure aside, then a whole new listing", pages)
	}
}
