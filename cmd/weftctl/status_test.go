package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/alloc"
	"github.com/weftnet/weft/daemon"
	"github.com/weftnet/weft/daemon/laststate"
	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/etcd/etcdtest"
	"github.com/weftnet/weft/subnet/subnettest"
)

var fixedNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func sampleStatus() daemon.Status {
	return daemon.Status{
		Network:         netip.MustParsePrefix("10.244.0.0/16"),
		Subnet:          netip.MustParsePrefix("10.244.1.0/24"),
		PublicIP:        netip.MustParseAddr("198.18.102.10"),
		Backend:         "vxlan",
		MTU:             1450,
		LeaseExpiration: fixedNow.Add(23 * time.Hour),
		LastSync:        fixedNow.Add(-1500 * time.Millisecond),
		LastSyncError:   "",
		Ready:           map[string]bool{"leaseHeld": true, "backendReady": true, "cniConfInstalled": false, "subnetFileWritten": true},

		ControlPlaneConnected: true,
		Peers: []backend.PeerStatus{
			{Subnet: netip.MustParsePrefix("10.244.2.0/24"), PublicIP: netip.MustParseAddr("198.18.102.11"), State: backend.PeerProgrammed},
			{Subnet: netip.MustParsePrefix("10.244.3.0/24"), PublicIP: netip.MustParseAddr("2001:db8::3"), State: backend.PeerRefused, Reason: "PublicIP of another family"},
		},
	}
}

func TestStatusTable(t *testing.T) {
	var b strings.Builder
	if err := writeStatusTable(&b, statusView{Status: sampleStatus(), Device: "weft.1"}, fixedNow); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"Node       198.18.102.10",
		"Subnet     10.244.1.0/24  (expires in 23h0m0s)",
		"Backend    vxlan",
		"Device     weft.1",
		"MTU        1450",
		"Ready      NO (backendReady ✓ cniConfInstalled ✗ leaseHeld ✓ subnetFileWritten ✓)",
		"Store      connected",
		"Last sync  1.5s ago, ok",
		"Peers      2 (1 programmed, 1 refused, 0 failed)",
		"10.244.2.0/24  198.18.102.11  programmed  -",
		"10.244.3.0/24  2001:db8::3    refused     PublicIP of another family",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}

	st := sampleStatus()
	st.LastSyncError = "replace route: permission denied"
	st.Peers = nil
	st.ControlPlaneConnected = false
	b.Reset()
	if err := writeStatusTable(&b, statusView{Status: st}, fixedNow); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); !strings.Contains(out, "error: replace route: permission denied") ||
		!strings.Contains(out, "Store      unreachable (serving from the peers last known") ||
		!strings.Contains(out, "Device     -") || strings.Contains(out, "PEER SUBNET") {
		t.Errorf("table with a sync error and no peers:\n%s", out)
	}
	if strings.Contains(b.String(), "Stranded") {
		t.Errorf("a node with no stranded pods shows a Stranded row:\n%s", b.String())
	}

	st.StrandedPods = []string{"10.244.9.2 (abc)", "10.244.9.3 (def)"}
	b.Reset()
	if err := writeStatusTable(&b, statusView{Status: st}, fixedNow); err != nil {
		t.Fatal(err)
	}
	if want := "Stranded   2 pods hold addresses outside the subnet, no network until recreated: 10.244.9.2 (abc), 10.244.9.3 (def)"; !strings.Contains(b.String(), want) {
		t.Errorf("table lacks %q:\n%s", want, b.String())
	}
}

// fakeWeftd serves st on /status like weftd does.
func fakeWeftd(t *testing.T, st daemon.Status) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status" {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(st)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// closedAddr is a loopback address nothing listens on while the test runs.
func closedAddr(t *testing.T) string { return etcdtest.RefusedAddr(t) }

