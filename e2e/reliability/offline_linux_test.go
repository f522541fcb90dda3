package reliability

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/backend/udp"
	"github.com/weftnet/weft/backend/wireguard"
	"github.com/weftnet/weft/daemon/laststate"
	"github.com/weftnet/weft/lab"
	"github.com/weftnet/weft/subnet"
)

// restoreBudget is how soon after weftd starts its pods must reach the
// other nodes' pods, with or without the control plane (issue 20).
const restoreBudget = time.Second

// TestRestartDuringOutage restarts a node's weftd the way a reboot during a
// control-plane outage does, on each backend, in one lab of three nodes:
//
//  1. With etcd up: weftd SIGKILLed, its device, routes, firewall table and
//     subnet file deleted, weftd started. Measured: start → first reply
//     from each other node's pod (the figure to compare with).
//  2. A made-up peer lease P is programmed on n1, n1's weftd is SIGKILLed,
//     P deleted from etcd (the other nodes drop it), etcd frozen (SIGSTOP),
//     n1's data plane deleted as in 1, weftd started. Measured: start →
//     first reply, which must be within a second; /readyz "degraded" and
//     weft_control_plane_connected 0; a pod added during the outage
//     reaches and is reached by the other nodes.
//  3. etcd resumed (SIGCONT). Measured: time until n1 is "ready" again;
//     then every node's peers match etcd (P gone everywhere, also from
//     n1's last known state), n1 kept its subnet, no reconcile errors, no
//     error logged, every pod reaches every pod.
//  4. n1's last known state replaced by a truncated, a corrupt, a
//     newer-format file, one of another store prefix and n2's file in turn,
//     weftd restarted with etcd up:
//     each reported once with a hint, moved aside, the node ready as
//     without one, and a good file written again.
func TestRestartDuringOutage(t *testing.T) {
	bins(t)
	parallelEach(t, allBackends, func(t *testing.T, backend string) {
		l := up(t, lab.Options{Name: labName("of"), Nodes: 3, PodsPerNode: 1, Backend: backend})
		cli := etcdClient(t, l)
		n1 := l.Node("n1")
		sn1 := n1.Subnet
		src := n1.Pods[0]
		dsts := []*lab.Pod{l.Node("n2").Pods[0], l.Node("n3").Pods[0]}
		requireMatrix(t, l, "before")

		withCP := coldRestart(t, l, backend, src, dsts)
		waitStatus(t, l, "n1", "ready", 30*time.Second)

		p := fakePeer(t, l, cli, backend)
		if !lab.Poll(t.Context(), 30*time.Second, 100*time.Millisecond, func() bool { return savedPeers(t, n1)[p] }) {
			t.Fatalf("n1's last known state never listed the peer %s", p)
		}
		if err := l.StopWeftd(t.Context(), "n1", true); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Delete(t.Context(), leaseKey(p)); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"n2", "n3"} {
			if !lab.Poll(t.Context(), 30*time.Second, 100*time.Millisecond, func() bool { _, ok := statusPeers(t, l, n)[p]; return !ok }) {
				t.Fatalf("%s kept the deleted peer %s", n, p)
			}
		}
		if err := l.FreezeEtcd(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.ThawEtcd() }) // before the lab goes down, also on failure
		off := logSize(t, l, "n1")
		withoutCP := coldRestart(t, l, backend, src, dsts)
		if withoutCP > restoreBudget {
			t.Errorf("without etcd, n1's pods reached the other nodes %v after weftd started, want within %v", withoutCP, restoreBudget)
		}
		code, body, err := get(t, l, "n1", "/readyz")
		if err != nil || code != http.StatusOK || !strings.Contains(body, `"status": "degraded"`) || !strings.Contains(body, `"controlPlaneConnected": false`) {
			t.Errorf("n1 /readyz during the outage: %d %s %v; want 200 degraded", code, body, err)
		}
		if v := metric(t, l, "n1", "weft_control_plane_connected"); v != 0 {
			t.Errorf("weft_control_plane_connected %v during the outage, want 0", v)
		}
		if _, ok := statusPeers(t, l, "n1")[p]; !ok {
			t.Errorf("n1 did not restore every peer of its last known state (%s missing)", p)
		}
		if sn, err := n1.ReadSubnet(); err != nil || sn != sn1 {
			t.Errorf("subnet file after the restore: %v %v, want %s", sn, err, sn1)
		}
		added, err := l.AddPods(t.Context(), "n1", 1)
		if err != nil {
			t.Fatalf("a pod added during the outage: %v", err)
		}
		for _, d := range dsts {
			requireReach(t, l, added[0].Name, d.IP, 10*time.Second)
			requireReach(t, l, d.Name, added[0].IP, 10*time.Second)
		}

		if err := l.ThawEtcd(); err != nil {
			t.Fatal(err)
		}
		thawed := time.Now()
		waitStatus(t, l, "n1", "ready", 60*time.Second)
		rejoined := time.Since(thawed)
		if !lab.Poll(t.Context(), 30*time.Second, 200*time.Millisecond, func() bool { return !savedPeers(t, n1)[p] }) {
			t.Errorf("the deleted peer %s stays in n1's last known state", p)
		}
		for _, n := range l.Nodes {
			want := etcdPeers(t, cli, n.Subnet)
			var got map[netip.Prefix]netip.Addr
			if !lab.Poll(t.Context(), 30*time.Second, 200*time.Millisecond, func() bool { got = statusPeers(t, l, n.Name); return maps.Equal(got, want) }) {
				t.Errorf("%s programs %v, etcd has %v", n.Name, got, want)
			}
			if backend == "vxlan" {
				if k, e := kernelVXLAN(t, l, n.Name), etcdVXLAN(t, cli, n.Subnet); !k.equal(e) {
					t.Errorf("%s kernel %v differs from etcd %v", n.Name, k, e)
				}
			}
		}
		if sn, err := n1.ReadSubnet(); err != nil || sn != sn1 {
			t.Errorf("n1's subnet after the outage: %v %v, want %s kept", sn, err, sn1)
		}
		reconcileErrors := metric(t, l, "n1", `weft_reconcile_errors_total{kind="full"}`) + metric(t, l, "n1", `weft_reconcile_errors_total{kind="incremental"}`)
		errorLines := grepLines(logSince(t, l, "n1", off), "level=ERROR")
		if reconcileErrors != 0 || len(errorLines) != 0 {
			t.Errorf("n1 across the outage: %v reconcile errors, error lines %v; want none", reconcileErrors, errorLines)
		}
		requireMatrix(t, l, "after the outage")
		record(t, "weftd SIGKILLed, device/routes/firewall/subnet file deleted, started again, backend %s: first pod reply from the other nodes %v after start with etcd up, %v with etcd frozen (restored from the last known state); a pod added during the outage reached both nodes; n1 ready (not degraded) %v after etcd resumed; the lease deleted during the outage gone on every node and from n1's file; %v reconcile errors",
			backend, withCP.Round(time.Millisecond), withoutCP.Round(time.Millisecond), rejoined.Round(10*time.Millisecond), reconcileErrors)

		badStateFiles(t, l)
	})
}

