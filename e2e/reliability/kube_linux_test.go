package reliability

import (
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/lab"
	"github.com/weftnet/weft/subnet/kube/kubetest"
)

// kubeBackends are the backends the Kubernetes-mode faults run on.
var kubeBackends = []string{"vxlan", "host-gw", "udp"}

// TestKubeAPIServerDown: in Kubernetes mode, kube-apiserver killed for 60 s
// loses no ping between nodes (the data plane needs no API), each weftd
// says the outage once and the recovery once, and a Node whose
// annotations are then corrupted is refused with a reason while the other
// nodes stay reachable (its own weftd writes them back).
func TestKubeAPIServerDown(t *testing.T) {
	bins(t)
	kubetest.RequireBinaries(t)
	parallelEach(t, kubeBackends, func(t *testing.T, backend string) {
		l := up(t, lab.Options{
			Name: labName("kdown-" + strings.ReplaceAll(backend, "-", "")), Nodes: 3, PodsPerNode: 1,
			Backend: backend, IPMasq: true, Kube: true, ReadyTimeout: 90 * time.Second,
		})
		requireMatrix(t, l, "kube mode up")
		src, dst, other := l.Node("n1").Pods[0], l.Node("n2").Pods[0], l.Node("n3").Pods[0]
		off1 := logSize(t, l, "n1")

		const down = 60 * time.Second
		p := startPing(t, l, src.Name, dst.IP, 100*time.Millisecond, down+15*time.Second)
		hold(t, 2*time.Second) // the outage starts inside the ping run
		if err := l.StopKubeAPIServer(t.Context(), true); err != nil {
			t.Fatal(err)
		}
		hold(t, down)
		if err := l.StartKubeAPIServer(t.Context()); err != nil {
			t.Fatal(err)
		}
		st := p.Wait(t)
		// The recovery is logged when the informer's next request succeeds
		// (its backoff is at most about 30 s).
		var lines []string
		ok := lab.Poll(t.Context(), 45*time.Second, 500*time.Millisecond, func() bool {
			lines = logSince(t, l, "n1", off1)
			return len(grepLines(lines, "the API server answers again")) > 0
		})
		record(t, "kube-apiserver down %v (SIGKILL), backend %s: ping n1→n2 %v", down, backend, st)
		if st.Lost() != 0 {
			t.Errorf("lost %d pings while the API server was down (want 0): %s", st.Lost(), st.Out)
		}
		if n := len(grepLines(lines, "the API server does not answer")); n != 1 {
			t.Errorf("n1 logged the outage %d times, want once:\n%s", n, strings.Join(lines, "\n"))
		}
		if n := len(grepLines(lines, "the API server answers again")); !ok || n != 1 {
			t.Errorf("n1 logged the recovery %d times, want once:\n%s", n, strings.Join(lines, "\n"))
		}
		if !l.WeftdAlive("n1") || !l.WeftdAlive("n2") || !l.WeftdAlive("n3") {
			t.Fatal("a weftd exited during the outage")
		}

		// Corrupt n2's annotations: n1 refuses them with the reason, once;
		// n3 stays reachable throughout; n2's weftd sees its lease gone and
		// publishes it again. (Right after the outage an informer may still
		// be in its backoff before it lists again: up to about 30 s.)
		off1 = logSize(t, l, "n1")
		p3 := startPing(t, l, src.Name, other.IP, 100*time.Millisecond, 40*time.Second)
		if err := l.PatchKubeNode(t.Context(), "n2", true, `{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ip":"not-an-ip"}}}`); err != nil {
			t.Fatal(err)
		}
		refusal := []string{"refusing the lease of a node with corrupt annotations", "node=n2", "not-an-ip", "is not an IPv4 address"}
		lab.Poll(t.Context(), 60*time.Second, 500*time.Millisecond, func() bool {
			lines = logSince(t, l, "n1", off1)
			return len(grepLines(lines, refusal...)) > 0
		})
		healed := lab.Poll(t.Context(), 60*time.Second, 500*time.Millisecond, func() bool {
			var node struct {
				Metadata struct{ Annotations map[string]string }
			}
			return l.KubeNode(t.Context(), "n2", &node) == nil &&
				node.Metadata.Annotations["flannel.alpha.coreos.com/public-ip"] == l.Node("n2").Underlay.String()
		})
		requireReach(t, l, src.Name, dst.IP, 60*time.Second)
		if st := p3.Wait(t); st.Lost() != 0 {
			t.Errorf("n1→n3 lost %d pings while n2's annotations were corrupt (want 0): %s", st.Lost(), st.Out)
		}
		lines = logSince(t, l, "n1", off1)
		if n := len(grepLines(lines, refusal...)); n != 1 {
			t.Errorf("n1 logged the refusal of n2 %d times, want once with the reason:\n%s", n, strings.Join(lines, "\n"))
		}
		if !healed {
			t.Errorf("n2's weftd did not write its corrupted public-ip annotation back within 60 s")
		}
	})
}

// hold lets d pass (or the test end): the length of a fault is the
// scenario itself, not a state to wait for.
func hold(t *testing.T, d time.Duration) {
	select {
	case <-time.After(d):
	case <-t.Context().Done():
	}
}
