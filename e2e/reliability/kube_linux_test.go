package reliability

import (
	"encoding/json"
	"maps"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/lab"
	"github.com/weftnet/weft/subnet/kube/kubetest"
)

// kubeBackends are the backends the Kubernetes-mode faults run on: all.
var kubeBackends = allBackends

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
		// The recovery is logged when the first request succeeds (a config
		// read's probe, or the informer's after its backoff).
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

		// The recovery is logged by the first request answered (a config
		// read's probe may come first), but n1's informer may still be in
		// its backoff before it lists again — client-go's reflector backs
		// off up to 30 s with jitter 1.0, so up to 60 s: a Node created
		// now shows when n1's watch is live again.
		marker := fakeKubeNode(t, l, backend)
		if !lab.Poll(t.Context(), 90*time.Second, 100*time.Millisecond, func() bool { _, ok := statusPeers(t, l, "n1")[marker]; return ok }) {
			t.Fatalf("n1's watch did not come back within 90 s of the recovery: a new Node %s is not programmed", marker)
		}
		if err := l.DeleteKubeNode(t.Context(), fakeNodeName); err != nil {
			t.Fatal(err)
		}
		if !lab.Poll(t.Context(), 30*time.Second, 100*time.Millisecond, func() bool { _, ok := statusPeers(t, l, "n1")[marker]; return !ok }) {
			t.Fatalf("n1 kept the deleted Node's peer %s", marker)
		}

		// Corrupt n2's annotations: n1 refuses them with the reason, once;
		// n3 stays reachable throughout; n2's weftd sees its lease gone and
		// publishes it again.
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

// TestKubeRestartDuringOutage is TestRestartDuringOutage in Kubernetes
// mode (issue 20 item 5), on each kube backend in a 3-node lab:
//
//  1. With the API server up: n1's weftd SIGKILLed, its data plane deleted
//     (coldRestart), started again. Measured: start → first reply from each
//     other node's pod.
//  2. A Node that no weftd runs for (podCIDR set, Flannel's annotations) is
//     created; once n1's last known state lists it, n1's weftd is SIGKILLed,
//     the Node deleted (the other nodes drop it), kube-apiserver SIGKILLed,
//     n1's data plane deleted, weftd started. Its pods must reach the other
//     nodes' within a second, from the last known state; /readyz says
//     "degraded" and weft_control_plane_connected 0; a pod added during the
//     outage reaches and is reached by the other nodes.
//  3. kube-apiserver started again. Measured: start → n1 "ready";
//     then every node programs exactly the API's Nodes (the deleted one gone
//     everywhere, also from n1's file), n1 kept its podCIDR, no reconcile
//     error, no error logged, every pod reaches every pod.
func TestKubeRestartDuringOutage(t *testing.T) {
	bins(t)
	kubetest.RequireBinaries(t)
	parallelEach(t, kubeBackends, func(t *testing.T, backend string) {
		l := up(t, lab.Options{
			Name: labName("kof" + strings.ReplaceAll(backend, "-", "")), Nodes: 3, PodsPerNode: 1,
			Backend: backend, Kube: true, ReadyTimeout: 90 * time.Second,
		})
		n1 := l.Node("n1")
		sn1 := n1.Subnet
		src := n1.Pods[0]
		dsts := []*lab.Pod{l.Node("n2").Pods[0], l.Node("n3").Pods[0]}
		requireMatrix(t, l, "before")

		withCP := coldRestart(t, l, backend, src, dsts)
		waitStatus(t, l, "n1", "ready", 30*time.Second)

		p := fakeKubeNode(t, l, backend)
		if !lab.Poll(t.Context(), 30*time.Second, 100*time.Millisecond, func() bool { return savedPeers(t, n1)[p] }) {
			t.Fatalf("n1's last known state never listed the peer %s", p)
		}
		if err := l.StopWeftd(t.Context(), "n1", true); err != nil {
			t.Fatal(err)
		}
		if err := l.DeleteKubeNode(t.Context(), fakeNodeName); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"n2", "n3"} {
			if !lab.Poll(t.Context(), 30*time.Second, 100*time.Millisecond, func() bool { _, ok := statusPeers(t, l, n)[p]; return !ok }) {
				t.Fatalf("%s kept the deleted Node's peer %s", n, p)
			}
		}
		if err := l.StopKubeAPIServer(t.Context(), true); err != nil {
			t.Fatal(err)
		}
		off := logSize(t, l, "n1")
		withoutCP := coldRestart(t, l, backend, src, dsts)
		if withoutCP > restoreBudget {
			t.Errorf("without the API server, n1's pods reached the other nodes %v after weftd started, want within %v", withoutCP, restoreBudget)
		}
		code, body, err := get(t, l, "n1", "/readyz")
		if err != nil || code != http.StatusOK || !strings.Contains(body, `"status": "degraded"`) || !strings.Contains(body, `"controlPlaneConnected": false`) {
			t.Errorf("n1 /readyz during the outage: %d %s %v; want 200 degraded", code, body, err)
		}
		if v := metric(t, l, "n1", "weft_control_plane_connected"); v != 0 {
			t.Errorf("weft_control_plane_connected %v during the outage, want 0", v)
		}
		if _, ok := statusPeers(t, l, "n1")[p]; !ok {
			t.Errorf("n1 did not restore every peer of its last known state (%s missing)", p)
		}
		if sn, err := n1.ReadSubnet(); err != nil || sn != sn1 {
			t.Errorf("subnet file after the restore: %v %v, want %s", sn, err, sn1)
		}
		added, err := l.AddPods(t.Context(), "n1", 1)
		if err != nil {
			t.Fatalf("a pod added during the outage: %v", err)
		}
		for _, d := range dsts {
			requireReach(t, l, added[0].Name, d.IP, 10*time.Second)
			requireReach(t, l, d.Name, added[0].IP, 10*time.Second)
		}

		back := time.Now()
		if err := l.StartKubeAPIServer(t.Context()); err != nil {
			t.Fatal(err)
		}
		apiReady := time.Since(back)
		// The informer lists again after its backoff (client-go's reflector:
		// up to 30 s, with jitter 1.0 up to 60 s).
		waitStatus(t, l, "n1", "ready", 90*time.Second)
		rejoined := time.Since(back)
		if !lab.Poll(t.Context(), 30*time.Second, 200*time.Millisecond, func() bool { return !savedPeers(t, n1)[p] }) {
			t.Errorf("the deleted Node's peer %s stays in n1's last known state", p)
		}
		for _, n := range l.Nodes {
			want := kubePeers(t, l, n.Subnet)
			var got map[netip.Prefix]netip.Addr
			if !lab.Poll(t.Context(), 30*time.Second, 200*time.Millisecond, func() bool { got = statusPeers(t, l, n.Name); return maps.Equal(got, want) }) {
				t.Errorf("%s programs %v, the API's Nodes are %v", n.Name, got, want)
			}
		}
		if sn, err := n1.ReadSubnet(); err != nil || sn != sn1 {
			t.Errorf("n1's subnet after the outage: %v %v, want its podCIDR %s kept", sn, err, sn1)
		}
		reconcileErrors := metric(t, l, "n1", `weft_reconcile_errors_total{kind="full"}`) + metric(t, l, "n1", `weft_reconcile_errors_total{kind="incremental"}`)
		errorLines := grepLines(logSince(t, l, "n1", off), "level=ERROR")
		if reconcileErrors != 0 || len(errorLines) != 0 {
			t.Errorf("n1 across the outage: %v reconcile errors, error lines %v; want none", reconcileErrors, errorLines)
		}
		requireMatrix(t, l, "after the outage")
		record(t, "Kubernetes mode, weftd SIGKILLed, device/routes/firewall/subnet file deleted, started again, backend %s: first pod reply from the other nodes %v after start with kube-apiserver up, %v with it SIGKILLed (restored from the last known state); a pod added during the outage reached both nodes; n1 ready (not degraded) %v after kube-apiserver was started again (it was ready after %v); the Node deleted during the outage gone on every node and from n1's file; %v reconcile errors",
			backend, withCP.Round(time.Millisecond), withoutCP.Round(time.Millisecond), rejoined.Round(10*time.Millisecond), apiReady.Round(10*time.Millisecond), reconcileErrors)
	})
}

