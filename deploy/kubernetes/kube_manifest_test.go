package kubernetes

import (
	"context"
	"flag"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/weftnet/weft/subnet"
	kubestore "github.com/weftnet/weft/subnet/kube"
	"github.com/weftnet/weft/subnet/kube/kubetest"
	"github.com/weftnet/weft/subnet/subnettest"
)

// kubeObjects decodes weft-kube.yml into typed objects.
type kubeObjects struct {
	sa      corev1.ServiceAccount
	role    rbacv1.ClusterRole
	binding rbacv1.ClusterRoleBinding
	cm      corev1.ConfigMap
	ds      appsv1.DaemonSet
}

func loadKubeManifest(t *testing.T) kubeObjects {
	t.Helper()
	var o kubeObjects
	seen := map[string]bool{}
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(KubeManifest()), -1) {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		var into any
		switch meta.Kind {
		case "":
			continue
		case "Namespace":
			into = &corev1.Namespace{}
		case "ServiceAccount":
			into = &o.sa
		case "ClusterRole":
			into = &o.role
		case "ClusterRoleBinding":
			into = &o.binding
		case "ConfigMap":
			into = &o.cm
		case "DaemonSet":
			into = &o.ds
		default:
			t.Fatalf("document %d: unexpected kind %s", i, meta.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
			t.Fatalf("document %d (%s): %v", i, meta.Kind, err)
		}
		seen[meta.Kind] = true
	}
	for _, k := range []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"} {
		if !seen[k] {
			t.Fatalf("weft-kube.yml has no %s", k)
		}
	}
	return o
}

// TestKubeManifest checks what the Kubernetes-mode DaemonSet must have.
func TestKubeManifest(t *testing.T) {
	o := loadKubeManifest(t)
	if _, err := subnet.ParseConfig([]byte(o.cm.Data["net-conf.json"])); err != nil {
		t.Errorf("ConfigMap net-conf.json is not a valid network config: %v", err)
	}
	if s := o.binding.Subjects; len(s) != 1 || s[0].Kind != "ServiceAccount" || s[0].Name != o.sa.Name || s[0].Namespace != o.sa.Namespace ||
		o.binding.RoleRef.Name != o.role.Name || o.binding.RoleRef.Kind != "ClusterRole" {
		t.Errorf("ClusterRoleBinding does not bind ClusterRole %s to ServiceAccount %s/%s: %+v", o.role.Name, o.sa.Namespace, o.sa.Name, o.binding)
	}
	spec := o.ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.ServiceAccountName != o.sa.Name {
		t.Errorf("DaemonSet must run on the host network as ServiceAccount %s: hostNetwork %v, serviceAccountName %q", o.sa.Name, spec.HostNetwork, spec.ServiceAccountName)
	}
	tolerates := map[corev1.TaintEffect]bool{}
	for _, tol := range spec.Tolerations {
		if tol.Operator == corev1.TolerationOpExists && tol.Key == "" {
			tolerates[tol.Effect] = true
		}
	}
	if !tolerates[corev1.TaintEffectNoSchedule] || !tolerates[corev1.TaintEffectNoExecute] {
		t.Errorf("DaemonSet must tolerate every NoSchedule and NoExecute taint (it makes nodes Ready): %+v", spec.Tolerations)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("want one container, have %d", len(spec.Containers))
	}
	c := spec.Containers[0]
	if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
		t.Error("weftd must run privileged")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Errorf("weftd has no CPU and memory requests: %+v", c.Resources.Requests)
	}
	for probe, path := range map[*corev1.Probe]string{c.LivenessProbe: "/healthz", c.ReadinessProbe: "/readyz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != path {
			t.Errorf("weftd has no %s probe", path)
		}
	}
	// The command's flags are weftd's, and it reads the ConfigMap where it
	// is mounted.
	if c.Command[0] != "/usr/local/bin/weftd" || !slices.Contains(c.Command, "--kube-subnet-mgr") {
		t.Errorf("weftd command %q lacks --kube-subnet-mgr", c.Command)
	}
	fs := flag.NewFlagSet("weftd", flag.ContinueOnError)
	for _, name := range flagNames(t, "../../cmd/weftd") {
		fs.String(name, "", "")
	}
	var confPath string
	for _, a := range c.Command[1:] {
		name, value, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if fs.Lookup(name) == nil {
			t.Errorf("weftd command uses --%s, which weftd does not have", name)
		}
		if name == "net-config-path" {
			confPath = value
		}
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil && v.ConfigMap.Name == o.cm.Name && confPath == m.MountPath+"/net-conf.json" {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("--net-config-path %q is not net-conf.json of the mounted ConfigMap %s", confPath, o.cm.Name)
	}
	nodeName := false
	for _, e := range c.Env {
		if e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName" {
			nodeName = true
		}
	}
	if !nodeName {
		t.Error("weftd does not get NODE_NAME from spec.nodeName")
	}
	// The least rights: this is the whole ClusterRole (TestKubeManifestRBAC
	// shows each is needed).
	var rules []string
	for _, r := range o.role.Rules {
		for _, res := range r.Resources {
			for _, v := range r.Verbs {
				rules = append(rules, fmt.Sprintf("%s/%s:%s", strings.Join(r.APIGroups, ","), res, v))
			}
		}
	}
	slices.Sort(rules)
	if want := []string{"/nodes/status:patch", "/nodes:get", "/nodes:list", "/nodes:watch"}; !slices.Equal(rules, want) {
		t.Errorf("ClusterRole grants %v, want exactly %v", rules, want)
	}
}

