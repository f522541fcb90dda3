package udp

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/internal/nstest"
	"github.com/weftnet/weft/internal/packettest"
	"github.com/weftnet/weft/subnet"
)

// Underlay third octets for this package's tests (60-79 are ours).
const (
	baseTunnel    = 60
	baseBench     = 61
	baseNetChange = 62
)

var (
	network  = netip.MustParsePrefix("10.244.0.0/16")
	network6 = netip.MustParsePrefix("fd00:10:244::/56")
)

// stack is the address families of a test lab's pod network.
type stack int

const (
	ipv4Only  stack = iota
	dualStack       // network6 too, over the IPv4 underlay
	ipv6Only        // network6 only, over an IPv6 underlay
)

// node is one weft node in a namespace with one pod.
type node struct {
	ns    *nstest.NS
	pod   *nstest.NS
	ip    netip.Addr // the underlay address the tunnel uses: IPv6 in an ipv6Only lab
	lease subnet.Lease
	// network is the config's Network; zero means network.
	network netip.Prefix
	stack   stack
	b       *Backend
	stop    context.CancelFunc
	done    chan error
}

func lab(t *testing.T, base int, opts string) []*node {
	t.Helper()
	return labWith(t, base, opts, true)
}

// labWith is lab; with announce false each node's lease loses the
// BackendData its backend published, as a Flannel node's lease has none.
func labWith(t *testing.T, base int, opts string, announce bool) []*node {
	t.Helper()
	return labOf(t, base, opts, announce, ipv4Only)
}

