package lab

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/nstest"
)

// e2eBinDir holds the binaries TestMain built, or is empty when not root.
var e2eBinDir, e2eBuildErr = "", error(nil)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	flag.Parse()
	if os.Geteuid() == 0 && !testing.Short() {
		dir, err := os.MkdirTemp("", "weft-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		e2eBinDir, e2eBuildErr = dir, BuildBinaries(context.Background(), dir)
	}
	return m.Run()
}

// e2eBins returns the built binaries or ends the test: skipped when not
// root or under -short (failed in CI: nstest.CannotRun), failed when they
// did not build.
func e2eBins(t testing.TB) string {
	t.Helper()
	nstest.RequireRoot(t)
	if e2eBinDir == "" {
		nstest.CannotRun(t, "e2e: skipped under -short")
	}
	if e2eBuildErr != nil {
		t.Fatalf("e2e binaries: %v", e2eBuildErr)
	}
	return e2eBinDir
}

// testWriter sends progress lines to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// upForTest brings a lab up and always tears it down. Any failure to come
// up fails the test, also a backend weftd does not know (weftd's own words
// are in the error): an e2e test never skips a backend.
func upForTest(t testing.TB, o Options) *Lab {
	t.Helper()
	if o.BinDir == "" {
		o.BinDir = e2eBins(t)
	}
	o.Progress = testWriter{t}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 45 * time.Second
	}
	var l *Lab
	t.Cleanup(func() {
		if l != nil {
			if err := l.DataRaces(); err != nil {
				t.Errorf("a lab process reported a data race: %v", err)
			}
		}
		if err := Down(context.Background(), o.StateRoot, o.Name); err != nil {
			t.Errorf("down: %v", err)
		}
	})
	l, err := Up(t.Context(), o)
	if err != nil {
		t.Fatalf("lab up (backend %s): %v", o.Backend, err)
	}
	var b bytes.Buffer
	_ = l.Status(t.Context()).WriteSummary(&b)
	t.Logf("lab %s up:\n%s", l.Name, b.String())
	return l
}

// ending records how a helper ended a test, without ending the test: its
// Fatal and Skip end only the goroutine the helper runs on (see endedBy).
// Everything else (Cleanup, Log, Errorf) is the real test's.
type ending struct {
	testing.TB
	how, msg string
}

func (e *ending) end(how, msg string) { e.how, e.msg = how, msg; runtime.Goexit() }

func (e *ending) Fatal(a ...any)            { e.end("fail", fmt.Sprint(a...)) }
func (e *ending) Fatalf(f string, a ...any) { e.end("fail", fmt.Sprintf(f, a...)) }
func (e *ending) FailNow()                  { e.end("fail", "") }
func (e *ending) Skip(a ...any)             { e.end("skip", fmt.Sprint(a...)) }
func (e *ending) Skipf(f string, a ...any)  { e.end("skip", fmt.Sprintf(f, a...)) }
func (e *ending) SkipNow()                  { e.end("skip", "") }

// endedBy runs f as a test helper and reports how it ended the test:
// "fail", "skip", or "" when it returned.
func endedBy(t *testing.T, f func(testing.TB)) *ending {
	e := &ending{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(e)
	}()
	<-done
	return e
}

// TestUpForTestFailsUnknownBackend: when weftd does not know the lab's
// backend (one dropped from weftd's map, or never added), the e2e test
// fails with weftd's words instead of skipping, so a backend cannot go
// untested unnoticed.
func TestUpForTestFailsUnknownBackend(t *testing.T) {
	bins := e2eBins(t)
	dir := t.TempDir()
	for _, b := range binaries {
		if err := os.Symlink(filepath.Join(bins, b), filepath.Join(dir, b)); err != nil {
			t.Fatal(err)
		}
	}
	// A weftd whose backend map lacks the lab's backend says so and exits,
	// as the real one does (daemon.checkBackend).
	weftd := "#!/bin/sh\n" + `echo 'level=ERROR msg="backend type \"vxlan\" is not built into this weftd"' >&2` + "\nexit 1\n"
	if err := os.Remove(filepath.Join(dir, "weftd")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "weftd"), []byte(weftd), 0o755); err != nil {
		t.Fatal(err)
	}
	e := endedBy(t, func(tb testing.TB) {
		upForTest(tb, Options{Name: testLabName("e2eunk-"), Nodes: 1, Backend: "vxlan", StateRoot: t.TempDir(), BinDir: dir, ReadyTimeout: 20 * time.Second})
	})
	if e.how != "fail" || !strings.Contains(e.msg, "not built into this weftd") {
		t.Errorf("upForTest with a backend weftd does not know ended the test with %q %q, want a failure quoting weftd", e.how, e.msg)
	}
}

