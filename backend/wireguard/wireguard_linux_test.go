package wireguard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/internal/nl"
	"github.com/weftnet/weft/internal/nstest"
	"github.com/weftnet/weft/subnet"
)

// Underlay third octets for this package's tests (80-89 are ours).
const (
	baseTunnel = 80 + iota
	baseStranger
	baseChurn
	baseDrift
	baseRestart
	basePSK
	baseKernel
	baseRotation
	baseBench
	baseIPv6
	baseLostHandshakes
)

var network = netip.MustParsePrefix("10.244.0.0/16")

// node is one weft node in a namespace with one pod (10.244.<i+1>.2).
type node struct {
	ns    *nstest.NS
	pod   *nstest.NS
	ip    netip.Addr
	lease subnet.Lease
	dir   string // state directory
	dev   string // device name: unique, as the UAPI socket directory is shared
	// cfg is the network config (nil: IPv4 on network); ip6 the IPv6
	// underlay address of a node of an IPv6 test.
	cfg *subnet.Config
	ip6 netip.Addr
	log *os.File
	b   *Backend
}

// nodes builds n nodes on one underlay, each with a pod; no backend yet.
func nodes(t testing.TB, n, base int) []*node {
	t.Helper()
	nss, addrs := nstest.Underlay(t, n, base)
	out := make([]*node, n)
	for i := range out {
		sn := netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", i+1))
		nd := &node{ns: nss[i], pod: nstest.New(t, "wgpod"), ip: netip.MustParseAddr(addrs[i]),
			dir: t.TempDir(), dev: nstest.UniqueName("wg")}
		nd.lease = subnet.Lease{Subnet: sn, Attrs: subnet.LeaseAttrs{PublicIP: nd.ip, BackendType: "wireguard"}}
		gw := fmt.Sprintf("10.244.%d.1", i+1)
		nstest.Link(t, nd.ns, "vpod", gw+"/24", nd.pod, "eth0", fmt.Sprintf("10.244.%d.2/24", i+1))
		nd.pod.MustRun(t, "ip", "route", "add", "default", "via", gw)
		var err error
		if nd.log, err = os.Create(filepath.Join(t.TempDir(), "log")); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("node %d (%s) log:\n%s", i+1, nd.ip, nd.logs(t))
			}
		})
		out[i] = nd
	}
	return out
}

func (n *node) podIP() string { return n.lease.Subnet.Addr().Next().Next().String() }

// prepare builds the backend with opts (JSON members after "Type") and
// prepares it inside the node's namespace; its BackendData goes into the
// node's lease, as the daemon publishes it.
func (n *node) prepare(t testing.TB, opts string) {
	t.Helper()
	if err := n.tryPrepare(opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.b.Close() })
	mtu := strconv.Itoa(n.b.MTU())
	n.pod.MustRun(t, "ip", "link", "set", "eth0", "mtu", mtu)
}

