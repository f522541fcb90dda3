package kube_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/kube"
)

// kubeletNode is Node i as a real cluster's API server sends it: what
// kubelet reports (labels, conditions, addresses, capacity, system info,
// the images it holds), the managed fields of the three writers, and the
// Flannel annotations of a vxlan node. It is decoded from protobuf, as the
// informer's are, so none of its strings are shared with another Node.
func kubeletNode(t testing.TB, i int) *corev1.Node {
	name := fmt.Sprintf("worker-%05d.cluster.example.com", i)
	ip := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}).String()
	podCIDR := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24).String()
	mac := fmt.Sprintf("0a:58:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
	now := metav1.NewTime(time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC))
	fields := func(s string) *metav1.FieldsV1 { return &metav1.FieldsV1{Raw: []byte(s)} }
	qty := resource.MustParse
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, UID: types.UID(fmt.Sprintf("6f1c2d3e-%04x-4a5b-8c7d-0123456789ab", i)),
			ResourceVersion: fmt.Sprint(100000 + i), CreationTimestamp: now,
			Labels: map[string]string{
				"beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
				"kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
				"node.kubernetes.io/instance-type": "m6i.xlarge", "topology.kubernetes.io/region": "eu-west-1",
				"topology.kubernetes.io/zone": "eu-west-1a",
			},
			Annotations: map[string]string{
				"flannel.alpha.coreos.com/backend-data":                  `{"VNI":1,"VtepMAC":"` + mac + `"}`,
				"flannel.alpha.coreos.com/backend-type":                  "vxlan",
				"flannel.alpha.coreos.com/kube-subnet-manager":           "true",
				"flannel.alpha.coreos.com/public-ip":                     ip,
				"node.alpha.kubernetes.io/ttl":                           "0",
				"volumes.kubernetes.io/controller-managed-attach-detach": "true",
			},
			ManagedFields: []metav1.ManagedFieldsEntry{
				{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", Time: &now, FieldsType: "FieldsV1",
					FieldsV1: fields(`{"f:metadata":{"f:annotations":{".":{},"f:volumes.kubernetes.io/controller-managed-attach-detach":{}},"f:labels":{".":{},"f:beta.kubernetes.io/arch":{},"f:beta.kubernetes.io/os":{},"f:kubernetes.io/arch":{},"f:kubernetes.io/hostname":{},"f:kubernetes.io/os":{}}}}`)},
				{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", Time: &now, FieldsType: "FieldsV1",
					FieldsV1: fields(`{"f:metadata":{"f:annotations":{"f:node.alpha.kubernetes.io/ttl":{}}},"f:spec":{"f:podCIDR":{},"f:podCIDRs":{".":{},"v:\"` + podCIDR + `\"":{}}}}`)},
				{Manager: "weftd", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", Time: &now, FieldsType: "FieldsV1", Subresource: "status",
					FieldsV1: fields(`{"f:metadata":{"f:annotations":{"f:flannel.alpha.coreos.com/backend-data":{},"f:flannel.alpha.coreos.com/backend-type":{},"f:flannel.alpha.coreos.com/kube-subnet-manager":{},"f:flannel.alpha.coreos.com/public-ip":{}}},"f:status":{"f:conditions":{"k:{\"type\":\"NetworkUnavailable\"}":{".":{},"f:lastHeartbeatTime":{},"f:lastTransitionTime":{},"f:message":{},"f:reason":{},"f:status":{},"f:type":{}}}}}`)},
			},
		},
		Spec: corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}, ProviderID: "aws:///eu-west-1a/i-0123456789abcdef0"},
		Status: corev1.NodeStatus{
			Capacity:    corev1.ResourceList{"cpu": qty("4"), "memory": qty("16012344Ki"), "pods": qty("110"), "ephemeral-storage": qty("83873772Ki")},
			Allocatable: corev1.ResourceList{"cpu": qty("3920m"), "memory": qty("15285304Ki"), "pods": qty("110"), "ephemeral-storage": qty("76224326324")},
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name},
			},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
			NodeInfo: corev1.NodeSystemInfo{
				MachineID: "ec2a1b2c3d4e5f60718293a4b5c6d7e8", SystemUUID: "ec2a1b2c-3d4e-5f60-7182-93a4b5c6d7e8",
				BootID: "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0", KernelVersion: "6.8.0-1021-aws", OSImage: "Ubuntu 24.04.1 LTS",
				ContainerRuntimeVersion: "containerd://1.7.24", KubeletVersion: "v1.37.2", OperatingSystem: "linux", Architecture: "amd64",
			},
		},
	}
	for _, c := range []corev1.NodeConditionType{corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure, corev1.NodeReady} {
		n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{
			Type: c, Status: corev1.ConditionFalse, LastHeartbeatTime: now, LastTransitionTime: now,
			Reason: "Kubelet" + string(c), Message: "kubelet reports " + string(c) + " for this node",
		})
	}
	n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{
		Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse, LastHeartbeatTime: now, LastTransitionTime: now,
		Reason: "WeftIsUp", Message: "weft is running on this node",
	})
	for j := range 12 {
		n.Status.Images = append(n.Status.Images, corev1.ContainerImage{
			Names: []string{
				fmt.Sprintf("registry.example.com/platform/service-%02d@sha256:%064x", j, j+1),
				fmt.Sprintf("registry.example.com/platform/service-%02d:v1.%d.0", j, j),
			},
			SizeBytes: int64(20_000_000 + j*1_000_000),
		})
	}
	raw, err := n.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	out := &corev1.Node{}
	if err := out.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	return out
}

