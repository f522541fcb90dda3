package reliability

import (
	"net/http"
	"testing"
	"time"

	"github.com/weftnet/weft/lab"
)

// TestEtcdDown stops etcd (SIGKILL) for -etcd-down (60s) on each backend
// while a pod pings a pod on another node, and starts a new node during the
// outage. Measured: ping loss (zero expected: the data plane does not need
// etcd), the warnings weftd logs during the outage (a few, not one per
// second), /readyz during the outage (still ready: the node serves), and the
// time the node that started during the outage takes to become reachable
// once etcd is back. The dual-stack rows ping, and reach the new node, in
// both families.
func TestEtcdDown(t *testing.T) {
	bins(t)
	down := *etcdDownFlag
	scenarios := append(ipv4Scenarios(allBackends...), dualStackScenarios(allBackends...)...)
	parallelScenarios(t, scenarios, func(t *testing.T, s scenario) {
		l := up(t, s.lab(lab.Options{Name: labName("ed"), Nodes: 2, PodsPerNode: 1}))
		src, dst := l.Node("n1").Pods[0], l.Node("n2").Pods[0]
		const interval = 50 * time.Millisecond
		p := startPings(t, l, src.Name, s.addrs(dst), interval, down+10*time.Second)
		off1 := logSize(t, l, "n1")
		if err := l.StopEtcd(t.Context(), true); err != nil {
			t.Fatal(err)
		}
		stopped := time.Now()
		n3, err := l.StartNode(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		// /readyz of a running node while etcd is away: it still serves.
		notReady, probes := 0, 0
		lab.Poll(t.Context(), down-time.Since(stopped), 2*time.Second, func() bool {
			probes++
			code, body, err := get(t, l, "n1", "/readyz")
			if err != nil {
				// A request lost to the machine's load is not an answer:
				// ask once more before counting it.
				code, body, err = get(t, l, "n1", "/readyz")
			}
			if err != nil || code != http.StatusOK {
				notReady++
				t.Logf("n1 /readyz during the outage: %d %q %v", code, body, err)
			}
			return false // probe until the outage ends
		})
		if err := l.StartEtcd(t.Context()); err != nil {
			t.Fatal(err)
		}
		back := time.Now()
		if err := l.WaitNode(t.Context(), n3.Name); err != nil {
			t.Fatalf("node started during the outage: %v", err)
		}
		joined := time.Since(back)
		var reach time.Duration
		for i, a := range s.addrs(n3.Pods[0]) {
			reach = max(reach, requireReach(t, l, src.Name, a, 30*time.Second))
			requireReach(t, l, n3.Pods[0].Name, s.addrs(src)[i], 30*time.Second)
		}
		st := p.Wait(t)
		n3warns := grepLines(logSince(t, l, n3.Name, 0), "level=WARN")
		for _, w := range n3warns {
			t.Logf("%s (started during the outage): %s", n3.Name, w)
		}
		lines := logSince(t, l, "n1", off1)
		warns := append(grepLines(lines, "level=WARN"), grepLines(lines, "level=ERROR")...)
		for _, w := range warns {
			t.Logf("n1 during the outage: %s", w)
		}
		record(t, "etcd down %v (SIGKILL), backend %s: ping n1→n2 %v; n1 /readyz not-ready in %d of %d probes; n1 logged %d warnings/errors; the node started during the outage logged %d warnings, was ready %v and reachable %v after etcd returned",
			down, s, st, notReady, probes, len(warns), len(n3warns), joined.Round(100*time.Millisecond), (joined + reach).Round(100*time.Millisecond))
		if st.Lost() != 0 {
			t.Errorf("lost %d pings while etcd was down (want 0): %s", st.Lost(), st.Output())
		}
		if said := len(grepLines(lines, "cannot read the network config from etcd")); said != 1 {
			t.Errorf("n1 logged the etcd outage %d times, want once", said)
		}
		if max := int(down/(10*time.Second)) + 4; len(warns) > max {
			t.Errorf("n1 logged %d warnings in a %v outage, want at most %d (once per outage, not per retry)", len(warns), down, max)
		}
		if len(n3warns) == 0 || len(n3warns) > int(down/(10*time.Second))+4 {
			t.Errorf("the node started during the outage logged %d warnings; want the outage said once, not per retry", len(n3warns))
		}
		if notReady != 0 {
			t.Errorf("n1 reported not ready in %d of %d probes while etcd was down but the node kept serving", notReady, probes)
		}
		if !l.WeftdAlive("n1") || !l.WeftdAlive("n2") {
			t.Error("a weftd exited during the outage")
		}
	})
}