func (n *node) tryPrepare(opts string) error {
	raw := json.RawMessage(`{"Type":"wireguard"` + opts + `}`)
	return n.ns.Do(func(ns.NetNS) error {
		cfg := subnet.Config{EnableIPv4: true, Network: network, SubnetLen: 24, BackendType: "wireguard"}
		if n.cfg != nil {
			cfg = *n.cfg
		}
		cfg.Backend = raw
		b, err := newBackend(backend.Options{
			Logger:   slog.New(slog.NewTextHandler(n.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
			Underlay: backend.Underlay{Link: "eth0", PublicIP: n.ip, PublicIPv6: n.ip6, MTU: 1500},
			Config:   &cfg,
			StateDir: n.dir,
		})
		if err != nil {
			return err
		}
		b.rename(n.dev)
		b.keyCheck = 20 * time.Millisecond
		n.b = b
		attrs, err := b.Prepare(context.Background())
		if err != nil {
			b.Close()
			return err
		}
		n.lease.Attrs.BackendData, n.lease.Attrs.BackendV6Data = attrs.BackendData, attrs.BackendV6Data
		n.lease.Attrs.PublicIP, n.lease.Attrs.PublicIPv6 = attrs.PublicIP, attrs.PublicIPv6
		return nil
	})
}

// do runs f with the backend inside the node's namespace.
func (n *node) do(t testing.TB, f func(b *Backend) error) {
	t.Helper()
	if err := n.ns.Do(func(ns.NetNS) error { return f(n.b) }); err != nil {
		t.Fatal(err)
	}
}

// configure gives the node its lease and syncs peers.
func (n *node) configure(t testing.TB, peers ...*node) {
	t.Helper()
	n.do(t, func(b *Backend) error {
		if err := b.Configure(context.Background(), n.lease); err != nil {
			return err
		}
		return b.Sync(context.Background(), leases(peers...))
	})
}

func (n *node) sync(t testing.TB, peers ...subnet.Lease) {
	t.Helper()
	n.do(t, func(b *Backend) error { return b.Sync(context.Background(), peers) })
}

func leases(nodes ...*node) []subnet.Lease {
	var out []subnet.Lease
	for _, n := range nodes {
		out = append(out, n.lease)
	}
	return out
}

// device reads the node's device through wgctrl.
func (n *node) device(t testing.TB) *wgtypes.Device {
	t.Helper()
	d, err := n.b.wg.Device(n.dev)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (n *node) peer(t testing.TB, of *node) (wgtypes.Peer, bool) {
	t.Helper()
	for _, p := range n.device(t).Peers {
		if p.PublicKey == of.b.PublicKey() {
			return p, true
		}
	}
	return wgtypes.Peer{}, false
}

func (n *node) logs(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(n.log.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func ping(t *testing.T, from *nstest.NS, to string) {
	t.Helper()
	from.MustRun(t, "ping", "-c", "2", "-i", "0.2", "-W", "2", to)
}

func noPing(t *testing.T, from *nstest.NS, to string) {
	t.Helper()
	if out, err := from.Run("ping", "-c", "2", "-i", "0.2", "-W", "1", to); err == nil {
		t.Fatalf("ping %s succeeded, want no reply:\n%s", to, out)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond) // poll interval, bounded by the deadline
	}
}

func routeTo(t *testing.T, n *node, dst string) string {
	t.Helper()
	fam := "-4"
	if strings.Contains(dst, ":") {
		fam = "-6"
	}
	return strings.TrimSpace(n.ns.MustRun(t, "ip", fam, "route", "show", "exact", dst, "proto", strconv.Itoa(int(nl.RouteProtocol))))
}

// TestTunnel: two embedded devices carry pod↔pod and node→pod traffic; the
// lease data is Flannel's; the device holds exactly the peer; the key is
// 0600 and never logged.
func TestTunnel(t *testing.T) {
	nds := nodes(t, 2, baseTunnel)
	a, b := nds[0], nds[1]
	psk, _ := wgtypes.GenerateKey()
	opts := `,"PSK":"` + psk.String() + `","Implementation":"userspace"`
	a.prepare(t, opts)
	b.prepare(t, opts)
	a.configure(t, b)
	b.configure(t, a)

	if a.b.Implementation() != ImplUserspace {
		t.Errorf("implementation %q, want userspace", a.b.Implementation())
	}
	want := fmt.Sprintf(`{"PublicKey":"%s","Port":51820}`, a.b.PublicKey())
	if string(a.lease.Attrs.BackendData) != want {
		t.Errorf("BackendData = %s, want %s", a.lease.Attrs.BackendData, want)
	}
	if a.b.MTU() != 1420 {
		t.Errorf("MTU %d, want 1420", a.b.MTU())
	}
	ping(t, a.pod, b.podIP())
	ping(t, b.pod, a.podIP())
	ping(t, a.ns, b.podIP()) // node-originated: source <subnet>.0
	// wireguard-go opens its sockets from its own goroutines: they must be
	// in the node's namespace, never in the test's (the root namespace).
	if out, err := exec.Command("ss", "-Hulpn", "sport = :51820").CombinedOutput(); err != nil || strings.Contains(string(out), "pid="+strconv.Itoa(os.Getpid())+",") {
		t.Errorf("this test has a socket on port 51820 outside the nodes' namespaces (%v):\n%s", err, out)
	}
	if out := a.ns.MustRun(t, "ss", "-Huln", "sport = :51820"); !strings.Contains(out, ":51820") {
		t.Errorf("no socket on port 51820 in the node's namespace:\n%s", out)
	}

	p, ok := a.peer(t, b)
	if !ok {
		t.Fatalf("a's device has no peer for b: %+v", a.device(t).Peers)
	}
	if p.Endpoint.String() != b.ip.String()+":51820" || len(p.AllowedIPs) != 1 || p.AllowedIPs[0].String() != "10.244.2.0/24" ||
		p.PresharedKey != psk || p.LastHandshakeTime.IsZero() {
		t.Errorf("peer b on a = endpoint %v allowed %v psk set %v handshake %v", p.Endpoint, p.AllowedIPs, p.PresharedKey == psk, p.LastHandshakeTime)
	}
	if got := routeTo(t, a, "10.244.2.0/24"); !strings.Contains(got, "dev "+a.dev) {
		t.Errorf("route to b's subnet: %q", got)
	}
	if got := routeTo(t, a, network.String()); !strings.Contains(got, "dev "+a.dev) {
		t.Errorf("route to the pod network: %q", got)
	}
	for _, st := range a.b.Peers() {
		if st.State != backend.PeerProgrammed {
			t.Errorf("peer status %+v", st)
		}
	}

	fi, err := os.Stat(KeyPath(a.dir))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	priv := a.device(t).PrivateKey.String()
	for _, secret := range []string{priv, psk.String()} {
		if strings.Contains(a.logs(t), secret) {
			t.Errorf("a secret is in the log:\n%s", a.logs(t))
		}
		if st, _ := json.Marshal(a.b.Peers()); strings.Contains(string(st), secret) {
			t.Errorf("a secret is in the peer status: %s", st)
		}
	}
	if s := fmt.Sprintf("%v %+v %#v %s", a.b.Options(), a.b.key, a.b.Options().PSK, a.b.key); strings.Contains(s, priv) || strings.Contains(s, psk.String()) {
		t.Errorf("formatting options or key shows a secret: %s", s)
	}
}

// TestOnlyConfiguredPeers: a node whose key is in no lease of a's cannot
// reach a's pods, even knowing a's key and endpoint; a lease with a
// malformed key is refused with a reason and gets no peer and no route.
func TestOnlyConfiguredPeers(t *testing.T) {
	nds := nodes(t, 3, baseStranger)
	a, b, stranger := nds[0], nds[1], nds[2]
	for _, n := range nds {
		n.prepare(t, `,"Implementation":"userspace"`)
	}
	bad := subnet.Lease{Subnet: netip.MustParsePrefix("10.244.9.0/24"), Attrs: subnet.LeaseAttrs{
		PublicIP: netip.MustParseAddr("198.18.81.99"), BackendType: "wireguard",
		BackendData: json.RawMessage(`{"PublicKey":"not-a-key","Port":51820}`)}}
	a.configure(t, b)
	a.sync(t, b.lease, bad)
	b.configure(t, a)
	stranger.configure(t, a) // it knows a; a does not know it

	ping(t, b.pod, a.podIP())
	noPing(t, stranger.pod, a.podIP())
	if p, ok := stranger.peer(t, a); !ok || !p.LastHandshakeTime.IsZero() {
		t.Errorf("stranger's handshake with a: %+v (ok %v), want none completed", p, ok)
	}
	if len(a.device(t).Peers) != 1 {
		t.Errorf("a's device has %d peers, want only b", len(a.device(t).Peers))
	}
	var refused *backend.PeerStatus
	for _, st := range a.b.Peers() {
		if st.Subnet == bad.Subnet {
			refused = &st
		}
	}
	if refused == nil || refused.State != backend.PeerRefused || !strings.Contains(refused.Reason, "not a WireGuard key") {
		t.Errorf("malformed lease status %+v, want refused for its key", refused)
	}
	if got := routeTo(t, a, "10.244.9.0/24"); got != "" {
		t.Errorf("refused peer has a route: %q", got)
	}
	// One netlink socket for the backend's life, as vxlan's.
	if n := a.b.h.SocketsOpened(); n != 0 {
		t.Errorf("%d netlink requests opened a socket of their own, want 0", n)
	}
}

// TestChurnKeepsSessions: peers added, removed and moved leave another
// peer's session alone (same handshake, same device).
func TestChurnKeepsSessions(t *testing.T) {
	nds := nodes(t, 3, baseChurn)
	a, b, c := nds[0], nds[1], nds[2]
	for _, n := range nds {
		n.prepare(t, `,"Implementation":"userspace"`)
	}
	a.configure(t, b, c)
	b.configure(t, a)
	c.configure(t, a)
	ping(t, a.pod, b.podIP())
	ping(t, a.pod, c.podIP())
	cp, _ := a.peer(t, c)
	ifindex := a.b.devs[0].link.Attrs().Index

	moved := b.lease
	moved.Attrs.BackendData = json.RawMessage(fmt.Sprintf(`{"PublicKey":"%s","Port":51999}`, b.b.PublicKey()))
	ghost := subnet.Lease{Subnet: netip.MustParsePrefix("10.244.7.0/24"), Attrs: subnet.LeaseAttrs{
		PublicIP: netip.MustParseAddr("198.18.82.77"), BackendType: "wireguard",
		BackendData: json.RawMessage(`{"PublicKey":"` + mustKey(t).PublicKey().String() + `","Port":51820}`)}}
	for _, step := range []struct {
		name   string
		events []subnet.Event
		check  func()
	}{
		{"add a peer", []subnet.Event{{Type: subnet.EventAdded, Lease: ghost}}, func() {
			if len(a.device(t).Peers) != 3 {
				t.Errorf("peers %d, want 3", len(a.device(t).Peers))
			}
		}},
		{"move a peer's endpoint", []subnet.Event{{Type: subnet.EventAdded, Lease: moved}}, func() {
			if p, _ := a.peer(t, b); p.Endpoint.Port != 51999 {
				t.Errorf("b's endpoint %v, want port 51999", p.Endpoint)
			}
		}},
		{"remove peers", []subnet.Event{{Type: subnet.EventRemoved, Lease: moved}, {Type: subnet.EventRemoved, Lease: ghost}}, func() {
			if _, ok := a.peer(t, b); ok || len(a.device(t).Peers) != 1 {
				t.Errorf("b still a peer, or peers %d, want c only", len(a.device(t).Peers))
			}
			if got := routeTo(t, a, "10.244.2.0/24"); got != "" {
				t.Errorf("removed peer's route stays: %q", got)
			}
		}},
	} {
		a.do(t, func(be *Backend) error { return be.Apply(context.Background(), step.events) })
		step.check()
		ping(t, a.pod, c.podIP())
		now, ok := a.peer(t, c)
		if !ok || !now.LastHandshakeTime.Equal(cp.LastHandshakeTime) {
			t.Errorf("%s: c's handshake %v, was %v: its session was disturbed", step.name, now.LastHandshakeTime, cp.LastHandshakeTime)
		}
		if a.b.devs[0].link.Attrs().Index != ifindex {
			t.Errorf("%s: device re-created", step.name)
		}
	}
}

func mustKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestDriftRepaired: what someone changes by hand (wg set, ip route, rm of
// the UAPI socket, ip link del) is put back by the next Sync and counted.
func TestDriftRepaired(t *testing.T) {
	nds := nodes(t, 2, baseDrift)
	a, b := nds[0], nds[1]
	a.prepare(t, `,"Implementation":"userspace"`)
	b.prepare(t, `,"Implementation":"userspace"`)
	// Run goes on beside Configure and the repairing Syncs, as in the
	// daemon (the race-built lab caught it reading the link Sync sets).
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	a.configure(t, b)
	b.configure(t, a)
	ping(t, a.pod, b.podIP())

	stranger := mustKey(t).PublicKey()
	port := 40000
	for _, tc := range []struct {
		name  string
		drift func()
	}{
		{"peer removed and a stranger added, port changed", func() {
			err := a.b.wg.ConfigureDevice(a.dev, wgtypes.Config{ListenPort: &port, Peers: []wgtypes.PeerConfig{
				{PublicKey: b.b.PublicKey(), Remove: true}, {PublicKey: stranger}}})
			if err != nil {
				t.Fatal(err)
			}
		}},
		{"peer route deleted", func() {
			a.ns.MustRun(t, "ip", "route", "del", "10.244.2.0/24", "dev", a.dev)
		}},
		{"UAPI socket removed", func() {
			if err := os.Remove("/var/run/wireguard/" + a.dev + ".sock"); err != nil {
				t.Fatal(err)
			}
			a.b.devs[0].us.mu.Lock()
			served := a.b.devs[0].us.served
			a.b.devs[0].us.mu.Unlock()
			waitFor(t, "the UAPI listener to notice", 5*time.Second, func() bool {
				select {
				case <-served:
					return true
				default:
					return false
				}
			})
		}},
		{"device deleted", func() {
			a.ns.MustRun(t, "ip", "link", "del", a.dev)
		}},
	} {
		before := a.b.Repairs()
		tc.drift()
		a.sync(t, b.lease)
		if a.b.Repairs() == before {
			t.Errorf("%s: no repair counted", tc.name)
		}
		d := a.device(t)
		if len(d.Peers) != 1 || d.Peers[0].PublicKey != b.b.PublicKey() || d.ListenPort != 51820 {
			t.Errorf("%s: device after Sync: port %d peers %+v", tc.name, d.ListenPort, d.Peers)
		}
		if got := routeTo(t, a, "10.244.2.0/24"); got == "" {
			t.Errorf("%s: no route to b after Sync", tc.name)
		}
		ping(t, a.pod, b.podIP())
		before = a.b.Repairs()
		a.sync(t, b.lease)
		if a.b.Repairs() != before {
			t.Errorf("%s: a second Sync changed something (%d repairs)", tc.name, a.b.Repairs()-before)
		}
	}
}

// TestRestart: a closed embedded device leaves its TUN, address and routes
// (traffic is dropped, not routed elsewhere); a new backend on the same state
// directory has the same key, re-attaches to the same TUN, and the session
// comes back.
func TestRestart(t *testing.T) {
	nds := nodes(t, 2, baseRestart)
	a, b := nds[0], nds[1]
	a.prepare(t, `,"Implementation":"userspace"`)
	b.prepare(t, `,"Implementation":"userspace"`)
	a.configure(t, b)
	b.configure(t, a)
	ping(t, b.pod, a.podIP())
	key, ifindex, data := a.b.PublicKey(), a.b.devs[0].link.Attrs().Index, string(a.lease.Attrs.BackendData)

	a.b.Close()
	if got := routeTo(t, a, "10.244.2.0/24"); got == "" {
		t.Errorf("route to b gone while weftd is down")
	}
	noPing(t, a.pod, b.podIP())

	a.prepare(t, `,"Implementation":"userspace"`)
	if a.b.PublicKey() != key || string(a.lease.Attrs.BackendData) != data {
		t.Errorf("key changed across the restart: %s, was %s", a.lease.Attrs.BackendData, data)
	}
	if a.b.devs[0].link.Attrs().Index != ifindex {
		t.Errorf("TUN re-created (ifindex %d, was %d)", a.b.devs[0].link.Attrs().Index, ifindex)
	}
	if len(a.device(t).Peers) != 0 {
		t.Errorf("a fresh embedded device has peers before Sync")
	}
	restarted := time.Now()
	a.configure(t, b)
	// b still holds the session of a's old device. a handshakes with each
	// new peer, at once or after kickDelay (the greater key waits), so b's
	// own traffic gets through (without it, only after b's 15 s rekey
	// timeout, or once a sends b something).
	waitFor(t, "a's handshake with b after the restart", 3*time.Second, func() bool {
		p, _ := b.peer(t, a)
		return p.LastHandshakeTime.After(restarted)
	})
	ping(t, b.pod, a.podIP())
	ping(t, a.pod, b.podIP())
	if p, _ := a.peer(t, b); p.PersistentKeepaliveInterval != 0 {
		t.Errorf("keepalive %v left on after the handshake kick", p.PersistentKeepaliveInterval)
	}
}

// TestLostFirstHandshakes: two nodes learn of each other while the underlay
// drops their WireGuard traffic, so the handshakes of their kicks are lost,
// as a handshake sent before its peer knows the sender is, or two that
// cross on the wire. They still have a session within kickDelay of the
// underlay coming back: only the node with the smaller key kicked at once,
// the other kicks later. (Had both kicked at once, each would wait for
// WireGuard's 5 s handshake retry.)
func TestLostFirstHandshakes(t *testing.T) {
	nds := nodes(t, 2, baseLostHandshakes)
	a, b := nds[0], nds[1]
	for _, n := range nds {
		n.prepare(t, `,"Implementation":"userspace"`)
		n.ns.MustRun(t, "nft", "add table inet wgdrop { chain out { type filter hook output priority 0; udp dport 51820 drop; }; }")
	}
	a.configure(t, b)
	b.configure(t, a)
	for _, n := range nds {
		n.ns.MustRun(t, "nft", "delete table inet wgdrop")
	}
	waitFor(t, "a session between a and b", 3500*time.Millisecond, func() bool {
		pa, _ := a.peer(t, b)
		pb, _ := b.peer(t, a)
		return !pa.LastHandshakeTime.IsZero() && !pb.LastHandshakeTime.IsZero()
	})
	ping(t, a.pod, b.podIP())
	for _, pair := range [][2]*node{{a, b}, {b, a}} {
		if p, _ := pair[0].peer(t, pair[1]); p.PersistentKeepaliveInterval != 0 {
			t.Errorf("keepalive %v left on after the handshake kick", p.PersistentKeepaliveInterval)
		}
	}
}

// TestRotation: a new key in the key file makes Run ask for a new backend,
// which publishes the new key; peers that learn it talk again.
func TestRotation(t *testing.T) {
	nds := nodes(t, 2, baseRotation)
	a, b := nds[0], nds[1]
	a.prepare(t, `,"Implementation":"userspace"`)
	b.prepare(t, `,"Implementation":"userspace"`)
	a.configure(t, b)
	b.configure(t, a)
	ping(t, a.pod, b.podIP())
	old := a.b.PublicKey()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- a.b.Run(ctx) }()
	pub, err := RotateKey(KeyPath(a.dir))
	if err != nil {
		t.Fatal(err)
	}
	if err := <-runErr; !errors.Is(err, backend.ErrLeaseDataChanged) {
		t.Fatalf("Run returned %v, want ErrLeaseDataChanged", err)
	}
	a.b.Close()
	a.prepare(t, `,"Implementation":"userspace"`)
	if a.b.PublicKey() != pub || pub == old {
		t.Fatalf("new backend's key %s, rotated to %s (old %s)", a.b.PublicKey(), pub, old)
	}
	a.configure(t, b)
	b.sync(t, a.lease)
	ping(t, a.pod, b.podIP())
	ping(t, b.pod, a.podIP())
}

// TestPSKMismatch: nodes with different pre-shared keys cannot talk.
func TestPSKMismatch(t *testing.T) {
	nds := nodes(t, 2, basePSK)
	a, b := nds[0], nds[1]
	a.prepare(t, `,"Implementation":"userspace","PSK":"`+mustKey(t).String()+`"`)
	b.prepare(t, `,"Implementation":"userspace","PSK":"`+mustKey(t).String()+`"`)
	a.configure(t, b)
	b.configure(t, a)
	noPing(t, a.pod, b.podIP())
}

// TestKernelImplementation runs the tunnel on the kernel's WireGuard where
// the kernel has it; where it does not (this project's CI machine), forcing
// it fails Prepare with what to do, and auto falls back to userspace.
func TestKernelImplementation(t *testing.T) {
	nds := nodes(t, 2, baseKernel)
	a, b := nds[0], nds[1]
	var have bool
	a.ns.Do(func(ns.NetNS) error {
		have, _ = kernelSupport(nl.New(nil))
		return nil
	})
	if !have {
		err := a.tryPrepare(`,"Implementation":"kernel"`)
		if err == nil || !strings.Contains(err.Error(), "load the wireguard module") {
			t.Fatalf("forced kernel Prepare without the module: %v", err)
		}
		a.b.Close()
		a.prepare(t, "")
		if a.b.Implementation() != ImplUserspace {
			t.Errorf("auto chose %q without the module", a.b.Implementation())
		}
		if l, err := a.linkIn(t); err != nil || l.Type() != "tuntap" {
			t.Errorf("device %v (%v), want a TUN", l, err)
		}
		return
	}
	a.prepare(t, `,"Implementation":"kernel"`)
	b.prepare(t, `,"Implementation":"kernel"`)
	a.configure(t, b)
	b.configure(t, a)
	ping(t, a.pod, b.podIP())
	ping(t, b.pod, a.podIP())
	if a.device(t).Type != wgtypes.LinuxKernel {
		t.Errorf("device type %v", a.device(t).Type)
	}
}

func (n *node) linkIn(t *testing.T) (netlink.Link, error) {
	var l netlink.Link
	err := n.ns.Do(func(ns.NetNS) error {
		var err error
		l, err = netlink.LinkByName(n.dev)
		return err
	})
	return l, err
}

// BenchmarkTunnel moves 100 MB per iteration pod→pod with iperf3 through
// two embedded devices in this process, so a CPU profile of the benchmark
// (-cpuprofile) shows where wireguard-go spends the time, both ends:
//
//	go test -run '^$' -bench Tunnel -benchtime 5x -cpuprofile wg.prof ./backend/wireguard
//	go tool pprof -top wg.prof
func BenchmarkTunnel(b *testing.B) {
	nds := nodes(b, 2, baseBench)
	a, c := nds[0], nds[1]
	a.prepare(b, `,"Implementation":"userspace"`)
	c.prepare(b, `,"Implementation":"userspace"`)
	a.configure(b, c)
	c.configure(b, a)
	srv := exec.Command("ip", "netns", "exec", c.pod.Name, "iperf3", "-s", "-B", c.podIP())
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := a.pod.Run("timeout", "5", "iperf3", "-c", c.podIP(), "-n", "1M"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("iperf3 server not reachable")
		}
		time.Sleep(100 * time.Millisecond) // poll interval, bounded by the deadline
	}
	const chunk = 100 << 20
	b.SetBytes(chunk)
	b.ResetTimer()
	for range b.N {
		if out, err := a.pod.Run("timeout", "60", "iperf3", "-c", c.podIP(), "-n", strconv.Itoa(chunk)); err != nil {
			b.Fatalf("iperf3: %v: %s", err, out)
		}
	}
}
