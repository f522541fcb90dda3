package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/backend/alloc"
	"github.com/weftnet/weft/daemon/laststate"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/subnet"
)

const testScope = "test /coreos.com/network"

func statePath(dir string) string { return filepath.Join(dir, "state", laststate.FileName) }

// savedState is the node's last known state file, nil while it has none
// (or an unreadable one).
func savedState(dir string) *laststate.State {
	st, err := laststate.Load(statePath(dir), laststate.Expect{})
	if err != nil {
		return nil
	}
	return st
}

func savedPeers(dir string) map[netip.Prefix]netip.Addr {
	st := savedState(dir)
	if st == nil {
		return nil
	}
	out := map[netip.Prefix]netip.Addr{}
	for _, l := range st.Peers {
		out[l.Subnet] = l.Attrs.PublicIP
	}
	return out
}

// readyz is the node's GET /readyz: code and body.
func (n *node) readyz(t *testing.T) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get("http://" + n.d.HealthAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

// metricLine reports whether the node's /metrics has the exact line.
func (n *node) metricLine(t *testing.T, line string) bool {
	t.Helper()
	resp, err := http.Get("http://" + n.d.HealthAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	for _, l := range strings.Split(b.String(), "\n") {
		if l == line {
			return true
		}
	}
	return false
}

func (n *node) readyStatus(t *testing.T) string {
	_, body := n.readyz(t)
	s, _ := body["status"].(string)
	return s
}

// twoNodes brings up a (in dir) and b on m and waits until a's last known
// state lists b.
func twoNodes(t *testing.T, m subnet.Manager, dir string) (a, b *node) {
	t.Helper()
	a = startNodeOpts(t, nodeOpts{store: m, ip: "198.18.0.1", dir: dir, scope: testScope})
	b = startNodeOpts(t, nodeOpts{store: m, ip: "198.18.0.2", scope: testScope})
	waitFor(t, "both ready", func() bool { return a.ready() && b.ready() })
	sb := b.subnetFile(t).Subnet.Masked()
	waitFor(t, "a's last known state lists b", func() bool { return savedPeers(dir)[sb] == b.ip })
	if fi, err := os.Stat(statePath(dir)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("last known state file: %v %v, want mode 0600", fi, err)
	}
	return a, b
}

// TestStartWithoutStoreRestoresLastKnownState: a node restarted while its
// store does not answer serves at once from the file — own subnet, peers,
// subnet file, CNI config — and says it is degraded; once the store answers
// it converges on the store, dropping a lease deleted meanwhile from the
// kernel and from the file.
func TestStartWithoutStoreRestoresLastKnownState(t *testing.T) {
	m := newStore(t, allocConfig)
	dir := t.TempDir()
	a, b := twoNodes(t, m, dir)
	sa, sb := a.subnetFile(t).Subnet.Masked(), b.subnetFile(t).Subnet.Masked()
	a.shutdown(t)
	// During the outage b leaves for good and its lease is deleted; a cannot
	// know before the store answers.
	b.shutdown(t)
	if err := m.ReleaseLease(context.Background(), sb); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "net.d", CNIConfFile)); err != nil {
		t.Fatal(err)
	}
	saved, err := os.Stat(statePath(dir))
	if err != nil {
		t.Fatal(err)
	}

	cs := newConnectingStore()
	logs := &syncBuffer{}
	start := time.Now()
	a = startNodeOpts(t, nodeOpts{store: cs, ip: "198.18.0.1", dir: dir, scope: testScope, logs: logs})
	waitFor(t, "a ready from its last known state", a.ready)
	t.Logf("ready %v after start, without the store", time.Since(start).Round(time.Millisecond))
	if got := a.subnetFile(t).Subnet.Masked(); got != sa {
		t.Errorf("restored subnet %s, want %s", got, sa)
	}
	if _, err := os.Stat(filepath.Join(dir, "net.d", CNIConfFile)); err != nil {
		t.Errorf("CNI config not installed from the last known state: %v", err)
	}
	if p := a.peers(); len(p) != 1 || p[sb] != b.ip {
		t.Errorf("restored peers %v, want b %s on %s", p, b.ip, sb)
	}
	if code, body := a.readyz(t); code != http.StatusOK || body["status"] != readyDegraded || body["controlPlaneConnected"] != false {
		t.Errorf("/readyz = %d %v, want 200 degraded, not connected", code, body)
	}
	if !a.metricLine(t, "weft_control_plane_connected 0") {
		t.Error("weft_control_plane_connected is not 0 while the store is away")
	}
	if st := a.d.Status(); st.ControlPlaneConnected || st.LeaseExpiration.IsZero() {
		t.Errorf("status: connected %v, lease expiry %v; want false and the recorded expiry", st.ControlPlaneConnected, st.LeaseExpiration)
	}
	if logs.count("restored the data plane from the last known state") != 1 {
		t.Errorf("the restore is not logged once:\n%s", logs.String())
	}
	// Unconfirmed state is never written back.
	if now, err := os.Stat(statePath(dir)); err != nil || !os.SameFile(saved, now) {
		t.Errorf("the file was rewritten before the store answered (%v)", err)
	}

	cs.connect(m)
	waitFor(t, "the deleted lease gone from a", func() bool { return len(a.peers()) == 0 })
	waitFor(t, "ready, not degraded", func() bool { return a.readyStatus(t) == readyOK })
	if !a.metricLine(t, "weft_control_plane_connected 1") {
		t.Error("weft_control_plane_connected is not 1 with the store back")
	}
	waitFor(t, "the deleted lease gone from the file", func() bool { p := savedPeers(dir); return p != nil && len(p) == 0 })
	leases, _, err := m.ListLeases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 1 || leases[0].Subnet != sa || leases[0].Attrs.PublicIP != a.ip {
		t.Errorf("store holds %v, want only a's lease on %s: nothing resurrected", leases, sa)
	}
}

