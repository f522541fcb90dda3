package interop

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/lab"
	"github.com/weftnet/weft/subnet/kube/kubetest"
)

// kubeAnnotationPrefix is Flannel's default annotation prefix, weft's too.
const kubeAnnotationPrefix = "flannel.alpha.coreos.com/"

// TestMixedKube runs, per backend and in parallel, a Kubernetes-mode
// cluster (one kube-apiserver, podCIDRs from kube-controller-manager) of
// two weft nodes (weftd --kube-subnet-mgr) and one real flanneld
// --kube-subnet-mgr, both with the default annotation prefix and weftd's
// ServiceAccount: the full matrix both ways (pods, pod → node, node → pod);
// every Node carries the same annotation keys, whoever wrote them, and has
// NetworkUnavailable cleared; a Flannel node and a weft node join and are
// reached; a node removed (its Node deleted) on either side is dropped by
// the other.
func TestMixedKube(t *testing.T) {
	bins(t)
	kubetest.RequireBinaries(t)
	runMixedCases(t, mixedCases, testMixedKube)
}

// TestMixedKubeDualStack is TestMixedKube's scenario dual stack on the
// backends that carry IPv6: kube-controller-manager with an IPv4 and an
// IPv6 --cluster-cidr, each Node two podCIDRs; flanneld (--public-ipv6,
// EnableIPv6 in its net-conf) and weftd publish public-ipv6 and
// backend-v6-data; the matrix passes in both families, a removed node's
// routes of both families go.
func TestMixedKubeDualStack(t *testing.T) {
	bins(t)
	kubetest.RequireBinaries(t)
	runMixedCases(t, mixedDualStackCases, testMixedKube)
}

func testMixedKube(t *testing.T, tc mixedCase) {
	o := tc.options("mk")
	o.Kube, o.ReadyTimeout = true, 90*time.Second
	l := up(t, o)
	requireMatrix(t, l, "kube mode: n1 and n3 weft, n2 Flannel")
	requireKubeAnnotations(t, l, tc.backend)

	requireJoinBothSides(t, l, "kube mode: ")
	requireKubeAnnotations(t, l, tc.backend)

	// A node of each kind removed (kubectl delete node): the other side
	// drops it.
	for _, gone := range []string{"n2", "n3"} {
		g := l.Node(gone)
		subnets, kind := []netip.Prefix{g.Subnet}, g.DaemonName()
		if g.IPv6Subnet.IsValid() {
			subnets = append(subnets, g.IPv6Subnet)
		}
		if err := l.RemoveNode(t.Context(), gone); err != nil {
			t.Fatal(err)
		}
		for _, n := range l.Nodes {
			for _, sn := range subnets {
				ok := lab.Poll(t.Context(), 30*time.Second, 200*time.Millisecond, func() bool { return routeTo(t, l, n.Name, sn) == "" })
				if !ok {
					t.Fatalf("%s node %s still routes %s (%s node %s, whose Node was deleted): %s", n.DaemonName(), n.Name, sn, kind, gone, routeTo(t, l, n.Name, sn))
				}
			}
		}
	}
	requireMatrix(t, l, "kube mode: after a Flannel and a weft node left")
}

// requireKubeAnnotations checks every node's Node object: its podCIDRs are
// the subnets its daemon holds, NetworkUnavailable is False, and its
// annotations under Flannel's prefix have the same keys whether weftd or
// flanneld wrote them, with the backend type of the config (flanneld
// writes it empty for udp) and the node's addresses (public-ipv6 too when
// dual stack).
func requireKubeAnnotations(t *testing.T, l *lab.Lab, backend string) {
	t.Helper()
	keys := map[string][]string{} // daemon → the keys of its first node
	for _, n := range l.Nodes {
		var node struct {
			Metadata struct{ Annotations map[string]string }
			Spec     struct {
				PodCIDR  string
				PodCIDRs []string
			}
			Status struct {
				Conditions []struct{ Type, Status string }
			}
		}
		unavailable := ""
		ok := lab.Poll(t.Context(), 30*time.Second, 200*time.Millisecond, func() bool {
			if err := l.KubeNode(t.Context(), n.Name, &node); err != nil {
				return false
			}
			for _, c := range node.Status.Conditions {
				if c.Type == "NetworkUnavailable" {
					unavailable = c.Status
				}
			}
			return unavailable == "False"
		})
		if !ok {
			t.Errorf("%s node %s: NetworkUnavailable is %q, want False", n.DaemonName(), n.Name, unavailable)
		}
		want := []string{n.Subnet.String()}
		if l.IPv6 {
			want = append(want, n.IPv6Subnet.String())
		}
		if node.Spec.PodCIDR != n.Subnet.String() || !slices.Equal(node.Spec.PodCIDRs, want) {
			t.Errorf("%s node %s holds %v, its Node's podCIDR is %s, podCIDRs %v", n.DaemonName(), n.Name, want, node.Spec.PodCIDR, node.Spec.PodCIDRs)
		}
		ann := map[string]string{}
		for k, v := range node.Metadata.Annotations {
			if strings.HasPrefix(k, kubeAnnotationPrefix) {
				ann[strings.TrimPrefix(k, kubeAnnotationPrefix)] = v
			}
		}
		wantType := backend
		if backend == "udp" && n.DaemonName() == "flanneld" {
			wantType = "" // Flannel's udp backend names no type; weft reads "" as udp
		}
		if got := ann["backend-type"]; got != wantType {
			t.Errorf("%s node %s: backend-type %q, want %q", n.DaemonName(), n.Name, got, wantType)
		}
		if ann["public-ip"] != n.Underlay.String() || ann["kube-subnet-manager"] != "true" {
			t.Errorf("%s node %s: public-ip %q (want %s), kube-subnet-manager %q", n.DaemonName(), n.Name, ann["public-ip"], n.Underlay, ann["kube-subnet-manager"])
		}
		if l.IPv6 && ann["public-ipv6"] != n.UnderlayV6.String() {
			t.Errorf("%s node %s: public-ipv6 %q, want %s", n.DaemonName(), n.Name, ann["public-ipv6"], n.UnderlayV6)
		}
		k := slices.Sorted(maps.Keys(ann))
		if _, seen := keys[n.DaemonName()]; !seen {
			keys[n.DaemonName()] = k
			t.Logf("%s node %s annotations: %v", n.DaemonName(), n.Name, ann)
		}
	}
	if w, f := keys["weftd"], keys["flanneld"]; !slices.Equal(w, f) {
		t.Errorf("annotation keys differ: weftd writes %v, flanneld %v", w, f)
	}
}
