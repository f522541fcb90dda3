package lab

import "testing"

// TestLostLeaseRace: the lab starts a flanneld again only when it exited
// having lost the lease race (nodes starting together picked one subnet),
// and at most flannelRaceRestarts times; any other exit is reported.
func TestLostLeaseRace(t *testing.T) {
	const raced = "I1204 local_manager.go:226] Picking subnet in range 10.244.1.0 ... 10.244.255.0\n" +
		"E1204 main.go:383] Error registering network: failed to acquire lease: subnet already exists\n" +
		"I1204 main.go:519] Stopping shutdownHandler..."
	for _, tc := range []struct {
		tail     string
		restarts int
		want     bool
	}{
		{raced, 0, true},
		{raced, flannelRaceRestarts - 1, true},
		{raced, flannelRaceRestarts, false},
		{"E1204 main.go:383] Error registering network: failed to acquire lease: context deadline exceeded", 0, false},
		{"", 0, false},
	} {
		if got := lostLeaseRace(tc.tail, tc.restarts); got != tc.want {
			t.Errorf("lostLeaseRace(%q, %d) = %v, want %v", tc.tail, tc.restarts, got, tc.want)
		}
	}
}