// TestRejoinAfterLeaseLostMeanwhile: the node's lease went to another node
// while it was cut off. At rejoin it takes a new subnet, reports the pods
// left on the old one, programs the new owner of its old subnet as a peer,
// and never writes the recorded lease over the store.
func TestRejoinAfterLeaseLostMeanwhile(t *testing.T) {
	m := newStore(t, allocConfig)
	dir := t.TempDir()
	a := startNodeOpts(t, nodeOpts{store: m, ip: "198.18.0.1", dir: dir, scope: testScope})
	waitFor(t, "ready", a.ready)
	gw := a.subnetFile(t).Subnet
	sa := gw.Masked()
	waitFor(t, "a's state saved", func() bool { return savedState(dir) != nil })
	store, err := ipam.Open(filepath.Join(dir, "ipam"), CNINetworkName)
	if err != nil {
		t.Fatal(err)
	}
	pod, _, err := store.Allocate(gw, ipam.Attachment{ContainerID: "pod-a", IfName: "eth0"})
	store.Close()
	if err != nil {
		t.Fatal(err)
	}
	a.shutdown(t)
	if err := m.ReleaseLease(context.Background(), sa); err != nil {
		t.Fatal(err)
	}
	other := netip.MustParseAddr("198.18.0.99")
	m.Put(subnet.Lease{Subnet: sa, Attrs: subnet.LeaseAttrs{PublicIP: other, BackendType: alloc.Type}})

	cs := newConnectingStore()
	logs := &syncBuffer{}
	a = startNodeOpts(t, nodeOpts{store: cs, ip: "198.18.0.1", dir: dir, scope: testScope, logs: logs})
	waitFor(t, "ready from the last known state", a.ready)
	if got := a.subnetFile(t).Subnet.Masked(); got != sa {
		t.Fatalf("restored subnet %s, want the recorded %s", got, sa)
	}
	// The watch's snapshot comes before the store hands out the new lease:
	// the old subnet's new owner is judged again once the own lease moves.
	m.SetFault(func(op string) error {
		if op == "AcquireLease" {
			return errors.New("etcdserver: request timed out")
		}
		return nil
	})
	marker := netip.MustParsePrefix("10.244.250.0/24")
	m.Put(subnet.Lease{Subnet: marker, Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("198.18.0.98"), BackendType: alloc.Type}})
	cs.connect(m)
	waitFor(t, "the snapshot applied", func() bool { _, ok := a.peers()[marker]; return ok })
	m.SetFault(nil)
	waitFor(t, "a new subnet", func() bool {
		f, err := subnet.ReadFile(filepath.Join(dir, "subnet.env"))
		return err == nil && f.Subnet.Masked() != sa
	})
	waitFor(t, "the new owner of the old subnet programmed", func() bool { return a.peers()[sa] == other })
	waitFor(t, "the stranded pod reported", func() bool { return logs.count(pod.String()+" (pod-a)") == 1 })
	waitFor(t, "the file has the new lease", func() bool { st := savedState(dir); return st != nil && st.Own.Subnet != sa })
	leases, _, err := m.ListLeases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases {
		if l.Subnet == sa && l.Attrs.PublicIP != other {
			t.Errorf("the old subnet's lease now says %s: the recorded lease was written over the store", l.Attrs.PublicIP)
		}
	}
}