// fakeNodeName is the Node fakeKubeNode creates.
const fakeNodeName = "fake-peer"

// fakeKubeNode creates a Node no weftd runs for, with a free podCIDR and
// Flannel's annotations for backend (an unused underlay address), as a
// node that went away would have left it; it returns its podCIDR.
func fakeKubeNode(t *testing.T, l *lab.Lab, backend string) netip.Prefix {
	t.Helper()
	sn := freeSubnets(l, 1)[0]
	a := l.Underlay.Masked().Addr().As4()
	a[3] = 9 // between etcd's members and the nodes: nobody's
	const prefix = "flannel.alpha.coreos.com/"
	ann := map[string]string{
		prefix + "kube-subnet-manager": "true",
		prefix + "backend-type":        backend,
		prefix + "backend-data":        fakeBackendData(backend),
		prefix + "public-ip":           netip.AddrFrom4(a).String(),
	}
	obj, err := json.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "Node",
		"metadata": map[string]any{"name": fakeNodeName, "annotations": ann},
		"spec":     map[string]any{"podCIDR": sn.String(), "podCIDRs": []string{sn.String()}},
	})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := l.KubeAdmin()
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.Create(t.Context(), "/api/v1/nodes", obj); err != nil {
		t.Fatal(err)
	}
	return sn
}

// kubePeers is every Node's lease in the API (podCIDR → public-ip) but
// own's.
func kubePeers(t *testing.T, l *lab.Lab, own netip.Prefix) map[netip.Prefix]netip.Addr {
	t.Helper()
	admin, err := l.KubeAdmin()
	if err != nil {
		t.Fatal(err)
	}
	code, body, err := admin.Do(t.Context(), http.MethodGet, "/api/v1/nodes", nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("list Nodes: %d %v %.200s", code, err, body)
	}
	var list struct {
		Items []struct {
			Metadata struct{ Annotations map[string]string }
			Spec     struct{ PodCIDR string }
		}
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	out := map[netip.Prefix]netip.Addr{}
	for _, n := range list.Items {
		sn, err1 := netip.ParsePrefix(n.Spec.PodCIDR)
		ip, err2 := netip.ParseAddr(n.Metadata.Annotations["flannel.alpha.coreos.com/public-ip"])
		if err1 != nil || err2 != nil || sn == own {
			continue
		}
		out[sn] = ip
	}
	return out
}