func TestStatusFromFakeWeftd(t *testing.T) {
	addr := fakeWeftd(t, sampleStatus())
	code, stdout, stderr := weftctl(t, "", "", "status", "--weftd-addr", addr)
	if code != 0 || !strings.Contains(stdout, "10.244.1.0/24") || !strings.Contains(stdout, "refused") {
		t.Fatalf("status: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = weftctl(t, "", "", "status", "--weftd-addr", addr, "-o", "json")
	var v statusView
	if err := json.Unmarshal([]byte(stdout), &v); code != 0 || err != nil {
		t.Fatalf("status -o json: exit %d, %v\n%s%s", code, err, stdout, stderr)
	}
	if want := sampleStatus(); v.Subnet != want.Subnet || len(v.Peers) != 2 || v.Peers[1].Reason != want.Peers[1].Reason {
		t.Errorf("status -o json = %+v", v)
	}
	if code, _, stderr := weftctl(t, "", "", "status", "-o", "yaml"); code != 2 || !strings.Contains(stderr, "use table or json") {
		t.Errorf("status -o yaml: exit %d, %q", code, stderr)
	}
}

func TestStatusWeftdDown(t *testing.T) {
	addr := closedAddr(t)
	code, _, stderr := weftctl(t, "", "", "status", "--weftd-addr", addr, "--state-dir", t.TempDir())
	if code != 1 || !strings.Contains(stderr, "is weftd running? it serves on --healthz-addr") || !strings.Contains(stderr, addr) ||
		!strings.Contains(stderr, "no last known state at") {
		t.Errorf("status with weftd down: exit %d, stderr %q", code, stderr)
	}
	// Something else answering on the port is reported as such.
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	code, _, stderr = weftctl(t, "", "", "status", "--weftd-addr", strings.TrimPrefix(srv.URL, "http://"))
	if code != 1 || !strings.Contains(stderr, "404") {
		t.Errorf("status against a non-weftd server: exit %d, stderr %q", code, stderr)
	}
}

// TestStatusRealDaemon runs two weftds (in-memory store, alloc backend) and
// reads one's status through its real HTTP listener.
func TestStatusRealDaemon(t *testing.T) {
	m := subnettest.New(subnettest.Options{})
	if err := m.SetNetworkConfig(context.Background(), []byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"alloc"}}`)); err != nil {
		t.Fatal(err)
	}
	a := startDaemon(t, m, "198.18.102.1")
	startDaemon(t, m, "198.18.102.2")
	var v statusView
	waitUntil(t, "node a ready with one programmed peer", func() bool {
		code, stdout, _ := weftctl(t, "", "", "status", "--weftd-addr", a.HealthAddr(), "-o", "json")
		v = statusView{}
		if code != 0 || json.Unmarshal([]byte(stdout), &v) != nil {
			return false
		}
		return len(v.Peers) == 1 && v.Peers[0].State == backend.PeerProgrammed && v.Ready["cniConfInstalled"]
	})
	if v.PublicIP != netip.MustParseAddr("198.18.102.1") || !v.Subnet.IsValid() || v.Backend != "alloc" || v.MTU == 0 {
		t.Errorf("status = %+v", v)
	}
	code, stdout, _ := weftctl(t, "", "", "status", "--weftd-addr", a.HealthAddr())
	if code != 0 || !strings.Contains(stdout, "Ready      yes") || !strings.Contains(stdout, v.Subnet.String()) ||
		!strings.Contains(stdout, "198.18.102.2") {
		t.Errorf("status table:\n%s", stdout)
	}
}

func startDaemon(t *testing.T, m subnet.Manager, ip string) *daemon.Daemon {
	t.Helper()
	dir := t.TempDir()
	u := backend.Underlay{Link: "eth0", Index: 2, MTU: 1500, PublicIP: netip.MustParseAddr(ip)}
	d, err := daemon.New(daemon.Config{
		SubnetFile:         filepath.Join(dir, "subnet.env"),
		CNIConfDir:         filepath.Join(dir, "net.d"),
		HealthzAddr:        "127.0.0.1:0",
		ResyncInterval:     200 * time.Millisecond,
		ConfigPollInterval: 50 * time.Millisecond,
	}, daemon.Deps{Manager: m, Backends: map[string]backend.Constructor{alloc.Type: alloc.New}, Underlay: &u})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("daemon %s: %v", ip, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("daemon %s did not stop", ip)
		}
	})
	waitUntil(t, "health listener", func() bool { return d.HealthAddr() != "" })
	return d
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestClusterStatus checks the --cluster table and JSON with a fake probe:
// which rows are probed and at which address, this node's row, weftd's
// view per peer, the exit error, and that probes run in parallel but never
// more than the worker limit.
func TestClusterStatus(t *testing.T) {
	m := subnettest.New(subnettest.Options{})
	cfg := `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`
	if err := m.SetNetworkConfig(context.Background(), []byte(cfg)); err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour)
	for i := 1; i <= 6; i++ {
		m.Put(subnet.Lease{Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24), LeaseID: 1, Expiration: exp,
			Attrs: subnet.LeaseAttrs{PublicIP: netip.AddrFrom4([4]byte{198, 18, 102, byte(10 + i)}), BackendType: "vxlan"}})
	}
	if err := m.ReserveSubnet(context.Background(), netip.MustParsePrefix("10.244.9.0/24"), netip.MustParseAddr("198.18.102.99")); err != nil {
		t.Fatal(err)
	}
	st := sampleStatus() // this node: 10.244.1.0/24; weftd knows .2 (programmed) and .3 (refused)
	addr := fakeWeftd(t, st)

	var inFlight, peak atomic.Int32
	var mu sync.Mutex
	probed := map[netip.Addr]bool{}
	release := make(chan struct{})
	var once sync.Once
	ping := func(ctx context.Context, to netip.Addr, _ time.Duration) (time.Duration, error) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		if n == 2 {
			once.Do(func() { close(release) }) // proves two run at once
		}
		select {
		case <-release:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		mu.Lock()
		probed[to] = true
		mu.Unlock()
		if to == netip.MustParseAddr("10.244.4.0") {
			return 0, errors.New("no reply within 1s")
		}
		return 300 * time.Microsecond, nil
	}
	out, err := clusterTable(t, m, addr, ping)
	if err == nil || !strings.Contains(err.Error(), "1 of 6 peers unreachable") {
		t.Errorf("error = %v, want 1 of 6 peers unreachable", err)
	}
	if p := peak.Load(); p != 2 {
		t.Errorf("peak parallel probes = %d, want exactly the 2 workers", p)
	}
	if len(probed) != 6 || probed[netip.MustParseAddr("10.244.1.0")] {
		t.Errorf("probed %v: want every lease but this node's, at <subnet>.0", probed)
	}
	for _, want := range []string{
		"10.244.1.0/24  198.18.102.11  vxlan    -",
		"this node",
		"10.244.2.0/24  198.18.102.12  vxlan    programmed",
		"refused (PublicIP of another family)",
		"10.244.4.0  no",
		"10.244.9.0/24  198.18.102.99  -",
		"never (reserved)",
		"300µs",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q", want)
		}
	}

	out.Reset()
	release = make(chan struct{})
	once = sync.Once{}
	_ = clusterStatus(context.Background(), &env{stdout: out, stderr: io.Discard}, m, addr, 5*time.Second, clusterProbe{timeout: time.Second, workers: 3, ping: ping}, "json")
	var rows []clusterRow
	if err := json.Unmarshal([]byte(out.String()), &rows); err != nil || len(rows) != 7 {
		t.Fatalf("json: %v\n%s", err, out.String())
	}
	if !rows[0].Self || rows[0].Probe.IsValid() || !rows[1].Reachable || rows[3].Reachable || rows[3].Error == "" || !rows[6].Reserved {
		t.Errorf("json rows = %+v", rows)
	}
}

func TestProbeTarget(t *testing.T) {
	for _, tt := range []struct{ backend, want, want6 string }{
		{"vxlan", "10.244.7.0", "fd00:10:244:7::"}, {"udp", "10.244.7.0", "fd00:10:244:7::"}, {"host-gw", "10.244.7.1", "fd00:10:244:7::1"},
	} {
		l := subnet.Lease{Subnet: netip.MustParsePrefix("10.244.7.0/24"), IPv6Subnet: netip.MustParsePrefix("fd00:10:244:7::/64"),
			Attrs: subnet.LeaseAttrs{BackendType: tt.backend}}
		if got := probeTarget(l, l.Subnet); got != netip.MustParseAddr(tt.want) {
			t.Errorf("%s: probe %s, want %s", tt.backend, got, tt.want)
		}
		if got := probeTarget(l, l.IPv6Subnet); got != netip.MustParseAddr(tt.want6) {
			t.Errorf("%s: IPv6 probe %s, want %s", tt.backend, got, tt.want6)
		}
		if got := probeTarget(l, netip.Prefix{}); got.IsValid() {
			t.Errorf("%s: probe %s of no subnet", tt.backend, got)
		}
	}
}

// TestStatusClusterCommand drives `status --cluster` end to end on a real
// etcd with weftd down: the warning names weftd, and a store with no leases
// prints just the header.
func TestStatusClusterCommand(t *testing.T) {
	etcd := etcdtest.Start(t)
	code, stdout, stderr := weftctl(t, etcd.Endpoints[0], "", "status", "--cluster", "--weftd-addr", closedAddr(t))
	if code != 0 || !strings.Contains(stdout, "SUBNET") || !strings.Contains(stderr, "is weftd running?") {
		t.Errorf("status --cluster on an empty store: exit %d\n%s%s", code, stdout, stderr)
	}
	code, _, stderr = weftctl(t, etcd.Endpoints[0], "", "status", "--cluster", "--probe-workers", "0")
	if code != 2 || !strings.Contains(stderr, "must be positive") {
		t.Errorf("--probe-workers 0: exit %d %q", code, stderr)
	}
}

// TestStatusLastKnownState: with weftd down, status shows the last known
// state weftd left in --state-dir (and still exits 1: weftd is down); a
// damaged file is named, not shown.
func TestStatusLastKnownState(t *testing.T) {
	dir := t.TempDir()
	cfg, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	if err != nil {
		t.Fatal(err)
	}
	attrs := func(ip string) subnet.LeaseAttrs {
		return subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(ip), BackendType: "host-gw"}
	}
	now := time.Now()
	st := &laststate.State{
		Scope: "etcd /coreos.com/network", Config: cfg, Revision: 42,
		Own: subnet.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), Attrs: attrs("198.18.102.10"), Expiration: now.Add(20 * time.Hour), LeaseID: 7},
		Peers: []subnet.Lease{
			{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Attrs: attrs("198.18.102.11"), Expiration: now.Add(5 * time.Hour), LeaseID: 8},
			{Subnet: netip.MustParsePrefix("10.244.3.0/24"), Attrs: attrs("198.18.102.12")},
		},
	}
	data, err := laststate.Encode(st, "weftd test")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, laststate.FileName)
	if err := laststate.Save(path, data); err != nil {
		t.Fatal(err)
	}
	addr := closedAddr(t)
	code, stdout, stderr := weftctl(t, "", "", "status", "--weftd-addr", addr, "--state-dir", dir)
	for _, want := range []string{
		"weftd is not reachable; its last known state (" + path,
		"Node     198.18.102.10",
		"Subnet   10.244.1.0/24  (expires in ",
		"Backend  host-gw",
		"Store    etcd /coreos.com/network at revision 42",
		"Peers    2",
		"10.244.2.0/24  198.18.102.11  expires in ",
		"10.244.3.0/24  198.18.102.12  reserved",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	if code != 1 || !strings.Contains(stderr, "shown: its last known state") {
		t.Errorf("exit %d, stderr %q; want 1 saying weftd is down", code, stderr)
	}
	code, stdout, _ = weftctl(t, "", "", "status", "--weftd-addr", addr, "--state-dir", dir, "-o", "json")
	var v lastKnownView
	if err := json.Unmarshal([]byte(stdout), &v); code != 1 || err != nil {
		t.Fatalf("status -o json: exit %d, %v\n%s", code, err, stdout)
	}
	if v.WeftdReachable || v.Subnet != st.Own.Subnet || len(v.Peers) != 2 || !v.Peers[1].Reserved || v.Revision != 42 || v.Saved.IsZero() {
		t.Errorf("status -o json = %+v", v)
	}

	if err := os.WriteFile(path, data[:len(data)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = weftctl(t, "", "", "status", "--weftd-addr", addr, "--state-dir", dir)
	if code != 1 || stdout != "" || !strings.Contains(stderr, "the last known state is unreadable") || !strings.Contains(stderr, "truncated") {
		t.Errorf("damaged file: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// TestStatusShowsIgnoredLeases: leases weftd ignores (a Flannel ipip node,
// a host-gw lease in a vxlan network) are listed with weftd's reason by
// `weftctl status` and `status --cluster`, not probed (this node has no
// route to them), and the error says that only they are unreachable.
func TestStatusShowsIgnoredLeases(t *testing.T) {
	m := subnettest.New(subnettest.Options{})
	if err := m.SetNetworkConfig(context.Background(), []byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`)); err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour)
	put := func(sn, ip, typ string) {
		m.Put(subnet.Lease{Subnet: netip.MustParsePrefix(sn), LeaseID: 1, Expiration: exp,
			Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(ip), BackendType: typ}})
	}
	put("10.244.1.0/24", "198.18.102.10", "vxlan") // this node
	put("10.244.2.0/24", "198.18.102.11", "vxlan")
	put("10.244.5.0/24", "198.18.102.15", "ipip")
	put("10.244.6.0/24", "198.18.102.16", "host-gw")
	st := sampleStatus()
	st.Peers = st.Peers[:1]
	st.Ignored = []daemon.IgnoredLease{
		{Subnet: netip.MustParsePrefix("10.244.5.0/24"), PublicIP: netip.MustParseAddr("198.18.102.15"), BackendType: "ipip", Reason: `backend "ipip", this network uses "vxlan"`},
		{Subnet: netip.MustParsePrefix("10.244.6.0/24"), PublicIP: netip.MustParseAddr("198.18.102.16"), BackendType: "host-gw", Reason: `backend "host-gw", this network uses "vxlan"`},
	}

	var b strings.Builder
	if err := writeStatusTable(&b, statusView{Status: st}, fixedNow); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Ignored    2 leases in the store are not peers of this node (listed below)",
		`10.244.5.0/24  198.18.102.15  ignored     backend "ipip", this network uses "vxlan"`,
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}

	probed := map[netip.Addr]bool{}
	var mu sync.Mutex
	ping := func(_ context.Context, to netip.Addr, _ time.Duration) (time.Duration, error) {
		mu.Lock()
		probed[to] = true
		mu.Unlock()
		return time.Millisecond, nil
	}
	var out, errOut strings.Builder
	err := clusterStatus(context.Background(), &env{stdout: &out, stderr: &errOut}, m, fakeWeftd(t, st), 5*time.Second,
		clusterProbe{timeout: time.Second, workers: 2, ping: ping}, "table")
	t.Log("\n" + out.String())
	if err == nil || !strings.Contains(err.Error(), "2 of 3 peers unreachable: weftd ignores their leases") {
		t.Errorf("error = %v, want the two ignored ones named as the only unreachable", err)
	}
	if len(probed) != 1 || !probed[netip.MustParseAddr("10.244.2.0")] {
		t.Errorf("probed %v, want only the vxlan peer", probed)
	}
	if want := `10.244.5.0/24  198.18.102.15  ipip     ignored (backend "ipip", this network uses "vxlan")`; !strings.Contains(out.String(), want) {
		t.Errorf("cluster table lacks %q", want)
	}
}

