package lab

import (
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/subnet/kube/kubetest"
)

// TestKubeE2E runs, for each backend in parallel (wireguard too), a 3-node lab in
// Kubernetes mode (the Nodes' podCIDRs from kube-controller-manager, weftd
// with --kube-subnet-mgr and the manifest's RBAC): full connectivity, the
// NetworkUnavailable condition cleared, weftd restart → same subnet, a
// Node deleted → its peer state removed on every other node.
func TestKubeE2E(t *testing.T) {
	e2eBins(t)
	kubetest.RequireBinaries(t)
	root := t.TempDir()
	for _, tc := range []struct {
		backend string
		ipMasq  bool // as in TestE2E
	}{
		{"vxlan", false},
		{"host-gw", true},
		{"udp", true},
		{"wireguard", true},
	} {
		t.Run(tc.backend, func(t *testing.T) {
			t.Parallel()
			testKubeBackend(t, root, tc.backend, tc.ipMasq)
		})
	}
}

func testKubeBackend(t *testing.T, root, backend string, ipMasq bool) {
	l := upForTest(t, Options{
		IPMasq:       ipMasq,
		Name:         testLabName("k8s-" + strings.ReplaceAll(backend, "-", "") + "-"),
		Nodes:        3,
		PodsPerNode:  2,
		Backend:      backend,
		StateRoot:    root,
		Kube:         true,
		ReadyTimeout: 90 * time.Second,
	})
	requireMatrix(t, l, "kube mode: 3 nodes × 2 pods")

	for _, n := range l.Nodes {
		var node struct {
			Spec   struct{ PodCIDR string }
			Status struct {
				Conditions []struct{ Type, Status string }
			}
		}
		if err := l.KubeNode(t.Context(), n.Name, &node); err != nil {
			t.Fatal(err)
		}
		if node.Spec.PodCIDR != n.Subnet.String() {
			t.Errorf("node %s holds %s, its Node's podCIDR is %s", n.Name, n.Subnet, node.Spec.PodCIDR)
		}
		ok := Poll(t.Context(), 30*time.Second, 200*time.Millisecond, func() bool {
			if err := l.KubeNode(t.Context(), n.Name, &node); err != nil {
				return false
			}
			for _, c := range node.Status.Conditions {
				if c.Type == "NetworkUnavailable" {
					return c.Status == "False"
				}
			}
			return false
		})
		if !ok {
			t.Errorf("node %s: NetworkUnavailable not cleared: %+v", n.Name, node.Status.Conditions)
		}
	}

	// weftd restart: the same subnet (the Node's podCIDR).
	n2 := l.Node("n2")
	old := n2.Subnet
	sn, err := l.RestartWeftd(t.Context(), "n2", true)
	if err != nil {
		t.Fatal(err)
	}
	if sn != old {
		t.Fatalf("n2 restarted with %s, had %s", sn, old)
	}
	requireMatrix(t, l, "after weftd on n2 restarted")

	// Node n3 deleted: every other node drops its peer state.
	n3 := l.Node("n3")
	gone := n3.Subnet
	if err := l.DeleteKubeNode(t.Context(), "n3"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"n1", "n2"} {
		ok := Poll(t.Context(), 30*time.Second, 200*time.Millisecond, func() bool {
			out, err := l.Run(t.Context(), n, "ip", "route", "show", gone.String())
			return err == nil && strings.TrimSpace(out) == ""
		})
		if !ok {
			out, _ := l.Run(t.Context(), n, "ip", "route")
			t.Fatalf("node %s still routes %s after Node n3 was deleted:\n%s", n, gone, out)
		}
	}
}