// coldRestart SIGKILLs n1's weftd, deletes what a reboot deletes of the
// data plane (the backend's device, weft's routes, its firewall table, the
// subnet file on tmpfs; pods and the disk stay), starts weftd and returns
// how long after the start the pod src first got a reply from every pod in
// dsts.
func coldRestart(t *testing.T, l *lab.Lab, backend string, src *lab.Pod, dsts []*lab.Pod) time.Duration {
	t.Helper()
	n1 := l.Node("n1")
	if err := l.StopWeftd(t.Context(), "n1", true); err != nil {
		t.Fatal(err)
	}
	switch backend {
	case subnet.BackendVXLAN:
		run(t, l, "n1", "ip", "link", "del", "weft.1")
	case subnet.BackendUDP:
		run(t, l, "n1", "ip", "link", "del", udp.DeviceName)
	case subnet.BackendWireGuard:
		// The embedded wireguard-go's TUN may have gone with weftd.
		if _, err := l.Run(t.Context(), "n1", "ip", "link", "show", wireguard.DeviceName); err == nil {
			run(t, l, "n1", "ip", "link", "del", wireguard.DeviceName)
		}
	case subnet.BackendHostGW: // routes only
	default:
		t.Fatalf("coldRestart does not know what backend %s programs: add it", backend)
	}
	run(t, l, "n1", "ip", "route", "flush", "proto", "87")
	_, _ = l.Run(t.Context(), "n1", "nft", "delete", "table", "inet", "weft") // absent without rules
	if err := os.Remove(n1.SubnetFile); err != nil {
		t.Fatal(err)
	}
	if pingOnce(t.Context(), l, src.Name, dsts[0].IP) {
		t.Fatal("the pod still reaches the other node with the data plane deleted")
	}
	const interval, window = 20 * time.Millisecond, 6 * time.Second
	var pings []*pinger
	for _, d := range dsts {
		pings = append(pings, startTimedPing(t, l, src.Name, d.IP, interval, window))
	}
	start := time.Now()
	if err := l.StartWeftdNoWait("n1"); err != nil {
		t.Fatal(err)
	}
	var worst time.Duration
	for i, p := range pings {
		st := p.Wait(t)
		if st.FirstReply.IsZero() {
			t.Fatalf("%s never reached %s within %v of the start; n1's log:\n%s", src.Name, dsts[i].IP, window, strings.Join(logSince(t, l, "n1", 0), "\n"))
		}
		worst = max(worst, st.FirstReply.Sub(start))
	}
	return worst
}

