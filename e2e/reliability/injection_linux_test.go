package reliability

import (
	"context"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/packettest"
	"github.com/weftnet/weft/lab"
)

// The crafting tool: one datagram sent from inside a namespace, from a
// chosen local address and port. The socket may join a SO_REUSEPORT group
// on that address (weftd's udp tunnel socket), as only its owner's user may:
// the test, like weftd, runs as root.
func sendFromNS(t *testing.T, netnsPath, local string, to netip.AddrPort, payload []byte) {
	t.Helper()
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) }); err != nil {
				return err
			}
			return serr
		}}
		pc, err := lc.ListenPacket(context.Background(), "udp4", local)
		if err != nil {
			return err
		}
		defer pc.Close()
		_, err = pc.WriteTo(payload, net.UDPAddrFromAddrPort(to))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// nftCounter reads the packet counter of the rule commented comment in a
// node's weft table (0 when the rule is missing).
func nftCounter(t *testing.T, l *lab.Lab, node, comment string) int {
	t.Helper()
	re := regexp.MustCompile(`counter packets (\d+) bytes \d+ \w+ comment "` + regexp.QuoteMeta(comment) + `"`)
	n := 0
	for _, m := range re.FindAllStringSubmatch(run(t, l, node, "nft", "list", "table", "inet", "weft"), -1) {
		v, _ := strconv.Atoi(m[1])
		n += v
	}
	return n
}

