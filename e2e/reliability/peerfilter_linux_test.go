package reliability

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weftnet/weft/internal/packettest"
	"github.com/weftnet/weft/lab"
)

// TestVXLANPeerFilter injects a VXLAN datagram addressed to a pod on n1
// from a namespace on the lab's switch that is not a peer, and the same
// datagram from peer n2 as a control. Measured: the pod receives the
// control and not the injected one; the peer filter's drop counter rises.
func TestVXLANPeerFilter(t *testing.T) {
	t.Parallel()
	l := up(t, lab.Options{Name: labName("pf"), Nodes: 2, PodsPerNode: 1, Backend: "vxlan"})
	n1, n2 := l.Node("n1"), l.Node("n2")
	pod := n1.Pods[0]
	rogue, rogueIP, err := l.AttachHost(t.Context(), "rogue", 9)
	if err != nil {
		t.Fatal(err)
	}
	macOut := run(t, l, "n1", "cat", "/sys/class/net/weft.1/address")
	mac, err := net.ParseMAC(strings.TrimSpace(macOut))
	if err != nil {
		t.Fatal(err)
	}
	podNS, _ := l.Resolve(pod.Name)
	var conn net.PacketConn
	if err := ns.WithNetNSPath("/run/netns/"+podNS, func(ns.NetNS) error {
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
	drops := func() int { return nftCounter(t, l, "n1", "weft-peer-drop") }
	send := func(from string, msg string) {
		dial, err := l.DialContext(from)
		if err != nil {
			t.Fatal(err)
		}
		c, err := dial(t.Context(), "udp4", netip.AddrPortFrom(n1.Underlay, 8472).String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		inner := netip.PrefixFrom(n2.Subnet.Addr(), 32).Addr().Next().Next().Next() // an address in the peer's subnet
		if _, err := c.Write(packettest.VXLAN(1, mac, 0x0800, packettest.IPv4UDP(inner, pod.IP, 40000, 9999, []byte(msg)))); err != nil {
			t.Fatal(err)
		}
	}
	send("n2", "from-peer")
	if got := recv(5 * time.Second); got != "from-peer" {
		t.Fatalf("control: the datagram from peer n2 did not reach the pod (got %q): the injection is broken, nothing is tested", got)
	}
	before := drops()
	const injected = 5
	for range injected {
		send(rogue, "from-rogue")
	}
	got := recv(2 * time.Second)
	after := drops()
	record(t, "%d VXLAN datagrams to pod %s injected from non-peer %s: pod received %q; peer filter drop counter %d → %d (control from peer n2 received)",
		injected, pod.IP, rogueIP, got, before, after)
	if got != "" {
		t.Errorf("the pod received %q from a non-peer", got)
	}
	if after-before < injected {
		t.Errorf("drop counter rose by %d, want %d", after-before, injected)
	}
}
