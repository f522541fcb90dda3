package masq

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weftnet/weft/internal/nstest"
)

// fwdFamily is one address family of the forward-path tests: a pod on
// the node's pod link, an outside host (or peer) on its other link.
type fwdFamily struct {
	name               string
	network, podSubnet string
	podGW, pod, podLen string
	nodeOut, out, oLen string
	forwarding         string // the sysctl that turns forwarding on
	iptables, iptSave  string
	udp                string // the Go network of a datagram socket
	hostLen            string // a host prefix length
}

// fwdFamilies: IPv4, and IPv6 the same way (issue 16 item 4).
var fwdFamilies = []fwdFamily{
	{name: "ipv4", network: "10.244.0.0/16", podSubnet: "10.244.3.0/24", podGW: "10.244.3.1", pod: "10.244.3.2", podLen: "/24",
		nodeOut: "198.18.%d.1", out: "198.18.%d.2", oLen: "/24", forwarding: "net.ipv4.ip_forward=1",
		iptables: "iptables", iptSave: "iptables-save", udp: "udp4", hostLen: "/32"},
	{name: "ipv6", network: "fd10::/48", podSubnet: "fd10:0:0:3::/64", podGW: "fd10:0:0:3::1", pod: "fd10:0:0:3::2", podLen: "/64",
		nodeOut: "2001:db8:%d::1", out: "2001:db8:%d::2", oLen: "/64", forwarding: "net.ipv6.conf.all.forwarding=1",
		iptables: "ip6tables", iptSave: "ip6tables-save", udp: "udp6", hostLen: "/128"},
}

// rules are weft's rules for the family's network and pod subnet.
func (f fwdFamily) rules() Rules {
	if f.name == "ipv6" {
		return Rules{IPv6Network: mustParse(f.network), IPv6Subnet: mustParse(f.podSubnet), Masquerade: true}
	}
	return rulesFor(f.network, f.podSubnet)
}

// plug makes a node, a pod and an outside host (namespaces named prefix
// + "n", "p", "o"): the pod on the node's pod link (default route via the
// gateway), the outside host on the node's other link, of the family's
// addresses with the test's own third octet or group (octet). It turns
// forwarding on and returns the outside host's address.
func (f fwdFamily) plug(t *testing.T, prefix string, octet int) (node, pod, out *nstest.NS, outAddr string) {
	t.Helper()
	node, pod, out = nstest.New(t, prefix+"n"), nstest.New(t, prefix+"p"), nstest.New(t, prefix+"o")
	nstest.Link(t, node, "pod0", f.podGW+f.podLen, pod, "eth0", f.pod+f.podLen)
	pod.MustRun(t, "ip", "route", "add", "default", "via", f.podGW)
	outAddr = fmt.Sprintf(f.out, octet)
	nstest.Link(t, node, "up0", fmt.Sprintf(f.nodeOut, octet)+f.oLen, out, "eth0", outAddr+f.oLen)
	node.MustRun(t, "sysctl", "-qw", f.forwarding)
	return node, pod, out, outAddr
}

// guardDrops is the packet counter of the family's tunnel guard in n.
func guardDrops(t *testing.T, b backend, f fwdFamily, n *nstest.NS) int {
	t.Helper()
	var out string
	re := regexp.MustCompile(`udp dport 8472 counter packets (\d+) bytes \d+ drop comment "weft-tunnel-guard"`)
	if b.name == "iptables" {
		out = n.MustRun(t, f.iptSave, "-c", "-t", "filter")
		re = regexp.MustCompile(`\[(\d+):\d+\] -A WEFT-FWD -s ` + regexp.QuoteMeta(f.network) + ` -p udp -m udp --dport 8472 -m comment --comment weft-tunnel-guard -j DROP`)
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
// the pod is forwarded as before. In each family.
func TestTunnelGuard(t *testing.T) {
	for _, f := range fwdFamilies {
		for _, b := range backends {
			t.Run(b.name+"/"+f.name, func(t *testing.T) {
				t.Parallel()
				node, pod, peer, peerAddr := f.plug(t, "wg", 42)
				peer.MustRun(t, "ip", "route", "add", f.network, "via", fmt.Sprintf(f.nodeOut, 42))

				listen := func(port int) *net.UDPConn {
					var c *net.UDPConn
					if err := peer.Do(func(ns.NetNS) error {
						var err error
						c, err = net.ListenUDP(f.udp, &net.UDPAddr{Port: port})
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
						c, err := net.Dial(f.udp, net.JoinHostPort(peerAddr, strconv.Itoa(port)))
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
				// Sent until it arrives: the first datagrams may go while the
				// pod's IPv6 address is still tentative or a neighbour unresolved.
				arrived := false
				for deadline := time.Now().Add(10 * time.Second); !arrived && time.Now().Before(deadline); {
					send(8472)
					arrived = got(tunnel, 250*time.Millisecond)
				}
				for arrived && got(tunnel, 500*time.Millisecond) {
					// Drain the resent copies, or the guard check reads one.
				}
				if !arrived {
					t.Fatal("baseline: the pod's datagram to the tunnel port did not arrive; the test cannot see the guard work")
				}
				r := f.rules()
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
				if d := guardDrops(t, b, f, node); d != n {
					t.Errorf("guard counted %d drops, want %d", d, n)
				}
				send(9999)
				if !got(other, 5*time.Second) {
					t.Error("other UDP from the pod is no longer forwarded")
				}
			})
		}
	}
}
