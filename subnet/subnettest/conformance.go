package subnettest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/subnet"
)

// TestManager runs the subnet.Manager contract against fresh stores made by
// newManager (each must start with no config and no leases). Every
// implementation runs it, so the fake and the etcd store behave alike.
func TestManager(t *testing.T, newManager func(t *testing.T) subnet.Manager) {
	TestStore(t, Suite{New: func(t *testing.T) Store {
		m := newManager(t)
		return Store{Manager: func(*testing.T, subnet.LeaseAttrs) subnet.Manager { return m }}
	}})
}

// Store is a lease store under test together with the operator's hand on
// it, for stores where a Manager cannot simply act for any node.
type Store struct {
	// Manager returns the store as the node with attrs' PublicIP uses it;
	// zero attrs ask for an observer's view (list and watch only). Stores
	// where any client acts for any node (etcd, the fake) return one
	// Manager for all; the Kubernetes store registers a Node per node.
	Manager func(t *testing.T, attrs subnet.LeaseAttrs) subnet.Manager
	// UseNetwork prepares the store to give out subnets of cfg (the
	// Kubernetes store runs the controller manager with cfg's Network as
	// its cluster CIDR). Nil: the store carves subnets from the request's
	// Config itself.
	UseNetwork func(t *testing.T, cfg *subnet.Config)
	// WriteConfig stores raw as the network config the way the store's
	// operator does (a file, a ConfigMap); nil: SetNetworkConfig.
	WriteConfig func(t *testing.T, raw []byte)
	// Evict takes sn away from its holder the way an operator does (the
	// Kubernetes store deletes the Node); nil: ReleaseLease.
	Evict func(t *testing.T, sn netip.Prefix)

	assigned bool // set by TestStore from Suite.Assigned
}

// Suite says how to run the contract against a store.
type Suite struct {
	// New makes a fresh store: no config, no leases.
	New func(t *testing.T) Store
	// Assigned marks a store that does not choose subnets: something else
	// gives each node its subnet (Kubernetes: kube-controller-manager sets
	// the Node's podCIDR), and a lease lasts as long as the node (no TTL:
	// it is Reserved). The contract's parts about choosing and freeing
	// subnets — Previous, reservations, exhaustion, moving to a new
	// network, release and retake, refusing a stale revision — do not
	// apply; instead ReserveSubnet, ReleaseLease and SetNetworkConfig must
	// fail with errors.ErrUnsupported and change nothing. Its Store needs
	// UseNetwork, WriteConfig and Evict.
	Assigned bool
}

type subtest struct {
	name string
	fn   func(t *testing.T, s Store)
}

// TestStore runs the subnet.Manager contract against the stores of s.
func TestStore(t *testing.T, s Suite) {
	tests := []subtest{
		{"Config", testConfig},
		{"AcquireDistinctAndReuse", testAcquireDistinctAndReuse},
		{"RenewAfterEvict", testRenewAfterEvict},
		{"Watch", testWatch},
	}
	if s.Assigned {
		t.Log("subnets are assigned to nodes from outside this store: the contract's parts about choosing and freeing them do not apply")
		tests = append(tests, subtest{"Unsupported", testUnsupported})
	} else {
		for _, c := range []struct {
			name string
			fn   func(t *testing.T, m subnet.Manager)
		}{
			{"Previous", testPrevious},
			{"Reservation", testReservation},
			{"Exhaustion", testExhaustion},
			{"RenewCAS", testRenewCAS},
			{"CreateRevision", testCreateRevision},
			{"Release", testRelease},
			{"ConfigChangeDropsOwnLease", testConfigChange},
		} {
			// A store that chooses subnets lets any client act for any
			// node: one Manager does it all.
			tests = append(tests, subtest{c.name, func(t *testing.T, s Store) { c.fn(t, s.observer(t)) }})
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := s.New(t)
			st.assigned = s.Assigned
			tc.fn(t, st)
		})
	}
}

// node is the store as node attrs uses it, prepared for cfg's network.
func (s Store) node(t *testing.T, cfg *subnet.Config, attrs subnet.LeaseAttrs) subnet.Manager {
	t.Helper()
	if s.UseNetwork != nil && cfg != nil {
		s.UseNetwork(t, cfg)
	}
	return s.Manager(t, attrs)
}

// observer is the store as an operator listing and watching sees it.
func (s Store) observer(t *testing.T) subnet.Manager { return s.Manager(t, subnet.LeaseAttrs{}) }