// TestStoreAnsweringAtStartWins: with the store reachable, the file is not
// used: a peer deleted while the node was down is never programmed.
func TestStoreAnsweringAtStartWins(t *testing.T) {
	m := newStore(t, allocConfig)
	dir := t.TempDir()
	a, b := twoNodes(t, m, dir)
	sb := b.subnetFile(t).Subnet.Masked()
	a.shutdown(t)
	b.shutdown(t)
	if err := m.ReleaseLease(context.Background(), sb); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	a = startNodeOpts(t, nodeOpts{store: m, ip: "198.18.0.1", dir: dir, scope: testScope, logs: logs})
	waitFor(t, "ready", a.ready)
	if p := a.peers(); len(p) != 0 {
		t.Errorf("peers %v: the file's deleted peer was programmed although the store answered", p)
	}
	if logs.count("restored the data plane") != 0 || a.readyStatus(t) != readyOK {
		t.Errorf("started from the file with the store up (/readyz %q):\n%s", a.readyStatus(t), logs.String())
	}
}

// TestExpiredLastKnownStateIsNotUsed: an own lease past its recorded expiry
// may be another node's by now; the node waits for the store.
func TestExpiredLastKnownStateIsNotUsed(t *testing.T) {
	m := newStore(t, allocConfig)
	dir := t.TempDir()
	a := startNodeOpts(t, nodeOpts{store: m, ip: "198.18.0.1", dir: dir, scope: testScope})
	waitFor(t, "saved", func() bool { return savedState(dir) != nil })
	a.shutdown(t)
	st := savedState(dir)
	st.Own.Expiration = time.Now().Add(-time.Minute)
	data, err := laststate.Encode(st, "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := laststate.Save(statePath(dir), data); err != nil {
		t.Fatal(err)
	}
	cs := newConnectingStore()
	logs := &syncBuffer{}
	a = startNodeOpts(t, nodeOpts{store: cs, ip: "198.18.0.1", dir: dir, scope: testScope, logs: logs})
	waitFor(t, "the expiry said", func() bool { return logs.count("lease has expired; starting from the lease store only") == 1 })
	if a.ready() || logs.count("restored the data plane") != 0 {
		t.Error("started from an expired last known state")
	}
	cs.connect(m)
	waitFor(t, "ready from the store", a.ready)
}

// TestBadLastKnownState: every kind of bad file is reported once with what
// to do, moved aside, and the node starts as if there were none (and then
// writes a good one).
func TestBadLastKnownState(t *testing.T) {
	m := newStore(t, allocConfig)
	seedDir := t.TempDir()
	seed := startNodeOpts(t, nodeOpts{store: m, ip: "198.18.0.1", dir: seedDir, scope: testScope})
	waitFor(t, "saved", func() bool { return savedState(seedDir) != nil })
	seed.shutdown(t)
	good, err := os.ReadFile(statePath(seedDir))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, ip, scope string
		data            []byte
		problem         string
	}{
		{"truncated", "198.18.0.1", testScope, good[:len(good)/2], "is truncated"},
		{"corrupt", "198.18.0.1", testScope, bytes.Replace(good, []byte(`"revision":`), []byte(`"revision":9`), 1), "is corrupt"},
		{"newer", "198.18.0.1", testScope, []byte(`{"format":99,"sha256":"","state":{}}`), "from a newer weft"},
		{"other store", "198.18.0.1", "etcd /another/network", good, "from another network"},
		{"other node", "198.18.0.3", testScope, good, "from another network"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Dir(statePath(dir)), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(statePath(dir), tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			logs := &syncBuffer{}
			n := startNodeOpts(t, nodeOpts{store: m, ip: tt.ip, dir: dir, scope: tt.scope, logs: logs})
			waitFor(t, "ready", n.ready)
			if logs.count("the last known state is unusable; moved it aside") != 1 || logs.count(tt.problem) != 1 || logs.count("hint=") < 1 {
				t.Errorf("want the file reported once as %q with a hint:\n%s", tt.problem, logs.String())
			}
			aside, _ := filepath.Glob(statePath(dir) + ".bad-*")
			if len(aside) != 1 {
				t.Fatalf("moved aside: %v, want one file", aside)
			}
			if kept, err := os.ReadFile(aside[0]); err != nil || !bytes.Equal(kept, tt.data) {
				t.Errorf("the file moved aside differs from the bad one (%v)", err)
			}
			waitFor(t, "a good file written", func() bool {
				_, err := laststate.Load(statePath(dir), laststate.Expect{Scope: tt.scope, PublicIP: n.ip})
				return err == nil
			})
			// Reported once: the next start finds the good file.
			n.shutdown(t)
			logs2 := &syncBuffer{}
			n = startNodeOpts(t, nodeOpts{store: m, ip: tt.ip, dir: dir, scope: tt.scope, logs: logs2})
			waitFor(t, "ready again", n.ready)
			if logs2.count("unusable") != 0 {
				t.Errorf("reported again on the next start:\n%s", logs2.String())
			}
			n.shutdown(t)
			if err := m.ReleaseLease(context.Background(), n.subnetFile(t).Subnet.Masked()); err != nil && !errors.Is(err, subnet.ErrLeaseLost) {
				t.Fatal(err)
			}
		})
	}
}
