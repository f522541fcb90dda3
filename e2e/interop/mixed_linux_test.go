package interop

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/daemon"
	"github.com/weftnet/weft/lab"
	"github.com/weftnet/weft/lab/labtest"
	"github.com/weftnet/weft/subnet"
)

const subnetsPrefix = "/coreos.com/network/subnets/"

// mixedCase is one backend's mixed cluster.
type mixedCase struct {
	backend string
	// config is the network config; "" for lab.NetworkConfig.
	config string
	// ipMasq: udp drops a pod's replies from another node's underlay
	// address by design (not from the sender's subnet), so it runs
	// masqueraded as a Flannel deployment does; host-gw covers masquerade
	// on a kernel backend, vxlan the plain path.
	ipMasq bool
	// ipv6 makes the lab dual stack (lab.Options.IPv6).
	ipv6 bool
}

var mixedCases = []mixedCase{
	{backend: "vxlan"},
	{backend: "host-gw", ipMasq: true},
	// No Backend at all: Flannel's code and weft both run udp.
	{backend: "udp", config: `{"Network": "10.244.0.0/16"}`, ipMasq: true},
}

// requireJoinBothSides adds a Flannel node and a weft node to l and
// requires the full matrix (what names the lab's mode in the message).
func requireJoinBothSides(t *testing.T, l *lab.Lab, what string) {
	t.Helper()
	nf, err := l.AddFlannelNode(t.Context())
	if err != nil {
		t.Fatalf("add a Flannel node: %v", err)
	}
	nw, err := l.AddNode(t.Context())
	if err != nil {
		t.Fatalf("add a weft node: %v", err)
	}
	requireMatrix(t, l, fmt.Sprintf("%sFlannel node %s and weft node %s joined", what, nf.Name, nw.Name))
}

// mixedDualStackCases are the backends that carry IPv6, in dual-stack labs.
var mixedDualStackCases = []mixedCase{
	{backend: "vxlan", ipv6: true},
	{backend: "host-gw", ipMasq: true, ipv6: true},
}

// runMixedCases runs test for each of cases, in parallel subtests.
func runMixedCases(t *testing.T, cases []mixedCase, test func(*testing.T, mixedCase)) {
	for _, tc := range cases {
		t.Run(tc.backend, func(t *testing.T) {
			t.Parallel()
			test(t, tc)
		})
	}
}

// options are the lab of a mixed case, named from prefix: three nodes of
// two pods, n2 running Flannel.
func (tc mixedCase) options(prefix string) lab.Options {
	if tc.ipv6 {
		prefix += "6"
	}
	return lab.Options{
		IPv6:         tc.ipv6,
		Name:         labName(prefix + strings.ReplaceAll(tc.backend, "-", "") + "-"),
		Nodes:        3,
		PodsPerNode:  2,
		Backend:      tc.backend,
		Config:       tc.config,
		IPMasq:       tc.ipMasq,
		FlannelNodes: []string{"n2"},
	}
}

// weftTTL is the weft nodes' lease TTL here: renewed every 6 s, gone 12 s
// after its weftd dies. Flannel's TTL is fixed at 24 h; its renewal margin
// of 1439 minutes makes it renew one minute after each renewal.
const weftTTL = 12 * time.Second

// TestMixed runs, per backend and in parallel, a cluster of two weft nodes
// and one real Flannel node on one etcd and prefix: the full matrix both
// ways (pods, pod → node, node → pod); the leases and subnet file Flannel
// writes are byte for byte what weft writes; a Flannel node and a weft node
// join and are reached; leases weft cannot serve are reported once, listed,
// counted and shown by `weftctl status --cluster`, breaking no peer; renewals on both sides lose no ping; a weft lease
// that expires and a Flannel lease that expires are each dropped by the
// other side.
func TestMixed(t *testing.T) {
	bins(t)
	runMixedCases(t, mixedCases, testMixed)
}

