package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// stopGrace is how long a SIGTERMed process gets before SIGKILL.
const stopGrace = 10 * time.Second

// AddNode adds one node (namespace, weftd, PodsPerNode pods) to a running
// lab and returns it once its weftd is ready and its pods are attached.
func (l *Lab) AddNode(ctx context.Context) (*Node, error) {
	n, err := l.startNode(ctx)
	if err != nil {
		return nil, err
	}
	if err := l.waitNodesReady(ctx, []*Node{n}); err != nil {
		return n, err
	}
	if err := l.waitPeers(ctx); err != nil {
		return n, err
	}
	if err := l.addPods(ctx, n, l.PodsPerNode); err != nil {
		return n, err
	}
	return n, nil
}

// RemoveNode takes a node out of the lab the way an operator decommissions
// one: its pods are deleted through CNI DEL, its weftd is stopped (SIGTERM),
// its lease is released with `weftctl lease release`, and its namespaces and
// files are removed. Peers then drop its routes.
func (l *Lab) RemoveNode(ctx context.Context, name string) error {
	n := l.Node(name)
	if n == nil {
		return fmt.Errorf("lab %s has no node %q", l.Name, name)
	}
	l.progress.step("node %s: removing", n.Name)
	var errs []error
	for _, p := range n.Pods {
		if err := l.cniDel(ctx, n, p); err != nil {
			errs = append(errs, fmt.Errorf("pod %s: cni del: %w", p.Name, err))
		}
	}
	if err := n.daemon().stop(ctx, stopGrace); err != nil {
		errs = append(errs, err)
	}
	if l.Kube != nil {
		// Kubernetes mode: the subnet is the Node's; deleting the Node
		// frees it, as kubectl delete node does.
		if err := l.DeleteKubeNode(ctx, n.Name); err != nil {
			errs = append(errs, err)
		}
	} else if n.Subnet.IsValid() {
		cctx, cancel := context.WithTimeout(ctx, l.timeout)
		_, err := l.weftctl(cctx, "", "lease", "release", n.Subnet.String())
		cancel()
		if err != nil {
			errs = append(errs, err)
		} else {
			l.progress.step("node %s: lease %s released", n.Name, n.Subnet)
		}
	}
	for _, p := range n.Pods {
		if err := delNS(ctx, p.NS); err != nil {
			errs = append(errs, err)
			continue
		}
		l.dropNamespace(p.NS)
	}
	if err := delNS(ctx, n.NS); err != nil {
		errs = append(errs, err)
		_ = l.save()
		return fmt.Errorf("remove node %s: %w", n.Name, errors.Join(errs...))
	}
	// The node is gone from the kernel: it leaves the state even if a step
	// above failed (the error still says which).
	l.dropNamespace(n.NS)
	l.Nodes = slices.DeleteFunc(l.Nodes, func(x *Node) bool { return x == n })
	if err := os.RemoveAll(n.Dir); err != nil {
		errs = append(errs, err)
	}
	if err := l.save(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove node %s: %w", n.Name, err)
	}
	return nil
}

// StopWeftd stops a node's weftd: SIGKILL when kill (a crash), else SIGTERM
// (a clean stop; the lease stays). The node's kernel state and pods stay.
func (l *Lab) StopWeftd(ctx context.Context, name string, kill bool) error {
	n := l.Node(name)
	if n == nil {
		return fmt.Errorf("lab %s has no node %q", l.Name, name)
	}
	if n.Weftd == nil {
		return fmt.Errorf("node %s never ran weftd (it runs %s)", n.Name, n.DaemonName())
	}
	sig := "SIGTERM"
	if kill {
		sig = "SIGKILL"
	}
	l.progress.step("node %s: %s weftd (pid %d)", n.Name, sig, n.Weftd.PID)
	if err := l.stopProc(ctx, n.Weftd, kill); err != nil {
		return fmt.Errorf("node %s: weftd: %w", n.Name, err)
	}
	return nil
}

