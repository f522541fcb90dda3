package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/weftnet/weft/subnet"
)

// Options configure a Manager.
type Options struct {
	// Nodes reaches the API server's Node objects (NewNodes, or a
	// clientset's CoreV1().Nodes()). Required.
	Nodes Nodes
	// NodeName is the name of this node's Node object (Flannel's NODE_NAME,
	// from the downward API). Required for AcquireLease, RenewLease and
	// MarkNetworkAvailable; a Manager that only lists and watches (an
	// operator's) may leave it empty.
	NodeName string
	// AnnotationPrefix; DefaultAnnotationPrefix when empty.
	AnnotationPrefix string
	// NetConfigPath is the network config file (the mounted ConfigMap).
	// Required.
	NetConfigPath string
	// Logger; discarded when nil.
	Logger *slog.Logger
}

// Manager is subnet.Manager on the Kubernetes API. Safe for concurrent use.
type Manager struct {
	nodes    Nodes // observed by reach
	reach    *reach
	nodeName string
	ann      annotations
	confPath string
	log      *slog.Logger

	refused   atomic.Int64
	mu        sync.Mutex
	watchErrs int64             // list and watch requests of WatchLeases that failed; guarded by mu
	watchErr  error             // the last of them; guarded by mu
	reasons   map[string]string // node name → why its lease was last refused; guarded by mu
	waitNoted string            // what AcquireLease last said it waits for; guarded by mu
}

var _ subnet.Manager = (*Manager)(nil)

