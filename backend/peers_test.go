package backend

import (
	"bytes"
	"log/slog"
	"maps"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/subnet"
)

func TestPeerSet(t *testing.T) {
	a, b := netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("10.244.2.0/24")
	var s PeerSet
	s.Replace([]subnet.Lease{{Subnet: netip.MustParsePrefix("10.244.1.7/24")}})
	if _, ok := s[a]; !ok || len(s) != 1 {
		t.Fatalf("Replace keyed by masked subnet: %v", s)
	}
	scope := s.Apply([]subnet.Event{
		{Type: subnet.EventAdded, Lease: subnet.Lease{Subnet: b}},
		{Type: subnet.EventRemoved, Lease: subnet.Lease{Subnet: a}},
	})
	if len(s) != 1 || !scope[a] || !scope[b] {
		t.Errorf("after Apply set %v scope %v", s, scope)
	}
	// An IPv6-only lease is keyed by its IPv6 subnet, a dual-stack one by
	// its IPv4 subnet.
	v6 := netip.MustParsePrefix("fd10:0:0:3::/64")
	s.Replace([]subnet.Lease{{IPv6Subnet: v6}, {Subnet: a, IPv6Subnet: netip.MustParsePrefix("fd10:0:0:4::/64")}})
	if _, ok := s[v6]; !ok || len(s) != 2 || s[a].IPv6Subnet.Bits() != 64 {
		t.Fatalf("Replace of IPv6-only and dual-stack leases: %v", s)
	}
	if scope := s.Apply([]subnet.Event{{Type: subnet.EventRemoved, Lease: subnet.Lease{IPv6Subnet: v6}}}); !scope[v6] || len(s) != 1 {
		t.Errorf("removing the IPv6-only lease: set %v scope %v", s, scope)
	}
}

func TestStatusBookLogsChangesOnce(t *testing.T) {
	var logs bytes.Buffer
	book := NewStatusBook(slog.New(slog.NewTextHandler(&logs, nil)))
	a := netip.MustParsePrefix("10.244.1.0/24")
	refused := map[netip.Prefix]PeerStatus{a: {Subnet: a, State: PeerRefused, Reason: "off-link"}}
	book.Update(nil, refused)
	book.Update(nil, refused)
	if n := strings.Count(logs.String(), "peer refused"); n != 1 {
		t.Errorf("a refusal repeated by two passes logged %d times, want 1", n)
	}
	book.Update(map[netip.Prefix]bool{netip.MustParsePrefix("10.244.9.0/24"): true}, nil)
	if len(book.Peers()) != 1 {
		t.Error("a pass outside a's scope removed it")
	}
	book.Update(nil, nil)
	if len(book.Peers()) != 0 || !strings.Contains(logs.String(), "peer removed") {
		t.Errorf("a full pass without a kept it: %v", book.Peers())
	}
}