// streamedNodes serves WatchLeases one watch-list stream (the informer's
// start) of count Nodes made by node, one at a time as the informer reads
// them, and then no more events.
type streamedNodes struct {
	count int
	node  func(i int) *corev1.Node
	done  <-chan struct{}
}

func (s *streamedNodes) Get(context.Context, string, metav1.GetOptions) (*corev1.Node, error) {
	return nil, errors.New("get: not served")
}

func (s *streamedNodes) List(context.Context, metav1.ListOptions) (*corev1.NodeList, error) {
	return nil, errors.New("list: not served (the informer streams its start)")
}

func (s *streamedNodes) Watch(_ context.Context, o metav1.ListOptions) (watch.Interface, error) {
	w := &stream{events: make(chan watch.Event), stop: make(chan struct{})}
	if o.SendInitialEvents == nil || !*o.SendInitialEvents {
		return w, nil // a watch that sends nothing, for the informer to keep
	}
	go func() {
		for i := range s.count {
			if !w.send(s.done, watch.Event{Type: watch.Added, Object: s.node(i)}) {
				return
			}
		}
		w.send(s.done, watch.Event{Type: watch.Bookmark, Object: &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			ResourceVersion: fmt.Sprint(100000 + s.count),
			Annotations:     map[string]string{metav1.InitialEventsAnnotationKey: "true"},
		}}})
	}()
	return w, nil
}

// stream is a watch whose events a goroutine sends until it is stopped.
type stream struct {
	events chan watch.Event
	stop   chan struct{}
	once   sync.Once
}

func (w *stream) Stop()                          { w.once.Do(func() { close(w.stop) }) }
func (w *stream) ResultChan() <-chan watch.Event { return w.events }

func (w *stream) send(done <-chan struct{}, ev watch.Event) bool {
	select {
	case w.events <- ev:
		return true
	case <-w.stop:
	case <-done:
	}
	return false
}

func (s *streamedNodes) Patch(context.Context, string, types.PatchType, []byte, metav1.PatchOptions, ...string) (*corev1.Node, error) {
	return nil, errors.New("patch: not served")
}

// TestWatchKeepsLittlePerNode: WatchLeases keeps, of each Node of a real
// cluster (kilobytes: status, images, managed fields, labels), only its
// lease. The bound is what a lease needs and some bookkeeping: the informer
// keeping Nodes whole, or with their annotations, or a second copy of each
// lease, each breaks it.
func TestWatchKeepsLittlePerNode(t *testing.T) {
	const count = 2000
	sample := kubeletNode(t, 0)
	conf := filepath.Join(t.TempDir(), "net-conf.json")
	if err := os.WriteFile(conf, []byte(`{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	defer close(done)
	api := &streamedNodes{count: count, node: func(i int) *corev1.Node { return kubeletNode(t, i) }, done: done}
	m, err := kube.New(kube.Options{Nodes: api, NetConfigPath: conf})
	if err != nil {
		t.Fatal(err)
	}
	before := liveHeap()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := make(chan subnet.LeaseBatch)
	errc := make(chan error, 1)
	go func() { errc <- m.WatchLeases(ctx, out) }()
	var snap subnet.LeaseBatch
	select {
	case snap = <-out:
	case err := <-errc:
		t.Fatalf("WatchLeases: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("no snapshot in a minute")
	}
	if !snap.Snapshot || len(snap.Leases) != count {
		t.Fatalf("first batch: snapshot %v with %d leases, want a snapshot of %d", snap.Snapshot, len(snap.Leases), count)
	}
	want := netip.MustParsePrefix(sample.Spec.PodCIDR)
	found := false
	for _, l := range snap.Leases {
		if l.Subnet == want {
			found = true
			if l.Attrs.BackendType != "vxlan" || l.Attrs.PublicIP.String() != sample.Annotations["flannel.alpha.coreos.com/public-ip"] ||
				string(l.Attrs.BackendData) != sample.Annotations["flannel.alpha.coreos.com/backend-data"] {
				t.Errorf("lease of %s: %+v", sample.Name, l.Attrs)
			}
		}
	}
	if !found {
		t.Errorf("no lease for %s (%s)", sample.Name, want)
	}
	snap = subnet.LeaseBatch{}
	perNode := (liveHeap() - before) / count

	raw, err := sample.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// What an entry must hold: a lease, its backend data and type, the
	// Node's name and version. Besides that, 384 bytes: allocator rounding
	// and a slot in the informer's map and in the watcher's. Keeping the
	// Node whole, or its annotations, or a second copy of the lease, is
	// more.
	need := int(unsafe.Sizeof(subnet.Lease{})) + len(sample.Annotations["flannel.alpha.coreos.com/backend-data"]) +
		len(sample.Annotations["flannel.alpha.coreos.com/backend-type"]) + len(sample.Name) + len(sample.ResourceVersion)
	bound := int64(need + 384)
	t.Logf("a Node is %d bytes of protobuf; the watch keeps %d bytes per Node (bound %d)", len(raw), perNode, bound)
	if perNode > bound {
		t.Errorf("the watch keeps %d bytes per Node, more than %d: it holds more of a Node than its lease", perNode, bound)
	}
	cancel()
	if err := <-errc; err != nil && ctx.Err() == nil {
		t.Errorf("WatchLeases: %v", err)
	}
}

// liveHeap is the heap's live bytes after a full collection.
func liveHeap() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
