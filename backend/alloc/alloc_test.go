package alloc

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/subnet"
)

// TestPeersAreChecked: alloc programs nothing, but reports each peer as
// backend.CheckPeer judges it, like the kernel backends.
func TestPeersAreChecked(t *testing.T) {
	cfg, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"alloc"}}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(backend.Options{Config: cfg, Underlay: backend.Underlay{PublicIP: netip.MustParseAddr("198.18.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	own := subnet.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24")}
	if err := b.Configure(ctx, own); err != nil {
		t.Fatal(err)
	}
	lease := func(sn, ip string) subnet.Lease {
		return subnet.Lease{Subnet: netip.MustParsePrefix(sn), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(ip), BackendType: Type}}
	}
	want := map[string]string{ // subnet → "" programmed, else part of the reason
		"10.244.2.0/24": "",
		"10.244.3.0/24": "this node's own",
		"10.244.4.0/24": "multicast",
		"10.244.1.0/24": "this node's own",
	}
	if err := b.Sync(ctx, []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2"), lease("10.244.3.0/24", "198.18.0.1"),
		lease("10.244.4.0/24", "239.0.0.1"), lease("10.244.1.0/24", "198.18.0.1")}); err != nil {
		t.Fatal(err)
	}
	got := b.Peers()
	if len(got) != len(want) {
		t.Fatalf("Peers = %+v, want %d", got, len(want))
	}
	for _, st := range got {
		w := want[st.Subnet.String()]
		if w == "" && st.State != backend.PeerProgrammed || w != "" && (st.State != backend.PeerRefused || !strings.Contains(st.Reason, w)) {
			t.Errorf("%s: %s %q, want %q", st.Subnet, st.State, st.Reason, w)
		}
	}
}

// TestIPv6Networks: alloc publishes the addresses of the families the network
// enables and keys IPv6-only peers by their IPv6 subnet.
func TestIPv6Networks(t *testing.T) {
	ul := backend.Underlay{PublicIP: netip.MustParseAddr("198.18.0.1"), PublicIPv6: netip.MustParseAddr("2001:db8::1")}
	for _, tc := range []struct {
		config       string
		pub4, pub6   bool
		peer         subnet.Lease
		wantKey      string
		wantOutcome  backend.PeerState
		reasonSubstr string
	}{
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"alloc"}}`, true, false,
			subnet.Lease{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("198.18.0.2"), BackendType: Type}},
			"10.244.2.0/24", backend.PeerProgrammed, ""},
		{`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"alloc"}}`, true, true,
			subnet.Lease{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("198.18.0.2"), BackendType: Type}},
			"10.244.2.0/24", backend.PeerRefused, "IPv6: lease has no IPv6 subnet"},
		{`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"alloc"}}`, false, true,
			subnet.Lease{IPv6Subnet: netip.MustParsePrefix("fd10:0:0:2::/64"), Attrs: subnet.LeaseAttrs{PublicIPv6: netip.MustParseAddr("2001:db8::2"), BackendType: Type}},
			"fd10:0:0:2::/64", backend.PeerProgrammed, ""},
	} {
		cfg, err := subnet.ParseConfig([]byte(tc.config))
		if err != nil {
			t.Fatal(err)
		}
		b, err := New(backend.Options{Config: cfg, Underlay: ul})
		if err != nil {
			t.Fatal(err)
		}
		attrs, err := b.Prepare(context.Background())
		if err != nil || attrs.PublicIP.IsValid() != tc.pub4 || attrs.PublicIPv6.IsValid() != tc.pub6 {
			t.Errorf("%s: Prepare = %+v, %v; want PublicIP %v, PublicIPv6 %v", tc.config, attrs, err, tc.pub4, tc.pub6)
		}
		if err := b.Sync(context.Background(), []subnet.Lease{tc.peer}); err != nil {
			t.Fatal(err)
		}
		got := b.Peers()
		if len(got) != 1 || got[0].Key().String() != tc.wantKey || got[0].State != tc.wantOutcome || !strings.Contains(got[0].Reason, tc.reasonSubstr) {
			t.Errorf("%s: Peers = %+v", tc.config, got)
		}
	}
}