// TestStatusTableDualStack: a dual-stack node shows both families of its
// addresses, subnet, devices and peers.
func TestStatusTableDualStack(t *testing.T) {
	st := sampleStatus()
	st.IPv6Network, st.IPv6Subnet = netip.MustParsePrefix("fd00:10:244::/56"), netip.MustParsePrefix("fd00:10:244:1::/64")
	st.PublicIPv6 = netip.MustParseAddr("fd00:198:18::10")
	st.Peers[0].IPv6Subnet, st.Peers[0].PublicIPv6 = netip.MustParsePrefix("fd00:10:244:2::/64"), netip.MustParseAddr("fd00:198:18::11")
	st.Peers = append(st.Peers, backend.PeerStatus{IPv6Subnet: netip.MustParsePrefix("fd00:10:244:4::/64"),
		PublicIPv6: netip.MustParseAddr("fd00:198:18::14"), State: backend.PeerRefused, Reason: "lease has no IPv4 subnet"})
	var b strings.Builder
	if err := writeStatusTable(&b, statusView{Status: st, Device: "weft.1", Device6: "weft-v6.1"}, fixedNow); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"Node       198.18.102.10 fd00:198:18::10",
		"Network    10.244.0.0/16 fd00:10:244::/56",
		"Subnet     10.244.1.0/24 fd00:10:244:1::/64  (expires in 23h0m0s)",
		"Device     weft.1 weft-v6.1 (IPv6)",
		"10.244.2.0/24 fd00:10:244:2::/64  198.18.102.11 fd00:198:18::11  programmed",
		"fd00:10:244:4::/64                fd00:198:18::14                refused     lease has no IPv4 subnet",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	st.Subnet, st.PublicIP, st.Network = netip.Prefix{}, netip.Addr{}, netip.Prefix{} // IPv6 only
	if err := writeStatusTable(&b, statusView{Status: st, Device6: "weft-v6.1"}, fixedNow); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Node       fd00:198:18::10", "Subnet     fd00:10:244:1::/64  (expires", "Device     weft-v6.1 (IPv6)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("IPv6-only table lacks %q:\n%s", want, b.String())
		}
	}
}