// labOf is labWith with the pod network of st. With IPv6 each node and
// pod has fd00:10:244:<i>::/64 (pod ::2, gateway ::1): dual stack over the
// same IPv4 underlay, or IPv6-only over an IPv6 underlay
// (2001:db8:<base>::<10+i>/64; the IPv4 underlay addresses are removed, so
// nothing can go over IPv4) with no IPv4 in the pods either.
func labOf(t *testing.T, base int, opts string, announce bool, st stack) []*node {
	t.Helper()
	var nss []*nstest.NS
	var addrs, addrs6 []string
	if st == ipv6Only {
		nss, addrs, addrs6 = nstest.DualUnderlay(t, 2, base)
	} else {
		nss, addrs = nstest.Underlay(t, 2, base)
	}
	nodes := make([]*node, 2)
	for i := range nodes {
		n := &node{ns: nss[i], pod: nstest.New(t, "wpod"), ip: netip.MustParseAddr(addrs[i]), stack: st}
		n.lease.Attrs = subnet.LeaseAttrs{PublicIP: n.ip, BackendType: "udp"}
		if st == ipv6Only {
			n.ns.MustRun(t, "ip", "-4", "addr", "flush", "dev", "eth0")
			n.ip = netip.MustParseAddr(addrs6[i])
			n.lease.Attrs.PublicIP, n.lease.Attrs.PublicIPv6 = netip.Addr{}, n.ip
		} else {
			sn := netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", i+1))
			n.lease.Subnet = sn
			gw := fmt.Sprintf("10.244.%d.1", i+1)
			nstest.Link(t, n.ns, "vpod", gw+"/24", n.pod, "eth0", fmt.Sprintf("10.244.%d.2/24", i+1))
			n.pod.MustRun(t, "ip", "route", "add", "default", "via", gw)
		}
		if st != ipv4Only {
			n.lease.IPv6Subnet = netip.MustParsePrefix(fmt.Sprintf("fd00:10:244:%d::/64", i+1))
			gw6 := fmt.Sprintf("fd00:10:244:%d::1", i+1)
			pod6 := fmt.Sprintf("fd00:10:244:%d::2/64", i+1)
			if st == ipv6Only {
				nstest.Link(t, n.ns, "vpod", gw6+"/64", n.pod, "eth0", pod6)
			} else {
				// No DAD: the addresses are usable at once (as the CNI plugin does).
				n.ns.MustRun(t, "ip", "addr", "add", gw6+"/64", "dev", "vpod", "nodad")
				n.pod.MustRun(t, "ip", "addr", "add", pod6, "dev", "eth0", "nodad")
			}
			n.pod.MustRun(t, "ip", "-6", "route", "add", "default", "via", gw6)
			n.ns.MustRun(t, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
		}
		nodes[i] = n
	}
	for _, n := range nodes {
		n.prepare(t, opts)
		if !announce {
			n.lease.Attrs.BackendData = nil
		}
	}
	for i, n := range nodes {
		n.run(t, nodes[1-i].lease)
		mtu := strconv.Itoa(n.b.MTU())
		n.pod.MustRun(t, "ip", "link", "set", "eth0", "mtu", mtu)
		n.ns.MustRun(t, "ip", "link", "set", "vpod", "mtu", mtu)
	}
	return nodes
}

// start builds a backend inside the node's namespace and runs it.
func (n *node) start(t *testing.T, opts string, peers ...subnet.Lease) {
	t.Helper()
	n.prepare(t, opts)
	n.run(t, peers...)
}

// prepare builds the backend and prepares it; its BackendData goes into
// the node's lease, as the daemon publishes it.
func (n *node) prepare(t *testing.T, opts string) {
	t.Helper()
	raw := json.RawMessage(`{"Type":"udp"` + opts + `}`)
	network := cmp.Or(n.network, network)
	cfg := &subnet.Config{EnableIPv4: true, Network: network, SubnetLen: 24, BackendType: "udp", Backend: raw}
	ul := backend.Underlay{Link: "eth0", PublicIP: n.ip, MTU: 1500}
	if n.stack != ipv4Only {
		cfg.EnableIPv6, cfg.IPv6Network, cfg.IPv6SubnetLen = true, network6, 64
	}
	if n.stack == ipv6Only {
		cfg.EnableIPv4, cfg.Network, cfg.SubnetLen = false, netip.Prefix{}, 0
		ul.PublicIP, ul.PublicIPv6 = netip.Addr{}, n.ip
	}
	err := n.ns.Do(func(ns.NetNS) error {
		var err error
		n.b, err = newBackend(backend.Options{
			Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
			Underlay: ul,
			Config:   cfg,
		})
		if err != nil {
			return err
		}
		attrs, err := n.b.Prepare(context.Background())
		if err != nil {
			n.b.Close()
		}
		n.lease.Attrs.BackendData = attrs.BackendData
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// run configures the prepared backend with peers and runs it.
func (n *node) run(t *testing.T, peers ...subnet.Lease) {
	t.Helper()
	b := n.b
	err := n.ns.Do(func(ns.NetNS) error {
		ctx := context.Background()
		if err := b.Configure(ctx, n.lease); err != nil {
			return err
		}
		return b.Sync(ctx, peers)
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.stop, n.done = cancel, make(chan error, 1)
	// The descriptors are bound to the namespace: Run may go anywhere.
	go func() { n.done <- b.Run(ctx) }()
	t.Cleanup(n.halt)
}

func (n *node) halt() {
	if n.stop == nil {
		return
	}
	n.stop()
	select {
	case <-n.done:
	case <-time.After(5 * time.Second):
	}
	n.b.Close()
	n.stop = nil
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

func ping(t *testing.T, from *nstest.NS, to string) {
	t.Helper()
	from.MustRun(t, "ping", "-c", "3", "-i", "0.2", "-W", "2", to)
}

// listen opens a UDP socket on addr in pod and returns what reads one
// datagram from it: its payload, or "" when none came within 300 ms.
func listen(t *testing.T, pod *nstest.NS, network, addr string) func() string {
	t.Helper()
	var pc net.PacketConn
	if err := pod.Do(func(ns.NetNS) error {
		var err error
		pc, err = net.ListenPacket(network, addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return func() string {
		buf := make([]byte, 100)
		pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			return ""
		}
		return string(buf[:n])
	}
}

// innerUDP builds an IPv4/UDP packet src:4000 → dst:port carrying payload.
func innerUDP(src, dst string, port int, payload []byte) []byte {
	return packettest.IPv4UDP(netip.MustParseAddr(src), netip.MustParseAddr(dst), 4000, uint16(port), payload)
}

// sendFrom sends one datagram to dst from inside n, from the address and
// port src (":0" for any). The socket joins an existing SO_REUSEPORT group
// on src (a peer's tunnel socket), as only the owner's user may.
func sendFrom(t *testing.T, n *nstest.NS, src, dst string, b []byte) {
	t.Helper()
	err := n.Do(func(ns.NetNS) error {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) }); err != nil {
				return err
			}
			return serr
		}}
		network := "udp4"
		if ap, err := netip.ParseAddrPort(dst); err == nil && ap.Addr().Is6() {
			network = "udp6"
		}
		pc, err := lc.ListenPacket(context.Background(), network, src)
		if err != nil {
			return err
		}
		defer pc.Close()
		to, err := net.ResolveUDPAddr(network, dst)
		if err != nil {
			return err
		}
		_, err = pc.WriteTo(b, to)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestTunnel(t *testing.T) {
	nodes := lab(t, baseTunnel, "")
	a, b := nodes[0], nodes[1]

	t.Run("ping pod to pod", func(t *testing.T) {
		ping(t, a.pod, "10.244.2.2")
		ping(t, b.pod, "10.244.1.2")
		ping(t, a.ns, "10.244.2.2") // node-originated, from <subnet>.0
		s := a.b.Stats()
		if s.TxPackets == 0 || s.RxPackets == 0 {
			t.Fatalf("counters did not move: %+v", s)
		}
		if out := a.ns.MustRun(t, "ip", "-o", "link", "show", DeviceName); !strings.Contains(out, "qlen "+strconv.Itoa(txQueueLen)) {
			t.Fatalf("device queue not lengthened to %d: %s", txQueueLen, out)
		}
		t.Logf("node a stats: %+v", s)
	})

	t.Run("network route is weft's, and an older weftd's is taken over", func(t *testing.T) {
		want := "10.244.0.0/16 proto 87 scope link src 10.244.1.0"
		if out := a.ns.MustRun(t, "ip", "route", "show", "dev", DeviceName); !strings.Contains(out, want) {
			t.Fatalf("routes of %s:\n%s\nwant %q", DeviceName, out, want)
		}
		// What weftd before weft's route protocol left: proto boot.
		a.ns.MustRun(t, "ip", "route", "replace", "10.244.0.0/16", "dev", DeviceName, "proto", "boot", "scope", "link", "src", "10.244.1.0")
		if err := a.ns.Do(func(ns.NetNS) error { return a.b.Configure(context.Background(), a.lease) }); err != nil {
			t.Fatal(err)
		}
		if out := a.ns.MustRun(t, "ip", "route", "show", "dev", DeviceName); !strings.Contains(out, want) || strings.Contains(out, "boot") {
			t.Fatalf("after Configure over an old route:\n%s", out)
		}
		ping(t, a.pod, "10.244.2.2")
	})

	t.Run("no peer gets ICMP net unreachable", func(t *testing.T) {
		out, err := a.pod.Run("ping", "-c", "1", "-W", "2", "10.244.9.2")
		if err == nil || !strings.Contains(out, "Unreachable") {
			t.Fatalf("want net unreachable, got %v: %s", err, out)
		}
	})

	// A listener in b's pod, to see which datagrams get through.
	recv := listen(t, b.pod, "udp4", "10.244.2.2:9999")
	target := netip.AddrPortFrom(b.ip, DefaultPort).String()
	attacker := nstest.New(t, "wevil")
	// The attacker sits on the underlay too: give it its own veth to b.
	nstest.Link(t, attacker, "eth0", fmt.Sprintf("198.18.%d.66/24", baseTunnel), b.ns, "evil", "")
	b.ns.MustRun(t, "ip", "addr", "add", fmt.Sprintf("198.18.%d.67/32", baseTunnel), "dev", "evil")
	b.ns.MustRun(t, "ip", "route", "add", fmt.Sprintf("198.18.%d.66/32", baseTunnel), "dev", "evil")

	peerPort := netip.AddrPortFrom(a.ip, DefaultPort).String() // a's tunnel socket
	t.Run("datagram from a peer is delivered", func(t *testing.T) {
		sendFrom(t, a.ns, peerPort, target, innerUDP("10.244.1.2", "10.244.2.2", 9999, []byte("legit")))
		if got := recv(); got != "legit" {
			t.Fatalf("pod got %q, want the peer's datagram", got)
		}
	})
	t.Run("datagram from a peer's address but not its tunnel port is dropped", func(t *testing.T) {
		// What a pod's datagram masqueraded by its node, or another
		// process on the node, looks like.
		before := b.b.Stats().Drops["wrong_port"]
		sendFrom(t, a.ns, a.ip.String()+":0", target, innerUDP("10.244.1.2", "10.244.2.2", 9999, []byte("crafted")))
		waitFor(t, "wrong_port drop", 5*time.Second, func() bool { return b.b.Stats().Drops["wrong_port"] > before })
		if got := recv(); got != "" {
			t.Fatalf("pod received %q from the peer's address on another port", got)
		}
	})
	t.Run("spoofed outer source is dropped", func(t *testing.T) {
		before := b.b.Stats().Drops["unknown_peer"]
		sendFrom(t, attacker, ":"+strconv.Itoa(DefaultPort), target, innerUDP("10.244.1.2", "10.244.2.2", 9999, []byte("evil")))
		waitFor(t, "unknown_peer drop", 5*time.Second, func() bool { return b.b.Stats().Drops["unknown_peer"] > before })
		if got := recv(); got != "" {
			t.Fatalf("pod received %q from a non-peer", got)
		}
	})
	t.Run("inner source outside the peer's subnet is dropped", func(t *testing.T) {
		before := b.b.Stats().Drops["spoofed_source"]
		sendFrom(t, a.ns, peerPort, target, innerUDP("10.244.5.5", "10.244.2.2", 9999, []byte("spoof")))
		waitFor(t, "spoofed_source drop", 5*time.Second, func() bool { return b.b.Stats().Drops["spoofed_source"] > before })
		if got := recv(); got != "" {
			t.Fatalf("pod received %q with a spoofed inner source", got)
		}
	})
	t.Run("malformed datagram is dropped", func(t *testing.T) {
		before := b.b.Stats().Drops["bad_header"]
		sendFrom(t, a.ns, peerPort, target, []byte{0x41, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 244, 1, 2, 10, 244, 2, 2})
		waitFor(t, "bad_header drop", 5*time.Second, func() bool { return b.b.Stats().Drops["bad_header"] > before })
	})

	t.Run("restart", func(t *testing.T) {
		// 100 pings over ~5 s while b restarts.
		cmd := exec.Command("ip", "netns", "exec", a.pod.Name, "ping", "-c", "100", "-i", "0.05", "-W", "1", "10.244.2.2")
		var out syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill() }()
		waitFor(t, "pings before restart", 5*time.Second, func() bool { return strings.Count(out.String(), "bytes from") >= 10 })
		began := time.Now()
		b.halt()
		b.start(t, "", a.lease)
		t.Logf("restart took %v", time.Since(began))
		_ = cmd.Wait()
		m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("no ping summary: %s", out.String())
		}
		tx, _ := strconv.Atoi(m[1])
		rx, _ := strconv.Atoi(m[2])
		t.Logf("restart: %d of %d pings lost (50 ms interval)", tx-rx, tx)
		if rx < tx/2 {
			t.Fatalf("lost %d of %d pings across a restart", tx-rx, tx)
		}
		ping(t, a.pod, "10.244.2.2")
	})
}

// iperf runs a bounded 3 s TCP test from client to server and returns the
// received bits per second.
func iperf(t *testing.T, server, client *nstest.NS, addr string) float64 {
	t.Helper()
	srv := exec.Command("ip", "netns", "exec", server.Name, "iperf3", "-s", "-1", "-B", addr)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	waitFor(t, "iperf3 server", 5*time.Second, func() bool {
		out, _ := server.Run("ss", "-Hltn", "sport", "=", ":5201")
		return strings.Contains(out, "5201")
	})
	out := client.MustRun(t, "timeout", "20", "iperf3", "-c", addr, "-t", "3", "-J")
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("iperf3 output: %v: %s", err, out)
	}
	return r.End.SumReceived.BitsPerSecond
}

// TestThroughput compares pod→pod TCP over the tunnel with the raw
// underlay between the same two node namespaces, in one run. It reports
// the ratio; the bound is only a sanity check.
// TestNetworkChangeRoute changes the Network under a node, as a new
// generation of weftd does: the TUN device outlives the backend, and after
// the change it keeps no route of the old network (its traffic would still
// go into the tunnel), while a route weft did not install on the device
// stays. The node keeps its subnet, as it does when the Network shrinks
// around it: its address stays, so the kernel flushes nothing itself (a
// device that loses its last IPv4 address loses its routes).
func TestNetworkChangeRoute(t *testing.T) {
	nss, addrs := nstest.Underlay(t, 1, baseNetChange)
	n := &node{ns: nss[0], ip: netip.MustParseAddr(addrs[0])}
	n.lease = subnet.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: n.ip, BackendType: "udp"}}
	for i, network := range []string{"10.244.0.0/16", "10.244.0.0/17"} {
		n.network = netip.MustParsePrefix(network)
		n.start(t, "")
		if i == 0 {
			n.ns.MustRun(t, "ip", "route", "add", "10.99.0.0/16", "dev", DeviceName, "proto", "static")
		}
		n.halt()
	}
	routes := n.ns.MustRun(t, "ip", "-4", "route", "show", "dev", DeviceName)
	for _, want := range []string{"10.244.0.0/17 proto 87 scope link src 10.244.1.0", "10.99.0.0/16 proto static"} {
		if !strings.Contains(routes, want) {
			t.Errorf("routes of %s after the change lack %q:\n%s", DeviceName, want, routes)
		}
	}
	if strings.Contains(routes, "10.244.0.0/16") {
		t.Errorf("%s keeps the old network's route after the change from 10.244.0.0/16 to 10.244.0.0/17:\n%s", DeviceName, routes)
	}
}

func TestThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("throughput test in -short mode")
	}
	for _, tc := range []struct {
		name, opts string
		base       int
		// announce: leases carry the BackendData (PartialChecksums);
		// false is how a Flannel peer's lease looks.
		announce, wantPartial bool
	}{
		{"offloads", "", baseBench, true, true},
		{"offloads, Flannel-style leases", "", baseBench + 2, false, false},
		{"no offloads", `,"DisableOffloads":true`, baseBench + 1, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := labWith(t, tc.base, tc.opts, tc.announce)
			a, b := nodes[0], nodes[1]
			if got := a.b.table.Load().lookup(ip4("10.244.2.2")).partial; got != tc.wantPartial {
				t.Fatalf("partial checksums with the peer: %v, want %v", got, tc.wantPartial)
			}
			ping(t, a.pod, "10.244.2.2")
			tunnel := iperf(t, b.pod, a.pod, "10.244.2.2")
			underlay := iperf(t, b.ns, a.ns, b.ip.String())
			s := a.b.Stats()
			t.Logf("udp tunnel %.2f Gbit/s, underlay %.2f Gbit/s, ratio %.2f; sender: tx %d pkts, %d GSO sends, drops %v; receiver GRO merged %d",
				tunnel/1e9, underlay/1e9, tunnel/underlay, s.TxPackets, s.GSOSends, s.Drops, b.b.Stats().GROMerged)
			if tunnel < underlay/100 {
				t.Fatalf("tunnel throughput %.0f bit/s is below 1%% of the underlay's %.0f", tunnel, underlay)
			}
			// Whatever checksums travelled, the receiving pod's TCP must
			// have found none bad.
			if n := tcpInCsumErrors(t, b.pod); n != 0 {
				t.Fatalf("receiving pod counted %d TCP checksum errors", n)
			}
		})
	}
}

