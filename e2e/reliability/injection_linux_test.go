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

	"github.com/weftnet/weft/backend/vxlan"
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
		network := "udp4"
		if to.Addr().Is6() {
			network = "udp6"
		}
		pc, err := lc.ListenPacket(context.Background(), network, local)
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
// and a flushed ruleset is restored (--iptables-resync). vxlan-ipv6 is the
// vxlan case over the IPv6 underlay of a dual-stack lab (the IPv6 device,
// inner IPv6 packets): the pod's datagrams, and n1's with an inner source
// outside n1's IPv6 subnet, are dropped the same way.
func TestTunnelInjection(t *testing.T) {
	cases := append(ipv4Scenarios("vxlan", "udp"), scenario{name: "vxlan-ipv6", backend: "vxlan", ipv6: true})
	parallelScenarios(t, cases, func(t *testing.T, s scenario) {
		backend := s.backend
		l := up(t, s.lab(lab.Options{Name: labName("inj"), Nodes: 2, PodsPerNode: 1, IPMasq: true}))
		n1, n2 := l.Node("n1"), l.Node("n2")
		attacker, victim := n1.Pods[0], n2.Pods[0]
		// The family under test: the addresses of the pods and nodes, the
		// VXLAN device and the inner packets of that family.
		attackerIP, victimIP, n1Underlay, n2Underlay, n2Subnet := attacker.IP, victim.IP, n1.Underlay, n2.Underlay, n2.Subnet
		udpNet, vxlanDev, etherType, innerPacket := "udp4", vxlan.DeviceName(1), uint16(unix.ETH_P_IP), packettest.IPv4UDP
		if s.ipv6 {
			attackerIP, victimIP, n1Underlay, n2Underlay, n2Subnet = attacker.IPv6, victim.IPv6, n1.UnderlayV6, n2.UnderlayV6, n2.IPv6Subnet
			udpNet, vxlanDev, etherType, innerPacket = "udp6", vxlan.DeviceName6(1), unix.ETH_P_IPV6, packettest.IPv6UDP
		}
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
			conn, err = net.ListenPacket(udpNet, ":9999")
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
			return innerPacket(src, victimIP, 40000, 9999, []byte(msg))
		}
		craft := func(src netip.Addr, msg string) []byte { return inner(src, msg) }
		guard, hostSrc := "weft-tunnel-guard", ":0"
		if backend == "vxlan" {
			mac, err := net.ParseMAC(strings.TrimSpace(run(t, l, "n2", "cat", "/sys/class/net/"+vxlanDev+"/address")))
			if err != nil {
				t.Fatal(err)
			}
			craft = func(src netip.Addr, msg string) []byte { return packettest.VXLAN(1, mac, etherType, inner(src, msg)) }
		} else {
			port = 8285
			hostSrc = netip.AddrPortFrom(n1Underlay, port).String() // weftd's tunnel socket on n1
		}
		target := netip.AddrPortFrom(n2Underlay, port)

		// Resent until one arrives: the first may wait on a neighbour
		// (IPv6: the underlay's, resolved on first use) and be dropped.
		// Copies still on their way are drained, so that a later read
		// sees only what a later send delivered.
		control := false
		for i := 0; i < 10 && !control; i++ {
			sendFromNS(t, hostNS(n1), hostSrc, target, craft(attackerIP, "control"))
			control = recv(time.Second) == "control"
		}
		if !control {
			t.Fatalf("control: n1's host tunnel datagram did not reach n2's pod in 10 tries: the crafting is broken, nothing is tested")
		}
		for recv(500*time.Millisecond) != "" {
		}

		before := nftCounter(t, l, "n1", guard)
		const injected = 5
		for i := range injected {
			// From the pod's own tunnel port too: masquerade may keep it.
			local := ":" + strconv.Itoa(int(port))
			if i%2 == 1 {
				local = ":0"
			}
			sendFromNS(t, podNS(attacker), local, target, craft(attackerIP, "from-pod"))
		}
		got := recv(2 * time.Second)
		after := nftCounter(t, l, "n1", guard)
		record(t, "%s: %d tunnel datagrams crafted in pod %s for pod %s (--ip-masq): received %q; n1 tunnel guard %d → %d",
			s.name, injected, attackerIP, victimIP, got, before, after)
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
			sendFromNS(t, hostNS(n1), n1Underlay.String()+":0", target, craft(attackerIP, "other-port"))
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
		if !s.ipv6 {
			ipv4Guards(t, l, attacker, n2)
		}

		spoof := n2Subnet.Addr().Next().Next().Next() // a pod address of n2's own
		d0 := nftCounter(t, l, "n2", "weft-inner-drop")
		sendFromNS(t, hostNS(n1), ":0", target, craft(spoof, "spoofed-inner"))
		got = recv(2 * time.Second)
		d1 := nftCounter(t, l, "n2", "weft-inner-drop")
		record(t, "%s: datagram from n1 with inner source %s (not n1's): received %q; n2 inner-source drops %d → %d", s.name, spoof, got, d0, d1)
		if got != "" || d1 != d0+1 {
			t.Errorf("inner source %s from n1: received %q, n2's inner-source drops %d → %d", spoof, got, d0, d1)
		}
	})
}

// ipv4Guards checks, on the vxlan lab of TestTunnelInjection, the
// blackhole route of the pod network and the restore of a flushed ruleset.
func ipv4Guards(t *testing.T, l *lab.Lab, attacker *lab.Pod, n2 *lab.Node) {
	t.Helper()
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
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