func testMixed(t *testing.T, tc mixedCase) {
	o := tc.options("mx")
	o.WeftdArgs = []string{"--subnet-lease-ttl=" + weftTTL.String()}
	o.FlanneldArgs = []string{"--subnet-lease-renew-margin=1439"}
	l := up(t, o)
	requireMatrix(t, l, "n1 and n3 weft, n2 Flannel")
	requireWireFormats(t, l)

	requireJoinBothSides(t, l, "")

	requireUnservableHarmless(t, l, tc.backend)
	requireRenewalsHarmless(t, l, "n2", "n1")
	requireExpiryDropped(t, l, tc.backend)
}

// requireWireFormats checks every lease and the Flannel node's subnet file
// against what weft would write for the same content.
func requireWireFormats(t *testing.T, l *lab.Lab) {
	t.Helper()
	c := labtest.EtcdClient(t, l, clientv3.Config{})
	resp, err := c.Get(t.Context(), subnetsPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != len(l.Nodes) {
		t.Fatalf("%d leases for %d nodes", len(resp.Kvs), len(l.Nodes))
	}
	for _, kv := range resp.Kvs {
		var a subnet.LeaseAttrs
		if err := json.Unmarshal(kv.Value, &a); err != nil {
			t.Fatalf("lease %s = %s: %v", kv.Key, kv.Value, err)
		}
		again, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, kv.Value) {
			t.Errorf("lease %s:\nstored     %s\nweft writes %s", kv.Key, kv.Value, again)
		}
		t.Logf("lease %s = %s", kv.Key, kv.Value)
	}
	for _, n := range l.Nodes {
		raw, err := os.ReadFile(n.SubnetFile)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := subnet.ParseFile(raw)
		if err != nil {
			t.Fatalf("%s's subnet file (%s): %v", n.Name, n.DaemonName(), err)
		}
		if got := fi.Marshal(); !bytes.Equal(got, raw) {
			t.Errorf("%s's subnet file, by %s:\n%s\nweft writes:\n%s", n.Name, n.DaemonName(), raw, got)
		}
	}
}

// requireRenewalsHarmless pings both ways between Flannel node fl and weft
// node wf until each has renewed its lease (weft every TTL/2, Flannel a
// minute after the last renewal) and requires that the renewals broke
// nothing: neither side dropped or reprogrammed the other as a peer (their
// logs), and no ping was lost around a renewal the way a disruption loses
// them (renewalLoss). A ping lost away from every renewal is the loaded
// machine's (two userspace udp data paths on shared cores lost one in 4400
// once): logged, not failed, unless the path loses more than 1%.
func requireRenewalsHarmless(t *testing.T, l *lab.Lab, fl, wf string) {
	t.Helper()
	c := labtest.EtcdClient(t, l, clientv3.Config{})
	key := func(sn netip.Prefix) string { return subnetsPrefix + subnet.KeyName(sn, netip.Prefix{}) }
	rev := func(sn netip.Prefix) int64 {
		resp, err := c.Get(t.Context(), key(sn))
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("lease of %s: %v (%d keys)", sn, err, len(resp.Kvs))
		}
		return resp.Kvs[0].ModRevision
	}
	f, w := l.Node(fl), l.Node(wf)
	f0, w0 := rev(f.Subnet), rev(w.Subnet)
	who := map[string]string{key(f.Subnet): "Flannel " + f.Name, key(w.Subnet): "weft " + w.Name}
	renewals := watchRenewals(t, c, max(f0, w0)+1, who)
	fLog, wLog := fileSize(f.FlannelLog), fileSize(w.Log)
	const interval = 20 * time.Millisecond
	ps := []*labtest.Pinger{
		labtest.StartTimedPing(t, l, w.Pods[0].Name, f.Pods[0].IP, interval, 6000),
		labtest.StartTimedPing(t, l, f.Pods[0].Name, w.Pods[0].IP, interval, 6000),
	}
	start := time.Now()
	renewed := lab.Poll(t.Context(), 100*time.Second, 500*time.Millisecond, func() bool {
		return rev(f.Subnet) != f0 && rev(w.Subnet) != w0
	})
	if !renewed {
		t.Fatalf("no renewal of both leases within 100s (Flannel %s: %v, weft %s: %v)", f.Subnet, rev(f.Subnet) != f0, w.Subnet, rev(w.Subnet) != w0)
	}
	// The pings go on for the window after the last renewal, so a
	// disruption right after it shows: measuring, not waiting for state.
	select {
	case <-time.After(renewalAfter):
	case <-t.Context().Done():
	}
	var lost [][]time.Time
	sent := 0
	for i, p := range ps {
		st := p.Stop(t)
		t.Logf("ping %d (%s) across the renewals: %v", i, []string{w.Name + " → " + f.Name, f.Name + " → " + w.Name}[i], st)
		lost, sent = append(lost, st.LostAt()), sent+st.Sent
	}
	rs := renewals()
	t.Logf("renewals within %v: %s", time.Since(start).Round(time.Second), formatRenewals(rs, start))
	problems, notes := renewalLoss(rs, lost, sent)
	for _, n := range notes {
		t.Log(n)
	}
	for _, p := range problems {
		t.Errorf("RENEWALS BROKE TRAFFIC: %s", p)
	}
	if got := logSince(f.FlannelLog, fLog); strings.Contains(got, "Subnet removed: "+w.Subnet.String()) {
		t.Errorf("RENEWALS BROKE TRAFFIC: Flannel node %s dropped weft subnet %s while it was renewed:\n%s", f.Name, w.Subnet, got)
	}
	for _, line := range strings.Split(logSince(w.Log, wLog), "\n") {
		if strings.Contains(line, " subnet="+f.Subnet.String()+" ") || strings.HasSuffix(line, " subnet="+f.Subnet.String()) {
			if strings.Contains(line, `msg="peer removed"`) || strings.Contains(line, `msg="peer programmed"`) {
				t.Errorf("RENEWALS BROKE TRAFFIC: weft node %s reprogrammed Flannel's subnet %s while it was renewed: %s", w.Name, f.Subnet, line)
			}
		}
	}
}

