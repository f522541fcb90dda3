// Package kubetest runs a real kube-apiserver and kube-controller-manager
// for tests, on an in-process etcd, all on loopback:
//
//	c := kubetest.Start(t)                       // API server ready, KCM not yet
//	c.ControllerManager(t, "10.244.0.0/16", 24)  // Nodes get podCIDRs from it
//	c.Client                                     // admin clientset
//	c.ServiceAccountToken(t, ns, name)           // a token with that SA's rights
//
// The binaries come from scripts/kube.sh. Without them a test skips on a
// developer's machine and fails in CI (nstest.CannotRun: WEFT_CI set), so a
// missing build is never silently a pass. Tests that start a cluster skip
// under -short (fail in CI, which never runs -short).
package kubetest

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/weftnet/weft/internal/kubeplane"
	"github.com/weftnet/weft/internal/nstest"
	"github.com/weftnet/weft/subnet/etcd/etcdtest"
)

// Cluster is a running test control plane.
type Cluster struct {
	*kubeplane.Plane
	// Client is an admin clientset.
	Client kubernetes.Interface
	// Etcd is the API server's store.
	Etcd *etcdtest.Etcd
}

// RequireBinaries ends t unless scripts/kube.sh has built the binaries,
// and under -short: a skip on a developer's machine, a failure in CI
// (nstest.CannotRun).
func RequireBinaries(t testing.TB) {
	t.Helper()
	if testing.Short() {
		nstest.CannotRun(t, "starts a kube-apiserver: not under -short")
	}
	if err := kubeplane.CheckBinaries(); err != nil {
		nstest.CannotRun(t, fmt.Sprintf("kubetest: %v (make test builds them)", err))
	}
}

// Start starts etcd and kube-apiserver and waits until the API server is
// ready. Everything stops in t.Cleanup.
func Start(t testing.TB) *Cluster {
	t.Helper()
	RequireBinaries(t)
	e := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := kubeplane.Start(ctx, kubeplane.Options{Dir: t.TempDir(), EtcdServers: e.Endpoints})
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	t.Cleanup(p.Stop)
	c := &Cluster{Plane: p, Etcd: e}
	c.Client = c.NewClient(t, p.AdminToken)
	return c
}

// RESTConfig is a client config authenticating with token.
func (c *Cluster) RESTConfig(token string) *rest.Config {
	return &rest.Config{
		Host:            c.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.CAData},
		QPS:             200,
		Burst:           400,
	}
}

// NewClient returns a clientset authenticating with token.
func (c *Cluster) NewClient(t testing.TB, token string) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(c.RESTConfig(token))
	if err != nil {
		t.Fatalf("kubetest: client: %v", err)
	}
	return cs
}

// ControllerManager (re)starts kube-controller-manager assigning /maskSize
// podCIDRs of clusterCIDR.
func (c *Cluster) ControllerManager(t testing.TB, clusterCIDR string, maskSize int) {
	t.Helper()
	if err := c.StartControllerManager(netip.MustParsePrefix(clusterCIDR), netip.Prefix{}, maskSize, 0); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
}

// ServiceAccountToken creates namespace/name's ServiceAccount if missing
// and returns a token for it (an hour long).
func (c *Cluster) ServiceAccountToken(t testing.TB, namespace, name string) string {
	t.Helper()
	ctx := Ctx(t, 30*time.Second)
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("kubetest: namespace %s: %v", namespace, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	if _, err := c.Client.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("kubetest: service account %s/%s: %v", namespace, name, err)
	}
	exp := int64(3600)
	tr, err := c.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: token for %s/%s: %v", namespace, name, err)
	}
	return tr.Status.Token
}

// AddNode creates a Node named name, as kubelet registers one (no podCIDR:
// the controller manager assigns it).
func (c *Cluster) AddNode(t testing.TB, name string) *corev1.Node {
	t.Helper()
	n, err := c.Client.CoreV1().Nodes().Create(Ctx(t, 30*time.Second), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: create node %s: %v", name, err)
	}
	return n
}

// DeleteAllNodes deletes every Node and waits until none is left.
func (c *Cluster) DeleteAllNodes(t testing.TB) {
	t.Helper()
	ctx := Ctx(t, 60*time.Second)
	if err := c.Client.CoreV1().Nodes().DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Fatalf("kubetest: delete nodes: %v", err)
	}
	WaitFor(t, 60*time.Second, "no Node left", func() bool {
		l, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		return err == nil && len(l.Items) == 0
	})
}

// Ctx is a context ending after d or with the test.
func Ctx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// WaitFor polls cond every 50 ms until it holds, failing t after timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("kubetest: %s: not within %v", what, timeout)
		}
		<-tick.C
	}
}

// Apply creates every object of the multi-document YAML manifest at path
// through the admin, with strict field validation (kubeplane.Plane.Apply).
func (c *Cluster) Apply(t testing.TB, path string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Plane.Apply(Ctx(t, time.Minute), raw); err != nil {
		t.Fatalf("kubetest: %s: %v", path, err)
	}
}
