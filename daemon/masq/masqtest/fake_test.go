package masqtest

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/weftnet/weft/daemon/masq"
)

func TestFake(t *testing.T) {
	var f Fake
	ctx := t.Context()
	r := masq.Rules{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.3.0/24"), Masquerade: true}
	if err := f.Ensure(ctx, r); err != nil {
		t.Fatal(err)
	}
	if got, ok := f.Rules(); !ok || !reflect.DeepEqual(got, r) {
		t.Fatalf("Rules() = %v, %v", got, ok)
	}
	bad := r
	bad.Subnet = netip.MustParsePrefix("10.9.0.0/24")
	if err := f.Ensure(ctx, bad); !errors.Is(err, masq.ErrInvalidRules) {
		t.Fatalf("Ensure(bad) = %v", err)
	}
	sn := netip.MustParsePrefix("10.244.2.0/24")
	peers := []masq.FilterPeer{{Addr: netip.MustParseAddr("198.18.0.11"), Sources: []netip.Prefix{sn}}}
	if err := f.EnsurePeerFilter(ctx, 8472, peers); err != nil {
		t.Fatal(err)
	}
	peers[0].Addr, peers[0].Sources[0] = netip.Addr{}, netip.Prefix{} // the fake must have copied
	if port, got, on := f.PeerFilter(); !on || port != 8472 || got[0] != netip.MustParseAddr("198.18.0.11") {
		t.Fatalf("PeerFilter() = %d %v %v", port, got, on)
	}
	if src := f.PeerFilterSources()[netip.MustParseAddr("198.18.0.11")]; len(src) != 1 || src[0] != sn {
		t.Fatalf("PeerFilterSources() = %v", src)
	}
	boom := errors.New("boom")
	f.SetErr(boom)
	if err := f.Remove(ctx); !errors.Is(err, boom) {
		t.Fatalf("Remove with error set = %v", err)
	}
	f.SetErr(nil)
	if err := f.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.Rules(); ok {
		t.Fatal("rules left after Remove")
	}
	if e, rm := f.Calls(); e != 1 || rm != 1 {
		t.Fatalf("Calls() = %d, %d; want 1, 1", e, rm)
	}
}
