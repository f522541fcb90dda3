package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	deploykube "github.com/weftnet/weft/deploy/kubernetes"
	"github.com/weftnet/weft/internal/kubeplane"
	"github.com/weftnet/weft/subnet"
)

// kubePort is the lab API server's port, on the etcd namespace's address.
const kubePort = 6443

// kubeTokenLife is how long the weft ServiceAccount token of a lab lasts.
const kubeTokenLife = 7 * 24 * time.Hour

// startKube starts the lab's Kubernetes control plane in the etcd
// namespace, on the lab's etcd: kube-apiserver (token auth, RBAC) and
// kube-controller-manager assigning /SubnetLen podCIDRs of the lab's
// network. It creates weftd's ServiceAccount and RBAC from the Kubernetes
// mode manifest and a kubeconfig with that account's token, so every weftd
// runs with exactly the rights a cluster gives it, and writes the network
// config file weftd reads.
func (l *Lab) startKube(ctx context.Context) error {
	if err := kubeplane.CheckBinaries(); err != nil {
		return fmt.Errorf("--kube: %w", err)
	}
	k := &Kube{Dir: filepath.Join(l.Dir, "kube"), NetConfig: filepath.Join(l.Dir, "net-conf.json")}
	k.URL = fmt.Sprintf("https://%s:%d", l.Etcd.Addr, kubePort)
	k.WeftKubeconfig = filepath.Join(k.Dir, "weft.kubeconfig")
	l.Kube = k
	if err := l.save(); err != nil {
		return err
	}
	cfg := l.networkConfig()
	l.progress.step("config: %s (%s)", cfg, k.NetConfig)
	if err := os.WriteFile(k.NetConfig, []byte(cfg), 0o644); err != nil {
		return err
	}
	l.progress.step("kubernetes: kube-apiserver %s in namespace %s", k.URL, l.Etcd.NS)
	p, err := kubeplane.Start(ctx, l.kubeOptions())
	if err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}
	if k.APIServer, err = newProc(p.APIServerPID(), "kube-apiserver"); err != nil {
		return err
	}
	if err := l.save(); err != nil {
		return err
	}
	network, sublen, err := l.podNetwork()
	if err != nil {
		return err
	}
	l.progress.step("kubernetes: kube-controller-manager assigning /%d podCIDRs of %s", sublen, network)
	if err := p.StartControllerManager(network, netip.Prefix{}, sublen, 0); err != nil {
		return err
	}
	if k.ControllerManager, err = newProc(p.ControllerManagerPID(), "kube-controller-manager"); err != nil {
		return err
	}
	if err := l.save(); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	if err := p.Apply(cctx, deploykube.KubeManifest(), "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"); err != nil {
		return fmt.Errorf("weft's ServiceAccount and RBAC: %w", err)
	}
	token, err := p.ServiceAccountToken(cctx, "weft-system", "weft", kubeTokenLife)
	if err != nil {
		return err
	}
	if err := p.WriteKubeconfig(k.WeftKubeconfig, token); err != nil {
		return err
	}
	return l.save()
}

func (l *Lab) kubeOptions() kubeplane.Options {
	return kubeplane.Options{
		Dir:         l.Kube.Dir,
		EtcdServers: strings.Split(l.Etcd.Endpoint, ","),
		Addr:        l.Etcd.Addr,
		Port:        kubePort,
		NetNS:       l.Etcd.NS,
		Dial:        httpClientIn(l.Etcd.NS, 5*time.Second).Transport.(*http.Transport).DialContext,
		Detach:      true,
		// Every request of weftd's ServiceAccount, in kube/audit.log.
		AuditUsers: []string{"system:serviceaccount:weft-system:weft"},
	}
}

// KubeAdmin is an admin connection to the lab's API server (Kubernetes
// mode only).
func (l *Lab) KubeAdmin() (*kubeplane.Plane, error) {
	if l.Kube == nil {
		return nil, fmt.Errorf("lab %s is not in Kubernetes mode", l.Name)
	}
	return l.kubeAdmin()
}

// kubeAdmin is an admin connection to the running lab API server.
func (l *Lab) kubeAdmin() (*kubeplane.Plane, error) {
	return kubeplane.Connect(l.kubeOptions(), l.Kube.URL)
}

