// Package nltest builds small multi-node topologies in network namespaces
// for backend kernel tests: nodes on an underlay bridge (nstest.Underlay),
// each with a pod subnet and one "pod" namespace wired to it by hand, plus
// bounded ping helpers. Nothing here touches the root namespace.
package nltest

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/nstest"
)

// Network returns the pod network the helpers carve node subnets from.
func Network() netip.Prefix { return netip.MustParsePrefix("10.244.0.0/16") }

// Network6 returns the IPv6 pod network DualNodes carve node subnets from.
func Network6() netip.Prefix { return netip.MustParsePrefix("fd10::/56") }

// Node is one node namespace with its pod.
type Node struct {
	NS       *nstest.NS
	PublicIP netip.Addr   // underlay address (eth0)
	Subnet   netip.Prefix // 10.244.<i+1>.0/24
	Pod      *nstest.NS
	PodIP    netip.Addr // <subnet>.2, default route via <subnet>.1 on the node

	// The IPv6 half, set by DualNodes only.
	PublicIPv6 netip.Addr   // 2001:db8:<base>::<10+i> on eth0
	IPv6Subnet netip.Prefix // fd10:0:0:<i+1>::/64
	PodIPv6    netip.Addr   // <IPv6Subnet>::2, default route via ::1 on the node
}

// Nodes builds n nodes with nstest.Underlay(t, n, base) (underlay
// 198.18.<base>.<10+i>/24 on eth0), gives node i the subnet 10.244.<i+1>.0/24
// and a pod namespace joined to it by a veth: "wp0" (<subnet>.1/24) on the
// node, "eth0" (<subnet>.2/24, default via <subnet>.1) in the pod. rp_filter
// is off in the nodes so asymmetric paths (DirectRouting one way, VXLAN the
// other) are not dropped.
func Nodes(t testing.TB, n, base int) []*Node {
	t.Helper()
	nss, addrs := nstest.Underlay(t, n, base)
	out := make([]*Node, n)
	for i, ns := range nss {
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i + 1), 0}), 24)
		gw := sn.Addr().Next()
		podIP := gw.Next()
		for _, k := range []string{"all", "default", "eth0"} {
			ns.MustRun(t, "sysctl", "-qw", "net.ipv4.conf."+k+".rp_filter=0")
		}
		pod := nstest.New(t, "wpod")
		nstest.Link(t, ns, "wp0", fmt.Sprintf("%s/24", gw), pod, "eth0", fmt.Sprintf("%s/24", podIP))
		pod.MustRun(t, "ip", "route", "add", "default", "via", gw.String())
		out[i] = &Node{NS: ns, PublicIP: netip.MustParseAddr(addrs[i]), Subnet: sn, Pod: pod, PodIP: podIP}
	}
	return out
}

// DualNodes is Nodes with IPv6 too: the underlay of nstest.DualUnderlay
// (IPv6 forwarding on), node i's IPv6 subnet fd10:0:0:<i+1>::/64 (inside
// Network6) with <subnet>::1/64 on wp0 and <subnet>::2/64 on the pod's eth0,
// its IPv6 default route via <subnet>::1.
func DualNodes(t testing.TB, n, base int) []*Node {
	t.Helper()
	nss, addrs, addrs6 := nstest.DualUnderlay(t, n, base)
	out := make([]*Node, n)
	for i, ns := range nss {
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i + 1), 0}), 24)
		gw := sn.Addr().Next()
		podIP := gw.Next()
		sn6 := netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x10, 7: byte(i + 1)}), 64)
		gw6 := sn6.Addr().Next()
		podIP6 := gw6.Next()
		for _, k := range []string{"all", "default", "eth0"} {
			ns.MustRun(t, "sysctl", "-qw", "net.ipv4.conf."+k+".rp_filter=0")
		}
		pod := nstest.New(t, "wpod")
		nstest.Link(t, ns, "wp0", fmt.Sprintf("%s/24 %s/64", gw, gw6), pod, "eth0", fmt.Sprintf("%s/24 %s/64", podIP, podIP6))
		pod.MustRun(t, "ip", "route", "add", "default", "via", gw.String())
		pod.MustRun(t, "ip", "-6", "route", "add", "default", "via", gw6.String())
		out[i] = &Node{NS: ns, PublicIP: netip.MustParseAddr(addrs[i]), Subnet: sn, Pod: pod, PodIP: podIP,
			PublicIPv6: netip.MustParseAddr(addrs6[i]), IPv6Subnet: sn6, PodIPv6: podIP6}
	}
	return out
}

var pingStats = regexp.MustCompile(`(\d+) packets transmitted, (\d+) (?:packets )?received`)

// Ping runs a bounded ping (count packets, interval, 1 s reply wait, hard
// deadline) inside ns and returns how many were sent and received.
func Ping(ctx context.Context, ns *nstest.NS, to netip.Addr, count int, interval time.Duration) (sent, received int, err error) {
	deadline := time.Duration(count)*interval + 5*time.Second
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns.Name, "ping", "-n", "-q",
		"-c", strconv.Itoa(count), "-i", fmt.Sprintf("%.3f", interval.Seconds()), "-W", "1",
		"-w", strconv.Itoa(int(deadline.Seconds())), to.String())
	out, runErr := cmd.CombinedOutput()
	m := pingStats.FindSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("ping %s from %s: %v: %s", to, ns.Name, runErr, out)
	}
	sent, _ = strconv.Atoi(string(m[1]))
	received, _ = strconv.Atoi(string(m[2]))
	return sent, received, nil
}

// WaitPing pings to from ns once per attempt until a reply comes or timeout
// passes; then it requires a clean `ping -c 3`. It fails t otherwise.
func WaitPing(t testing.TB, ns *nstest.NS, to netip.Addr, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	for {
		_, got, _ := Ping(ctx, ns, to, 1, 200*time.Millisecond)
		if got == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ping reply from %s (in %s) within %s", to, ns.Name, timeout)
		}
	}
	sent, got, err := Ping(ctx, ns, to, 3, 200*time.Millisecond)
	if err != nil || got != sent {
		t.Fatalf("ping %s from %s: %d/%d received, err %v", to, ns.Name, got, sent, err)
	}
}

// NoPing requires that to is unreachable from ns (one ping, 1 s wait).
func NoPing(t testing.TB, ns *nstest.NS, to netip.Addr) {
	t.Helper()
	if _, got, _ := Ping(context.Background(), ns, to, 1, 200*time.Millisecond); got != 0 {
		t.Fatalf("ping %s from %s succeeded, want no path", to, ns.Name)
	}
}