// New checks opts and returns a Manager. It starts nothing and makes no
// request.
func New(opts Options) (*Manager, error) {
	if opts.Nodes == nil {
		return nil, errors.New("kubernetes store: no API client")
	}
	if opts.NetConfigPath == "" {
		return nil, errors.New("kubernetes store: no network config path; pass --net-config-path (the mounted ConfigMap's net-conf.json)")
	}
	prefix := opts.AnnotationPrefix
	if prefix == "" {
		prefix = DefaultAnnotationPrefix
	}
	ann, err := newAnnotations(prefix)
	if err != nil {
		return nil, fmt.Errorf("kubernetes store: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &reach{log: log}
	return &Manager{
		nodes: observed{opts.Nodes, r}, reach: r, nodeName: opts.NodeName, ann: ann, confPath: opts.NetConfigPath,
		log: log, reasons: make(map[string]string),
	}, nil
}

// AnnotationPrefix is the prefix the annotation names start with (with its
// separator, e.g. "flannel.alpha.coreos.com/").
func (m *Manager) AnnotationPrefix() string { return m.ann.prefix }

// WatchErrors returns how many list and watch requests of WatchLeases
// failed (other than for a version too old, which is routine), and the
// last such error.
func (m *Manager) WatchErrors() (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.watchErrs, m.watchErr
}

func (m *Manager) noteWatchError(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.watchErrs++
	m.watchErr = err
}

// Refused counts Node objects whose annotations were refused as corrupt
// (each time a Node was read in that state).
func (m *Manager) Refused() int64 { return m.refused.Load() }

// GetNetworkConfig implements subnet.Manager: it reads and validates the
// network config file. A missing file wraps subnet.ErrNoConfig. The config
// does not live on the API server, but a caller takes a read as the store
// answering (weftd restores its last known state when it does not): so
// unless the last request to the API server was answered, it asks the
// server (this node's Node, or one Node) and fails, wrapping
// subnet.ErrUnreachable, when that gets no answer. While the watch is
// healthy it makes no request.
func (m *Manager) GetNetworkConfig(ctx context.Context) (*subnet.Config, error) {
	raw, err := os.ReadFile(m.confPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("network config %s: %w; mount the ConfigMap's net-conf.json there or pass --net-config-path", m.confPath, subnet.ErrNoConfig)
	}
	if err != nil {
		return nil, fmt.Errorf("network config: %w", err)
	}
	c, err := subnet.ParseConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("network config %s: %w", m.confPath, err)
	}
	if !m.reach.isUp() {
		if err := m.probe(ctx); err != nil {
			return nil, fmt.Errorf("network config %s: the Kubernetes API does not answer: %w: %w", m.confPath, subnet.ErrUnreachable, err)
		}
	}
	return c, nil
}

// probe makes one small request; nil when the API server answered it
// (with anything: a Node not found or a request refused is an answer).
func (m *Manager) probe(ctx context.Context) error {
	var err error
	if m.nodeName != "" {
		_, err = m.nodes.Get(ctx, m.nodeName, metav1.GetOptions{})
	} else {
		_, err = m.nodes.List(ctx, metav1.ListOptions{Limit: 1})
	}
	if err == nil || answered(err) {
		return nil
	}
	return err
}

// SetNetworkConfig implements subnet.Manager: the API has no place for it.
func (m *Manager) SetNetworkConfig(ctx context.Context, raw []byte) error {
	return fmt.Errorf("set network config: %w: in Kubernetes mode the network config is the file %s; edit the ConfigMap it is mounted from",
		errors.ErrUnsupported, m.confPath)
}

// ReleaseLease implements subnet.Manager: a node's subnet is its podCIDR,
// owned by kube-controller-manager.
func (m *Manager) ReleaseLease(ctx context.Context, sn netip.Prefix) error {
	return fmt.Errorf("release lease %s: %w: in Kubernetes mode a subnet is a Node's podCIDR; delete the Node to free it",
		sn, errors.ErrUnsupported)
}

// ReserveSubnet implements subnet.Manager: reservations do not exist in
// the API.
func (m *Manager) ReserveSubnet(ctx context.Context, sn netip.Prefix, publicIP netip.Addr) error {
	return fmt.Errorf("reserve subnet %s: %w: in Kubernetes mode kube-controller-manager assigns each Node its podCIDR; set spec.podCIDR when creating the Node instead",
		sn, errors.ErrUnsupported)
}

// AcquireLease implements subnet.Manager for the node NodeName: it waits
// until that Node exists and has a podCIDR (logging once what it waits
// for), checks the podCIDR against req.Config, and publishes req.Attrs as
// the Node's annotations. The subnet is never chosen here, so req.Previous
// is not used: a restarted node gets its podCIDR again. The lease has no
// TTL (it is Reserved).
func (m *Manager) AcquireLease(ctx context.Context, req subnet.AcquireRequest) (*subnet.Lease, error) {
	if err := subnet.ValidateAcquire(req); err != nil {
		return nil, err
	}
	if m.nodeName == "" {
		return nil, errors.New("acquire lease: no node name; set NODE_NAME to this node's Node object (downward API spec.nodeName)")
	}
	n, err := m.waitPodCIDR(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquire lease for node %s: %w", m.nodeName, err)
	}
	sn, sn6, err := m.fit(n, req.Config)
	if err != nil {
		return nil, fmt.Errorf("acquire lease for node %s: %w", m.nodeName, err)
	}
	l, err := m.publish(ctx, n, req.Attrs)
	if err != nil {
		return nil, fmt.Errorf("acquire lease for node %s: %w", m.nodeName, err)
	}
	l.Subnet, l.IPv6Subnet = sn, sn6
	l.CreateRevision = createRevision(n)
	m.log.Info("lease is the node's podCIDR", "node", m.nodeName, "subnet", sn, "ipv6Subnet", sn6, "publicIP", l.Attrs.PublicIP)
	return l, nil
}

// fit returns the Node's podCIDRs that req's network uses, or an error
// saying how the network config and the controller manager disagree.
func (m *Manager) fit(n *corev1.Node, cfg *subnet.Config) (sn, sn6 netip.Prefix, err error) {
	sn, sn6, err = podCIDRs(n)
	if err != nil {
		return sn, sn6, err
	}
	inside := func(p, network netip.Prefix) bool {
		return p.IsValid() && network.Contains(p.Addr()) && p.Bits() >= network.Bits()
	}
	if cfg.EnableIPv4 {
		if !inside(sn, cfg.Network) {
			return sn, sn6, fmt.Errorf("the node's IPv4 podCIDR %v is not inside Network %s of the network config; make Network the controller manager's --cluster-cidr", podCIDRText(sn), cfg.Network)
		}
	} else {
		sn = netip.Prefix{}
	}
	if cfg.EnableIPv6 {
		if !inside(sn6, cfg.IPv6Network) {
			return sn, sn6, fmt.Errorf("the node's IPv6 podCIDR %v is not inside IPv6Network %s of the network config; give the controller manager an IPv6 --cluster-cidr inside it", podCIDRText(sn6), cfg.IPv6Network)
		}
	} else {
		sn6 = netip.Prefix{}
	}
	return sn, sn6, nil
}

func podCIDRText(p netip.Prefix) string {
	if !p.IsValid() {
		return "(none)"
	}
	return p.String()
}

// publish writes the annotations for attrs onto n if they differ, and
// returns the lease as peers will read it.
func (m *Manager) publish(ctx context.Context, n *corev1.Node, attrs subnet.LeaseAttrs) (*subnet.Lease, error) {
	set, pub, err := m.ann.publish(n.Annotations, attrs)
	if err != nil {
		return nil, err
	}
	rv := n.ResourceVersion
	if len(set) > 0 {
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": set}})
		if err != nil {
			return nil, err
		}
		// Through nodes/status, as Flannel does: the ClusterRole then needs
		// no write access to the Node's spec.
		pn, err := m.nodes.Patch(ctx, m.nodeName, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
		if err != nil {
			return nil, fmt.Errorf("publish annotations: %w", hint(err))
		}
		rv = pn.ResourceVersion
	}
	return &subnet.Lease{Attrs: pub, Revision: revision(rv)}, nil
}

// waitPodCIDR returns this node's Node once it exists and has a podCIDR.
// While it waits it says once what for; it watches the one Node rather
// than polling.
func (m *Manager) waitPodCIDR(ctx context.Context) (*corev1.Node, error) {
	nodes := m.nodes
	sel := fields.OneTermEqualSelector("metadata.name", m.nodeName).String()
	for {
		list, err := nodes.List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			return nil, hint(err)
		}
		var n *corev1.Node
		if len(list.Items) > 0 {
			n = &list.Items[0]
			if hasPodCIDR(n) {
				m.noteWait("")
				return n, nil
			}
			m.noteWait("waiting for kube-controller-manager to assign the node a podCIDR (it must run with --allocate-node-cidrs and --cluster-cidr)")
		} else {
			m.noteWait("waiting for the Node object to be registered; NODE_NAME must be its name")
		}
		w, err := nodes.Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: list.ResourceVersion})
		if err != nil {
			return nil, hint(err)
		}
		n, err = untilPodCIDR(ctx, w)
		w.Stop()
		if n != nil {
			m.noteWait("")
			return n, nil
		}
		if err != nil {
			return nil, err
		}
		// The watch ended (timeout, too old a version): list again.
	}
}