// requireMatrix runs the matrix and fails unless every probe succeeded and
// every pod of every node was a source.
func requireMatrix(t *testing.T, l *Lab, what string) {
	t.Helper()
	m, err := l.Test(t.Context(), TestOptions{Timeout: 60 * time.Second})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	var b bytes.Buffer
	_ = m.WriteTable(&b)
	pods := len(l.Pods())
	want := pods*(pods-1) + pods*(len(l.Nodes)-1)
	if l.IPv6 {
		want *= 2 // each family
	}
	if !m.OK || len(m.Probes) != want {
		t.Fatalf("%s: matrix not fully connected (%d probes, want %d):\n%s", what, len(m.Probes), want, b.String())
	}
	t.Logf("%s:\n%s", what, b.String())
}

// podAddr reads the pod's eth0 IPv4 address from inside the pod.
func podAddr(t *testing.T, l *Lab, pod string) netip.Addr { return podAddrOf(t, l, pod, false) }

// podAddrOf reads the pod's eth0 address of a family (v6: the global IPv6
// one) from inside the pod.
func podAddrOf(t *testing.T, l *Lab, pod string, v6 bool) netip.Addr {
	t.Helper()
	args, key := []string{"ip", "-4", "-o", "addr", "show", "dev", "eth0"}, "inet"
	if v6 {
		args, key = []string{"ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"}, "inet6"
	}
	out, err := l.Run(t.Context(), pod, args...)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(out)
	for i, w := range f {
		if w == key && i+1 < len(f) {
			p, err := netip.ParsePrefix(f[i+1])
			if err != nil {
				t.Fatal(err)
			}
			return p.Addr()
		}
	}
	t.Fatalf("pod %s has no %s address on eth0: %q", pod, key, out)
	return netip.Addr{}
}

// TestE2E runs, for each backend (wireguard also: requireWireGuard), in
// parallel and so also proving that labs
// with different names coexist: a 3-node lab with 2 pods per node at full
// connectivity; a 4th node joins and is reached; weftd on one node is
// SIGKILLed (pods keep working) and restarted (same subnet, same pod IPs);
// a node is removed (weftd stopped, lease released) and its routes vanish
// from the others; the config's Network changes and the nodes move, leaving
// no weft route, neighbour or FDB entry of the old network, and re-created
// pods reach each other in the new one (requireNetworkChange).
func TestE2E(t *testing.T) {
	e2eBins(t)
	root := t.TempDir()
	for _, tc := range []struct {
		backend string
		// ipMasq: without it, a pod's ping to another node's underlay
		// address is answered from that node's underlay address through
		// the overlay. The udp backend drops such replies by design (the
		// inner source is not in the sending node's subnet), so udp runs
		// masqueraded, as a Flannel deployment does; host-gw covers
		// masquerade on a kernel backend, vxlan the unmasqueraded path.
		// WireGuard's cryptokey routing drops such replies too.
		ipMasq bool
	}{
		{"vxlan", false},
		{"host-gw", true},
		{"udp", true},
		{"wireguard", true},
	} {
		t.Run(tc.backend, func(t *testing.T) {
			t.Parallel()
			testBackend(t, root, Options{Backend: tc.backend, IPMasq: tc.ipMasq})
		})
	}
}

