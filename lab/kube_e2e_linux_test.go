package lab

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/subnet/kube/kubetest"
)

// TestKubeE2E runs, for each backend in parallel (wireguard too), a 3-node lab in
// Kubernetes mode (the Nodes' podCIDRs from kube-controller-manager, weftd
// with --kube-subnet-mgr and the manifest's RBAC): full connectivity, the
// NetworkUnavailable condition cleared, weftd restart → same subnet, a
// Node deleted → its peer state removed on every other node. The backends
// that carry IPv6 run it dual stack too (kube-controller-manager with an
// IPv4 and an IPv6 --cluster-cidr: the matrix in both families; udp
// carries the IPv6 pods in its IPv4 datagrams) and IPv6-only (host-gw; udp,
// over the IPv6 underlay).
func TestKubeE2E(t *testing.T) {
	e2eBins(t)
	kubetest.RequireBinaries(t)
	root := t.TempDir()
	for _, tc := range []struct {
		name string
		o    Options // Backend, IPMasq (as in TestE2E), the families
	}{
		{"vxlan", Options{Backend: "vxlan"}},
		{"host-gw", Options{Backend: "host-gw", IPMasq: true}},
		{"udp", Options{Backend: "udp", IPMasq: true}},
		{"wireguard", Options{Backend: "wireguard", IPMasq: true}},
		{"vxlan/dual", Options{Backend: "vxlan", IPv6: true}},
		{"host-gw/dual", Options{Backend: "host-gw", IPMasq: true, IPv6: true}},
		{"host-gw/ipv6only", Options{Backend: "host-gw", IPMasq: true, IPv6Only: true}},
		// udp: IPv6 pods in its IPv4 datagrams, unmasqueraded as in
		// TestE2EIPv6/udp/dual.
		{"udp/dual", Options{Backend: "udp", IPv6: true}},
		{"udp/ipv6only", Options{Backend: "udp", IPMasq: true, IPv6Only: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testKubeBackend(t, root, tc.o)
		})
	}
}

// kubeNode is what testKubeBackend reads of a Node object.
type kubeNode struct {
	Metadata struct{ Annotations map[string]string }
	Spec     struct {
		PodCIDR  string
		PodCIDRs []string
	}
	Status struct {
		Conditions []struct{ Type, Status string }
	}
}

func testKubeBackend(t *testing.T, root string, o Options) {
	fam := ""
	switch {
	case o.IPv6Only:
		fam = "6-"
	case o.IPv6:
		fam = "46-"
	}
	o.Name = testLabName("k8s" + fam + strings.ReplaceAll(o.Backend, "-", "") + "-")
	o.Nodes, o.PodsPerNode, o.StateRoot, o.Kube, o.ReadyTimeout = 3, 2, root, true, 90*time.Second
	l := upForTest(t, o)
	requireMatrix(t, l, "kube mode: 3 nodes × 2 pods, "+l.Families())

	for _, n := range l.Nodes {
		var node kubeNode
		if err := l.KubeNode(t.Context(), n.Name, &node); err != nil {
			t.Fatal(err)
		}
		// The node holds the podCIDRs the controller manager assigned,
		// IPv4 first in a dual-stack cluster, and publishes an address of
		// each family under Flannel's names.
		var want []string
		if l.hasIPv4() {
			want = append(want, n.Subnet.String())
		}
		if l.hasIPv6() {
			want = append(want, n.IPv6Subnet.String())
		}
		if !slices.Equal(node.Spec.PodCIDRs, want) || node.Spec.PodCIDR != want[0] {
			t.Errorf("node %s holds %v, its Node's podCIDR is %s, podCIDRs %v", n.Name, want, node.Spec.PodCIDR, node.Spec.PodCIDRs)
		}
		const p = "flannel.alpha.coreos.com/"
		ann := node.Metadata.Annotations
		if l.hasIPv4() && ann[p+"public-ip"] != n.Underlay.String() {
			t.Errorf("node %s: public-ip %q, want %s", n.Name, ann[p+"public-ip"], n.Underlay)
		}
		if l.hasIPv6() && (ann[p+"public-ipv6"] != n.UnderlayV6.String() || ann[p+"backend-v6-data"] == "") {
			t.Errorf("node %s: public-ipv6 %q (want %s), backend-v6-data %q", n.Name, ann[p+"public-ipv6"], n.UnderlayV6, ann[p+"backend-v6-data"])
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

	// weftd restart: the same subnets (the Node's podCIDRs).
	n2 := l.Node("n2")
	old, old6 := n2.Subnet, n2.IPv6Subnet
	sn, err := l.RestartWeftd(t.Context(), "n2", true)
	if err != nil {
		t.Fatal(err)
	}
	if sn != old || n2.IPv6Subnet != old6 {
		t.Fatalf("n2 restarted with %s %s, had %s %s", sn, n2.IPv6Subnet, old, old6)
	}
	requireMatrix(t, l, "after weftd on n2 restarted")

	// Node n3 deleted: every other node drops its peer state, each family's.
	n3 := l.Node("n3")
	var gone []netip.Prefix
	if l.hasIPv4() {
		gone = append(gone, n3.Subnet)
	}
	if l.hasIPv6() {
		gone = append(gone, n3.IPv6Subnet)
	}
	if err := l.DeleteKubeNode(t.Context(), "n3"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"n1", "n2"} {
		for _, sn := range gone {
			fam := "-4"
			if sn.Addr().Is6() {
				fam = "-6"
			}
			ok := Poll(t.Context(), 30*time.Second, 200*time.Millisecond, func() bool {
				out, err := l.Run(t.Context(), n, "ip", fam, "route", "show", "exact", sn.String())
				return err == nil && strings.TrimSpace(out) == ""
			})
			if !ok {
				out, _ := l.Run(t.Context(), n, "ip", fam, "route")
				t.Fatalf("node %s still routes %s after Node n3 was deleted:\n%s", n, sn, out)
			}
		}
	}
}
