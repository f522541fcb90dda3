package reliability

import (
	"encoding/binary"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weftnet/weft/lab"
)

// vxlanDatagram builds a VXLAN payload (VNI 1) carrying an Ethernet frame
// to dstMAC with an IPv4/UDP packet from src to dst:9999.
func vxlanDatagram(dstMAC net.HardwareAddr, src, dst netip.Addr, payload []byte) []byte {
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], 9999)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload) // checksum 0: none, allowed for IPv4
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	binary.BigEndian.PutUint16(ip[6:], 0x4000)
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	eth := append(append(append([]byte{}, dstMAC...), 0x0a, 0x58, 0xde, 0xad, 0xbe, 0xef), 0x08, 0x00)
	vx := []byte{0x08, 0, 0, 0, 0, 0, 1, 0}
	return append(append(append(vx, eth...), ip...), udp...)
}

var dropCounter = regexp.MustCompile(`udp dport 8472 counter packets (\d+) bytes \d+ drop`)

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
	drops := func() int {
		m := dropCounter.FindStringSubmatch(run(t, l, "n1", "nft", "list", "ruleset"))
		if m == nil {
			t.Fatalf("no peer filter drop rule with a counter in n1's ruleset:\n%s", run(t, l, "n1", "nft", "list", "ruleset"))
		}
		v, _ := strconv.Atoi(m[1])
		return v
	}
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
		if _, err := c.Write(vxlanDatagram(mac, inner, pod.IP, []byte(msg))); err != nil {
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
