package diagnose_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/vxlan"
	"github.com/weftnet/weft/internal/diagnose"
	"github.com/weftnet/weft/internal/nl/nltest"
	"github.com/weftnet/weft/subnet"
)

// Underlay base octets of this package's kernel tests (100-109 are ours).
const (
	baseVXLAN     = 100
	baseVXLANDual = 101
)

const pingTimeout = 10 * time.Second

// TestNetlinkVXLAN programs two nodes with the real vxlan backend and
// checks that the diagnosis of a peer's pod is all ✓, then that deleting
// the route, the neighbour and the FDB entry each shows as ✗, and that a
// local pod and forwarding are read from the node's own namespace.
func TestNetlinkVXLAN(t *testing.T) {
	nodes := nltest.Nodes(t, 2, baseVXLAN)
	cfg, bks, leases := vxlanPair(t, nodes, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":1}}`)
	// The data path works, so the diagnosis must be all ✓.
	nltest.WaitPing(t, nodes[0].Pod, nodes[1].PodIP, pingTimeout)

	peerPod := nodes[1].PodIP
	q := diagnose.Query{
		IP: peerPod, Config: cfg, Leases: leases,
		Node: diagnose.Node{Subnet: nodes[0].Subnet, Backend: "vxlan", VXLANDevice: vxlan.DeviceName(1), Bridge: "wp0",
			Peers: map[netip.Prefix]diagnose.PeerState{nodes[1].Subnet: {State: "programmed"}}},
	}
	run := runner(t, nodes[0], &q)
	r := run()
	if got := failed(r); len(got) != 0 {
		t.Fatalf("healthy vxlan node: failed checks %q", got)
	}
	if len(r.Checks) < 8 {
		t.Fatalf("only %d checks for a vxlan peer", len(r.Checks))
	}

	// A local pod: ping it first so the node has its neighbour entry.
	nltest.WaitPing(t, nodes[0].NS, nodes[0].PodIP, pingTimeout)
	q.IP = nodes[0].PodIP
	if r := run(); !r.Local || len(failed(r)) != 0 || r.Checks[len(r.Checks)-2].Result != diagnose.OK {
		t.Fatalf("local pod: local=%v failed=%q", r.Local, failed(r))
	}
	q.IP = peerPod

	var data struct{ VtepMAC string }
	if err := json.Unmarshal(leases[1].Attrs.BackendData, &data); err != nil {
		t.Fatal(err)
	}
	peerMAC := data.VtepMAC
	vtep := nodes[1].Subnet.Addr().String()
	breakAndRepair(t, nodes[0], run, func() error { return bks[0].Sync(context.Background(), []subnet.Lease{leases[1]}) }, []step{
		{"route deleted", []string{"ip", "route", "del", nodes[1].Subnet.String()},
			[]string{"route " + nodes[1].Subnet.String() + " via " + vtep + " dev weft.1 onlink", "kernel sends " + peerPod.String()}},
		{"neighbour deleted", []string{"ip", "neigh", "del", vtep, "dev", "weft.1"},
			[]string{"neighbour " + vtep + " lladdr " + peerMAC}},
		{"fdb deleted", []string{"bridge", "fdb", "del", peerMAC, "dev", "weft.1", "dst", nodes[1].PublicIP.String()},
			[]string{"fdb " + peerMAC + " dst " + nodes[1].PublicIP.String()}},
		{"forwarding off", []string{"sysctl", "-qw", "net.ipv4.ip_forward=0"},
			[]string{"IPv4 forwarding on"}},
	})
}

// TestNetlinkVXLANIPv6 is TestNetlinkVXLAN for an IPv6 pod of a dual-stack
// vxlan network: weft-v6.<VNI>'s route, neighbour and FDB entry (to the
// peer's PublicIPv6) and IPv6 forwarding are read from the kernel, each
// removal shows as ✗, and a local IPv6 pod is found on the bridge.
func TestNetlinkVXLANIPv6(t *testing.T) {
	nodes := nltest.DualNodes(t, 2, baseVXLANDual)
	cfg, bks, leases := vxlanPair(t, nodes, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"vxlan","VNI":1}}`)
	nltest.WaitPing(t, nodes[0].Pod, nodes[1].PodIPv6, pingTimeout)

	peerPod := nodes[1].PodIPv6
	q := diagnose.Query{
		IP: peerPod, Config: cfg, Leases: leases,
		Node: diagnose.Node{Subnet: nodes[0].Subnet, IPv6Subnet: nodes[0].IPv6Subnet, Backend: "vxlan",
			VXLANDevice: vxlan.DeviceName(1), VXLANDevice6: vxlan.DeviceName6(1), Bridge: "wp0",
			Peers: map[netip.Prefix]diagnose.PeerState{nodes[1].Subnet: {State: "programmed"}}},
	}
	run := runner(t, nodes[0], &q)
	if got := failed(run()); len(got) != 0 {
		t.Fatalf("healthy dual-stack vxlan node: failed checks %q", got)
	}
	nltest.WaitPing(t, nodes[0].NS, nodes[0].PodIPv6, pingTimeout)
	q.IP = nodes[0].PodIPv6
	if r := run(); !r.Local || len(failed(r)) != 0 {
		t.Fatalf("local IPv6 pod: local=%v failed=%q", r.Local, failed(r))
	}
	q.IP = peerPod

	var data struct{ VtepMAC string }
	if err := json.Unmarshal(leases[1].Attrs.BackendV6Data, &data); err != nil {
		t.Fatal(err)
	}
	mac6, vtep6, dev6 := data.VtepMAC, nodes[1].IPv6Subnet.Addr().String(), vxlan.DeviceName6(1)
	breakAndRepair(t, nodes[0], run, func() error { return bks[0].Sync(context.Background(), []subnet.Lease{leases[1]}) }, []step{
		{"IPv6 route deleted", []string{"ip", "-6", "route", "del", nodes[1].IPv6Subnet.String()},
			[]string{"route " + nodes[1].IPv6Subnet.String() + " via " + vtep6 + " dev " + dev6 + " onlink", "kernel sends " + peerPod.String()}},
		{"IPv6 neighbour deleted", []string{"ip", "-6", "neigh", "del", vtep6, "dev", dev6},
			[]string{"neighbour " + vtep6 + " lladdr " + mac6}},
		{"IPv6 fdb deleted", []string{"bridge", "fdb", "del", mac6, "dev", dev6, "dst", nodes[1].PublicIPv6.String()},
			[]string{"fdb " + mac6 + " dst " + nodes[1].PublicIPv6.String()}},
		{"IPv6 forwarding off", []string{"sysctl", "-qw", "net.ipv6.conf.all.forwarding=0"},
			[]string{"IPv6 forwarding on"}},
	})
}

// step breaks one thing on the node (cmd) and names the checks that must
// then fail, in order.
type step struct {
	name string
	cmd  []string
	want []string
}

// breakAndRepair runs each step on n, requires exactly its failed checks,
// then repairs as weftd's full pass would (forwarding back on, resync) and
// requires a clean diagnosis again.
func breakAndRepair(t *testing.T, n *nltest.Node, run func() diagnose.Report, resync func() error, steps []step) {
	t.Helper()
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			n.NS.MustRun(t, s.cmd[0], s.cmd[1:]...)
			got := failed(run())
			if len(got) != len(s.want) {
				t.Fatalf("failed checks %q, want %q", got, s.want)
			}
			for i, w := range s.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("failed check %q, want %q", got[i], w)
				}
			}
			n.NS.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
			if n.PublicIPv6.IsValid() {
				n.NS.MustRun(t, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
			}
			in(t, n, resync)
			if got := failed(run()); len(got) != 0 {
				t.Fatalf("after repair: failed checks %q", got)
			}
		})
	}
}

// runner diagnoses *q in n's namespace and logs the report.
func runner(t *testing.T, n *nltest.Node, q *diagnose.Query) func() diagnose.Report {
	return func() diagnose.Report {
		t.Helper()
		var r diagnose.Report
		in(t, n, func() error {
			r = diagnose.Diagnose(diagnose.NewNetlink(), *q)
			return nil
		})
		var b strings.Builder
		_ = r.WriteText(&b)
		t.Log("\n" + b.String())
		return r
	}
}

// vxlanPair runs the real vxlan backend on both nodes with the config
// cfgJSON, each the other's peer, and returns the config, the backends and
// the leases.
func vxlanPair(t *testing.T, nodes []*nltest.Node, cfgJSON string) (*subnet.Config, []backend.Backend, []subnet.Lease) {
	t.Helper()
	cfg, err := subnet.ParseConfig([]byte(cfgJSON))
	if err != nil {
		t.Fatal(err)
	}
	bks := make([]backend.Backend, len(nodes))
	leases := make([]subnet.Lease, len(nodes))
	for i, n := range nodes {
		in(t, n, func() error {
			eth0, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			bks[i], err = vxlan.New(backend.Options{
				Logger:   slog.New(slog.DiscardHandler),
				Underlay: backend.Underlay{Link: "eth0", Index: eth0.Attrs().Index, PublicIP: n.PublicIP, PublicIPv6: n.PublicIPv6},
				Config:   cfg,
			})
			if err != nil {
				return err
			}
			attrs, err := bks[i].Prepare(context.Background())
			leases[i] = subnet.Lease{Subnet: n.Subnet, IPv6Subnet: n.IPv6Subnet, LeaseID: int64(i + 1),
				Attrs: subnet.LeaseAttrs{PublicIP: n.PublicIP, PublicIPv6: n.PublicIPv6, BackendType: "vxlan",
					BackendData: attrs.BackendData, BackendV6Data: attrs.BackendV6Data}}
			return err
		})
	}
	for i, n := range nodes {
		in(t, n, func() error {
			if err := bks[i].Configure(context.Background(), leases[i]); err != nil {
				return err
			}
			return bks[i].Sync(context.Background(), []subnet.Lease{leases[1-i]})
		})
	}
	return cfg, bks, leases
}

func in(t *testing.T, n *nltest.Node, f func() error) {
	t.Helper()
	if err := n.NS.Do(func(ns.NetNS) error { return f() }); err != nil {
		t.Fatal(err)
	}
}
