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
