package kubernetes

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/jsonpath"

	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/kube/kubetest"
	"github.com/weftnet/weft/subnet/subnettest"
)

// installDoc is the page whose "Install on Kubernetes" section the test
// keeps true.
const installDoc = "../../Documentation/install.md"

// docBlock returns what install.md holds between <!-- marker... --> and
// <!-- /marker -->.
func docBlock(t *testing.T, marker string) string {
	t.Helper()
	raw, err := os.ReadFile(installDoc)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)<!-- ` + regexp.QuoteMeta(marker) + `\b[^>]*-->\n(.*?)<!-- /` + regexp.QuoteMeta(marker) + ` -->`).FindSubmatch(raw)
	if m == nil {
		t.Fatalf("%s has no <!-- %s --> block", installDoc, marker)
	}
	return string(m[1])
}

// TestInstallOnKubernetes keeps install.md's "Install on Kubernetes"
// section (Kubernetes API as the store) true: its table of objects is the
// manifest's; its commands are run against a real kube-apiserver — the
// image is built from a Dockerfile that exists, `kubectl apply -f` applies
// that manifest (every object, strict field validation), the DaemonSet
// `rollout status` waits for exists, and after kube-controller-manager
// runs with the flags the section names (from the applied ConfigMap's
// network) and weftd's store has done its work with the ServiceAccount's
// token, `kubectl get nodes -o custom-columns=...` shows the node's
// podCIDR and backend. Every command of the block must be one the test
// knows.
func TestInstallOnKubernetes(t *testing.T) {
	o := loadKubeManifest(t)
	objects := docBlock(t, "install-kube-objects")
	rows := map[string]string{} // kind → name cell
	for _, line := range strings.Split(objects, "\n") {
		cells := strings.Split(strings.Trim(line, "| "), "|")
		if len(cells) != 3 || strings.HasPrefix(cells[0], "---") || strings.TrimSpace(cells[0]) == "kind" {
			continue
		}
		rows[strings.TrimSpace(cells[0])] = strings.Trim(strings.TrimSpace(cells[1]), "`")
		if strings.TrimSpace(cells[0]) == "ClusterRole" {
			var have []string
			for _, r := range o.role.Rules {
				for _, res := range r.Resources {
					have = append(have, res+": "+strings.Join(r.Verbs, ", "))
				}
			}
			if want := strings.Join(have, "; "); !strings.Contains(cells[2], want) {
				t.Errorf("install.md says the ClusterRole grants %q; weft-kube.yml grants %q", strings.TrimSpace(cells[2]), want)
			}
		}
	}
	ns := o.ds.Namespace
	want := map[string]string{
		"Namespace": ns, "ServiceAccount": o.sa.Namespace + "/" + o.sa.Name, "ClusterRole": o.role.Name,
		"ClusterRoleBinding": o.binding.Name, "ConfigMap": o.cm.Namespace + "/" + o.cm.Name, "DaemonSet": ns + "/" + o.ds.Name,
	}
	for kind, name := range want {
		if rows[kind] != name {
			t.Errorf("install.md's table: %s %q, weft-kube.yml has %q", kind, rows[kind], name)
		}
	}
	if len(rows) != len(want) {
		t.Errorf("install.md's table lists %d objects, weft-kube.yml has %d: %v", len(rows), len(want), rows)
	}
	section := docBlock(t, "install-kube")
	for _, flag := range []string{"--allocate-node-cidrs=true", "--cluster-cidr", "--node-cidr-mask-size"} {
		// The flags kubetest starts the controller manager with.
		if !strings.Contains(docSection(t), flag) {
			t.Errorf("install.md does not name kube-controller-manager's %s", flag)
		}
	}

	c := kubetest.Start(t)
	ctx := kubetest.Ctx(t, 2*time.Minute)
	var columns string
	applied := false
	for _, line := range strings.Split(section, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 0 || strings.HasPrefix(f[0], "#") || strings.HasPrefix(line, "```"):
		case f[0] == "docker" && len(f) > 3 && f[1] == "build" && f[2] == "-f":
			if _, err := os.Stat(filepath.Join("../..", f[3])); err != nil {
				t.Errorf("install.md builds the image from %s: %v", f[3], err)
			}
		case f[0] == "docker" && len(f) == 3 && f[1] == "push":
		case f[0] == "kubectl" && len(f) == 4 && f[1] == "apply" && f[2] == "-f":
			raw, err := os.ReadFile(filepath.Join("../..", f[3]))
			if err != nil {
				t.Fatalf("install.md applies %s: %v", f[3], err)
			}
			if !bytes.Equal(raw, KubeManifest()) {
				t.Errorf("install.md applies %s, not the Kubernetes-mode manifest weft-kube.yml", f[3])
			}
			if err := c.Plane.Apply(ctx, raw); err != nil {
				t.Fatalf("kubectl apply -f %s: %v", f[3], err)
			}
			applied = true
		case f[0] == "kubectl" && len(f) == 6 && f[1] == "-n" && f[3] == "rollout" && f[4] == "status" && strings.HasPrefix(f[5], "ds/"):
			ds, err := c.Client.AppsV1().DaemonSets(f[2]).Get(ctx, strings.TrimPrefix(f[5], "ds/"), metav1.GetOptions{})
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			if ds.Spec.Template.Spec.ServiceAccountName != o.sa.Name {
				t.Errorf("%s: the DaemonSet runs as %q, not weft's ServiceAccount", line, ds.Spec.Template.Spec.ServiceAccountName)
			}
		case f[0] == "kubectl" && len(f) == 5 && f[1] == "get" && f[2] == "nodes" && f[3] == "-o" && strings.HasPrefix(f[4], "custom-columns="):
			columns = strings.Trim(strings.TrimPrefix(f[4], "custom-columns="), "'")
		default:
			t.Errorf("install.md's Kubernetes commands: the test does not know %q; run it here or leave it out", line)
		}
	}
	if !applied || columns == "" {
		t.Fatalf("install.md's Kubernetes commands: no kubectl apply (%v) or no kubectl get nodes -o custom-columns (%q)", applied, columns)
	}

	// The cluster side: the controller manager as the section says, from
	// the network config the API server now holds.
	cm, err := c.Client.CoreV1().ConfigMaps(o.cm.Namespace).Get(ctx, o.cm.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	raw := cm.Data["net-conf.json"]
	cfg := subnettest.MustConfig(t, raw)
	c.ControllerManager(t, cfg.Network.String(), cfg.SubnetLen)
	conf := filepath.Join(t.TempDir(), "net-conf.json")
	if err := os.WriteFile(conf, []byte(raw), 0o644); err != nil {
		t.Fatal(err)
	}
	c.AddNode(t, "rbac-node")
	token := c.ServiceAccountToken(t, o.sa.Namespace, o.sa.Name)
	if err := storeWork(t, c, token, conf, cfg); err != nil {
		t.Fatalf("weftd's store with the applied ServiceAccount: %v", err)
	}
	node, err := c.Client.CoreV1().Nodes().Get(ctx, "rbac-node", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := customColumns(t, columns, node)
	t.Logf("kubectl get nodes -o custom-columns=%s:\n%v", columns, got)
	if got["PODCIDR"] == "" || got["PODCIDR"] != node.Spec.PodCIDR {
		t.Errorf("custom column PODCIDR shows %q, the Node's podCIDR is %q", got["PODCIDR"], node.Spec.PodCIDR)
	}
	if got["BACKEND"] != subnet.BackendVXLAN {
		t.Errorf("custom column BACKEND shows %q, want the backend weftd published (vxlan)", got["BACKEND"])
	}
	if got["NAME"] != node.Name {
		t.Errorf("custom column NAME shows %q", got["NAME"])
	}
}

// docSection is install.md's "Install on Kubernetes" section.
func docSection(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(installDoc)
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	i := strings.Index(s, "\n## Install on Kubernetes\n")
	if i < 0 {
		t.Fatalf("%s has no \"## Install on Kubernetes\" section", installDoc)
	}
	s = s[i+1:]
	if j := strings.Index(s[3:], "\n## "); j >= 0 {
		s = s[:j+3]
	}
	return s
}

// customColumns evaluates kubectl's custom-columns spec (NAME:path,...)
// on node as kubectl does (each path is a JSONPath, braces implied).
func customColumns(t *testing.T, spec string, node *corev1.Node) map[string]string {
	t.Helper()
	raw, err := json.Marshal(node)
	if err != nil {
		t.Fatal(err)
	}
	var obj any
	if err := json.Unmarshal(raw, &obj); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, col := range strings.Split(spec, ",") {
		name, path, ok := strings.Cut(col, ":")
		if !ok {
			t.Fatalf("custom column %q has no NAME:path", col)
		}
		jp := jsonpath.New(name).AllowMissingKeys(true)
		if err := jp.Parse("{" + path + "}"); err != nil {
			t.Fatalf("custom column %s: %v", name, err)
		}
		var b bytes.Buffer
		if err := jp.Execute(&b, obj); err != nil {
			t.Fatalf("custom column %s: %v", name, err)
		}
		out[name] = b.String()
	}
	return out
}