// untilPodCIDR reads w until a Node with a podCIDR comes, the watch ends
// (nil, nil) or ctx is done.
func untilPodCIDR(ctx context.Context, w watch.Interface) (*corev1.Node, error) {
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case ev, ok := <-w.ResultChan():
			if !ok || ev.Type == watch.Error {
				return nil, nil
			}
			if n, isNode := ev.Object.(*corev1.Node); isNode && ev.Type != watch.Deleted && hasPodCIDR(n) {
				return n, nil
			}
		}
	}
}

func hasPodCIDR(n *corev1.Node) bool { return n.Spec.PodCIDR != "" || len(n.Spec.PodCIDRs) > 0 }

// noteWait logs what AcquireLease waits for once, and its end.
func (m *Manager) noteWait(what string) {
	m.mu.Lock()
	prev := m.waitNoted
	m.waitNoted = what
	m.mu.Unlock()
	switch {
	case what != "" && what != prev:
		m.log.Info(what, "node", m.nodeName)
	case what == "" && prev != "":
		m.log.Info("the node has its podCIDR", "node", m.nodeName)
	}
}

// RenewLease implements subnet.Manager. A Node lease has no TTL: renewal
// checks that the Node still exists with the same podCIDR (else the lease
// is lost: ErrLeaseLost) and writes the annotations again if someone
// changed them. Unlike the etcd store it does not compare l.Revision:
// kubelet and controllers rewrite Node objects all the time, and only this
// node publishes this Node's lease.
func (m *Manager) RenewLease(ctx context.Context, l *subnet.Lease, ttl time.Duration) error {
	if m.nodeName == "" {
		return errors.New("renew lease: no node name")
	}
	n, err := m.nodes.Get(ctx, m.nodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("renew lease %s: node %s was deleted: %w", l.Subnet, m.nodeName, subnet.ErrLeaseLost)
	}
	if err != nil {
		return fmt.Errorf("renew lease %s: %w", l.Subnet, hint(err))
	}
	sn, sn6, err := podCIDRs(n)
	if err != nil {
		return fmt.Errorf("renew lease %s: node %s: %v: %w", l.Subnet, m.nodeName, err, subnet.ErrLeaseLost)
	}
	if (l.Subnet.IsValid() && sn != l.Subnet) || (l.IPv6Subnet.IsValid() && sn6 != l.IPv6Subnet) {
		return fmt.Errorf("renew lease %s: node %s now has podCIDRs %v: %w", l.Subnet, m.nodeName, n.Spec.PodCIDRs, subnet.ErrLeaseLost)
	}
	nl, err := m.publish(ctx, n, l.Attrs)
	if err != nil {
		return fmt.Errorf("renew lease %s: %w", l.Subnet, err)
	}
	l.Attrs, l.Revision = nl.Attrs, nl.Revision
	return nil
}

