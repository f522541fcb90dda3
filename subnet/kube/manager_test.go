package kube_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/kube"
	"github.com/weftnet/weft/subnet/kube/kubetest"
	"github.com/weftnet/weft/subnet/subnettest"
)

// manifest is the one weftd is deployed with: its ClusterRole is what the
// store runs with in these tests.
const manifest = "../../deploy/kubernetes/weft-kube.yml"

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fixture is a cluster whose store runs with the manifest's ServiceAccount.
type fixture struct {
	c    *kubetest.Cluster
	weft kube.Nodes // the weft ServiceAccount's, as weftd makes it

	mu   sync.Mutex
	kcm  string // the controller manager's cluster CIDR/mask; guarded by mu
	node map[netip.Addr]string
}

func startFixture(t *testing.T) *fixture {
	c := kubetest.Start(t)
	c.Apply(t, manifest)
	token := c.ServiceAccountToken(t, "weft-system", "weft")
	nodes, err := kube.NewNodes(c.RESTConfig(token))
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{c: c, weft: nodes}
}

// useNetwork runs the controller manager for cfg's network, restarting it
// only when that changes.
func (f *fixture) useNetwork(t *testing.T, cfg *subnet.Config) {
	key := fmt.Sprintf("%s/%d", cfg.Network, cfg.SubnetLen)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.kcm != key {
		f.c.ControllerManager(t, cfg.Network.String(), cfg.SubnetLen)
		f.kcm = key
	}
}

// nodeName is the Node of the lab node with publicIP, registered on first
// use as kubelet would.
func (f *fixture) nodeName(t *testing.T, ip netip.Addr) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if name, ok := f.node[ip]; ok {
		return name
	}
	name := "node-" + ip.String()
	f.c.AddNode(t, name)
	f.node[ip] = name
	return name
}