// TestClusterStatusDualStack: `status --cluster` probes each family of a
// dual-stack lease and counts a peer unreachable in either family.
func TestClusterStatusDualStack(t *testing.T) {
	m := subnettest.New(subnettest.Options{})
	cfg := `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}`
	if err := m.SetNetworkConfig(context.Background(), []byte(cfg)); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		m.Put(subnet.Lease{Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24),
			IPv6Subnet: netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x10, 0x2, 0x44, 0, byte(i)}), 64),
			LeaseID:    1, Expiration: time.Now().Add(time.Hour),
			Attrs: subnet.LeaseAttrs{PublicIP: netip.AddrFrom4([4]byte{198, 18, 102, byte(10 + i)}),
				PublicIPv6: netip.AddrFrom16([16]byte{0xfd, 0, 1, 0x98, 0, 0x18, 15: byte(10 + i)}), BackendType: "host-gw"}})
	}
	st := sampleStatus()
	st.IPv6Subnet = netip.MustParsePrefix("fd00:10:244:1::/64")
	addr := fakeWeftd(t, st)
	var mu sync.Mutex
	probed := map[netip.Addr]bool{}
	ping := func(_ context.Context, to netip.Addr, _ time.Duration) (time.Duration, error) {
		mu.Lock()
		probed[to] = true
		mu.Unlock()
		if to == netip.MustParseAddr("fd00:10:244:3::1") {
			return 0, errors.New("no reply within 1s")
		}
		return 300 * time.Microsecond, nil
	}
	out, err := clusterTable(t, m, addr, ping)
	if err == nil || !strings.Contains(err.Error(), "1 of 2 peers unreachable") {
		t.Errorf("error = %v, want 1 of 2 peers unreachable", err)
	}
	for _, a := range []string{"10.244.2.1", "fd00:10:244:2::1", "10.244.3.1", "fd00:10:244:3::1"} {
		if !probed[netip.MustParseAddr(a)] {
			t.Errorf("%s not probed (probed %v)", a, probed)
		}
	}
	if len(probed) != 4 {
		t.Errorf("probed %v, want both families of the 2 peers", probed)
	}
	for _, want := range []string{
		"10.244.2.0/24 fd00:10:244:2::/64",
		"10.244.2.1 fd00:10:244:2::1  yes yes",
		"10.244.3.1 fd00:10:244:3::1  yes no",
		"this node",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q", want)
		}
	}
}

// clusterTable runs `status --cluster` (table) on m with weftd at addr, 2
// probe workers and ping, logs the table and returns it with the error.
func clusterTable(t *testing.T, m subnet.Manager, addr string, ping func(context.Context, netip.Addr, time.Duration) (time.Duration, error)) (*strings.Builder, error) {
	t.Helper()
	var out, errOut strings.Builder
	e := &env{stdout: &out, stderr: &errOut}
	err := clusterStatus(context.Background(), e, m, addr, 5*time.Second, clusterProbe{timeout: time.Second, workers: 2, ping: ping}, "table")
	t.Log("\n" + out.String())
	return &out, err
}
