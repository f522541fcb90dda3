package labtest

import (
	"testing"
	"time"
)

// TestLostAt places the requests a ping -D run lost in time from the
// replies around them, and ignores duplicates.
func TestLostAt(t *testing.T) {
	out := `PING 10.244.1.2 (10.244.1.2) 56(84) bytes of data.
[1796310100.000000] 64 bytes from 10.244.1.2: icmp_seq=1 ttl=62 time=0.5 ms
[1796310100.020000] 64 bytes from 10.244.1.2: icmp_seq=2 ttl=62 time=0.5 ms
[1796310100.080000] 64 bytes from 10.244.1.2: icmp_seq=5 ttl=62 time=0.5 ms
[1796310100.080100] 64 bytes from 10.244.1.2: icmp_seq=5 ttl=62 time=0.6 ms (DUP!)
[1796310100.100000] 64 bytes from 10.244.1.2: icmp_seq=6 ttl=62 time=0.5 ms

--- 10.244.1.2 ping statistics ---
8 packets transmitted, 4 received, +1 duplicates, 50% packet loss, time 140ms
`
	base := time.Unix(1796310100, 0)
	ms := func(n int) time.Time { return base.Add(time.Duration(n) * time.Millisecond) }
	tests := []struct {
		name string
		s    PingStats
		want []time.Time
	}{
		// 3 and 4 between 2 and 5 (4 is as near to 5: the earlier wins
		// only at a tie, so 4 comes from 5), 7 and 8 after the last reply.
		{name: "gaps and a tail", s: PingStats{Sent: 8, Interval: 20 * time.Millisecond, Out: out}, want: []time.Time{ms(40), ms(60), ms(120), ms(140)}},
		{name: "nothing lost", s: PingStats{Sent: 2, Interval: 20 * time.Millisecond, Out: out}},
		{name: "no replies in the output (ping -q)", s: PingStats{Sent: 8, Received: 4, Interval: 20 * time.Millisecond, Out: "8 packets transmitted, 4 received"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.s.LostAt()
			if len(got) != len(tt.want) {
				t.Fatalf("LostAt = %v, want %v", got, tt.want)
			}
			for i := range got {
				if !got[i].Equal(tt.want[i]) {
					t.Errorf("lost %d at %v, want %v", i, got[i].Sub(base), tt.want[i].Sub(base))
				}
			}
		})
	}
}