// store is a fresh store for the conformance suite: no Nodes, no config.
func (f *fixture) store(t *testing.T) subnettest.Store {
	f.c.DeleteAllNodes(t)
	f.mu.Lock()
	f.node = map[netip.Addr]string{}
	f.mu.Unlock()
	conf := filepath.Join(t.TempDir(), "net-conf.json")
	log := testLogger(t)
	newManager := func(t *testing.T, node string) subnet.Manager {
		m, err := kube.New(kube.Options{Nodes: f.weft, NodeName: node, NetConfigPath: conf, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	return subnettest.Store{
		Manager: func(t *testing.T, attrs subnet.LeaseAttrs) subnet.Manager {
			if !attrs.PublicIP.IsValid() {
				return newManager(t, "")
			}
			return newManager(t, f.nodeName(t, attrs.PublicIP))
		},
		UseNetwork: f.useNetwork,
		WriteConfig: func(t *testing.T, raw []byte) {
			if err := os.WriteFile(conf, raw, 0o644); err != nil {
				t.Fatal(err)
			}
		},
		Evict: func(t *testing.T, sn netip.Prefix) {
			ctx := kubetest.Ctx(t, 30*time.Second)
			nodes, err := f.c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range nodes.Items {
				if n.Spec.PodCIDR == sn.String() {
					if err := f.c.Client.CoreV1().Nodes().Delete(ctx, n.Name, metav1.DeleteOptions{}); err != nil {
						t.Fatal(err)
					}
					return
				}
			}
			t.Fatalf("no Node has podCIDR %s", sn)
		},
	}
}

// TestKube runs the lease-store contract and the Kubernetes store's own
// behaviour against one real kube-apiserver, with kube-controller-manager
// assigning the podCIDRs and the store holding only the manifest's
// ClusterRole.
func TestKube(t *testing.T) {
	f := startFixture(t)
	t.Run("Contract", func(t *testing.T) {
		subnettest.TestStore(t, subnettest.Suite{New: f.store, Assigned: true})
	})
	t.Run("FlannelAnnotations", func(t *testing.T) { testFlannelAnnotations(t, f) })
	t.Run("CorruptAnnotations", func(t *testing.T) { testCorruptAnnotations(t, f) })
	t.Run("PodCIDROutsideNetwork", func(t *testing.T) { testPodCIDROutsideNetwork(t, f) })
	t.Run("NetworkAvailable", func(t *testing.T) { testNetworkAvailable(t, f) })
}

const flannelPrefix = "flannel.alpha.coreos.com/"

// flannelNode creates a Node the way a Flannel node in the cluster leaves
// it: a podCIDR and Flannel's annotations.
func (f *fixture) flannelNode(t *testing.T, name, podCIDR string, ann map[string]string) {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}, Spec: corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}}}
	if _, err := f.c.Client.CoreV1().Nodes().Create(kubetest.Ctx(t, 30*time.Second), n, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func flannelAnnotations(ip, mac string) map[string]string {
	return map[string]string{
		flannelPrefix + "kube-subnet-manager": "true",
		flannelPrefix + "backend-type":        "vxlan",
		flannelPrefix + "backend-data":        `{"VNI":1,"VtepMAC":"` + mac + `"}`,
		flannelPrefix + "public-ip":           ip,
	}
}

// testFlannelAnnotations: a Node written by Flannel is a peer with the
// attributes Flannel published; what weft writes on its own Node is what
// Flannel reads (the same keys, values and formats).
func testFlannelAnnotations(t *testing.T, f *fixture) {
	st := f.store(t)
	cfg := subnettest.MustConfig(t, `{"Network":"10.30.0.0/16"}`)
	st.UseNetwork(t, cfg)
	f.flannelNode(t, "flannel-1", "10.30.200.0/24", flannelAnnotations("198.18.30.200", "0a:58:0a:1e:c8:00"))
	attrs := subnettest.Node(30, 1)
	l := acquire(t, st.Manager(t, attrs), subnet.AcquireRequest{Config: cfg, Attrs: attrs})

	got := listMap(t, st.Manager(t, subnet.LeaseAttrs{}))
	fl := got[netip.MustParsePrefix("10.30.200.0/24")]
	if fl.Attrs.PublicIP != netip.MustParseAddr("198.18.30.200") || fl.Attrs.BackendType != "vxlan" ||
		string(fl.Attrs.BackendData) != `{"VNI":1,"VtepMAC":"0a:58:0a:1e:c8:00"}` || !fl.Reserved() {
		t.Fatalf("Flannel's node read as %+v", fl)
	}
	n, err := f.c.Client.CoreV1().Nodes().Get(kubetest.Ctx(t, 30*time.Second), "node-"+attrs.PublicIP.String(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		flannelPrefix + "kube-subnet-manager": "true",
		flannelPrefix + "backend-type":        "vxlan",
		flannelPrefix + "backend-data":        string(attrs.BackendData),
		flannelPrefix + "public-ip":           attrs.PublicIP.String(),
	}
	for k, v := range want {
		if n.Annotations[k] != v {
			t.Errorf("weft wrote %s=%q, Flannel reads %q", k, n.Annotations[k], v)
		}
	}
	if n.Spec.PodCIDR != l.Subnet.String() {
		t.Errorf("lease %s, podCIDR %s", l.Subnet, n.Spec.PodCIDR)
	}

	// host-gw: Flannel writes backend-data "null"; so does weft.
	hg := subnet.LeaseAttrs{PublicIP: attrs.PublicIP, BackendType: subnet.BackendHostGW}
	if _, err := st.Manager(t, hg).AcquireLease(kubetest.Ctx(t, 30*time.Second), subnet.AcquireRequest{Config: cfg, Attrs: hg}); err != nil {
		t.Fatal(err)
	}
	n, _ = f.c.Client.CoreV1().Nodes().Get(kubetest.Ctx(t, 30*time.Second), n.Name, metav1.GetOptions{})
	if v := n.Annotations[flannelPrefix+"backend-data"]; v != "null" {
		t.Errorf("host-gw backend-data = %q, want Flannel's null", v)
	}

	// An operator's public-ip-overwrite is what peers see.
	patch := `{"metadata":{"annotations":{"` + flannelPrefix + `public-ip-overwrite":"203.0.113.7"}}}`
	if _, err := f.c.Client.CoreV1().Nodes().Patch(kubetest.Ctx(t, 30*time.Second), n.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	l, err = st.Manager(t, attrs).AcquireLease(kubetest.Ctx(t, 30*time.Second), subnet.AcquireRequest{Config: cfg, Attrs: attrs})
	if err != nil {
		t.Fatal(err)
	}
	if l.Attrs.PublicIP != netip.MustParseAddr("203.0.113.7") {
		t.Fatalf("with public-ip-overwrite the lease publishes %s", l.Attrs.PublicIP)
	}
	if got := listMap(t, st.Manager(t, subnet.LeaseAttrs{}))[l.Subnet]; got.Attrs.PublicIP != l.Attrs.PublicIP {
		t.Fatalf("peers read %s, want the overwrite", got.Attrs.PublicIP)
	}
}

// testCorruptAnnotations: a Node with corrupt annotations is refused with
// a reason, logged once however often it is read; the other nodes stay
// peers; a valid lease that turns corrupt is removed, and comes back when
// fixed.
func testCorruptAnnotations(t *testing.T, f *fixture) {
	st := f.store(t)
	cfg := subnettest.MustConfig(t, `{"Network":"10.31.0.0/16"}`)
	st.UseNetwork(t, cfg)
	good := flannelAnnotations("198.18.31.1", "0a:58:0a:1f:01:00")
	f.flannelNode(t, "good", "10.31.1.0/24", good)
	for name, ann := range map[string]map[string]string{
		"bad-ip":   {flannelPrefix + "public-ip": "not-an-ip"},
		"bad-json": {flannelPrefix + "backend-data": `{"VNI":1,`},
		"v6-as-v4": {flannelPrefix + "public-ip": "2001:db8::1"},
		"no-type":  {flannelPrefix + "backend-type": "-"}, // absent; empty is Flannel's udp
	} {
		a := flannelAnnotations("198.18.31.9", "0a:58:0a:1f:09:00")
		for k, v := range ann {
			a[k] = v
			if v == "-" {
				delete(a, k)
			}
		}
		f.flannelNode(t, name, "10.31."+fmt.Sprint(10+len(name))+".0/24", a)
	}
	var logs syncBuffer
	m, err := kube.New(kube.Options{Nodes: f.weft, NetConfigPath: "/nonexistent", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(kubetest.Ctx(t, time.Minute))
	defer cancel()
	out := make(chan subnet.LeaseBatch)
	go m.WatchLeases(ctx, out)
	w := subnettest.NewWatchState(out)
	w.WaitFor(t, 20*time.Second, func(s map[netip.Prefix]subnet.Lease) bool {
		return len(s) == 1 && s[netip.MustParsePrefix("10.31.1.0/24")].Attrs.PublicIP == netip.MustParseAddr("198.18.31.1")
	})
	for range 3 { // read again and again: still one line per node
		if _, _, err := m.ListLeases(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{
		`node=bad-ip reason="annotation flannel.alpha.coreos.com/public-ip \"not-an-ip\" is not an IPv4 address"`,
		`node=bad-json reason="annotation flannel.alpha.coreos.com/backend-data is not JSON`,
		`node=v6-as-v4 reason="annotation flannel.alpha.coreos.com/public-ip \"2001:db8::1\" is not an IPv4 address"`,
		`node=no-type reason="annotation flannel.alpha.coreos.com/backend-type is missing"`,
	} {
		if n := strings.Count(logs.String(), want); n != 1 {
			t.Errorf("refusal %q logged %d times, want once:\n%s", want, n, logs.String())
		}
	}
	if m.Refused() < 8 {
		t.Errorf("Refused() = %d, want each of the 4 corrupt nodes counted at each read", m.Refused())
	}

	// The good node turns corrupt: removed; fixed: back.
	patch := func(v string) {
		p := `{"metadata":{"annotations":{"` + flannelPrefix + `public-ip":"` + v + `"}}}`
		if _, err := f.c.Client.CoreV1().Nodes().Patch(ctx, "good", types.MergePatchType, []byte(p), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	patch("999.1.1.1")
	w.WaitFor(t, 20*time.Second, func(s map[netip.Prefix]subnet.Lease) bool { return len(s) == 0 })
	patch("198.18.31.2")
	w.WaitFor(t, 20*time.Second, func(s map[netip.Prefix]subnet.Lease) bool {
		return s[netip.MustParsePrefix("10.31.1.0/24")].Attrs.PublicIP == netip.MustParseAddr("198.18.31.2")
	})
	if !strings.Contains(logs.String(), `msg="node's annotations are valid again" node=good`) {
		t.Errorf("the fix was not logged:\n%s", logs.String())
	}
	if w.SnapshotCount() != 1 {
		t.Errorf("%d snapshots, want 1: corrupt nodes must not disturb the watch", w.SnapshotCount())
	}
}

// testPodCIDROutsideNetwork: a podCIDR the network config does not
// contain is refused with what to change.
func testPodCIDROutsideNetwork(t *testing.T, f *fixture) {
	st := f.store(t)
	st.UseNetwork(t, subnettest.MustConfig(t, `{"Network":"10.32.0.0/16"}`))
	cfg := subnettest.MustConfig(t, `{"Network":"10.33.0.0/16"}`)
	_, err := st.Manager(t, subnettest.Node(32, 1)).AcquireLease(kubetest.Ctx(t, 30*time.Second), subnet.AcquireRequest{Config: cfg, Attrs: subnettest.Node(32, 1)})
	if err == nil || !strings.Contains(err.Error(), "is not inside Network 10.33.0.0/16") || !strings.Contains(err.Error(), "--cluster-cidr") {
		t.Fatalf("err = %v, want the podCIDR refused, naming --cluster-cidr", err)
	}
}

// testNetworkAvailable: MarkNetworkAvailable sets NetworkUnavailable False
// with the manifest's rights, keeping the other conditions.
func testNetworkAvailable(t *testing.T, f *fixture) {
	st := f.store(t)
	cfg := subnettest.MustConfig(t, `{"Network":"10.34.0.0/16"}`)
	st.UseNetwork(t, cfg)
	attrs := subnettest.Node(34, 1)
	m := st.Manager(t, attrs)
	ctx := kubetest.Ctx(t, 30*time.Second)
	name := "node-" + attrs.PublicIP.String()
	// What kubelet (or a cloud provider) leaves: the network unavailable,
	// and another condition.
	n, err := f.c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Status.Conditions = []corev1.NodeCondition{
		{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionTrue, Reason: "NoRouteCreated"},
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory"},
	}
	if _, err := f.c.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := m.(*kube.Manager).MarkNetworkAvailable(ctx); err != nil {
		t.Fatal(err)
	}
	n, err = f.c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[corev1.NodeConditionType]corev1.ConditionStatus{}
	for _, c := range n.Status.Conditions {
		got[c.Type] = c.Status
	}
	if got[corev1.NodeNetworkUnavailable] != corev1.ConditionFalse || got[corev1.NodeMemoryPressure] != corev1.ConditionFalse || len(got) != 2 {
		t.Fatalf("conditions after MarkNetworkAvailable: %v", n.Status.Conditions)
	}
}

func acquire(t *testing.T, m subnet.Manager, req subnet.AcquireRequest) *subnet.Lease {
	t.Helper()
	l, err := m.AcquireLease(kubetest.Ctx(t, 30*time.Second), req)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func listMap(t *testing.T, m subnet.Manager) map[netip.Prefix]subnet.Lease {
	t.Helper()
	ls, _, err := m.ListLeases(kubetest.Ctx(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	out := map[netip.Prefix]subnet.Lease{}
	for _, l := range ls {
		out[l.Subnet] = l
	}
	return out
}

// syncBuffer is a bytes.Buffer safe for the logger's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
