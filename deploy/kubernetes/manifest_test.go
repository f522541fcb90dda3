package kubernetes

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/weftnet/weft/internal/flagenv"
	"github.com/weftnet/weft/subnet"
)

// The parts of the Kubernetes objects the test looks at.
type (
	object struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
		Data map[string]string `json:"data"`
		Spec struct {
			Template struct {
				Spec podSpec `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	podSpec struct {
		HostNetwork    bool        `json:"hostNetwork"`
		InitContainers []container `json:"initContainers"`
		Containers     []container `json:"containers"`
		Volumes        []struct {
			Name     string `json:"name"`
			HostPath *struct {
				Path string `json:"path"`
			} `json:"hostPath"`
		} `json:"volumes"`
	}
	container struct {
		Name    string   `json:"name"`
		Image   string   `json:"image"`
		Command []string `json:"command"`
		Env     []struct {
			Name string `json:"name"`
		} `json:"env"`
		SecurityContext struct {
			Privileged bool `json:"privileged"`
		} `json:"securityContext"`
		VolumeMounts []struct {
			Name      string `json:"name"`
			MountPath string `json:"mountPath"`
		} `json:"volumeMounts"`
	}
)

func loadManifest(t *testing.T, name string) map[string]object {
	t.Helper()
	raw, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	objs := map[string]object{}
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1) {
		// Strict: a duplicated key is an error, not a silent overwrite.
		var generic map[string]any
		if err := yaml.UnmarshalStrict([]byte(doc), &generic); err != nil {
			t.Fatalf("document %d does not parse: %v", i, err)
		}
		if generic == nil {
			continue // comments only
		}
		var o object
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
			t.Fatalf("document %d lacks apiVersion, kind or name: %+v", i, o)
		}
		if o.Kind != "Namespace" && o.Metadata.Namespace != "weft-system" {
			t.Errorf("%s %s is not in weft-system", o.Kind, o.Metadata.Name)
		}
		objs[o.Kind] = o
	}
	return objs
}

func TestManifest(t *testing.T) {
	objs := loadManifest(t, "weft.yml")
	for _, kind := range []string{"Namespace", "ConfigMap", "Job", "DaemonSet"} {
		if _, ok := objs[kind]; !ok {
			t.Fatalf("manifest has no %s", kind)
		}
	}

	cm := objs["ConfigMap"]
	if _, err := subnet.ParseConfig([]byte(cm.Data["net-conf.json"])); err != nil {
		t.Errorf("ConfigMap net-conf.json is not a valid network config: %v", err)
	}
	if cm.Data["etcd-endpoints"] == "" {
		t.Error("ConfigMap has no etcd-endpoints")
	}

	job := objs["Job"].Spec.Template.Spec
	if !job.HostNetwork || len(job.Containers) != 1 {
		t.Fatalf("config Job must run one container on the host network: %+v", job)
	}
	if cmd := strings.Join(job.Containers[0].Command, " "); !strings.Contains(cmd, "weftctl config set /etc/weft/net-conf.json") {
		t.Errorf("config Job runs %q, want weftctl config set of the ConfigMap's file", cmd)
	}

	ds := objs["DaemonSet"].Spec.Template.Spec
	if !ds.HostNetwork {
		t.Error("DaemonSet must use the host network")
	}
	if len(ds.Containers) != 1 || ds.Containers[0].Command[0] != "/usr/local/bin/weftd" || !ds.Containers[0].SecurityContext.Privileged {
		t.Fatalf("DaemonSet must run one privileged weftd: %+v", ds.Containers)
	}
	weftd := ds.Containers[0]
	envs := map[string]bool{}
	for _, e := range weftd.Env {
		envs[e.Name] = true
	}
	for _, want := range []string{"WEFTD_ETCD_ENDPOINTS", "WEFTD_PUBLIC_IP"} {
		if !envs[want] {
			t.Errorf("weftd container does not set %s", want)
		}
	}
	mounts := map[string]string{}
	for _, m := range weftd.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	hostPaths := map[string]string{}
	for _, v := range ds.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	// weftd writes the subnet file and the conflist where the CNI plugin
	// and the runtime on the host read them, and keeps its state (and reads
	// the plugin's IPAM store) on the host's disk.
	for _, p := range []string{"/run/weft", "/etc/cni/net.d", "/var/lib/weft"} {
		if hostPaths[mounts[p]] != p {
			t.Errorf("weftd's %s is not the host's %s (mount %q → %q)", p, p, mounts[p], hostPaths[mounts[p]])
		}
	}
	if len(ds.InitContainers) != 1 {
		t.Fatalf("want one init container installing the CNI binaries, have %d", len(ds.InitContainers))
	}
	ic := ds.InitContainers[0]
	script := strings.Join(ic.Command, " ")
	for _, b := range []string{"weft", "portmap"} {
		if !strings.Contains(script, b) {
			t.Errorf("init container does not install %s: %q", b, script)
		}
	}
	if len(ic.VolumeMounts) != 1 || hostPaths[ic.VolumeMounts[0].Name] != "/opt/cni/bin" ||
		!strings.Contains(script, ic.VolumeMounts[0].MountPath) {
		t.Errorf("init container must copy into the host's /opt/cni/bin: %+v", ic.VolumeMounts)
	}
	for _, c := range []container{weftd, ic, job.Containers[0]} {
		if c.Image != weftd.Image {
			t.Errorf("container %s runs %s, weftd %s: use one image", c.Name, c.Image, weftd.Image)
		}
	}
}

// TestManifestVariablesNameRealFlags catches a misspelt WEFTD_/WEFTCTL_
// variable, which flagenv would silently never read.
func TestManifestVariablesNameRealFlags(t *testing.T) {
	for _, manifest := range []string{"weft.yml", "weft-kube.yml"} {
		raw, err := os.ReadFile(manifest)
		if err != nil {
			t.Fatal(err)
		}
		checkManifestVariables(t, manifest, raw)
	}
}

func checkManifestVariables(t *testing.T, manifest string, raw []byte) {
	for _, tc := range []struct{ prefix, dir string }{{"WEFTD", "../../cmd/weftd"}, {"WEFTCTL", "../../cmd/weftctl"}} {
		vars := map[string]bool{}
		for _, name := range flagNames(t, tc.dir) {
			vars[flagenv.VarName(tc.prefix, name)] = true
		}
		if len(vars) < 5 {
			t.Fatalf("found only %d flags in %s", len(vars), tc.dir)
		}
		// Commented-out variables count too: they are instructions.
		for _, m := range regexp.MustCompile(`\b`+tc.prefix+`_[A-Z0-9_]+\b`).FindAll(raw, -1) {
			if !vars[string(m)] {
				t.Errorf("%s sets %s, which is no %s flag", manifest, m, strings.ToLower(tc.prefix))
			}
		}
	}
}

// flagNames extracts the names of the flags defined in the Go files of dir.
func flagNames(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	def := regexp.MustCompile(`fs\.(?:String|Bool|Int|Duration|Text|Func|Uint)\w*\((?:&[\w.]+, )?"([a-z0-9-]+)"`)
	var names []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range def.FindAllSubmatch(src, -1) {
			names = append(names, string(bytes.Clone(m[1])))
		}
	}
	return names
}