// badStateFiles replaces n1's last known state by each kind of bad file in
// turn and restarts weftd with etcd up.
func badStateFiles(t *testing.T, l *lab.Lab) {
	t.Helper()
	n1 := l.Node("n1")
	path := filepath.Join(n1.StateDir, laststate.FileName)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	otherNode, err := os.ReadFile(filepath.Join(l.Node("n2").StateDir, laststate.FileName))
	if err != nil {
		t.Fatal(err)
	}
	st := savedState(t, n1)
	if st == nil {
		t.Fatal("n1 has no last known state")
	}
	st.Scope = "etcd /other/network"
	otherStore, err := laststate.Encode(st, "weftd test")
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, tc := range []struct {
		name, problem string
		data          []byte
	}{
		{"truncated", "is truncated", good[:len(good)/3]},
		{"corrupt", "is corrupt", []byte(strings.Replace(string(good), `"revision":`, `"revision":1`, 1))},
		{"newer", "from a newer weft", []byte(`{"format":2,"sha256":"","state":{}}` + "\n")},
		{"another store prefix", "from another network", otherStore},
		{"another node's", "from another network", otherNode},
	} {
		if string(tc.data) == string(good) {
			t.Fatalf("%s: the edit did not apply", tc.name)
		}
		if err := l.StopWeftd(t.Context(), "n1", true); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, tc.data, 0o600); err != nil {
			t.Fatal(err)
		}
		off := logSize(t, l, "n1")
		if _, err := l.StartWeftd(t.Context(), "n1"); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		said := grepLines(logSince(t, l, "n1", off), "the last known state is unusable")
		if len(said) != 1 || !strings.Contains(said[0], tc.problem) || !strings.Contains(said[0], "hint=") {
			t.Errorf("%s: weftd said %q, want once %q with a hint", tc.name, said, tc.problem)
		}
		if !lab.Poll(t.Context(), 30*time.Second, 200*time.Millisecond, func() bool {
			data, err := os.ReadFile(path)
			return err == nil && string(data) != string(tc.data) && savedState(t, n1) != nil
		}) {
			t.Errorf("%s: no good last known state written again", tc.name)
		}
		if len(said) == 1 {
			// What weftd said, without the path: `... .json is truncated: ...`.
			detail := said[0]
			if i := strings.Index(detail, laststate.FileName+" "); i >= 0 {
				detail = detail[i+len(laststate.FileName)+1:]
			}
			detail, _, _ = strings.Cut(detail, `" movedTo=`)
			seen = append(seen, fmt.Sprintf("%s (%s)", tc.name, detail))
		}
	}
	aside, _ := filepath.Glob(path + ".bad-*")
	if len(aside) != laststate.KeepBad {
		t.Errorf("%d files moved aside kept, want the %d newest: %v", len(aside), laststate.KeepBad, aside)
	}
	record(t, "bad last known state, etcd up: %s; each reported once with a hint, moved aside, the node ready as without one and a good file written again; %d moved-aside files kept",
		strings.Join(seen, "; "), len(aside))
}