// ListLeases implements subnet.Manager: every Node that publishes a lease.
// Nodes with corrupt annotations are left out (and reported once).
func (m *Manager) ListLeases(ctx context.Context) ([]subnet.Lease, int64, error) {
	var out []subnet.Lease
	opts := metav1.ListOptions{Limit: listChunk}
	for {
		list, err := m.nodes.List(ctx, opts)
		if err != nil {
			return nil, 0, fmt.Errorf("list nodes: %w", hint(err))
		}
		for i := range list.Items {
			if l, ok := m.nodeLease(&list.Items[i]); ok {
				out = append(out, l)
			}
		}
		if list.Continue == "" {
			return out, revision(list.ResourceVersion), nil
		}
		opts.Continue = list.Continue
	}
}

// listChunk is the page size of ListLeases.
const listChunk = 500

// nodeLease is the lease n publishes, if it publishes a valid one. A
// refusal is reported once per node and reason, and counted.
func (m *Manager) nodeLease(n *corev1.Node) (subnet.Lease, bool) {
	l, err := m.ann.lease(n)
	reason := ""
	if err != nil && !errors.Is(err, errNotPublished) {
		reason = err.Error()
		m.refused.Add(1)
	}
	m.mu.Lock()
	prev, had := m.reasons[n.Name]
	if reason == "" {
		delete(m.reasons, n.Name)
	} else {
		m.reasons[n.Name] = reason
	}
	m.mu.Unlock()
	switch {
	case reason != "" && reason != prev:
		m.log.Warn("refusing the lease of a node with corrupt annotations; fix them or let its node daemon rewrite them",
			"node", n.Name, "reason", reason)
	case reason == "" && had && err == nil:
		m.log.Info("node's annotations are valid again", "node", n.Name)
	}
	return l, err == nil
}

// forget drops what is remembered about a deleted Node.
func (m *Manager) forget(name string) {
	m.mu.Lock()
	delete(m.reasons, name)
	m.mu.Unlock()
}

// MarkNetworkAvailable sets the Node's NetworkUnavailable condition to
// False: the pod network is up on this node. kubelet and cloud providers
// set it True until a network plugin says otherwise.
func (m *Manager) MarkNetworkAvailable(ctx context.Context) error {
	if m.nodeName == "" {
		return errors.New("mark network available: no node name")
	}
	now := metav1.Now()
	cond := corev1.NodeCondition{
		Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse,
		Reason: "WeftIsUp", Message: "weft is running on this node",
		LastTransitionTime: now, LastHeartbeatTime: now,
	}
	// A strategic merge patch merges conditions by type, leaving the others.
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{cond}}})
	if err != nil {
		return err
	}
	if _, err := m.nodes.Patch(ctx, m.nodeName, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		return fmt.Errorf("mark network available on node %s: %w", m.nodeName, hint(err))
	}
	return nil
}

// hint adds what to do to the API errors a user can fix.
func hint(err error) error {
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%w (weftd's ServiceAccount needs the ClusterRole of deploy/kubernetes/weft-kube.yml: nodes get, list, watch; nodes/status patch)", err)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("%w (the API server refused weftd's credentials; check the ServiceAccount token or --kubeconfig-file)", err)
	}
	return err
}
