package lab

import (
	"net/netip"
	"testing"

	"github.com/weftnet/weft/backend"
)

// TestNodeHolds: waitPeers finds a node in a peer's /status by its lease
// key, in every kind of lab (an IPv6-only peer's status has no IPv4 Subnet;
// comparing that one made every IPv6-only lab time out waiting for peers).
func TestNodeHolds(t *testing.T) {
	v4, v6 := netip.MustParsePrefix("10.244.3.0/24"), netip.MustParsePrefix("fd00:10:244:3::/64")
	other := netip.MustParsePrefix("fd00:10:244:4::/64")
	for _, tc := range []struct {
		name string
		node Node
		st   backend.PeerStatus
		want bool
	}{
		{"IPv4", Node{Subnet: v4}, backend.PeerStatus{Subnet: v4}, true},
		{"dual stack", Node{Subnet: v4, IPv6Subnet: v6}, backend.PeerStatus{Subnet: v4, IPv6Subnet: v6}, true},
		{"IPv6-only", Node{Subnet: v6, IPv6Subnet: v6}, backend.PeerStatus{IPv6Subnet: v6}, true},
		{"IPv6-only, another node", Node{Subnet: v6, IPv6Subnet: v6}, backend.PeerStatus{IPv6Subnet: other}, false},
		{"IPv4, another node", Node{Subnet: v4}, backend.PeerStatus{Subnet: netip.MustParsePrefix("10.244.4.0/24")}, false},
	} {
		if got := tc.node.holds(tc.st); got != tc.want {
			t.Errorf("%s: holds %v, want %v", tc.name, got, tc.want)
		}
	}
}
