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
	k.URL = "https://" + netip.AddrPortFrom(l.Etcd.Addr, kubePort).String()
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
	pn, err := l.podNetwork()
	if err != nil {
		return err
	}
	l.progress.step("kubernetes: kube-controller-manager assigning %s", pn)
	if err := p.StartControllerManager(pn.network, pn.network6, pn.sublen, pn.sublen6); err != nil {
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
		ServiceCIDR: l.serviceCIDR(),
		NetNS:       l.Etcd.NS,
		Dial:        httpClientIn(l.Etcd.NS, 5*time.Second).Transport.(*http.Transport).DialContext,
		Detach:      true,
		// Every request of weftd's ServiceAccount, in kube/audit.log.
		AuditUsers: []string{"system:serviceaccount:weft-system:weft"},
	}
}

// kubeServiceCIDR6 is the Service range of an IPv6-only lab: the API
// server's Service addresses are of its own family.
const kubeServiceCIDR6 = "fd00:10:96::/112"

// serviceCIDR is the lab's --service-cluster-ip-range: kubeplane's
// default, or kubeServiceCIDR6 in an IPv6-only lab.
func (l *Lab) serviceCIDR() netip.Prefix {
	if l.IPv6Only {
		return netip.MustParsePrefix(kubeServiceCIDR6)
	}
	return netip.Prefix{}
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
			"addresses":  nodeAddresses(n),
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

// nodeAddresses are n's Node status addresses, as kubelet reports them:
// an InternalIP per underlay family.
func nodeAddresses(n *Node) []map[string]string {
	var a []map[string]string
	for _, ip := range []netip.Addr{n.Underlay, n.UnderlayV6} {
		if ip.IsValid() {
			a = append(a, map[string]string{"type": "InternalIP", "address": ip.String()})
		}
	}
	return a
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

// podNetwork is what kube-controller-manager hands out podCIDRs of: the
// lab network's families and their subnet lengths, as weftd reads them
// from the config file (network or network6 zero for a family it lacks).
type podNetwork struct {
	network, network6 netip.Prefix
	sublen, sublen6   int
}

func (p podNetwork) String() string {
	var s []string
	if p.network.IsValid() {
		s = append(s, fmt.Sprintf("/%d podCIDRs of %s", p.sublen, p.network))
	}
	if p.network6.IsValid() {
		s = append(s, fmt.Sprintf("/%d podCIDRs of %s", p.sublen6, p.network6))
	}
	return strings.Join(s, " and ")
}

func (l *Lab) podNetwork() (podNetwork, error) {
	c, err := subnet.ParseConfig([]byte(l.networkConfig()))
	if err != nil {
		return podNetwork{}, err
	}
	var p podNetwork
	if c.EnableIPv4 {
		p.network, p.sublen = c.Network, c.SubnetLen
	}
	if c.EnableIPv6 {
		p.network6, p.sublen6 = c.IPv6Network, c.IPv6SubnetLen
	}
	return p, nil
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
	return l.stopProc(ctx, l.Kube.APIServer, kill)
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
