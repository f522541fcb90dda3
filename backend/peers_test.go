package backend

import (
	"bytes"
	"log/slog"
	"net/netip"
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