func (s Store) writeConfig(t *testing.T, raw []byte) error {
	if s.WriteConfig != nil {
		s.WriteConfig(t, raw)
		return nil
	}
	return s.observer(t).SetNetworkConfig(testCtx(t), raw)
}

func (s Store) evict(t *testing.T, sn netip.Prefix) {
	t.Helper()
	if s.Evict != nil {
		s.Evict(t, sn)
		return
	}
	if err := s.observer(t).ReleaseLease(testCtx(t), sn); err != nil {
		t.Fatal(err)
	}
}

// MustConfig parses a config JSON or fails the test.
func MustConfig(t testing.TB, js string) *subnet.Config {
	t.Helper()
	c, err := subnet.ParseConfig([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Node returns lease attributes of a vxlan node with public IP 198.18.<base>.<n>.
func Node(base, n int) subnet.LeaseAttrs {
	return subnet.LeaseAttrs{
		PublicIP:    netip.AddrFrom4([4]byte{198, 18, byte(base), byte(n)}),
		BackendType: subnet.BackendVXLAN,
		BackendData: []byte(fmt.Sprintf(`{"VNI":1,"VtepMAC":"02:00:00:00:%02x:%02x"}`, base, n)),
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func acquire(t *testing.T, m subnet.Manager, req subnet.AcquireRequest) *subnet.Lease {
	t.Helper()
	l, err := m.AcquireLease(testCtx(t), req)
	if err != nil {
		t.Fatalf("AcquireLease(%s): %v", req.Attrs.PublicIP, err)
	}
	return l
}

func listMap(t *testing.T, m subnet.Manager) map[netip.Prefix]subnet.Lease {
	t.Helper()
	ls, _, err := m.ListLeases(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[netip.Prefix]subnet.Lease)
	for _, l := range ls {
		out[l.Subnet] = l
	}
	return out
}

func testConfig(t *testing.T, s Store) {
	ctx := testCtx(t)
	m := s.observer(t)
	if _, err := m.GetNetworkConfig(ctx); !errors.Is(err, subnet.ErrNoConfig) {
		t.Fatalf("GetNetworkConfig on empty store = %v, want ErrNoConfig", err)
	}
	bad := []byte(`{"Network":"10.9.0.0/16","SubnetLen":31}`)
	var ce *subnet.ConfigError
	if s.WriteConfig == nil {
		if err := m.SetNetworkConfig(ctx, bad); !errors.As(err, &ce) || ce.Key != "SubnetLen" {
			t.Fatalf("SetNetworkConfig(bad) = %v, want a *ConfigError for SubnetLen", err)
		}
		if _, err := m.GetNetworkConfig(ctx); !errors.Is(err, subnet.ErrNoConfig) {
			t.Fatalf("a rejected config was stored: %v", err)
		}
	} else {
		// The operator's write is outside the store: reading validates.
		s.WriteConfig(t, bad)
		if _, err := m.GetNetworkConfig(ctx); !errors.As(err, &ce) || ce.Key != "SubnetLen" {
			t.Fatalf("GetNetworkConfig of a bad config = %v, want a *ConfigError for SubnetLen", err)
		}
	}
	raw := `{"Network":"10.9.0.0/16","Backend":{"Type":"host-gw"}}`
	if err := s.writeConfig(t, []byte(raw)); err != nil {
		t.Fatal(err)
	}
	c, err := m.GetNetworkConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.Network.String() != "10.9.0.0/16" || c.BackendType != subnet.BackendHostGW || string(c.Raw) != raw {
		t.Fatalf("GetNetworkConfig = %+v", c)
	}
}

// fits reports whether l is a subnet of cfg the store may give: a candidate
// of cfg, or for an Assigned store any subnet of cfg's length inside its
// Network (kube-controller-manager hands out the network's first subnet
// too).
func (s Store) fits(cfg *subnet.Config, l *subnet.Lease) bool {
	if s.assigned {
		return l.Subnet.IsValid() && cfg.Network.Contains(l.Subnet.Addr()) && l.Subnet.Bits() == cfg.SubnetLen
	}
	return cfg.Contains(l.Subnet, l.IPv6Subnet)
}

func testAcquireDistinctAndReuse(t *testing.T, s Store) {
	cfg := MustConfig(t, `{"Network":"10.10.0.0/16"}`)
	seen := make(map[netip.Prefix]bool)
	var first *subnet.Lease
	for i := 1; i <= 10; i++ {
		l := acquire(t, s.node(t, cfg, Node(10, i)), subnet.AcquireRequest{Config: cfg, Attrs: Node(10, i), TTL: time.Hour})
		if !s.fits(cfg, l) || seen[l.Subnet] {
			t.Fatalf("node %d got %s: outside the config or duplicate", i, l.Subnet)
		}
		if l.CreateRevision <= 0 {
			t.Fatalf("node %d lease %+v has no CreateRevision", i, l)
		}
		if s.assigned && (!l.Reserved() || l.Revision == 0 || !l.Expiration.IsZero()) {
			t.Fatalf("node %d lease %+v: want a lease with no TTL (it lasts as long as the node) and a revision", i, l)
		}
		if !s.assigned && (l.Reserved() || l.Revision == 0 || l.Expiration.IsZero()) {
			t.Fatalf("node %d lease %+v: want a TTL lease with a revision", i, l)
		}
		seen[l.Subnet] = true
		if i == 1 {
			first = l
		}
	}
	// A restart of node 1 with new backend data gets the same subnet back.
	attrs := Node(10, 1)
	attrs.BackendData = []byte(`{"VNI":1,"VtepMAC":"02:00:00:00:ff:ff"}`)
	again := acquire(t, s.node(t, cfg, attrs), subnet.AcquireRequest{Config: cfg, Attrs: attrs, TTL: time.Hour})
	if again.Subnet != first.Subnet {
		t.Fatalf("restart got %s, want its old %s", again.Subnet, first.Subnet)
	}
	got := listMap(t, s.observer(t))
	if len(got) != 10 {
		t.Fatalf("%d leases listed, want 10", len(got))
	}
	if string(got[first.Subnet].Attrs.BackendData) != string(attrs.BackendData) {
		t.Fatalf("reused lease data = %s, want the new %s", got[first.Subnet].Attrs.BackendData, attrs.BackendData)
	}
}

func testPrevious(t *testing.T, m subnet.Manager) {
	cfg := MustConfig(t, `{"Network":"10.11.0.0/16"}`)
	prev := netip.MustParsePrefix("10.11.77.0/24")
	l := acquire(t, m, subnet.AcquireRequest{Config: cfg, Attrs: Node(11, 1), Previous: prev})
	if l.Subnet != prev {
		t.Fatalf("got %s, want the free previous subnet %s", l.Subnet, prev)
	}
	// Node 2 remembers the same subnet (say, a copied disk): it must not
	// take node 1's lease.
	l2 := acquire(t, m, subnet.AcquireRequest{Config: cfg, Attrs: Node(11, 2), Previous: prev})
	if l2.Subnet == prev {
		t.Fatalf("node 2 took %s, held by node 1", prev)
	}
	if got := listMap(t, m)[prev]; got.Attrs.PublicIP != Node(11, 1).PublicIP {
		t.Fatalf("lease %s now belongs to %s", prev, got.Attrs.PublicIP)
	}
	// A previous subnet outside SubnetMin..SubnetMax is ignored.
	l3 := acquire(t, m, subnet.AcquireRequest{Config: cfg, Attrs: Node(11, 3), Previous: netip.MustParsePrefix("10.11.0.0/24")})
	if l3.Subnet.Addr() == netip.MustParseAddr("10.11.0.0") {
		t.Fatalf("node 3 got the network's first subnet %s", l3.Subnet)
	}
}

func testReservation(t *testing.T, m subnet.Manager) {
	ctx := testCtx(t)
	// Exactly two candidates: 10.12.0.64/26 and 10.12.0.128/26.
	cfg := MustConfig(t, `{"Network":"10.12.0.0/24","SubnetLen":26,"SubnetMax":"10.12.0.128"}`)
	res := netip.MustParsePrefix("10.12.0.64/26")
	owner := Node(12, 9)
	if err := m.ReserveSubnet(ctx, res, owner.PublicIP); err != nil {
		t.Fatal(err)
	}
	l1 := acquire(t, m, subnet.AcquireRequest{Config: cfg, Attrs: Node(12, 1), Previous: res})
	if l1.Subnet == res {
		t.Fatalf("node 1 was given the reserved %s", res)
	}
	if _, err := m.AcquireLease(ctx, subnet.AcquireRequest{Config: cfg, Attrs: Node(12, 2)}); !errors.Is(err, subnet.ErrNoFreeSubnet) {
		t.Fatalf("node 2 with only the reservation left: err = %v, want ErrNoFreeSubnet", err)
	}
	got := listMap(t, m)[res]
	if !got.Reserved() || got.Attrs.PublicIP != owner.PublicIP {
		t.Fatalf("reservation listed as %+v", got)
	}
	// The owner gets its reservation, with its backend data, still reserved.
	lo := acquire(t, m, subnet.AcquireRequest{Config: cfg, Attrs: owner, TTL: time.Hour})
	if lo.Subnet != res || !lo.Reserved() {
		t.Fatalf("owner got %+v, want reservation %s", lo, res)
	}
	got = listMap(t, m)[res]
	if !got.Reserved() || string(got.Attrs.BackendData) != string(owner.BackendData) {
		t.Fatalf("after the owner acquired it, reservation is %+v", got)
	}
	// Renewing a reservation keeps it.
	if err := m.RenewLease(ctx, lo, time.Hour); err != nil || !lo.Reserved() {
		t.Fatalf("RenewLease(reservation) = %v, lease %+v", err, lo)
	}
	// Reserving a subnet someone else holds fails.
	if err := m.ReserveSubnet(ctx, l1.Subnet, owner.PublicIP); !errors.Is(err, subnet.ErrSubnetTaken) {
		t.Fatalf("ReserveSubnet(%s held by node 1) = %v, want ErrSubnetTaken", l1.Subnet, err)
	}
	// The holder can turn its lease into a reservation.
	if err := m.ReserveSubnet(ctx, l1.Subnet, Node(12, 1).PublicIP); err != nil {
		t.Fatal(err)
	}
	if got := listMap(t, m)[l1.Subnet]; !got.Reserved() || got.Attrs.BackendType != subnet.BackendVXLAN {
		t.Fatalf("node 1's lease turned reservation = %+v, want reserved with its attributes", got)
	}
}

func testExhaustion(t *testing.T, m subnet.Manager) {
	// Two candidates: 10.13.0.64/26 and 10.13.0.128/26.
	cfg := MustConfig(t, `{"Network":"10.13.0.0/24","SubnetLen":26,"SubnetMax":"10.13.0.128"}`)
	acquire(t, m, subnet.AcquireRequest{Config: cfg, Attrs: Node(13, 1)})
	acquire(t, m, subnet.AcquireRequest{Config: cfg, Attrs: Node(13, 2)})
	_, err := m.AcquireLease(testCtx(t), subnet.AcquireRequest{Config: cfg, Attrs: Node(13, 3)})
	if !errors.Is(err, subnet.ErrNoFreeSubnet) {
		t.Fatalf("third node: err = %v, want ErrNoFreeSubnet", err)
	}
	want := "network 10.13.0.0/24 has no free /26 between SubnetMin 10.13.0.64 and SubnetMax 10.13.0.128"
	if msg := err.Error(); !strings.Contains(msg, want) || !strings.Contains(msg, "widen Network") {
		t.Fatalf("error %q does not say what is full and what to change", msg)
	}
}

func testRenewCAS(t *testing.T, m subnet.Manager) {
	ctx := testCtx(t)
	cfg := MustConfig(t, `{"Network":"10.14.0.0/16"}`)
	l := acquire(t, m, subnet.AcquireRequest{Config: cfg, Attrs: Node(14, 1), TTL: time.Hour})
	stale := *l
	if err := m.RenewLease(ctx, l, 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	if l.Revision == stale.Revision {
		t.Fatalf("renewal did not update Revision (%d)", l.Revision)
	}
	if l.Expiration.Sub(stale.Expiration) < 30*time.Minute {
		t.Fatalf("renewal by 2h moved expiry from %v to %v", stale.Expiration, l.Expiration)
	}
	// A stale copy is refused: the key was rewritten since it was read.
	if err := m.RenewLease(ctx, &stale, time.Hour); !errors.Is(err, subnet.ErrLeaseLost) {
		t.Fatalf("renew with a stale revision = %v, want ErrLeaseLost", err)
	}
	// Another node takes the subnet after an operator released it: the old
	// holder's renewal must fail and must not overwrite it.
	if err := m.ReleaseLease(ctx, l.Subnet); err != nil {
		t.Fatal(err)
	}
	other := acquire(t, m, subnet.AcquireRequest{Config: cfg, Attrs: Node(14, 2), Previous: l.Subnet, TTL: time.Hour})
	if other.Subnet != l.Subnet {
		t.Fatalf("node 2 got %s, want the released %s", other.Subnet, l.Subnet)
	}
	before := *l
	if err := m.RenewLease(ctx, l, time.Hour); !errors.Is(err, subnet.ErrLeaseLost) {
		t.Fatalf("renew of a lease now held by node 2 = %v, want ErrLeaseLost", err)
	}
	if l.Revision != before.Revision {
		t.Fatalf("a failed renewal changed the caller's lease")
	}
	if got := listMap(t, m)[l.Subnet]; got.Attrs.PublicIP != Node(14, 2).PublicIP {
		t.Fatalf("lease %s now shows %s, want node 2", l.Subnet, got.Attrs.PublicIP)
	}
	// Renewing a lease whose key is gone is lost, too.
	if err := m.ReleaseLease(ctx, other.Subnet); err != nil {
		t.Fatal(err)
	}
	if err := m.RenewLease(ctx, other, time.Hour); !errors.Is(err, subnet.ErrLeaseLost) {
		t.Fatalf("renew of a released lease = %v, want ErrLeaseLost", err)
	}
}

// testCreateRevision: a key's creation revision orders leases by age. It
// survives renewals and rewrites of the same key, and a key created again
// after a release is younger than every other.
func testCreateRevision(t *testing.T, m subnet.Manager) {
	ctx := testCtx(t)
	cfg := MustConfig(t, `{"Network":"10.19.0.0/16"}`)
	l1 := acquire(t, m, subnet.AcquireRequest{Config: cfg, Attrs: Node(19, 1), TTL: time.Hour})
	l2 := acquire(t, m, subnet.AcquireRequest{Config: cfg, Attrs: Node(19, 2), TTL: time.Hour})
	if l1.CreateRevision <= 0 || l2.CreateRevision <= l1.CreateRevision {
		t.Fatalf("CreateRevision of the first lease %d, of the second %d: want 0 < first < second", l1.CreateRevision, l2.CreateRevision)
	}
	created := l1.CreateRevision
	if err := m.RenewLease(ctx, l1, time.Hour); err != nil {
		t.Fatal(err)
	}
	attrs := Node(19, 1)
	attrs.BackendData = []byte(`{"VNI":1,"VtepMAC":"02:00:00:00:13:ff"}`)
	again := acquire(t, m, subnet.AcquireRequest{Config: cfg, Attrs: attrs, TTL: time.Hour})
	got := listMap(t, m)
	if l1.CreateRevision != created || again.CreateRevision != created || got[l1.Subnet].CreateRevision != created {
		t.Fatalf("after a renewal and a rewrite CreateRevision is %d (renewed), %d (re-acquired), %d (listed); want %d",
			l1.CreateRevision, again.CreateRevision, got[l1.Subnet].CreateRevision, created)
	}
	if got[l2.Subnet].CreateRevision != l2.CreateRevision {
		t.Fatalf("listed CreateRevision %d, acquired %d", got[l2.Subnet].CreateRevision, l2.CreateRevision)
	}
	if err := m.ReleaseLease(ctx, l1.Subnet); err != nil {
		t.Fatal(err)
	}
	l3 := acquire(t, m, subnet.AcquireRequest{Config: cfg, Attrs: Node(19, 3), Previous: l1.Subnet, TTL: time.Hour})
	if l3.Subnet != l1.Subnet || l3.CreateRevision <= l2.CreateRevision {
		t.Fatalf("re-created %s has CreateRevision %d, want it on %s and above %d", l3.Subnet, l3.CreateRevision, l1.Subnet, l2.CreateRevision)
	}
	// The watch reports it too.
	wctx, cancel := context.WithCancel(ctx)
	ch := make(chan subnet.LeaseBatch, 16)
	done := make(chan struct{})
	go func() { defer close(done); _ = m.WatchLeases(wctx, ch) }()
	defer func() { cancel(); <-done }()
	w := NewWatchState(ch)
	w.WaitFor(t, 10*time.Second, func(s map[netip.Prefix]subnet.Lease) bool {
		return s[l3.Subnet].CreateRevision == l3.CreateRevision && s[l2.Subnet].CreateRevision == l2.CreateRevision
	})
	l4 := acquire(t, m, subnet.AcquireRequest{Config: cfg, Attrs: Node(19, 4), TTL: time.Hour})
	w.WaitFor(t, 10*time.Second, func(s map[netip.Prefix]subnet.Lease) bool {
		return s[l4.Subnet].CreateRevision == l4.CreateRevision && l4.CreateRevision > l3.CreateRevision
	})
}

func testRenewAfterEvict(t *testing.T, s Store) {
	ctx := testCtx(t)
	cfg := MustConfig(t, `{"Network":"10.14.0.0/16"}`)
	m := s.node(t, cfg, Node(14, 1))
	l := acquire(t, m, subnet.AcquireRequest{Config: cfg, Attrs: Node(14, 1), TTL: time.Hour})
	if err := m.RenewLease(ctx, l, time.Hour); err != nil {
		t.Fatalf("renew of a held lease: %v", err)
	}
	s.evict(t, l.Subnet)
	before := *l
	if err := m.RenewLease(ctx, l, time.Hour); !errors.Is(err, subnet.ErrLeaseLost) {
		t.Fatalf("renew of an evicted lease = %v, want ErrLeaseLost", err)
	}
	if l.Revision != before.Revision || l.Subnet != before.Subnet {
		t.Fatalf("a failed renewal changed the caller's lease: %+v, was %+v", l, before)
	}
	if _, ok := listMap(t, s.observer(t))[l.Subnet]; ok {
		t.Fatalf("%s still listed after it was evicted", l.Subnet)
	}
}

func testUnsupported(t *testing.T, s Store) {
	ctx := testCtx(t)
	raw := `{"Network":"10.19.0.0/16"}`
	cfg := MustConfig(t, raw)
	s.WriteConfig(t, []byte(raw))
	m := s.node(t, cfg, Node(19, 1))
	l := acquire(t, m, subnet.AcquireRequest{Config: cfg, Attrs: Node(19, 1)})
	if err := m.ReserveSubnet(ctx, netip.MustParsePrefix("10.19.200.0/24"), Node(19, 9).PublicIP); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("ReserveSubnet = %v, want errors.ErrUnsupported", err)
	}
	if err := m.ReleaseLease(ctx, l.Subnet); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("ReleaseLease = %v, want errors.ErrUnsupported", err)
	}
	if err := m.SetNetworkConfig(ctx, []byte(`{"Network":"10.20.0.0/16"}`)); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("SetNetworkConfig = %v, want errors.ErrUnsupported", err)
	}
	got := listMap(t, s.observer(t))
	if len(got) != 1 || got[l.Subnet].Attrs.PublicIP != Node(19, 1).PublicIP {
		t.Fatalf("after the refused calls the leases are %v, want only %s", got, l.Subnet)
	}
	if c, err := m.GetNetworkConfig(ctx); err != nil || c.Network != cfg.Network {
		t.Fatalf("after the refused SetNetworkConfig the config is %+v, %v", c, err)
	}
	for _, l := range got {
		if !l.Reserved() {
			t.Fatalf("lease %+v has a TTL; an assigned subnet lasts as long as its node", l)
		}
	}
}

func testRelease(t *testing.T, m subnet.Manager) {
	ctx := testCtx(t)
	cfg := MustConfig(t, `{"Network":"10.15.0.0/16"}`)
	l := acquire(t, m, subnet.AcquireRequest{Config: cfg, Attrs: Node(15, 1)})
	if err := m.ReleaseLease(ctx, l.Subnet); err != nil {
		t.Fatal(err)
	}
	if _, ok := listMap(t, m)[l.Subnet]; ok {
		t.Fatalf("%s still listed after release", l.Subnet)
	}
	if err := m.ReleaseLease(ctx, netip.MustParsePrefix("10.15.200.0/24")); err != nil {
		t.Fatalf("releasing a free subnet: %v", err)
	}
}

func testConfigChange(t *testing.T, m subnet.Manager) {
	old := MustConfig(t, `{"Network":"10.16.0.0/16"}`)
	l := acquire(t, m, subnet.AcquireRequest{Config: old, Attrs: Node(16, 1)})
	cfg := MustConfig(t, `{"Network":"10.17.0.0/16"}`)
	l2 := acquire(t, m, subnet.AcquireRequest{Config: cfg, Attrs: Node(16, 1)})
	if !cfg.Contains(l2.Subnet, l2.IPv6Subnet) {
		t.Fatalf("after the network moved, node got %s", l2.Subnet)
	}
	if _, ok := listMap(t, m)[l.Subnet]; ok {
		t.Fatalf("the node's lease %s from the old network was left behind", l.Subnet)
	}
}

func testWatch(t *testing.T, s Store) {
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	cfg := MustConfig(t, `{"Network":"10.18.0.0/16"}`)
	l1 := acquire(t, s.node(t, cfg, Node(18, 1)), subnet.AcquireRequest{Config: cfg, Attrs: Node(18, 1)})
	m := s.observer(t)
	out := make(chan subnet.LeaseBatch)
	errc := make(chan error, 1)
	go func() { errc <- m.WatchLeases(ctx, out) }()
	w := NewWatchState(out)
	w.WaitFor(t, 10*time.Second, func(s map[netip.Prefix]subnet.Lease) bool {
		_, ok := s[l1.Subnet]
		return len(s) == 1 && ok
	})
	if !w.Snapshots() {
		t.Fatal("first batch was not a snapshot")
	}
	l2 := acquire(t, s.node(t, cfg, Node(18, 2)), subnet.AcquireRequest{Config: cfg, Attrs: Node(18, 2)})
	w.WaitFor(t, 10*time.Second, func(s map[netip.Prefix]subnet.Lease) bool {
		return len(s) == 2 && s[l2.Subnet].Attrs.PublicIP == Node(18, 2).PublicIP
	})
	s.evict(t, l1.Subnet)
	w.WaitFor(t, 10*time.Second, func(s map[netip.Prefix]subnet.Lease) bool {
		_, ok := s[l1.Subnet]
		return len(s) == 1 && !ok
	})
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("WatchLeases returned %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WatchLeases did not return after cancel")
	}
}

// WatchState applies LeaseBatches from a WatchLeases channel the way a
// receiver should: a snapshot replaces the state, events patch it.
type WatchState struct {
	in        <-chan subnet.LeaseBatch
	state     map[netip.Prefix]subnet.Lease
	snapshots int
	batches   int
	rev       int64
}

// NewWatchState reads batches from in.
func NewWatchState(in <-chan subnet.LeaseBatch) *WatchState {
	return &WatchState{in: in, state: make(map[netip.Prefix]subnet.Lease)}
}

// Apply folds one batch into the state.
func (w *WatchState) Apply(b subnet.LeaseBatch) {
	w.batches++
	if b.Snapshot {
		w.snapshots++
		w.state = make(map[netip.Prefix]subnet.Lease, len(b.Leases))
		for _, l := range b.Leases {
			w.state[key(l)] = l
		}
	}
	for _, ev := range b.Events {
		if ev.Type == subnet.EventRemoved {
			delete(w.state, key(ev.Lease))
		} else {
			w.state[key(ev.Lease)] = ev.Lease
		}
	}
	w.rev = b.Revision
}

func key(l subnet.Lease) netip.Prefix {
	if l.Subnet.IsValid() {
		return l.Subnet
	}
	return l.IPv6Subnet
}

// Snapshots reports whether at least one snapshot arrived.
func (w *WatchState) Snapshots() bool { return w.snapshots > 0 }

// SnapshotCount is the number of snapshots received.
func (w *WatchState) SnapshotCount() int { return w.snapshots }

// State returns the current state, keyed by IPv4 subnet (IPv6 for
// IPv6-only leases). The map is the WatchState's own.
func (w *WatchState) State() map[netip.Prefix]subnet.Lease { return w.state }

// Next receives one batch and applies it; it fails t after timeout.
func (w *WatchState) Next(t testing.TB, timeout time.Duration) subnet.LeaseBatch {
	t.Helper()
	select {
	case b := <-w.in:
		w.Apply(b)
		return b
	case <-time.After(timeout):
		t.Fatalf("no lease batch within %v", timeout)
		return subnet.LeaseBatch{}
	}
}

// WaitFor applies batches until cond holds for the state, failing t if that
// takes longer than timeout.
func (w *WatchState) WaitFor(t testing.TB, timeout time.Duration, cond func(map[netip.Prefix]subnet.Lease) bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for w.batches == 0 || !cond(w.state) {
		select {
		case b := <-w.in:
			w.Apply(b)
		case <-deadline.C:
			t.Fatalf("watch state not reached within %v; have %d leases: %v", timeout, len(w.state), w.state)
		}
	}
}