// TestTunnelInjection: a pod on n1 crafts tunnel packets for a pod on n2 —
// a VXLAN datagram to n2:8472, a udp-backend datagram to n2:8285 — with
// --ip-masq on, so without a guard they would leave with n1's address and
// look like n1's tunnel traffic. Measured: nothing reaches n2's pod, and
// n1's tunnel guard counts every one. Controls: the same datagram sent by
// n1's host from its tunnel socket's address and port is delivered (the
// packets are well formed, a delivery would be seen). Further: n1's host
// sending from another port (udp) or with an inner source outside n1's
// subnet (vxlan) is dropped by n2 and counted there. On the vxlan lab also:
// a ping into a subnet no node holds is unreachable (--ip-blackhole-route),
// and a flushed ruleset is restored (--iptables-resync).
func TestTunnelInjection(t *testing.T) {
	parallelEach(t, []string{"vxlan", "udp"}, func(t *testing.T, backend string) {
		l := up(t, lab.Options{Name: labName("inj"), Nodes: 2, PodsPerNode: 1, Backend: backend, IPMasq: true})
		n1, n2 := l.Node("n1"), l.Node("n2")
		attacker, victim := n1.Pods[0], n2.Pods[0]
		podNS := func(p *lab.Pod) string {
			name, err := l.Resolve(p.Name)
			if err != nil {
				t.Fatal(err)
			}
			return "/run/netns/" + name
		}
		hostNS := func(n *lab.Node) string { return "/run/netns/" + n.NS }

		var conn net.PacketConn
		if err := ns.WithNetNSPath(podNS(victim), func(ns.NetNS) error {
			var err error
			conn, err = net.ListenPacket("udp4", ":9999")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		recv := func(d time.Duration) string {
			buf := make([]byte, 1500)
			_ = conn.SetReadDeadline(time.Now().Add(d))
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return ""
			}
			return string(buf[:n])
		}

		port := uint16(8472)
		inner := func(src netip.Addr, msg string) []byte {
			return packettest.IPv4UDP(src, victim.IP, 40000, 9999, []byte(msg))
		}
		craft := func(src netip.Addr, msg string) []byte { return inner(src, msg) }
		guard, hostSrc := "weft-tunnel-guard", ":0"
		if backend == "vxlan" {
			mac, err := net.ParseMAC(strings.TrimSpace(run(t, l, "n2", "cat", "/sys/class/net/weft.1/address")))
			if err != nil {
				t.Fatal(err)
			}
			craft = func(src netip.Addr, msg string) []byte { return packettest.VXLAN(1, mac, 0x0800, inner(src, msg)) }
		} else {
			port = 8285
			hostSrc = netip.AddrPortFrom(n1.Underlay, port).String() // weftd's tunnel socket on n1
		}
		target := netip.AddrPortFrom(n2.Underlay, port)

		sendFromNS(t, hostNS(n1), hostSrc, target, craft(attacker.IP, "control"))
		if got := recv(5 * time.Second); got != "control" {
			t.Fatalf("control: n1's host tunnel datagram did not reach n2's pod (got %q): the crafting is broken, nothing is tested", got)
		}

		before := nftCounter(t, l, "n1", guard)
		const injected = 5
		for i := range injected {
			// From the pod's own tunnel port too: masquerade may keep it.
			local := ":" + strconv.Itoa(int(port))
			if i%2 == 1 {
				local = ":0"
			}
			sendFromNS(t, podNS(attacker), local, target, craft(attacker.IP, "from-pod"))
		}
		got := recv(2 * time.Second)
		after := nftCounter(t, l, "n1", guard)
		record(t, "%s: %d tunnel datagrams crafted in pod %s for pod %s (--ip-masq): received %q; n1 tunnel guard %d → %d",
			backend, injected, attacker.IP, victim.IP, got, before, after)
		if got != "" {
			t.Errorf("n2's pod received %q crafted by a pod on n1", got)
		}
		if after-before != injected {
			t.Errorf("n1's tunnel guard counted %d, want %d", after-before, injected)
		}

		// What n2 checks itself, for a node that does not guard (a Flannel
		// node, rules flushed by hand): from n1's address, the wrong port
		// (udp) or an inner source n1 does not own (vxlan).
		if backend == "udp" {
			metricName := `weft_udp_drops_total{reason="wrong_port"}`
			m0 := metric(t, l, "n2", metricName)
			sendFromNS(t, hostNS(n1), n1.Underlay.String()+":0", target, craft(attacker.IP, "other-port"))
			var m1 float64
			lab.Poll(t.Context(), 5*time.Second, 50*time.Millisecond, func() bool {
				m1 = metric(t, l, "n2", metricName)
				return m1 > m0
			})
			got := recv(time.Second)
			record(t, "udp: datagram from n1's address on another port: received %q; n2 wrong_port drops %v → %v", got, m0, m1)
			if got != "" || m1 <= m0 {
				t.Errorf("from n1's address on another port: received %q, wrong_port %v → %v", got, m0, m1)
			}
			return
		}
		// --ip-blackhole-route (on by default): a pod subnet no node holds is
		// unreachable, it does not leak out of the default route.
		nowhere := freeSubnets(l, 1)[0].Addr().Next().Next()
		out, _ := l.Run(t.Context(), attacker.Name, "ping", "-c", "1", "-W", "2", nowhere.String())
		routes := run(t, l, "n1", "ip", "route", "show", "type", "unreachable")
		record(t, "vxlan: ping from a pod to %s (no node holds it): %q; n1 unreachable routes %q", nowhere, lastLine(out), strings.TrimSpace(routes))
		if !strings.Contains(out, "Unreachable") || !strings.Contains(routes, "10.244.0.0/16 proto 87 metric 4242") {
			t.Errorf("ping to a pod subnet no node holds: %s\nunreachable routes on n1: %s", out, routes)
		}

		// --iptables-resync (5 s by default): a flushed ruleset comes back,
		// guard and peer filter included.
		run(t, l, "n1", "nft", "flush", "ruleset")
		began := time.Now()
		back := lab.Poll(t.Context(), 20*time.Second, 200*time.Millisecond, func() bool {
			out, err := l.Run(t.Context(), "n1", "nft", "list", "table", "inet", "weft")
			return err == nil && strings.Contains(out, `"weft-tunnel-guard"`) && strings.Contains(out, `"weft-peer-accept"`) &&
				strings.Contains(out, n2.Underlay.String())
		})
		restores := metric(t, l, "n1", "weft_firewall_restores_total")
		record(t, "vxlan: nft flush ruleset on n1: rules back %v after %v; weft_firewall_restores_total %v", back, time.Since(began).Round(100*time.Millisecond), restores)
		if !back || restores < 1 {
			t.Errorf("after nft flush ruleset: rules back %v, restores %v", back, restores)
		}

		spoof := netip.PrefixFrom(n2.Subnet.Addr(), 32).Addr().Next().Next().Next() // a pod address of n2's own
		d0 := nftCounter(t, l, "n2", "weft-inner-drop")
		sendFromNS(t, hostNS(n1), ":0", target, craft(spoof, "spoofed-inner"))
		got = recv(2 * time.Second)
		d1 := nftCounter(t, l, "n2", "weft-inner-drop")
		record(t, "vxlan: datagram from n1 with inner source %s (not n1's): received %q; n2 inner-source drops %d → %d", spoof, got, d0, d1)
		if got != "" || d1 != d0+1 {
			t.Errorf("inner source %s from n1: received %q, n2's inner-source drops %d → %d", spoof, got, d0, d1)
		}
	})
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
