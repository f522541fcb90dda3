package interop

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/lab"
	"github.com/weftnet/weft/lab/labtest"
	"github.com/weftnet/weft/subnet"
)

// TestNATNodes puts, per backend (vxlan, udp) and in parallel, a weft node
// (n3) behind a 1:1 NAT, and on udp a Flannel node (n2) too: peers reach
// them at a public address no interface of theirs holds (Flannel's
// --public-ip beside the interface address). Each publishes the public
// address in its lease, sends its tunnels from the interface's address,
// and every pod reaches every pod through the NATs, Flannel's and weft's
// alike. (Flannel v0.28.9's vxlan makes its device with the public address
// as the local one, so a Flannel vxlan node cannot work behind a NAT; its
// udp backend can.)
func TestNATNodes(t *testing.T) {
	bins(t)
	for _, tc := range []struct {
		mixedCase
		behind []string
	}{
		// Masqueraded, as NATed nodes are run: a pod's packet to another
		// node then leaves from its node's address, and the reply comes
		// back on the underlay. (Unmasqueraded, the lab's NAT, which leaves
		// n3's own address reachable, would have n3 answer a pod of n1
		// through the tunnel from that address, which n1's VXLAN filter
		// rightly refuses: it is not n3's PublicIP.)
		{mixedCase{backend: "vxlan", ipMasq: true}, []string{"n3"}},
		{mixedCases[2], []string{"n3", "n2"}}, // udp
	} {
		t.Run(tc.backend, func(t *testing.T) {
			t.Parallel()
			testNATNodes(t, tc.mixedCase, tc.behind)
		})
	}
}

func testNATNodes(t *testing.T, tc mixedCase, behind []string) {
	l := up(t, lab.Options{
		Name:         labName("nt" + tc.backend + "-"),
		Nodes:        3,
		PodsPerNode:  1,
		Backend:      tc.backend,
		Config:       tc.config,
		IPMasq:       tc.ipMasq,
		FlannelNodes: []string{"n2"},
	})
	public := map[string]netip.Addr{}
	for _, name := range behind {
		n := l.Node(name)
		u := n.Underlay.As4()
		public[name] = netip.AddrFrom4([4]byte{u[0], u[1], u[2], u[3] + 100})
	}
	// The nodes are re-addressed behind a NAT: each
	// daemon stopped, its lease (of the old PublicIP) deleted, the NAT set
	// up, the daemon started with --public-ip. Both take their previous
	// subnet again from their subnet file, so their pods stay.
	c := labtest.EtcdClient(t, l, clientv3.Config{})
	for _, name := range behind {
		n := l.Node(name)
		var err error
		if n.Flannel {
			err = l.StopFlanneld(t.Context(), name, false)
		} else {
			err = l.StopWeftd(t.Context(), name, false)
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Delete(t.Context(), subnetsPrefix+subnet.KeyName(n.Subnet, netip.Prefix{})); err != nil {
			t.Fatal(err)
		}
		natInFront(t, l, name, public[name])
		was := n.Subnet
		if n.Flannel {
			n.FlanneldArgs = append(n.FlanneldArgs, "--public-ip="+public[name].String())
			_, err = l.StartFlanneld(t.Context(), name)
		} else {
			n.Args = append(n.Args, "--public-ip="+public[name].String())
			_, err = l.StartWeftd(t.Context(), name)
		}
		if err != nil {
			t.Fatal(err)
		}
		if n.Subnet != was {
			t.Fatalf("%s took %s behind its NAT, had %s", name, n.Subnet, was)
		}
	}

	for name, pub := range public {
		n := l.Node(name)
		// A restarted flanneld may write its lease again after it is ready
		// (a new etcd lease): the key can be missing for a moment.
		var a subnet.LeaseAttrs
		var err error
		found := lab.Poll(t.Context(), 10*time.Second, 100*time.Millisecond, func() bool {
			resp, gerr := c.Get(t.Context(), subnetsPrefix+subnet.KeyName(n.Subnet, netip.Prefix{}))
			if gerr != nil || len(resp.Kvs) != 1 {
				err = gerr
				return false
			}
			err = json.Unmarshal(resp.Kvs[0].Value, &a)
			return err == nil && a.PublicIP == pub
		})
		if !found {
			t.Errorf("%s (%s) publishes %s (%v), want its NAT address %s", name, n.DaemonName(), a.PublicIP, err, pub)
		}
	}
	if tc.backend == "vxlan" {
		out, err := l.Run(t.Context(), "n3", "ip", "-d", "link", "show", "weft.1")
		if want := "local " + l.Node("n3").Underlay.String() + " "; err != nil || !strings.Contains(out, want) {
			t.Errorf("n3's weft.1: want %q (the interface's address, not the NAT's): %v\n%s", want, err, out)
		}
	}
	requireMatrix(t, l, fmt.Sprintf("%v behind 1:1 NATs", behind))
}

// natInFront emulates a 1:1 NAT in front of node: the other nodes send to
// pub (a static neighbour entry with node's MAC stands in for the NAT box
// on the switch), node's namespace turns pub into its underlay address on
// the way in and its underlay address into pub for the tunnels on the way
// out (UDP to the vxlan, udp and wireguard ports), as a NAT gateway would.
func natInFront(t *testing.T, l *lab.Lab, node string, pub netip.Addr) {
	t.Helper()
	n := l.Node(node)
	out, err := l.Run(t.Context(), node, "cat", "/sys/class/net/eth0/address")
	if err != nil {
		t.Fatal(err)
	}
	mac := strings.TrimSpace(out)
	rules := fmt.Sprintf(`table ip weft-test-nat {
	chain pre { type nat hook prerouting priority dstnat; ip daddr %[1]s dnat to %[2]s; }
	chain out { type nat hook postrouting priority srcnat; ip saddr %[2]s udp dport { 8472, 8285, 51820 } snat to %[1]s; }
}
`, pub, n.Underlay)
	file := filepath.Join(t.TempDir(), "nat.nft")
	if err := os.WriteFile(file, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := l.Run(t.Context(), node, "nft", "-f", file); err != nil {
		t.Fatalf("nat rules on %s: %v: %s", node, err, out)
	}
	for _, o := range l.Nodes {
		if o.Name == node {
			continue
		}
		if out, err := l.Run(t.Context(), o.Name, "ip", "neigh", "replace", pub.String(), "lladdr", mac, "dev", "eth0", "nud", "permanent"); err != nil {
			t.Fatalf("neighbour %s on %s: %v: %s", pub, o.Name, err, out)
		}
	}
}