// renewal is one lease renewal the test saw in etcd.
type renewal struct {
	at  time.Time
	who string
}

// renewalWindow is when, around a renewal seen in etcd, a disruption it
// caused would lose pings: the nodes see the event about when the test
// does; a peer flapped or a route replaced costs well under a second.
const renewalBefore, renewalAfter = 200 * time.Millisecond, time.Second

// renewalLoss judges the pings lost (lost[i]: when pinger i's lost requests
// were sent, of sent requests in all) against the renewals. A renewal that
// disrupts the path loses pings of both directions around it (each ping
// crosses both nodes), and does so at every renewal; load loses a ping
// here and there. So: a problem when both directions lost pings around one
// renewal, when pings were lost around three renewals or more, or when
// more than 1% of all pings were lost; every other loss is a note.
func renewalLoss(rs []renewal, lost [][]time.Time, sent int) (problems, notes []string) {
	total := 0
	for _, l := range lost {
		total += len(l)
	}
	if sent > 0 && total*100 > sent {
		problems = append(problems, fmt.Sprintf("%d of %d pings lost (more than 1%%)", total, sent))
	}
	near := func(r renewal, at time.Time) bool {
		return !at.Before(r.at.Add(-renewalBefore)) && !at.After(r.at.Add(renewalAfter))
	}
	lossy := 0
	for _, r := range rs {
		var dirs []int
		for i, l := range lost {
			if slices.ContainsFunc(l, func(at time.Time) bool { return near(r, at) }) {
				dirs = append(dirs, i)
			}
		}
		if len(dirs) > 0 {
			lossy++
		}
		if len(dirs) > 1 {
			problems = append(problems, fmt.Sprintf("pings of both directions lost around the renewal by %s at %s", r.who, r.at.Format("15:04:05.000")))
		}
	}
	if lossy >= 3 {
		problems = append(problems, fmt.Sprintf("pings lost around %d of %d renewals", lossy, len(rs)))
	}
	for i, l := range lost {
		for _, at := range l {
			where := "away from every renewal (load)"
			for _, r := range rs {
				if near(r, at) {
					d := at.Sub(r.at).Round(time.Millisecond)
					sign := "+"
					if d < 0 {
						sign = ""
					}
					where = fmt.Sprintf("%s%v from the renewal by %s", sign, d, r.who)
					break
				}
			}
			notes = append(notes, fmt.Sprintf("ping %d lost a request sent at %s, %s", i, at.Format("15:04:05.000"), where))
		}
	}
	return problems, notes
}

