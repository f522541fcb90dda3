package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
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
	"github.com/weftnet/weft/daemon/masq"
	"github.com/weftnet/weft/daemon/masq/masqtest"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/subnettest"
)

// allocConfig hands nodes subnets up to 10.244.199.0/24 only: a lease a test
// writes itself beside a running node is taken from 10.244.200.0/24 up, so it
// never lands on the node's own (random) subnet.
const allocConfig = `{"Network":"10.244.0.0/16","SubnetMax":"10.244.199.0","Backend":{"Type":"alloc"}}`

// node is one weftd under test, on the in-memory lease store and the alloc
// backend.
type node struct {
	d    *Daemon
	dir  string
	ip   netip.Addr
	stop context.CancelFunc
	done chan error
	// stopped is set once Run returned; only the test goroutine touches it.
	stopped bool
}

func startNode(t *testing.T, m subnet.Manager, ip string, dir string, fake *masqtest.Fake) *node {
	t.Helper()
	return startNodeWith(t, m, ip, dir, fake, alloc.New)
}

// filteredAlloc is the alloc backend claiming a peer filter on port 8472,
// as vxlan does.
type filteredAlloc struct{ backend.Backend }

func (filteredAlloc) FilterPort() (uint16, bool) { return 8472, true }

func newFilteredAlloc(o backend.Options) (backend.Backend, error) {
	b, err := alloc.New(o)
	return filteredAlloc{b}, err
}

func startNodeWith(t *testing.T, m subnet.Manager, ip string, dir string, fake *masqtest.Fake, newBackend backend.Constructor) *node {
	t.Helper()
	return startNodeOpts(t, nodeOpts{store: m, ip: ip, dir: dir, fake: fake, newBackend: newBackend})
}

// nodeOpts say how startNodeOpts runs a daemon; zero fields take the
// defaults of startNode.
type nodeOpts struct {
	store      subnet.Manager
	ip, dir    string
	ip6        string // the node's PublicIPv6; "" for none (ip "": none either)
	fake       *masqtest.Fake
	newBackend backend.Constructor
	logs       *syncBuffer // nil: discarded
	scope      string      // Deps.StoreScope
	onReady    func(context.Context) error
	pprof      bool // Config.Pprof
}