// TestE2EIPv6 runs TestE2E's scenario on the backends that carry IPv6, in a
// dual-stack lab (the matrix probes both families) and in an IPv6-only one
// (IPv6 underlay, etcd included), in parallel, every backend in both.
func TestE2EIPv6(t *testing.T) {
	e2eBins(t)
	root := t.TempDir()
	for _, tc := range []struct {
		backend string
		only    bool
		ipMasq  bool // as TestE2E's
	}{
		{"vxlan", false, false},
		{"vxlan", true, false},
		{"host-gw", false, true},
		{"host-gw", true, true},
		// udp: dual stack carries IPv6 pods in its IPv4 datagrams, IPv6-only
		// runs the tunnel over the IPv6 underlay; unmasqueraded, a node's
		// replies from its PublicIP(v6) pass the inner-source check.
		{"udp", false, false},
		{"udp", true, false},
		// wireguard: Mode separate (Flannel's default), IPv6 on weft-wg-v6; masqueraded
		// as in TestE2E (a node answers a pod from its PublicIP(v6), outside
		// the AllowedIPs).
		{"wireguard", false, true},
		{"wireguard", true, true},
	} {
		fam := "dual"
		if tc.only {
			fam = "ipv6only"
		}
		t.Run(tc.backend+"/"+fam, func(t *testing.T) {
			t.Parallel()
			testBackend(t, root, Options{Backend: tc.backend, IPMasq: tc.ipMasq, IPv6: !tc.only, IPv6Only: tc.only})
		})
	}
}

// testBackend runs the e2e scenario on a lab of o (Backend, IPMasq and the
// IPv6 options; the rest is filled in).
func testBackend(t *testing.T, root string, o Options) {
	backend := o.Backend
	name := "e2e-"
	switch {
	case o.IPv6Only:
		name = "e2e6-"
	case o.IPv6:
		name = "e2e46-"
	}
	o.Name = testLabName(name + strings.ReplaceAll(backend, "-", "") + "-")
	o.Nodes, o.PodsPerNode, o.StateRoot = 3, 2, root
	l := upForTest(t, o)
	requireMatrix(t, l, "3 nodes × 2 pods")
	requireObservable(t, l, backend, 3)
	if backend == "wireguard" {
		requireWireGuard(t, l)
	}

	n4, err := l.AddNode(t.Context())
	if err != nil {
		t.Fatalf("add node: %v", err)
	}
	if len(n4.Pods) != 2 {
		t.Fatalf("node %s has %d pods, want 2", n4.Name, len(n4.Pods))
	}
	requireMatrix(t, l, "after adding "+n4.Name)

	// Crash and restart weftd on n2.
	n2 := l.Node("n2")
	oldSubnet, oldSubnet6 := n2.Subnet, n2.IPv6Subnet
	oldIPs := map[string]netip.Addr{}
	for _, p := range n2.Pods {
		oldIPs[p.Name] = p.IP
		oldIPs[p.Name+IPv6Suffix] = p.IPv6
	}
	if err := l.StopWeftd(t.Context(), "n2", true); err != nil {
		t.Fatal(err)
	}
	if forwardsWithoutWeftd(t, l, backend, "n2") {
		// Kernel backends keep forwarding without their daemon; udp's
		// and the embedded WireGuard's data plane is weftd itself and
		// resumes with the restart.
		requireMatrix(t, l, "weftd on n2 killed")
	}
	sn, err := l.StartWeftd(t.Context(), "n2")
	if err != nil {
		t.Fatalf("restart weftd on n2: %v", err)
	}
	if sn != oldSubnet || n2.IPv6Subnet != oldSubnet6 {
		t.Fatalf("n2 came back with subnets %s %s, had %s %s", sn, n2.IPv6Subnet, oldSubnet, oldSubnet6)
	}
	for _, p := range n2.Pods {
		if l.hasIPv4() {
			if got := podAddr(t, l, p.Name); got != oldIPs[p.Name] {
				t.Errorf("pod %s has %s after the restart, had %s", p.Name, got, oldIPs[p.Name])
			}
		}
		if l.hasIPv6() {
			if got := podAddrOf(t, l, p.Name, true); got != oldIPs[p.Name+IPv6Suffix] {
				t.Errorf("pod %s has %s after the restart, had %s", p.Name, got, oldIPs[p.Name+IPv6Suffix])
			}
		}
	}
	requireMatrix(t, l, "weftd on n2 restarted")

	// Remove n3: its subnets' routes must leave every other node.
	n3 := l.Node("n3")
	gone := n3.Subnet
	var goneAll []netip.Prefix // each family's
	if l.hasIPv4() {
		goneAll = append(goneAll, n3.Subnet)
	}
	if l.hasIPv6() {
		goneAll = append(goneAll, n3.IPv6Subnet)
	}
	showRoute := func(n *Node, sn netip.Prefix) (string, error) {
		fam := "-4"
		if sn.Addr().Is6() {
			fam = "-6"
		}
		return nsRun(t.Context(), n.NS, "ip", fam, "route", "show", "exact", sn.String())
	}
	if backend != "udp" { // udp routes peers in userspace, not in the kernel
		for _, n := range l.Nodes {
			if n.Name == "n3" {
				continue
			}
			for _, sn := range goneAll {
				if out, err := showRoute(n, sn); err != nil || strings.TrimSpace(out) == "" {
					t.Fatalf("node %s has no route to n3's subnet %s before the removal (%v)", n.Name, sn, err)
				}
			}
		}
	}
	if err := l.RemoveNode(t.Context(), "n3"); err != nil {
		t.Fatalf("remove node: %v", err)
	}
	for _, n := range l.Nodes {
		for _, sn := range goneAll {
			var last string
			ok := poll(t.Context(), 20*time.Second, 100*time.Millisecond, func() bool {
				out, err := showRoute(n, sn)
				last = out
				return err == nil && strings.TrimSpace(out) == ""
			})
			if !ok {
				t.Errorf("node %s still routes removed node's subnet %s: %s", n.Name, sn, last)
			}
		}
	}
	if out, err := l.weftctl(t.Context(), "", "leases"); err != nil || strings.Contains(out, gone.Addr().String()) {
		t.Errorf("lease of removed node %s still listed (%v):\n%s", gone, err, out)
	}
	requireMatrix(t, l, "after removing n3")
	if nsExists(nsName(l.Name, "n3")) {
		t.Errorf("namespace of removed node n3 still exists")
	}
	if _, err := os.Stat(filepath.Join(l.Dir, "n3")); !os.IsNotExist(err) {
		t.Errorf("state of removed node n3 still on disk: %v", err)
	}

	// Last, as it renumbers the lab: the config's Network changes, no node
	// keeps weft state of the old one, and re-created pods reach each other.
	requireNetworkChange(t, l, backend)
}