// watchRenewals records, from etcd revision rev on, each write of the keys
// in who (key → what to call it) until the test ends; the returned func
// stops the watch and returns what it saw.
func watchRenewals(t *testing.T, c *clientv3.Client, rev int64, who map[string]string) func() []renewal {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	var (
		mu  sync.Mutex
		rs  []renewal
		err error
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for resp := range c.Watch(clientv3.WithRequireLeader(ctx), subnetsPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev)) {
			now := time.Now()
			mu.Lock()
			if e := resp.Err(); e != nil {
				err = e
			}
			for _, ev := range resp.Events {
				if name, ok := who[string(ev.Kv.Key)]; ok && ev.Type == clientv3.EventTypePut {
					rs = append(rs, renewal{at: now, who: name})
				}
			}
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() []renewal {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			t.Errorf("watch of the renewals: %v", err)
		}
		return slices.Clone(rs)
	}
}

func formatRenewals(rs []renewal, start time.Time) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s +%v", r.who, r.at.Sub(start).Round(100*time.Millisecond))
	}
	return b.String()
}

// logSince is what was appended to the file at path after offset.
func logSince(path string, offset int64) string {
	b, _ := os.ReadFile(path)
	return string(b[min(offset, int64(len(b))):])
}

// leaseKey is node n's lease key in etcd: Flannel's dual-stack form
// (10.244.1.0-24&fd00:…-64) when the lab has IPv6.
func leaseKey(n *lab.Node) string { return subnetsPrefix + subnet.KeyName(n.Subnet, n.IPv6Subnet) }

// requireExpiryDropped lets a weft lease expire (its weftd SIGKILLed) and a
// Flannel lease expire (flanneld SIGKILLed, its etcd lease revoked as etcd
// does at the end of its 24 h TTL) and requires every node of the other
// kind to drop the gone subnet (both subnets in a dual-stack lab).
func requireExpiryDropped(t *testing.T, l *lab.Lab, backend string) {
	t.Helper()
	c := labtest.EtcdClient(t, l, clientv3.Config{})
	keyGone := func(n *lab.Node) bool {
		resp, err := c.Get(t.Context(), leaseKey(n))
		return err == nil && len(resp.Kvs) == 0
	}
	var weftNodes, flannelNodes []*lab.Node
	for _, n := range l.Nodes {
		if n.Flannel {
			flannelNodes = append(flannelNodes, n)
		} else {
			weftNodes = append(weftNodes, n)
		}
	}
	gone := func(by, of *lab.Node) bool {
		sn := of.Subnet
		if !by.Flannel && hasPeer(t, l, by.Name, sn) {
			return false
		}
		if backend == "udp" { // routes live in userspace
			return by.Flannel && fileHas(by.FlannelLog, "Subnet removed: "+sn.String()) || !by.Flannel
		}
		return routeTo(t, l, by.Name, sn) == "" && (!of.IPv6Subnet.IsValid() || routeTo(t, l, by.Name, of.IPv6Subnet) == "")
	}
	routes := func(by, of *lab.Node) string {
		if of.IPv6Subnet.IsValid() {
			return routeTo(t, l, by.Name, of.Subnet) + " " + routeTo(t, l, by.Name, of.IPv6Subnet)
		}
		return routeTo(t, l, by.Name, of.Subnet)
	}

	// A weft lease expires: its weftd dies without a word.
	w := weftNodes[len(weftNodes)-1]
	if err := l.StopWeftd(t.Context(), w.Name, true); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if !lab.Poll(t.Context(), 3*weftTTL, 200*time.Millisecond, func() bool { return keyGone(w) }) {
		t.Fatalf("weft lease %s still in etcd %v after its weftd died (TTL %v)", w.Subnet, 3*weftTTL, weftTTL)
	}
	t.Logf("weft lease %s expired %v after its weftd died", w.Subnet, time.Since(start).Round(100*time.Millisecond))
	for _, f := range flannelNodes {
		if !lab.Poll(t.Context(), 20*time.Second, 200*time.Millisecond, func() bool { return gone(f, w) }) {
			t.Errorf("Flannel node %s still routes expired weft subnet %s: %s", f.Name, w.Subnet, routes(f, w))
		}
	}

	// A Flannel lease expires: flanneld dies, etcd ends its lease.
	f := flannelNodes[0]
	resp, err := c.Get(t.Context(), leaseKey(f))
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
		t.Fatalf("Flannel lease %s: %v %+v", f.Subnet, err, resp)
	}
	if err := l.StopFlanneld(t.Context(), f.Name, true); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Revoke(t.Context(), clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatalf("revoke Flannel's etcd lease: %v", err)
	}
	for _, w := range weftNodes[:len(weftNodes)-1] {
		if !lab.Poll(t.Context(), 20*time.Second, 200*time.Millisecond, func() bool { return gone(w, f) }) {
			t.Errorf("weft node %s still has expired Flannel subnet %s: %s", w.Name, f.Subnet, routes(w, f))
		}
	}
}