// tcpInCsumErrors reads the namespace's TCP InCsumErrors counter.
func tcpInCsumErrors(t *testing.T, n *nstest.NS) int {
	t.Helper()
	var names []string
	for _, line := range strings.Split(n.MustRun(t, "cat", "/proc/net/snmp"), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, name := range names {
			if name == "InCsumErrors" && i < len(f) {
				v, err := strconv.Atoi(f[i])
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
		}
	}
	t.Fatal("no Tcp InCsumErrors in /proc/net/snmp")
	return 0
}

// syncBuffer is a strings.Builder safe for a writer and a poller.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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

// TestSocketIO sends through udpSender (one GSO message gathered from
// header and payload iovecs, one plain datagram) and receives with
// udpReceiver on loopback in a fresh namespace: addresses, ports, GRO
// sizes and bytes survive, and sending allocates nothing.
func TestSocketIO(t *testing.T) {
	n := nstest.New(t, "wudpio")
	n.MustRun(t, "ip", "link", "set", "lo", "up")
	err := n.Do(func(ns.NetNS) error {
		lo := [4]byte{127, 0, 0, 1}
		a, err := openSocket(&unix.SockaddrInet4{Addr: lo, Port: 8285})
		if err != nil {
			return err
		}
		defer a.Close()
		b, err := openSocket(&unix.SockaddrInet4{Addr: lo, Port: 8286})
		if err != nil {
			return err
		}
		defer b.Close()
		if err := setSockopt(b, unix.SOL_UDP, unix.UDP_GRO, 1); err != nil {
			return err
		}
		afd, _ := fdOf(a)
		bfd, _ := fdOf(b)
		s := newUDPSender(afd, txMsgs, txIovecs)
		r := newUDPReceiver(bfd, 8, maxDatagram)
		to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8286}
		hdr, payload := []byte("HDR-"), []byte("payload-")
		oob := make([]byte, unix.CmsgSpace(2))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
		h.SetLen(unix.CmsgLen(2))
		binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(len(hdr)+len(payload)))
		ms := []ipv4.Message{
			{Buffers: [][]byte{hdr, payload, hdr, payload, hdr, payload[:3]}, OOB: oob, Addr: to},
			{Buffers: [][]byte{[]byte("single")}, Addr: to},
		}
		var sent int
		allocs := testing.AllocsPerRun(1, func() { sent, err = s.send(ms) })
		if err != nil || sent != 2 {
			return fmt.Errorf("sent %d: %v", sent, err)
		}
		if allocs != 0 {
			return fmt.Errorf("send allocated %.0f times", allocs)
		}
		var got []string
		deadline := time.Now().Add(5 * time.Second)
		for len(got) < 2 && time.Now().Before(deadline) {
			k, err := r.readBatch()
			if err != nil {
				return err
			}
			for i := range k {
				src, sport, data, gso, trunc := r.message(i)
				if src != ul("127.0.0.1") || sport != 8285 || trunc {
					return fmt.Errorf("message %d from %#x:%d, truncated %v", i, src, sport, trunc)
				}
				got = append(got, fmt.Sprintf("%s/%d", data, gso))
			}
		}
		// AllocsPerRun sent ms twice (a warm-up and the measured run);
		// the first two datagrams are checked.
		want := "HDR-payload-HDR-payload-HDR-pay/12"
		if len(got) < 2 || got[0] != want || got[1] != "single/0" {
			return fmt.Errorf("received %q, want [%q single/0 ...]", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
