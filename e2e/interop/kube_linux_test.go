package interop

import (
	"maps"
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
	runMixedCases(t, testMixedKube)
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
		sn, kind := g.Subnet, g.DaemonName()
		if err := l.RemoveNode(t.Context(), gone); err != nil {
			t.Fatal(err)
		}
		for _, n := range l.Nodes {
			ok := lab.Poll(t.Context(), 30*time.Second, 200*time.Millisecond, func() bool { return routeTo(t, l, n.Name, sn) == "" })
			if !ok {
				t.Fatalf("%s node %s still routes %s (%s node %s, whose Node was deleted): %s", n.DaemonName(), n.Name, sn, kind, gone, routeTo(t, l, n.Name, sn))
			}
		}
	}
	requireMatrix(t, l, "kube mode: after a Flannel and a weft node left")
}

// requireKubeAnnotations checks every node's Node object: its podCIDR is
// the subnet its daemon holds, NetworkUnavailable is False, and its
// annotations under Flannel's prefix have the same keys whether weftd or
// flanneld wrote them, with the backend type of the config (flanneld
// writes it empty for udp).
func requireKubeAnnotations(t *testing.T, l *lab.Lab, backend string) {
	t.Helper()
	keys := map[string][]string{} // daemon → the keys of its first node
	for _, n := range l.Nodes {
		var node struct {
			Metadata struct{ Annotations map[string]string }
			Spec     struct{ PodCIDR string }
			Status   struct {
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
		if node.Spec.PodCIDR != n.Subnet.String() {
			t.Errorf("%s node %s holds %s, its Node's podCIDR is %s", n.DaemonName(), n.Name, n.Subnet, node.Spec.PodCIDR)
		}
		ann := map[string]string{}
		for k, v := range node.Metadata.Annotations {
			if strings.HasPrefix(k, kubeAnnotationPrefix) {
				ann[strings.TrimPrefix(k, kubeAnnotationPrefix)] = v
			}
		}
		want := backend
		if backend == "udp" && n.DaemonName() == "flanneld" {
			want = "" // Flannel's udp backend names no type; weft reads "" as udp
		}
		if got := ann["backend-type"]; got != want {
			t.Errorf("%s node %s: backend-type %q, want %q", n.DaemonName(), n.Name, got, want)
		}
		if ann["public-ip"] != n.Underlay.String() || ann["kube-subnet-manager"] != "true" {
			t.Errorf("%s node %s: public-ip %q (want %s), kube-subnet-manager %q", n.DaemonName(), n.Name, ann["public-ip"], n.Underlay, ann["kube-subnet-manager"])
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