// weftdStatus is node's weftd /status.
func weftdStatus(t *testing.T, l *lab.Lab, node string) daemon.Status {
	t.Helper()
	code, body, err := labtest.WeftdGet(t, l, node, "/status")
	if err != nil || code != http.StatusOK {
		t.Fatalf("status of %s: %d %v", node, code, err)
	}
	var st daemon.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("status of %s: %v", node, err)
	}
	return st
}

// hasPeer reports whether weftd on node lists sn among its peers (/status).
func hasPeer(t *testing.T, l *lab.Lab, node string, sn netip.Prefix) bool {
	t.Helper()
	return slices.ContainsFunc(weftdStatus(t, l, node).Peers, func(p backend.PeerStatus) bool { return p.Subnet == sn })
}

// unservable are leases a weft node of this network cannot serve, as the
// Flannel backends weft does not have write them (ipip, ipsec: no
// BackendData; extension: its command's output as a JSON string), and a
// lease of one of weft's backends that this network does not run.
func unservable(backendType string) []struct{ backend, value string } {
	other := "host-gw"
	if backendType == "host-gw" {
		other = "vxlan"
	}
	return []struct{ backend, value string }{
		{"ipip", `{"PublicIP":%q,"PublicIPv6":null,"BackendType":"ipip"}`},
		{"ipsec", `{"PublicIP":%q,"PublicIPv6":null,"BackendType":"ipsec"}`},
		{"extension", `{"PublicIP":%q,"PublicIPv6":null,"BackendType":"extension","BackendData":"output of the pre-startup command\n"}`},
		{other, `{"PublicIP":%q,"PublicIPv6":null,"BackendType":"` + other + `"}`},
	}
}