// registerNode creates the Node object of n, as kubelet does when it
// joins: no podCIDR (the controller manager assigns one) and the
// NetworkUnavailable condition weftd is to clear. Like kubelet's it
// carries an annotation: flanneld --kube-subnet-mgr (v0.28.9) panics on a
// Node without any (it writes into the nil map).
func (l *Lab) registerNode(ctx context.Context, n *Node) error {
	p, err := l.kubeAdmin()
	if err != nil {
		return err
	}
	obj, _ := json.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "Node",
		"metadata": map[string]any{
			"name": n.Name, "labels": map[string]string{"kubernetes.io/hostname": n.Name},
			"annotations": map[string]string{"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
		},
		"status": map[string]any{
			"addresses":  []map[string]string{{"type": "InternalIP", "address": n.Underlay.String()}},
			"conditions": []map[string]string{{"type": "NetworkUnavailable", "status": "True", "reason": "NoRouteCreated", "message": "registered by the lab"}},
		},
	})
	cctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	if err := p.Create(cctx, "/api/v1/nodes", obj); err != nil {
		return fmt.Errorf("node %s: register Node: %w", n.Name, err)
	}
	return nil
}

// DeleteKubeNode deletes node name's Node object (an operator's kubectl
// delete node): its peers drop it.
func (l *Lab) DeleteKubeNode(ctx context.Context, name string) error {
	if l.Kube == nil {
		return fmt.Errorf("lab %s is not in Kubernetes mode", l.Name)
	}
	p, err := l.kubeAdmin()
	if err != nil {
		return err
	}
	code, body, err := p.Do(ctx, http.MethodDelete, "/api/v1/nodes/"+name, nil)
	if err != nil {
		return err
	}
	if code/100 != 2 && code != http.StatusNotFound {
		return fmt.Errorf("delete node %s: HTTP %d: %.200s", name, code, body)
	}
	l.progress.step("kubernetes: Node %s deleted", name)
	return nil
}

// KubeNode returns node name's Node object as JSON-decoded into v.
func (l *Lab) KubeNode(ctx context.Context, name string, v any) error {
	p, err := l.kubeAdmin()
	if err != nil {
		return err
	}
	code, body, err := p.Do(ctx, http.MethodGet, "/api/v1/nodes/"+name, nil)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("get node %s: HTTP %d: %.200s", name, code, body)
	}
	return json.Unmarshal(body, v)
}

// podNetwork is the lab network and its subnet length, as weftd reads
// them from the config file.
func (l *Lab) podNetwork() (netip.Prefix, int, error) {
	c, err := subnet.ParseConfig([]byte(l.networkConfig()))
	if err != nil {
		return netip.Prefix{}, 0, err
	}
	return c.Network, c.SubnetLen, nil
}

// kubeWeftdArgs are weftd's store flags in Kubernetes mode.
func (l *Lab) kubeWeftdArgs() []string {
	return []string{"--kube-subnet-mgr", "--kubeconfig-file", l.Kube.WeftKubeconfig, "--net-config-path", l.Kube.NetConfig}
}

// StopKubeAPIServer stops the lab's kube-apiserver: SIGKILL when kill,
// else SIGTERM. etcd keeps its data; StartKubeAPIServer brings it back.
func (l *Lab) StopKubeAPIServer(ctx context.Context, kill bool) error {
	if l.Kube == nil {
		return fmt.Errorf("lab %s is not in Kubernetes mode", l.Name)
	}
	l.progress.step("kubernetes: stopping kube-apiserver (pid %d, kill=%v)", l.Kube.APIServer.PID, kill)
	return stopProc(ctx, l.Kube.APIServer, kill)
}

// StartKubeAPIServer starts the lab's kube-apiserver again, with the same
// address, certificates and tokens, and waits until it is ready.
func (l *Lab) StartKubeAPIServer(ctx context.Context) error {
	if l.Kube == nil {
		return fmt.Errorf("lab %s is not in Kubernetes mode", l.Name)
	}
	if l.alive(l.Kube.APIServer) {
		return fmt.Errorf("kube-apiserver %d is still running", l.Kube.APIServer.PID)
	}
	p, err := l.kubeAdmin()
	if err != nil {
		return err
	}
	if err := p.StartAPIServer(ctx); err != nil {
		return err
	}
	if l.Kube.APIServer, err = newProc(p.APIServerPID(), "kube-apiserver"); err != nil {
		return err
	}
	l.progress.step("kubernetes: kube-apiserver started again (pid %d)", l.Kube.APIServer.PID)
	return l.save()
}

// PatchKubeNode applies a JSON merge patch to node name's Node object (to
// its status subresource when status), as an operator or another agent
// would.
func (l *Lab) PatchKubeNode(ctx context.Context, name string, status bool, patch string) error {
	if l.Kube == nil {
		return fmt.Errorf("lab %s is not in Kubernetes mode", l.Name)
	}
	p, err := l.kubeAdmin()
	if err != nil {
		return err
	}
	path := "/api/v1/nodes/" + name
	if status {
		path += "/status"
	}
	code, body, err := p.DoContent(ctx, http.MethodPatch, path, "application/merge-patch+json", []byte(patch))
	if err != nil {
		return err
	}
	if code/100 != 2 {
		return fmt.Errorf("patch node %s: HTTP %d: %.200s", name, code, body)
	}
	return nil
}