// StartWeftd starts a stopped node's weftd again, waits until it is ready
// and returns the subnet it holds (a restarted node keeps its lease).
func (l *Lab) StartWeftd(ctx context.Context, name string) (netip.Prefix, error) {
	n := l.Node(name)
	if n == nil {
		return netip.Prefix{}, fmt.Errorf("lab %s has no node %q", l.Name, name)
	}
	if l.alive(n.Weftd) {
		return netip.Prefix{}, fmt.Errorf("node %s: weftd %d is still running", n.Name, n.Weftd.PID)
	}
	if err := l.startWeftd(n); err != nil {
		return netip.Prefix{}, err
	}
	if err := l.waitNodesReady(ctx, []*Node{n}); err != nil {
		return netip.Prefix{}, err
	}
	return n.Subnet, nil
}

// RestartWeftd is StopWeftd then StartWeftd.
func (l *Lab) RestartWeftd(ctx context.Context, name string, kill bool) (netip.Prefix, error) {
	if err := l.StopWeftd(ctx, name, kill); err != nil {
		return netip.Prefix{}, err
	}
	return l.StartWeftd(ctx, name)
}

// Down removes the lab: every process it started, every namespace it made,
// its state directory.
func (l *Lab) Down(ctx context.Context) error {
	return Down(ctx, l.root, l.Name)
}

// Down removes lab name under root: processes recorded in its state (SIGTERM,
// then SIGKILL), any process left in its namespaces, every namespace recorded
// in its state or matching its name pattern (so a missing or corrupt state
// file still leaves nothing behind), and its state directory. It is safe to
// run twice and on a lab whose `up` was killed.
func Down(ctx context.Context, root, name string) error {
	if root == "" {
		root = DefaultStateRoot
	}
	if err := ValidateName(name); err != nil {
		return err
	}
	var errs []error
	nss := map[string]bool{}
	dir := filepath.Join(root, name)
	s, err := loadState(root, name)
	switch {
	case err == nil:
		// Stop weftds and flannelds first (clean stop, as a node
		// shutdown), then the Kubernetes control plane, then etcd.
		errs = append(errs, stopDaemons(ctx, s)...)
		if s.Kube != nil {
			for _, p := range []*Proc{s.Kube.ControllerManager, s.Kube.APIServer} {
				if err := p.stop(ctx, stopGrace); err != nil {
					errs = append(errs, err)
				}
			}
		}
		if err := s.Etcd.Proc.stop(ctx, stopGrace); err != nil {
			errs = append(errs, err)
		}
		for _, n := range s.Namespaces {
			nss[n] = true
		}
	default:
		// No or unreadable state: the sweep below still finds the
		// namespaces, and every process the lab ran lives in one of them.
	}
	all, err := listNamespaces()
	if err != nil {
		errs = append(errs, err)
	}
	pat := labNSPattern(name)
	for _, n := range all {
		if pat.MatchString(n) {
			nss[n] = true
		}
	}
	// Pods before nodes before the switch: each deletion then finds its
	// peers already gone, and nothing dangles in between.
	names := make([]string, 0, len(nss))
	for n := range nss {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int { return len(b) - len(a) })
	for _, n := range names {
		if err := delNS(ctx, n); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab %s down: %w", name, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("lab %s down: %w", name, err)
	}
	return nil
}

// Status checks every process of the lab now: etcd alive, each weftd alive
// and answering /readyz.
func (l *Lab) Status(ctx context.Context) *Status {
	st := &Status{State: &l.State, EtcdAlive: l.alive(l.Etcd.Proc)}
	for _, n := range l.Nodes {
		ns := NodeStatus{Node: n, WeftdAlive: l.alive(n.daemon())}
		url := "http://" + healthzAddr + "/readyz"
		if n.Flannel {
			url = fmt.Sprintf("http://127.0.0.1:%d/healthz", flannelHealthzPort)
		}
		if ns.WeftdAlive {
			ns.Ready = httpOK(ctx, httpClientIn(n.NS, time.Second), url)
		}
		st.Nodes = append(st.Nodes, ns)
	}
	return st
}