// requireUnservableHarmless writes, on free subnets and with etcd leases as
// Flannel nodes would, the leases of unservable(backend) and requires each
// weft node to report each once in its log, list it in /status with the
// reason, count it in weft_peer_leases_ignored, show it in `weftctl status
// --cluster`, and keep every other peer (the full matrix, Flannel's node
// included); once they are deleted, the lists are empty again.
func requireUnservableHarmless(t *testing.T, l *lab.Lab, backendType string) {
	t.Helper()
	c := labtest.EtcdClient(t, l, clientv3.Config{})
	bad := unservable(backendType)
	free := labtest.FreeSubnets(l, len(bad))
	grant, err := c.Grant(t.Context(), 600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = c.Revoke(context.Background(), grant.ID) })
	underlay := l.Node("n1").Underlay
	var weftNodes []*lab.Node
	logAt := map[string]int64{}
	for _, n := range l.Nodes {
		if !n.Flannel && l.WeftdAlive(n.Name) {
			weftNodes = append(weftNodes, n)
			logAt[n.Name] = fileSize(n.Log)
		}
	}
	want := map[netip.Prefix]string{}
	for i, b := range bad {
		ip := netip.AddrFrom4([4]byte{underlay.As4()[0], underlay.As4()[1], underlay.As4()[2], byte(200 + i)})
		key := subnetsPrefix + subnet.KeyName(free[i], netip.Prefix{})
		if _, err := c.Put(t.Context(), key, fmt.Sprintf(b.value, ip), clientv3.WithLease(grant.ID)); err != nil {
			t.Fatal(err)
		}
		want[free[i]] = b.backend
	}
	for _, n := range weftNodes {
		var st daemon.Status
		if !lab.Poll(t.Context(), 20*time.Second, 100*time.Millisecond, func() bool {
			st = weftdStatus(t, l, n.Name)
			return len(st.Ignored) == len(bad)
		}) {
			t.Fatalf("%s lists %d ignored leases, want the %d unservable ones: %+v", n.Name, len(st.Ignored), len(bad), st.Ignored)
		}
		for _, ig := range st.Ignored {
			if want[ig.Subnet] != ig.BackendType || !strings.Contains(ig.Reason, fmt.Sprintf("%q", ig.BackendType)) {
				t.Errorf("%s: ignored %+v, want backend %q with a reason naming it", n.Name, ig, want[ig.Subnet])
			}
		}
		if v := labtest.Metric(t, l, n.Name, "weft_peer_leases_ignored"); v != float64(len(bad)) {
			t.Errorf("%s: weft_peer_leases_ignored = %v, want %d", n.Name, v, len(bad))
		}
	}
	requireMatrix(t, l, "with leases weft cannot serve in the store")
	for _, n := range weftNodes {
		b, _ := os.ReadFile(n.Log)
		log := string(b[min(logAt[n.Name], int64(len(b))):])
		for sn := range want {
			if got := strings.Count(log, `msg="ignoring a lease" subnet=`+sn.String()+" "); got != 1 {
				t.Errorf("%s logged the lease of %s %d times, want once", n.Name, sn, got)
			}
		}
	}
	// weftctl status --cluster on a weft node: the ignored leases with the
	// reason, not probed; it exits non-zero, saying only they are out of reach.
	n := weftNodes[0]
	out, err := l.Run(t.Context(), n.Name, filepath.Join(l.BinDir, "weftctl"), "status", "--cluster", "-o", "json", "--etcd-endpoints", l.Etcd.Endpoint)
	if err == nil || !strings.Contains(err.Error(), "weftd ignores their leases") {
		t.Errorf("weftctl status --cluster on %s: err %v, want it to name the ignored leases as the only unreachable", n.Name, err)
	}
	var rows []struct {
		Subnet      netip.Prefix `json:"subnet"`
		Backend     string       `json:"backend"`
		WeftdState  string       `json:"weftdState"`
		WeftdReason string       `json:"weftdReason"`
		Reachable   bool         `json:"reachable"`
		Self        bool         `json:"self"`
	}
	if jerr := json.Unmarshal([]byte(out[:strings.LastIndex(out, "]")+1]), &rows); jerr != nil {
		t.Fatalf("weftctl status --cluster -o json: %v\n%s", jerr, out)
	}
	ignored := 0
	for _, r := range rows {
		switch {
		case want[r.Subnet] != "":
			ignored++
			if r.WeftdState != "ignored" || r.WeftdReason == "" || r.Backend != want[r.Subnet] {
				t.Errorf("status --cluster row %+v, want ignored with weftd's reason", r)
			}
		case !r.Self && !r.Reachable:
			t.Errorf("status --cluster: peer %s (%s) unreachable beside the ignored leases", r.Subnet, r.Backend)
		}
	}
	if ignored != len(bad) {
		t.Errorf("status --cluster shows %d of the %d ignored leases:\n%s", ignored, len(bad), out)
	}
	if _, err := c.Revoke(t.Context(), grant.ID); err != nil {
		t.Fatal(err)
	}
	for _, n := range weftNodes {
		if !lab.Poll(t.Context(), 20*time.Second, 100*time.Millisecond, func() bool { return len(weftdStatus(t, l, n.Name).Ignored) == 0 }) {
			t.Errorf("%s still lists ignored leases after they were deleted", n.Name)
		}
	}
}