// TestNewPeerStatus merges per-family outcomes: programmed only when every
// enabled family is, failed before refused, reasons named by family.
func TestNewPeerStatus(t *testing.T) {
	v4 := mustConfig(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`)
	dual := mustConfig(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"vxlan"}}`)
	v6 := mustConfig(t, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"vxlan"}}`)
	l := subnet.Lease{Subnet: netip.MustParsePrefix("10.244.2.0/24"), IPv6Subnet: netip.MustParsePrefix("fd10:0:0:2::/64"),
		Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("198.18.0.11"), PublicIPv6: netip.MustParseAddr("2001:db8::11")}}
	l6 := l
	l6.Subnet, l6.Attrs.PublicIP = netip.Prefix{}, netip.Addr{}
	ok := Outcome(PeerProgrammed, "")
	ref := func(why string) FamilyOutcome { return Outcome(PeerRefused, why) }
	fail := func(why string) FamilyOutcome { return Outcome(PeerFailed, why) }
	for _, tc := range []struct {
		name   string
		cfg    *subnet.Config
		l      subnet.Lease
		v4, v6 FamilyOutcome
		state  PeerState
		reason string
	}{
		{"v4 programmed", v4, l, ok, ref("ignored: not enabled"), PeerProgrammed, ""},
		{"v4 refused", v4, l, ref("bad"), ok, PeerRefused, "peer 10.244.2.0/24 (198.18.0.11): bad"},
		{"nil config is IPv4", nil, l, fail("boom"), ok, PeerFailed, "peer 10.244.2.0/24 (198.18.0.11): boom"},
		{"dual programmed", dual, l, ok, ok, PeerProgrammed, ""},
		{"dual v6 refused", dual, l, ok, ref("no IPv6 subnet"), PeerRefused, "peer 10.244.2.0/24 (198.18.0.11): IPv6: no IPv6 subnet"},
		{"dual both refused alike", dual, l, ref("own"), ref("own"), PeerRefused, "peer 10.244.2.0/24 (198.18.0.11): own"},
		{"dual both refused apart", dual, l, ref("x"), ref("y"), PeerRefused, "peer 10.244.2.0/24 (198.18.0.11): IPv4: x; IPv6: y"},
		{"dual failed wins", dual, l, ref("x"), fail("y"), PeerFailed, "peer 10.244.2.0/24 (198.18.0.11): IPv4: x; IPv6: y"},
		{"v6-only", v6, l6, ref("ignored"), ref("bad"), PeerRefused, "peer fd10:0:0:2::/64 (2001:db8::11): bad"},
		{"v6-only programmed", v6, l6, ref("ignored"), ok, PeerProgrammed, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := NewPeerStatus(tc.cfg, tc.l, tc.v4, tc.v6)
			if st.State != tc.state || st.Reason != tc.reason {
				t.Errorf("status %s %q, want %s %q", st.State, st.Reason, tc.state, tc.reason)
			}
			if st.Subnet != tc.l.Subnet || st.IPv6Subnet != tc.l.IPv6Subnet || st.PublicIP != tc.l.Attrs.PublicIP || st.PublicIPv6 != tc.l.Attrs.PublicIPv6 || st.Key() != tc.l.Key() {
				t.Errorf("status names %+v, lease %+v", st, tc.l)
			}
		})
	}
}

// TestApplyFamilies: the scope of a batch holds each event's key and the
// IPv6 subnets it touches, the peer's old one included.
func TestApplyFamilies(t *testing.T) {
	p := netip.MustParsePrefix
	old := subnet.Lease{Subnet: p("10.244.2.0/24"), IPv6Subnet: p("fd10:0:0:2::/64")}
	s := PeerSet{old.Key(): old}
	moved := subnet.Lease{Subnet: p("10.244.2.0/24"), IPv6Subnet: p("fd10:0:0:9::/64")}
	only := subnet.Lease{IPv6Subnet: p("fd10:0:0:3::/64")}
	scope := s.ApplyFamilies([]subnet.Event{{Type: subnet.EventAdded, Lease: moved}, {Type: subnet.EventRemoved, Lease: only}})
	want := map[netip.Prefix]bool{p("10.244.2.0/24"): true, p("fd10:0:0:2::/64"): true, p("fd10:0:0:9::/64"): true, p("fd10:0:0:3::/64"): true}
	if !maps.Equal(scope, want) {
		t.Errorf("scope %v, want %v", scope, want)
	}
	if s[old.Key()].IPv6Subnet != moved.IPv6Subnet || len(s) != 1 {
		t.Errorf("set %v after the batch", s)
	}
	if got := LeaseScope(old); !maps.Equal(got, map[netip.Prefix]bool{p("10.244.2.0/24"): true, p("fd10:0:0:2::/64"): true}) {
		t.Errorf("LeaseScope = %v", got)
	}
}

// TestStatusBookRoundTrip: what Peers returns is what Update recorded,
// every field of both families, refusals with their reason.
func TestStatusBookRoundTrip(t *testing.T) {
	book := NewStatusBook(slog.New(slog.DiscardHandler))
	want := []PeerStatus{
		{Subnet: netip.MustParsePrefix("10.244.1.0/24"), PublicIP: netip.MustParseAddr("198.18.0.11"),
			IPv6Subnet: netip.MustParsePrefix("fd10:0:0:1::/64"), PublicIPv6: netip.MustParseAddr("fd00:198:18::11"), State: PeerProgrammed},
		{Subnet: netip.MustParsePrefix("10.244.2.0/24"), PublicIP: netip.MustParseAddr("198.18.0.12"), State: PeerRefused, Reason: "peer 10.244.2.0/24 (198.18.0.12): no"},
		{IPv6Subnet: netip.MustParsePrefix("fd10:0:0:3::/64"), PublicIPv6: netip.MustParseAddr("fd00:198:18::13"), State: PeerFailed, Reason: "EPERM"},
	}
	m := map[netip.Prefix]PeerStatus{}
	for _, st := range want {
		m[st.Key()] = st
	}
	book.Update(nil, m)
	if got := book.Peers(); !slices.Equal(got, want) {
		t.Errorf("Peers:\n got %+v\nwant %+v", got, want)
	}
	// The first removed (the last entry takes its place), the refused one
	// programmed now, the failed one refused.
	want[1].State, want[1].Reason = PeerProgrammed, ""
	want[2].State, want[2].Reason = PeerRefused, "other"
	book.Update(map[netip.Prefix]bool{want[0].Key(): true, want[1].Key(): true, want[2].Key(): true},
		map[netip.Prefix]PeerStatus{want[1].Key(): want[1], want[2].Key(): want[2]})
	if got := book.Peers(); !slices.Equal(got, want[1:]) {
		t.Errorf("Peers after a removal and two changes:\n got %+v\nwant %+v", got, want[1:])
	}
	book.Update(nil, nil)
	if got := book.Peers(); len(got) != 0 {
		t.Errorf("Peers after removing all: %+v", got)
	}
}

// TestStatusBookRetainedPerPeer bounds what the book keeps per peer: with
// 10000 peers it was the biggest backend structure after the peer set (a
// map of PeerStatus, 144 bytes stored out of the map's slots: 219 bytes a
// peer here). Dense packed entries: 129.
func TestStatusBookRetainedPerPeer(t *testing.T) {
	const n = 10000
	want := make(map[netip.Prefix]PeerStatus, n)
	for i := range n {
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(64 + i>>10), byte(i >> 2), byte(i << 6)}), 26)
		want[sn] = PeerStatus{Subnet: sn, PublicIP: netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), State: PeerProgrammed}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	book := NewStatusBook(slog.New(slog.DiscardHandler))
	book.Update(nil, want)
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	runtime.KeepAlive(book)
	runtime.KeepAlive(want)
	t.Logf("status book retains %d bytes per peer", per)
	if per > 170 {
		t.Errorf("the status book retains %d bytes per peer, want ≤ 170", per)
	}
}

// TestStatusBookRemovals: removing peers from anywhere in the dense list
// keeps every other peer's entry (each removal moves the last entry).
func TestStatusBookRemovals(t *testing.T) {
	book := NewStatusBook(slog.New(slog.DiscardHandler))
	all := map[netip.Prefix]PeerStatus{}
	for i := range 1000 {
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i >> 2), byte(i << 6)}), 26)
		all[sn] = PeerStatus{Subnet: sn, PublicIP: netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), State: PeerProgrammed}
	}
	book.Update(nil, all)
	scope, keep := map[netip.Prefix]bool{}, map[netip.Prefix]PeerStatus{}
	i := 0
	for sn, st := range all {
		scope[sn] = true
		if i%3 != 0 {
			keep[sn] = st
		}
		i++
	}
	book.Update(scope, keep)
	want := slices.SortedFunc(maps.Values(keep), func(a, c PeerStatus) int { return ComparePrefix(a.Key(), c.Key()) })
	if got := book.Peers(); !slices.Equal(got, want) {
		t.Errorf("after removing a third: %d peers, want %d (or their fields differ)", len(got), len(want))
	}
	// Emptied, the list gives back what the peers held.
	book.Update(nil, nil)
	if n, c := len(book.entries), cap(book.entries); n != 0 || c > 128 {
		t.Errorf("after removing every peer the book holds %d entries in room for %d, want 0 in at most 128", n, c)
	}
}

// TestUpdatePlansAllocs: a pass over thousands of unchanged peers takes
// their statuses one at a time; it held a map of them all (a PeerStatus
// stored out of the map's slots: an allocation a peer, 5000+ here).
func TestUpdatePlansAllocs(t *testing.T) {
	const n = 5000
	plans := make(map[netip.Prefix]int, n)
	scope := make(map[netip.Prefix]bool, n)
	for i := range n {
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(64 + i>>10), byte(i >> 2), byte(i << 6)}), 26)
		plans[sn], scope[sn] = i, true
	}
	status := func(sn netip.Prefix, i int) PeerStatus {
		return PeerStatus{Subnet: sn, PublicIP: netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), State: PeerProgrammed}
	}
	book := NewStatusBook(slog.New(slog.DiscardHandler))
	UpdatePlans(book, nil, plans, status)
	for _, sc := range []map[netip.Prefix]bool{nil, scope} {
		if a := testing.AllocsPerRun(5, func() { UpdatePlans(book, sc, plans, status) }); a > 20 {
			t.Errorf("a pass over %d unchanged peers (full %v) allocates %.0f times, want ≤ 20", n, sc == nil, a)
		}
	}
	if got := len(book.Peers()); got != n {
		t.Errorf("the book holds %d peers, want %d", got, n)
	}
}