// fakeBackendData is the BackendData of a made-up peer on backend: what
// the backend needs to program it (vxlan a VtepMAC, wireguard a public
// key), null for the others.
func fakeBackendData(backend string) string {
	switch backend {
	case subnet.BackendVXLAN:
		return `{"VNI":1,"VtepMAC":"0a:58:00:00:00:c8"}`
	case subnet.BackendWireGuard:
		var key [32]byte
		for i := range key {
			key[i] = byte(200 + i)
		}
		return fmt.Sprintf(`{"PublicKey":%q,"Port":51820}`, base64.StdEncoding.EncodeToString(key[:]))
	}
	return "null"
}

// fakePeer writes a lease for a node that does not exist (an unused
// underlay address, a free subnet), bound to an etcd lease as a node's is.
func fakePeer(t *testing.T, l *lab.Lab, cli *clientv3.Client, backend string) netip.Prefix {
	t.Helper()
	sn := freeSubnets(l, 1)[0]
	a := l.Underlay.Masked().Addr().As4()
	a[3] = 9 // between etcd's members and the nodes: nobody's
	ip := netip.AddrFrom4(a)
	value := fmt.Sprintf(`{"PublicIP":%q,"BackendType":%q,"BackendData":%s}`, ip, backend, fakeBackendData(backend))
	grant, err := cli.Grant(t.Context(), 600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(t.Context(), leaseKey(sn), value, clientv3.WithLease(grant.ID)); err != nil {
		t.Fatal(err)
	}
	return sn
}

// waitStatus polls node's /readyz until its "status" is want.
func waitStatus(t *testing.T, l *lab.Lab, node, want string, d time.Duration) {
	t.Helper()
	var body string
	if !lab.Poll(t.Context(), d, 20*time.Millisecond, func() bool {
		_, body, _ = get(t, l, node, "/readyz")
		return strings.Contains(body, fmt.Sprintf(`"status": %q`, want))
	}) {
		t.Fatalf("%s /readyz not %q within %v: %s", node, want, d, body)
	}
}

// statusPeers is the peers node's weftd programmed, by its /status.
func statusPeers(t *testing.T, l *lab.Lab, node string) map[netip.Prefix]netip.Addr {
	t.Helper()
	code, body, err := get(t, l, node, "/status")
	if err != nil || code != http.StatusOK {
		t.Fatalf("%s /status: %d %v", node, code, err)
	}
	var st struct {
		Peers []struct {
			Subnet   netip.Prefix
			PublicIP netip.Addr
			State    string
		}
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	out := map[netip.Prefix]netip.Addr{}
	for _, p := range st.Peers {
		if p.State == "programmed" {
			out[p.Subnet] = p.PublicIP
		}
	}
	return out
}

// etcdPeers is every lease in etcd but own's.
func etcdPeers(t *testing.T, cli *clientv3.Client, own netip.Prefix) map[netip.Prefix]netip.Addr {
	t.Helper()
	resp, err := cli.Get(t.Context(), prefix+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[netip.Prefix]netip.Addr{}
	for _, kv := range resp.Kvs {
		sn, err := netip.ParsePrefix(strings.Replace(strings.TrimPrefix(string(kv.Key), prefix+"/subnets/"), "-", "/", 1))
		var v struct{ PublicIP netip.Addr }
		if err != nil || sn == own || json.Unmarshal(kv.Value, &v) != nil {
			continue
		}
		out[sn] = v.PublicIP
	}
	return out
}

// savedState is n's last known state file; nil while unreadable.
func savedState(t *testing.T, n *lab.Node) *laststate.State {
	t.Helper()
	st, err := laststate.Load(filepath.Join(n.StateDir, laststate.FileName), laststate.Expect{})
	if err != nil {
		return nil
	}
	return st
}

func savedPeers(t *testing.T, n *lab.Node) map[netip.Prefix]bool {
	t.Helper()
	out := map[netip.Prefix]bool{}
	if st := savedState(t, n); st != nil {
		for _, l := range st.Peers {
			out[l.Subnet] = true
		}
	}
	return out
}