// TestDownAfterKilledUp kills `weftctl lab up` with SIGKILL while it builds
// and checks that `weftctl lab down` then removes every namespace and
// process, and that a second down succeeds too.
func TestDownAfterKilledUp(t *testing.T) {
	bin := e2eBins(t)
	root := t.TempDir()
	name := testLabName("crash")
	t.Cleanup(func() { _ = Down(context.Background(), root, name) })
	weftctl := filepath.Join(bin, "weftctl")
	up := exec.Command(weftctl, "lab", "up", "--name", name, "--state-root", root, "--nodes", "6", "--backend", "vxlan")
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it once some weftd runs, while later nodes are still being made.
	var st *State
	started := poll(t.Context(), 30*time.Second, 5*time.Millisecond, func() bool {
		s, err := loadState(root, name)
		if err != nil || len(s.Nodes) < 2 || s.Nodes[1].Weftd == nil {
			return false
		}
		st = s
		return true
	})
	_ = up.Process.Kill()
	_ = up.Wait()
	if !started {
		t.Fatal("lab up recorded no weftd within 30s")
	}
	if s, err := loadState(root, name); err == nil {
		st = s
	}
	if st.Ready {
		t.Fatal("lab up finished before it was killed; nothing was tested")
	}
	procs := []*Proc{st.Etcd.Proc}
	for _, n := range st.Nodes {
		procs = append(procs, n.Weftd)
	}
	for i := range 2 {
		out, err := exec.Command(weftctl, "lab", "down", "--name", name, "--state-root", root).CombinedOutput()
		if err != nil {
			t.Fatalf("lab down #%d: %v\n%s", i+1, err, out)
		}
	}
	for _, p := range procs {
		if p.Alive() {
			t.Errorf("process %d (%s) survived lab down", p.PID, p.Cmd)
		}
	}
	nss, err := listNamespaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nss {
		if strings.HasPrefix(n, name+"-") {
			t.Errorf("namespace %s survived lab down", n)
		}
	}
	if _, err := os.Stat(filepath.Join(root, name)); !os.IsNotExist(err) {
		t.Errorf("state dir survived lab down: %v", err)
	}
}