// TestKubeManifestRBAC applies weft-kube.yml to a real kube-apiserver (it
// validates every object strictly) and shows that the ClusterRole is
// exactly enough: the store does all of its work with the ServiceAccount's
// token, cannot write a Node's spec or create Nodes, and loses some part of
// its work without any one of the role's rights.
func TestKubeManifestRBAC(t *testing.T) {
	c := kubetest.Start(t)
	if err := c.Plane.Apply(kubetest.Ctx(t, time.Minute), KubeManifest()); err != nil {
		t.Fatal(err)
	}
	o := loadKubeManifest(t)
	cfg := subnettest.MustConfig(t, o.cm.Data["net-conf.json"])
	c.ControllerManager(t, cfg.Network.String(), cfg.SubnetLen)
	conf := t.TempDir() + "/net-conf.json"
	if err := os.WriteFile(conf, []byte(o.cm.Data["net-conf.json"]), 0o644); err != nil {
		t.Fatal(err)
	}
	c.AddNode(t, "rbac-node")
	token := c.ServiceAccountToken(t, o.sa.Namespace, o.sa.Name)
	weft := c.NewClient(t, token)
	if err := storeWork(t, c, token, conf, cfg); err != nil {
		t.Fatalf("with the manifest's ClusterRole: %v", err)
	}
	ctx := kubetest.Ctx(t, 30*time.Second)
	if _, err := weft.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the ServiceAccount can create Nodes: %v", err)
	}
	spec := []byte(`{"spec":{"unschedulable":true}}`)
	if _, err := weft.CoreV1().Nodes().Patch(ctx, "rbac-node", types.MergePatchType, spec, metav1.PatchOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the ServiceAccount can patch a Node's spec: %v", err)
	}
	if _, err := weft.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the ServiceAccount can list Secrets: %v", err)
	}

	// Each right removed in turn, through a role of the same rules less
	// that one, bound to an account of its own.
	for i, rule := range o.role.Rules {
		for _, verb := range rule.Verbs {
			name := fmt.Sprintf("less-%s-%s", strings.ReplaceAll(rule.Resources[0], "/", "-"), verb)
			t.Run(name, func(t *testing.T) {
				less := o.role.DeepCopy()
				less.ObjectMeta = metav1.ObjectMeta{Name: name}
				less.Rules[i].Verbs = slices.DeleteFunc(slices.Clone(rule.Verbs), func(v string) bool { return v == verb })
				if len(less.Rules[i].Verbs) == 0 {
					less.Rules = slices.Delete(less.Rules, i, i+1)
				}
				b := &rbacv1.ClusterRoleBinding{
					ObjectMeta: metav1.ObjectMeta{Name: name},
					RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name},
					Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: o.sa.Namespace}},
				}
				if _, err := c.Client.RbacV1().ClusterRoles().Create(ctx, less, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Client.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
				token := c.ServiceAccountToken(t, o.sa.Namespace, name)
				client := c.NewClient(t, token)
				// RBAC changes reach the authorizer through its informer:
				// wait until the account can do what it still may.
				kubetest.WaitFor(t, 10*time.Second, "the reduced role in force", func() bool {
					_, err := client.CoreV1().Nodes().Get(ctx, "rbac-node", metav1.GetOptions{})
					return err == nil || verb == "get"
				})
				err := storeWork(t, c, token, conf, cfg)
				if !apierrors.IsForbidden(err) {
					t.Fatalf("without %s on %s the store still does all its work (err %v): the right is not needed", verb, rule.Resources[0], err)
				}
				t.Logf("without %s on %s: %v", verb, rule.Resources[0], err)
			})
		}
	}
}

// storeWork is everything weftd's store does on the API: acquire (list,
// watch and patch its Node's status), renew (get), list, watch, and mark
// the network available. It returns the first failure.
func storeWork(t *testing.T, c *kubetest.Cluster, token, conf string, cfg *subnet.Config) error {
	nodes, err := kubestore.NewNodes(c.RESTConfig(token))
	if err != nil {
		return err
	}
	client := c.NewClient(t, token)
	m, err := kubestore.New(kubestore.Options{Nodes: nodes, NodeName: "rbac-node", NetConfigPath: conf})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	attrs := subnettest.Node(40, 1)
	l, err := m.AcquireLease(ctx, subnet.AcquireRequest{Config: cfg, Attrs: attrs})
	if err != nil {
		return fmt.Errorf("acquire: %w", err)
	}
	if err := m.RenewLease(ctx, l, time.Hour); err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	if _, _, err := m.ListLeases(ctx); err != nil {
		return fmt.Errorf("list: %w", err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	out := make(chan subnet.LeaseBatch, 4)
	errc := make(chan error, 1)
	go func() { errc <- m.WatchLeases(wctx, out) }()
	select {
	case <-out:
		// A watch (not only the list) must work too: a change must arrive.
		patch := []byte(`{"metadata":{"annotations":{"flannel.alpha.coreos.com/backend-data":"{\"VNI\":1,\"VtepMAC\":\"02:00:00:00:28:ff\"}"}}}`)
		if _, err := client.CoreV1().Nodes().Patch(ctx, "rbac-node", types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
			return fmt.Errorf("patch for the watch: %w", err)
		}
		select {
		case <-out:
		case <-wctx.Done():
			return fmt.Errorf("watch: no event for a change (forbidden to watch?)")
		}
	case <-wctx.Done():
		return fmt.Errorf("watch: no snapshot within 5s (forbidden to list or watch?)")
	case err := <-errc:
		return fmt.Errorf("watch: %w", err)
	}
	if n, err := m.WatchErrors(); n > 0 {
		return fmt.Errorf("watch: %d list or watch requests failed, the last: %w", n, err)
	}
	if err := m.MarkNetworkAvailable(ctx); err != nil {
		return fmt.Errorf("mark network available: %w", err)
	}
	return nil
}
