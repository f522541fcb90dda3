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
const baseVXLAN = 100

const pingTimeout = 10 * time.Second

// TestNetlinkVXLAN programs two nodes with the real vxlan backend and
// checks that the diagnosis of a peer's pod is all ✓, then that deleting
// the route, the neighbour and the FDB entry each shows as ✗, and that a
// local pod and forwarding are read from the node's own namespace.
func TestNetlinkVXLAN(t *testing.T) {
	nodes := nltest.Nodes(t, 2, baseVXLAN)
	cfgJSON := `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":1}}`
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
				Underlay: backend.Underlay{Link: "eth0", Index: eth0.Attrs().Index, PublicIP: n.PublicIP},
				Config:   cfg,
			})
			if err != nil {
				return err
			}
			attrs, err := bks[i].Prepare(context.Background())
			leases[i] = subnet.Lease{Subnet: n.Subnet, LeaseID: int64(i + 1),
				Attrs: subnet.LeaseAttrs{PublicIP: n.PublicIP, BackendType: "vxlan", BackendData: attrs.BackendData}}
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
	// The data path works, so the diagnosis must be all ✓.
	nltest.WaitPing(t, nodes[0].Pod, nodes[1].PodIP, pingTimeout)

	peerPod := nodes[1].PodIP
	q := diagnose.Query{
		IP: peerPod, Config: cfg, Leases: leases,
		Node: diagnose.Node{Subnet: nodes[0].Subnet, Backend: "vxlan", VXLANDevice: vxlan.DeviceName(1), Bridge: "wp0",
			Peers: map[netip.Prefix]diagnose.PeerState{nodes[1].Subnet: {State: "programmed"}}},
	}
	run := func() diagnose.Report {
		t.Helper()
		var r diagnose.Report
		in(t, nodes[0], func() error {
			r = diagnose.Diagnose(diagnose.NewNetlink(), q)
			return nil
		})
		var b strings.Builder
		_ = r.WriteText(&b)
		t.Log("\n" + b.String())
		return r
	}
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

	var peerMAC string
	var data struct{ VtepMAC string }
	if err := json.Unmarshal(leases[1].Attrs.BackendData, &data); err != nil {
		t.Fatal(err)
	}
	peerMAC = data.VtepMAC
	vtep := nodes[1].Subnet.Addr().String()

	steps := []struct {
		name string
		cmd  []string
		want []string
	}{
		{"route deleted", []string{"ip", "route", "del", nodes[1].Subnet.String()},
			[]string{"route " + nodes[1].Subnet.String() + " via " + vtep + " dev weft.1 onlink", "kernel sends " + peerPod.String()}},
		{"neighbour deleted", []string{"ip", "neigh", "del", vtep, "dev", "weft.1"},
			[]string{"neighbour " + vtep + " lladdr " + peerMAC}},
		{"fdb deleted", []string{"bridge", "fdb", "del", peerMAC, "dev", "weft.1", "dst", nodes[1].PublicIP.String()},
			[]string{"fdb " + peerMAC + " dst " + nodes[1].PublicIP.String()}},
		{"forwarding off", []string{"sysctl", "-qw", "net.ipv4.ip_forward=0"},
			[]string{"IPv4 forwarding on"}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			nodes[0].NS.MustRun(t, s.cmd[0], s.cmd[1:]...)
			got := failed(run())
			if len(got) != len(s.want) {
				t.Fatalf("failed checks %q, want %q", got, s.want)
			}
			for i, w := range s.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("failed check %q, want %q", got[i], w)
				}
			}
			// Repair for the next step, as weftd's full pass would.
			nodes[0].NS.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
			in(t, nodes[0], func() error { return bks[0].Sync(context.Background(), []subnet.Lease{leases[1]}) })
			if got := failed(run()); len(got) != 0 {
				t.Fatalf("after repair: failed checks %q", got)
			}
		})
	}
}

func in(t *testing.T, n *nltest.Node, f func() error) {
	t.Helper()
	if err := n.NS.Do(func(ns.NetNS) error { return f() }); err != nil {
		t.Fatal(err)
	}
}