func startNodeOpts(t *testing.T, o nodeOpts) *node {
	t.Helper()
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	if o.newBackend == nil {
		o.newBackend = alloc.New
	}
	dir := o.dir
	u := backend.Underlay{Link: "eth0", Index: 2, MTU: 1500}
	if o.ip != "" {
		u.PublicIP = netip.MustParseAddr(o.ip)
	}
	if o.ip6 != "" {
		u.PublicIPv6 = netip.MustParseAddr(o.ip6)
	}
	deps := Deps{Manager: o.store, Backends: map[string]backend.Constructor{alloc.Type: o.newBackend}, Underlay: &u, StoreScope: o.scope, OnReady: o.onReady}
	if o.fake != nil {
		deps.Masq = o.fake
	}
	if o.logs != nil {
		deps.Logger = slog.New(slog.NewTextHandler(o.logs, nil))
	}
	d, err := New(Config{
		SubnetFile:         filepath.Join(dir, "subnet.env"),
		CNIConfDir:         filepath.Join(dir, "net.d"),
		CNIIPAMDir:         filepath.Join(dir, "ipam"),
		StateDir:           filepath.Join(dir, "state"),
		HealthzAddr:        "127.0.0.1:0",
		IPMasq:             true,
		ForwardRules:       true,
		ResyncInterval:     200 * time.Millisecond,
		ConfigPollInterval: 50 * time.Millisecond,
		Pprof:              o.pprof,
	}, deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{d: d, dir: dir, ip: u.PublicIP, stop: cancel, done: make(chan error, 1)}
	if !n.ip.IsValid() {
		n.ip = u.PublicIPv6
	}
	go func() { n.done <- d.Run(ctx) }()
	t.Cleanup(func() { n.shutdown(t) })
	return n
}

// shutdown stops the daemon and checks it exits cleanly; safe twice.
func (n *node) shutdown(t *testing.T) {
	t.Helper()
	n.stop()
	if n.stopped {
		return
	}
	select {
	case err := <-n.done:
		n.stopped = true
		if err != nil {
			t.Errorf("daemon %s exited with %v", n.ip, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("daemon %s did not stop within 10s", n.ip)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (n *node) ready() bool {
	for _, ok := range n.d.readiness() {
		if !ok {
			return false
		}
	}
	return true
}

func (n *node) subnetFile(t *testing.T) subnet.FileInfo {
	t.Helper()
	f, err := subnet.ReadFile(filepath.Join(n.dir, "subnet.env"))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (n *node) peers() map[netip.Prefix]netip.Addr {
	out := map[netip.Prefix]netip.Addr{}
	for _, p := range n.d.Status().Peers {
		out[p.Subnet] = p.PublicIP
	}
	return out
}

func newStore(t *testing.T, config string) *subnettest.Manager {
	t.Helper()
	m := subnettest.New(subnettest.Options{})
	if config != "" {
		if err := m.SetNetworkConfig(context.Background(), []byte(config)); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func TestNodesComeUpAndSeeEachOther(t *testing.T) {
	m := newStore(t, allocConfig)
	fake := &masqtest.Fake{}
	a := startNode(t, m, "198.18.0.1", "", fake)
	b := startNode(t, m, "198.18.0.2", "", nil)
	waitFor(t, "both nodes ready", func() bool { return a.ready() && b.ready() })

	fa, fb := a.subnetFile(t), b.subnetFile(t)
	if fa.Subnet.Masked() == fb.Subnet.Masked() {
		t.Fatalf("two nodes got the same subnet %s", fa.Subnet)
	}
	if fa.Network != netip.MustParsePrefix("10.244.0.0/16") || fa.MTU != 1500 || !fa.IPMasq {
		t.Errorf("subnet file = %+v", fa)
	}
	if gw := fa.Subnet.Addr(); gw != fa.Subnet.Masked().Addr().Next() {
		t.Errorf("FLANNEL_SUBNET %s should carry the gateway .1 address", fa.Subnet)
	}
	waitFor(t, "a sees b as its only peer", func() bool {
		p := a.peers()
		return len(p) == 1 && p[fb.Subnet.Masked()] == b.ip
	})
	conf, err := os.ReadFile(filepath.Join(a.dir, "net.d", CNIConfFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(conf, CNIConfList(CNIConf{SubnetFile: filepath.Join(a.dir, "subnet.env"), IPAMDir: filepath.Join(a.dir, "ipam"), Network: CNINetworkName, Bridge: DefaultCNIBridge})) {
		t.Errorf("conflist = %s", conf)
	}
	if fi, err := os.Stat(filepath.Join(a.dir, "state")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir: %v, %v; want a 0700 directory", fi, err)
	}
	rules, ok := fake.Rules()
	if !ok || rules.Subnet != fa.Subnet.Masked() || !rules.Masquerade {
		t.Errorf("masquerade rules = %+v, want subnet %s with masquerade", rules, fa.Subnet.Masked())
	}

	// b goes away for good: a must drop it.
	b.shutdown(t)
	if err := m.ReleaseLease(context.Background(), fb.Subnet.Masked()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a drops b", func() bool { return len(a.peers()) == 0 })
}

// heldWatch is a lease store whose watch starts only once open is closed,
// as an informer that has not finished its initial list.
type heldWatch struct {
	subnet.Manager
	open chan struct{}
}

func (h heldWatch) WatchLeases(ctx context.Context, out chan<- subnet.LeaseBatch) error {
	select {
	case <-h.open:
	case <-ctx.Done():
		return ctx.Err()
	}
	return h.Manager.WatchLeases(ctx, out)
}

// A node is ready (/readyz, READY=1, OnReady) only once the peers of the
// store's first snapshot are programmed: a restarted udp node keeps its
// peers in memory only, and reported ready before its watch had listed them
// it dropped pod traffic to every peer (TestKubeE2E/udp's flake).
func TestReadyOnlyOncePeersProgrammed(t *testing.T) {
	m := newStore(t, allocConfig)
	b := startNode(t, m, "198.18.0.2", "", nil)
	waitFor(t, "b ready", b.ready)
	sb := b.subnetFile(t).Subnet.Masked()

	held := heldWatch{Manager: m, open: make(chan struct{})}
	var reported atomic.Int32
	a := startNodeOpts(t, nodeOpts{store: held, ip: "198.18.0.1", onReady: func(context.Context) error { reported.Add(1); return nil }})
	r := a.d.readiness
	waitFor(t, "a's lease, backend and CNI config", func() bool {
		return r()["leaseHeld"] && r()["backendReady"] && r()["cniConfInstalled"] && r()["subnetFileWritten"]
	})
	if a.ready() || r()["peersProgrammed"] {
		t.Fatalf("a is ready (%v) before its watch listed a peer", r())
	}
	resp, err := http.Get("http://" + a.d.HealthAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d before the peers are programmed, want 503", resp.StatusCode)
	}
	if n := reported.Load(); n != 0 {
		t.Errorf("OnReady called %d times before the peers are programmed", n)
	}

	close(held.open)
	waitFor(t, "a ready", a.ready)
	if p := a.peers(); len(p) != 1 || p[sb] != b.ip {
		t.Errorf("a is ready with peers %v, want b's %s", p, sb)
	}
	waitFor(t, "OnReady", func() bool { return reported.Load() == 1 })
}

func TestHTTPEndpoints(t *testing.T) {
	m := newStore(t, "")
	a := startNode(t, m, "198.18.0.1", "", nil)
	waitFor(t, "listener", func() bool { return a.d.HealthAddr() != "" })
	get := func(path string) (int, map[string]any) {
		resp, err := http.Get("http://" + a.d.HealthAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d before config, want 200 (alive)", code)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || body["leaseHeld"] != false {
		t.Errorf("/readyz = %d %v without config, want 503 with leaseHeld false", code, body)
	}
	if err := m.SetNetworkConfig(context.Background(), []byte(allocConfig)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/readyz 200 after the config appears", func() bool { code, _ := get("/readyz"); return code == http.StatusOK })
	code, body := get("/status")
	if code != http.StatusOK || body["backend"] != "alloc" || body["subnet"] == "" {
		t.Errorf("/status = %d %v", code, body)
	}
	resp, err := http.Get("http://" + a.d.HealthAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	for _, want := range []string{"weft_lease_acquisitions_total 1", "weft_build_info{", "weft_reconcile_passes_total{kind=\"full\"}", "weft_lease_expiry_timestamp_seconds", "weft_peers{backend=\"alloc\",state=\"programmed\"} 0"} {
		if !bytes.Contains(buf.Bytes(), []byte(want)) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestPprof: --pprof adds Go's profiles to the health server, only on a
// loopback address; without it they are not served.
func TestPprof(t *testing.T) {
	m := newStore(t, allocConfig)
	get := func(n *node, path string) (int, string) {
		waitFor(t, "listener", func() bool { return n.d.HealthAddr() != "" })
		resp, err := http.Get("http://" + n.d.HealthAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	on := startNodeOpts(t, nodeOpts{store: m, ip: "198.18.0.1", pprof: true})
	if code, body := get(on, "/debug/pprof/heap?debug=1"); code != http.StatusOK || !strings.Contains(body, "heap profile:") {
		t.Errorf("with --pprof: /debug/pprof/heap = %d %.80q", code, body)
	}
	off := startNodeOpts(t, nodeOpts{store: m, ip: "198.18.0.2"})
	if code, _ := get(off, "/debug/pprof/heap?debug=1"); code != http.StatusNotFound {
		t.Errorf("without --pprof: /debug/pprof/heap = %d, want 404", code)
	}
	for _, addr := range []string{"0.0.0.0:9474", "198.18.0.1:9474", "off", ""} {
		_, err := New(Config{HealthzAddr: addr, Pprof: true}, Deps{Manager: m, Backends: map[string]backend.Constructor{alloc.Type: alloc.New}})
		if err == nil || !strings.Contains(err.Error(), "--pprof") {
			t.Errorf("--pprof with health address %q: %v, want refused", addr, err)
		}
	}
}

func TestRestartReusesSubnet(t *testing.T) {
	m := newStore(t, allocConfig)
	dir := t.TempDir()
	a := startNode(t, m, "198.18.0.1", dir, nil)
	waitFor(t, "ready", a.ready)
	first := a.subnetFile(t).Subnet
	a.shutdown(t)

	// Same PublicIP: the lease is still in the store and is renewed.
	conf := filepath.Join(dir, "net.d", CNIConfFile)
	before, err := os.Stat(conf)
	if err != nil {
		t.Fatal(err)
	}
	a = startNode(t, m, "198.18.0.1", dir, nil)
	waitFor(t, "ready after restart", a.ready)
	if got := a.subnetFile(t).Subnet; got != first {
		t.Fatalf("after restart subnet = %s, want %s", got, first)
	}
	// The same content is not rewritten: runtimes watching the directory
	// see no change.
	if after, err := os.Stat(conf); err != nil || !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("the unchanged CNI conflist was rewritten on restart (%v)", err)
	}
	a.shutdown(t)

	// The lease is gone (e.g. expired while down): the subnet file brings
	// the same subnet back, even with a new address.
	if err := m.ReleaseLease(context.Background(), first.Masked()); err != nil {
		t.Fatal(err)
	}
	a = startNode(t, m, "198.18.0.9", dir, nil)
	waitFor(t, "ready after lease loss", a.ready)
	if got := a.subnetFile(t).Subnet; got != first {
		t.Fatalf("with the lease gone, subnet = %s, want %s from the subnet file", got, first)
	}
}

func TestLostLeaseIsReacquiredWithoutExit(t *testing.T) {
	m := newStore(t, allocConfig)
	a := startNode(t, m, "198.18.0.1", "", nil)
	waitFor(t, "ready", a.ready)
	sn := a.subnetFile(t).Subnet.Masked()
	if err := m.ReleaseLease(context.Background(), sn); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the lease back in the store", func() bool {
		leases, _, err := m.ListLeases(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range leases {
			if l.Subnet == sn && l.Attrs.PublicIP == a.ip {
				return true
			}
		}
		return false
	})
	waitFor(t, "ready again", a.ready)
	select {
	case err := <-a.done:
		t.Fatalf("daemon exited after losing its lease: %v", err)
	default:
	}
}

func TestIgnoresUnusablePeerLeases(t *testing.T) {
	m := newStore(t, allocConfig)
	a := startNode(t, m, "198.18.0.1", "", nil)
	waitFor(t, "ready", a.ready)
	cfg, err := m.GetNetworkConfig(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// A vxlan node in an alloc network, and a good alloc peer.
	for _, attrs := range []subnet.LeaseAttrs{
		{PublicIP: netip.MustParseAddr("198.18.0.7"), BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}`)},
		{PublicIP: netip.MustParseAddr("198.18.0.8"), BackendType: "alloc"},
	} {
		if _, err := m.AcquireLease(context.Background(), subnet.AcquireRequest{Config: cfg, Attrs: attrs, TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "only the alloc peer", func() bool {
		p := a.peers()
		if len(p) != 1 {
			return false
		}
		for _, ip := range p {
			return ip == netip.MustParseAddr("198.18.0.8")
		}
		return false
	})
}

func TestConfigChangeMovesTheNode(t *testing.T) {
	m := newStore(t, allocConfig)
	fake := &masqtest.Fake{}
	a := startNode(t, m, "198.18.0.1", "", fake)
	waitFor(t, "ready", a.ready)
	if err := m.SetNetworkConfig(context.Background(), []byte(`{"Network":"10.50.0.0/16","Backend":{"Type":"alloc"}}`)); err != nil {
		t.Fatal(err)
	}
	want := netip.MustParsePrefix("10.50.0.0/16")
	waitFor(t, "the subnet file in the new network", func() bool {
		f, err := subnet.ReadFile(filepath.Join(a.dir, "subnet.env"))
		return err == nil && f.Network == want && want.Contains(f.Subnet.Addr()) && a.ready()
	})
	if r, ok := fake.Rules(); !ok || r.Network != want {
		t.Errorf("masquerade rules %+v not moved to %s", r, want)
	}
}

var _ masq.Manager = (*masqtest.Fake)(nil)

func TestPeerFilterFollowsPeers(t *testing.T) {
	m := newStore(t, allocConfig)
	fake := &masqtest.Fake{}
	a := startNodeWith(t, m, "198.18.0.1", "", fake, newFilteredAlloc)
	b := startNode(t, m, "198.18.0.2", "", nil)
	waitFor(t, "both ready", func() bool { return a.ready() && b.ready() })
	filter := func() []netip.Addr {
		port, peers, on := fake.PeerFilter()
		if !on || port != 8472 {
			return nil
		}
		return peers
	}
	waitFor(t, "b let in", func() bool { p := filter(); return len(p) == 1 && p[0] == b.ip })
	b.shutdown(t)
	if err := m.ReleaseLease(context.Background(), b.subnetFile(t).Subnet.Masked()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b shut out", func() bool { _, peers, on := fake.PeerFilter(); return on && len(peers) == 0 })
}

func TestSystemdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	m := newStore(t, allocConfig)
	dir := t.TempDir()
	u := backend.Underlay{Link: "eth0", Index: 2, MTU: 1500, PublicIP: netip.MustParseAddr("198.18.0.1")}
	d, err := New(Config{
		SubnetFile: filepath.Join(dir, "subnet.env"), CNIConfDir: filepath.Join(dir, "net.d"), HealthzAddr: "off",
		NotifySocket: sock, WatchdogInterval: 100 * time.Millisecond,
	}, Deps{Manager: m, Backends: map[string]backend.Constructor{alloc.Type: alloc.New}, Underlay: &u})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	read := func() string {
		buf := make([]byte, 256)
		_ = ln.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := ln.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
	var got []string
	for len(got) < 3 {
		got = append(got, read())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	last := read()
	for ; last == "WATCHDOG=1" && len(got) < 100; last = read() {
		got = append(got, last)
	}
	if last != "STOPPING=1" {
		t.Errorf("after the stop got %q, want STOPPING=1", last)
	}
	ready, watchdog := false, false
	for _, m := range got {
		ready = ready || strings.HasPrefix(m, "READY=1\nSTATUS=subnet 10.244.")
		watchdog = watchdog || m == "WATCHDOG=1"
	}
	if !ready || !watchdog {
		t.Errorf("notifications %q: want READY=1 with a status and WATCHDOG=1", got)
	}
}

// pickyAlloc is the alloc backend refusing the option "Bad", as a real
// backend refuses a VNI out of range.
func pickyAlloc(o backend.Options) (backend.Backend, error) {
	var opts struct{ Bad bool }
	if err := backend.DecodeOptions(o.Config.Backend, &opts); err != nil || opts.Bad {
		return nil, fmt.Errorf("option Bad is not allowed")
	}
	return alloc.New(o)
}

func TestBadBackendOptionsKeepTheNode(t *testing.T) {
	m := newStore(t, allocConfig)
	a := startNodeWith(t, m, "198.18.0.1", "", nil, pickyAlloc)
	waitFor(t, "ready", a.ready)
	first := a.subnetFile(t)
	bad := `{"Network":"10.50.0.0/16","Backend":{"Type":"alloc","Bad":true}}`
	if err := m.SetNetworkConfig(context.Background(), []byte(bad)); err != nil {
		t.Fatal(err)
	}
	// The daemon polls every 50ms; give it many polls to (wrongly) move.
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if got := a.subnetFile(t); got != first || !a.ready() {
			t.Fatalf("a config the backend refuses moved the node: %+v, ready %v", got, a.ready())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A node starting on the refused config waits instead of exiting, and
	// comes up once the config is fixed.
	b := startNodeWith(t, m, "198.18.0.2", "", nil, pickyAlloc)
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-b.done:
		t.Fatalf("daemon exited on a refused config: %v", err)
	default:
	}
	if b.ready() {
		t.Fatal("ready on a refused config")
	}
	if err := m.SetNetworkConfig(context.Background(), []byte(`{"Network":"10.50.0.0/16","Backend":{"Type":"alloc"}}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both nodes in the fixed network", func() bool {
		fa, errA := subnet.ReadFile(filepath.Join(a.dir, "subnet.env"))
		fb, errB := subnet.ReadFile(filepath.Join(b.dir, "subnet.env"))
		return errA == nil && errB == nil && fa.Network.String() == "10.50.0.0/16" && fb.Network.String() == "10.50.0.0/16" && a.ready() && b.ready()
	})
}

func TestRefusesLeasesOfAnotherLength(t *testing.T) {
	m := newStore(t, allocConfig)
	a := startNode(t, m, "198.18.0.1", "", nil)
	b := startNode(t, m, "198.18.0.2", "", nil)
	waitFor(t, "both ready", func() bool { return a.ready() && b.ready() })
	// A /25 inside b's /24, written by a foreign writer.
	inside := netip.PrefixFrom(b.subnetFile(t).Subnet.Masked().Addr(), 25)
	m.Put(subnet.Lease{Subnet: inside, Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("198.18.0.9"), BackendType: "alloc"}})
	// Then a good lease, so we know the watch delivered past the bad one.
	cfg, err := m.GetNetworkConfig(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	good, err := m.AcquireLease(context.Background(), subnet.AcquireRequest{Config: cfg, Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("198.18.0.3"), BackendType: "alloc"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a sees the good lease", func() bool { _, ok := a.peers()[good.Subnet]; return ok })
	if _, ok := a.peers()[inside]; ok || len(a.peers()) != 2 {
		t.Errorf("a programs %v; the /25 inside b's subnet must be refused", a.peers())
	}
}

func TestWarnsOfPodsLeftOutsideANewSubnet(t *testing.T) {
	m := newStore(t, allocConfig)
	n, logs := startLogged(t, m, alloc.New)
	waitFor(t, "ready", n.ready)
	const warning = "pods hold addresses outside this node's subnet"
	gw := n.subnetFile(t).Subnet
	store, err := ipam.Open(filepath.Join(n.dir, "ipam"), CNINetworkName)
	if err != nil {
		t.Fatal(err)
	}
	pod, _, err := store.Allocate(gw, ipam.Attachment{ContainerID: "pod-a", IfName: "eth0"})
	store.Close()
	if err != nil {
		t.Fatal(err)
	}
	// Another writer takes the subnet over: the node moves to a new one.
	m.Put(subnet.Lease{Subnet: gw.Masked(), Expiration: time.Now().Add(time.Hour),
		Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("198.18.0.99"), BackendType: alloc.Type}})
	waitFor(t, "a new subnet", func() bool {
		f, err := subnet.ReadFile(filepath.Join(n.dir, "subnet.env"))
		return err == nil && f.Subnet != gw
	})
	waitFor(t, "the warning", func() bool { return logs.count(warning) == 1 })
	if logs.count(pod.String()+" (pod-a)") != 1 {
		t.Errorf("the warning does not name the pod %s (pod-a):\n%s", pod, logs.String())
	}
	if got := n.d.Status().StrandedPods; len(got) != 1 || got[0] != pod.String()+" (pod-a)" {
		t.Errorf("status lists stranded pods %q, want [%s (pod-a)]", got, pod)
	}
}

// syncBuffer is a log sink safe for the daemon's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) count(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), sub)
}

// startLogged runs a daemon whose logs the test reads, polling the config
// every 10ms; it is stopped (and must exit cleanly) in t.Cleanup.
func startLogged(t *testing.T, m subnet.Manager, newBackend backend.Constructor) (*node, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	dir := t.TempDir()
	u := backend.Underlay{Link: "eth0", Index: 2, MTU: 1500, PublicIP: netip.MustParseAddr("198.18.0.1")}
	d, err := New(Config{
		SubnetFile: filepath.Join(dir, "subnet.env"), CNIConfDir: filepath.Join(dir, "net.d"), HealthzAddr: "off",
		CNIIPAMDir: filepath.Join(dir, "ipam"), ConfigPollInterval: 10 * time.Millisecond,
	}, Deps{Manager: m, Backends: map[string]backend.Constructor{alloc.Type: newBackend}, Underlay: &u,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{d: d, dir: dir, ip: u.PublicIP, stop: cancel, done: make(chan error, 1)}
	go func() { n.done <- d.Run(ctx) }()
	t.Cleanup(func() { n.shutdown(t) })
	return n, logs
}

func TestStoreOutageLoggedOnce(t *testing.T) {
	m := newStore(t, allocConfig)
	n, logs := startLogged(t, m, alloc.New)
	waitFor(t, "ready", n.ready)

	m.SetFault(func(op string) error {
		if op == "GetNetworkConfig" {
			return errors.New("etcdserver: request timed out")
		}
		return nil
	})
	reads := m.Calls("GetNetworkConfig")
	waitFor(t, "several failed reads", func() bool { return m.Calls("GetNetworkConfig") >= reads+3 })
	if got := logs.count("cannot read the network config from etcd"); got != 1 {
		t.Errorf("outage logged %d times over several failed reads, want once", got)
	}
	if !n.ready() {
		t.Error("an etcd outage made a working node not ready")
	}
	m.SetFault(nil)
	waitFor(t, "recovery logged", func() bool { return logs.count("read and valid again") == 1 })
}

// TestUnreachableStoreSaysItself: a store whose errors wrap
// subnet.ErrUnreachable has logged the outage itself (the Kubernetes store
// does, for all its requests): weftd does not say it again, but reports the
// control plane gone and back.
func TestUnreachableStoreSaysItself(t *testing.T) {
	m := newStore(t, allocConfig)
	n, logs := startLogged(t, m, alloc.New)
	waitFor(t, "ready", n.ready)
	waitFor(t, "control plane connected", func() bool { return n.d.Status().ControlPlaneConnected })

	m.SetFault(func(op string) error {
		if op == "GetNetworkConfig" {
			return fmt.Errorf("network config: the Kubernetes API does not answer: %w: connection refused", subnet.ErrUnreachable)
		}
		return nil
	})
	reads := m.Calls("GetNetworkConfig")
	waitFor(t, "several failed reads", func() bool { return m.Calls("GetNetworkConfig") >= reads+3 })
	if got := logs.count("cannot read the network config"); got != 0 {
		t.Errorf("weftd logged the store's own outage %d times, want 0:\n%s", got, logs)
	}
	if n.d.Status().ControlPlaneConnected {
		t.Error("control plane still connected while the store does not answer")
	}
	if !n.ready() {
		t.Error("an outage made a working node not ready")
	}
	m.SetFault(nil)
	waitFor(t, "control plane connected again", func() bool { return n.d.Status().ControlPlaneConnected })
	if got := logs.count("read and valid again"); got != 0 {
		t.Errorf("weftd logged a recovery from an outage it did not report (%d)", got)
	}
}

func TestEachBadConfigReportedOnce(t *testing.T) {
	m := newStore(t, allocConfig)
	n, logs := startLogged(t, m, pickyAlloc)
	waitFor(t, "ready", n.ready)
	for i, bad := range []string{
		`{"Network":"10.50.0.0/16","Backend":{"Type":"alloc","Bad":true}}`,
		`{"Network":"10.60.0.0/16","Backend":{"Type":"alloc","Bad":true}}`,
	} {
		if err := m.SetNetworkConfig(context.Background(), []byte(bad)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, fmt.Sprintf("bad config %d reported", i+1), func() bool { return logs.count("cannot use the network config") == i+1 })
	}
	reads := m.Calls("GetNetworkConfig")
	waitFor(t, "more polls", func() bool { return m.Calls("GetNetworkConfig") >= reads+2 })
	if got := logs.count("cannot use the network config"); got != 2 {
		t.Errorf("two bad configs reported %d times over many polls, want 2", got)
	}
}
