package interop

import (
	"strings"
	"testing"
	"time"
)

// TestRenewalLoss: pings lost around a renewal in both directions, around
// three renewals, or more than 1% of them, say the renewals broke traffic;
// a lost ping here and there (load) does not; each lost ping is named with
// where it fell. Needs no lab.
func TestRenewalLoss(t *testing.T) {
	t0 := time.Unix(1796310000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	rs := []renewal{{at(6000), "weft n1"}, {at(12000), "weft n1"}, {at(18000), "weft n1"}, {at(30000), "Flannel n2"}}
	tests := []struct {
		name     string
		lost     [][]time.Time
		sent     int
		problems []string
		notes    []string
	}{
		{name: "nothing lost", lost: [][]time.Time{nil, nil}, sent: 4000},
		{name: "just before a renewal", lost: [][]time.Time{{at(5900)}, nil}, sent: 4000, notes: []string{"-100ms from the renewal by weft n1"}},
		{name: "one lost away from renewals", lost: [][]time.Time{{at(9000)}, nil}, sent: 4000, notes: []string{"ping 0 lost a request", "away from every renewal"}},
		{name: "one direction lost once right after a renewal", lost: [][]time.Time{nil, {at(30100)}}, sent: 4000, notes: []string{"ping 1 lost", "+100ms from the renewal by Flannel n2"}},
		{name: "both directions around one renewal", lost: [][]time.Time{{at(30050)}, {at(30060)}}, sent: 4000, problems: []string{"both directions lost around the renewal by Flannel n2"}},
		{name: "just before a renewal counts", lost: [][]time.Time{{at(5850)}, {at(5900)}}, sent: 4000, problems: []string{"both directions lost around the renewal by weft n1"}},
		{name: "outside the window does not", lost: [][]time.Time{{at(5700)}, {at(7100)}}, sent: 4000, notes: []string{"away from every renewal", "away from every renewal"}},
		{name: "around three renewals", lost: [][]time.Time{{at(6010), at(18500)}, {at(12900)}}, sent: 4000, problems: []string{"around 3 of 4 renewals"}},
		{name: "more than 1%", lost: [][]time.Time{{at(1000), at(2000), at(3000)}, nil}, sent: 200, problems: []string{"3 of 200 pings lost"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems, notes := renewalLoss(rs, tt.lost, tt.sent)
			check := func(kind string, got, want []string) {
				if kind == "problems" && (len(want) == 0) != (len(got) == 0) {
					t.Errorf("%s %q, want %q", kind, got, want)
				}
				all := strings.Join(got, "\n")
				for _, w := range want {
					if !strings.Contains(all, w) {
						t.Errorf("%s %q lack %q", kind, got, w)
					}
				}
			}
			check("problems", problems, tt.problems)
			check("notes", notes, tt.notes)
		})
	}
}
