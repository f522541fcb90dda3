package masq

import (
	"net"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weftnet/weft/internal/nstest"
)

var (
	nftGuard = regexp.MustCompile(`udp dport 8472 counter packets (\d+) bytes \d+ drop comment "weft-tunnel-guard"`)
	iptGuard = regexp.MustCompile(`\[(\d+):\d+\] -A WEFT-FWD -s 10\.244\.0\.0/16 -p udp -m udp --dport 8472 -m comment --comment weft-tunnel-guard -j DROP`)
)

// guardDrops is the packet counter of the IPv4 tunnel guard in n.
func guardDrops(t *testing.T, b backend, n *nstest.NS) int {
	t.Helper()
	var out string
	re := nftGuard
	if b.name == "iptables" {
		out, re = n.MustRun(t, "iptables-save", "-c", "-t", "filter"), iptGuard
	} else {
		out = n.MustRun(t, "nft", "list", "table", "inet", DefaultTable)
	}
	m := re.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no tunnel guard rule with a counter:\n%s", out)
	}
	v, _ := strconv.Atoi(m[1])
	return v
}

// TestTunnelGuard: with TunnelPorts set, a pod's datagram to another
// node's tunnel port is dropped on the forward path (and counted), even
// though it would leave masqueraded with the node's address; other UDP from
// the pod is forwarded as before.
func TestTunnelGuard(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			node := nstest.New(t, "wgn")
			pod := nstest.New(t, "wgp")
			peer := nstest.New(t, "wgr")
			nstest.Link(t, node, "pod0", "10.244.3.1/24", pod, "eth0", "10.244.3.2/24")
			pod.MustRun(t, "ip", "route", "add", "default", "via", "10.244.3.1")
			nstest.Link(t, node, "up0", "198.18.42.1/24", peer, "eth0", "198.18.42.2/24")
			node.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
			peer.MustRun(t, "ip", "route", "add", "10.244.0.0/16", "via", "198.18.42.1")

			listen := func(port int) *net.UDPConn {
				var c *net.UDPConn
				if err := peer.Do(func(ns.NetNS) error {
					var err error
					c, err = net.ListenUDP("udp4", &net.UDPAddr{Port: port})
					return err
				}); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				return c
			}
			tunnel, other := listen(8472), listen(9999)
			send := func(port int) {
				t.Helper()
				if err := pod.Do(func(ns.NetNS) error {
					c, err := net.Dial("udp4", "198.18.42.2:"+strconv.Itoa(port))
					if err != nil {
						return err
					}
					defer c.Close()
					_, err = c.Write([]byte("crafted"))
					return err
				}); err != nil {
					t.Fatal(err)
				}
			}
			got := func(c *net.UDPConn, d time.Duration) bool {
				buf := make([]byte, 64)
				_ = c.SetReadDeadline(time.Now().Add(d))
				_, _, err := c.ReadFromUDP(buf)
				return err == nil
			}

			// Baseline: without the guard the pod reaches the tunnel port.
			send(8472)
			if !got(tunnel, 5*time.Second) {
				t.Fatal("baseline: the pod's datagram to the tunnel port did not arrive; the test cannot see the guard work")
			}
			r := rulesFor("10.244.0.0/16", "10.244.3.0/24")
			r.TunnelPorts = []uint16{8472}
			if err := b.do(t, node, func(m Manager) error { return m.Ensure(t.Context(), r) }); err != nil {
				t.Fatalf("Ensure: %v", err)
			}
			const n = 3
			for range n {
				send(8472)
			}
			if got(tunnel, time.Second) {
				t.Error("a pod's datagram to the tunnel port was forwarded")
			}
			if d := guardDrops(t, b, node); d != n {
				t.Errorf("guard counted %d drops, want %d", d, n)
			}
			send(9999)
			if !got(other, 5*time.Second) {
				t.Error("other UDP from the pod is no longer forwarded")
			}
		})
	}
}
