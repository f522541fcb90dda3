package lab

// Fault injection for the reliability suite (e2e/reliability): stop, start,
// freeze and thaw etcd, or stop and start one member of an etcd cluster,
// start a node without waiting for it, reboot a node (its namespaces and
// kernel state gone, its disk kept), CNI GC, and dialing from inside a lab
// namespace.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
)

// MaxEtcdMembers bounds Options.EtcdMembers.
const MaxEtcdMembers = 5

const etcdPeerPort = 2380

// EtcdMember is one member of a lab's etcd cluster. Every member runs in
// the etcd namespace on its own underlay address (198.19.X.2, .3, …).
type EtcdMember struct {
	Name      string `json:"name"` // m1, m2, …
	ClientURL string `json:"clientURL"`
	PeerURL   string `json:"peerURL"`
	DataDir   string `json:"dataDir"`
	Log       string `json:"log"`
	Proc      *Proc  `json:"proc,omitempty"`
}

// startEtcdMembers starts the single etcd (members ≤ 1) or a cluster.
func (l *Lab) startEtcdMembers(ctx context.Context, members int) error {
	if members <= 1 {
		return l.startEtcd(ctx)
	}
	if members > MaxEtcdMembers {
		return fmt.Errorf("etcd members %d: want 1..%d", members, MaxEtcdMembers)
	}
	e := &l.Etcd
	e.NS = etcdNS(l.Name)
	e.Addr = hostAddr(l.Octet, etcdHost)
	e.Log = filepath.Join(l.Dir, "etcd-m1.log")
	if err := l.plug(ctx, e.NS, etcdPortName, e.Addr, netip.Addr{}); err != nil {
		return err
	}
	var initial, clients []string
	for i := 1; i <= members; i++ {
		addr := hostAddr(l.Octet, etcdHost+i-1)
		if i > 1 {
			if err := ipCmd(ctx, "-n", e.NS, "addr", "add", fmt.Sprintf("%s/%d", addr, l.Underlay.Bits()), "dev", underlayIface); err != nil {
				return err
			}
		}
		m := &EtcdMember{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("http://%s:%d", addr, etcdPort),
			PeerURL:   fmt.Sprintf("http://%s:%d", addr, etcdPeerPort),
			DataDir:   filepath.Join(l.Dir, fmt.Sprintf("etcd-m%d", i)),
			Log:       filepath.Join(l.Dir, fmt.Sprintf("etcd-m%d.log", i)),
		}
		e.Members = append(e.Members, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
		clients = append(clients, m.ClientURL)
	}
	e.Endpoint = strings.Join(clients, ",")
	e.DataDir = e.Members[0].DataDir
	l.progress.step("etcd: %d members in namespace %s, %s", members, e.NS, e.Endpoint)
	for _, m := range e.Members {
		if err := l.runMember(m, strings.Join(initial, ",")); err != nil {
			return err
		}
	}
	e.Proc = e.Members[0].Proc
	if err := l.save(); err != nil {
		return err
	}
	for _, m := range e.Members {
		if err := l.waitMember(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) runMember(m *EtcdMember, initial string) error {
	p, done, err := startInNS(l.Etcd.NS, m.Log, nil, l.bin("weftctl"), "etcd", "--name", m.Name,
		"--data-dir", m.DataDir, "--listen-client-urls", m.ClientURL, "--listen-peer-url", m.PeerURL,
		"--initial-cluster", initial, "--initial-cluster-token", l.Name)
	if err != nil {
		return err
	}
	m.Proc = p
	l.exited[p.PID] = done
	return l.save()
}

// waitMember waits until the member answers /health (which needs a quorum).
func (l *Lab) waitMember(ctx context.Context, m *EtcdMember) error {
	c := httpClientIn(l.Etcd.NS, 2*time.Second)
	ok := poll(ctx, l.timeout, 100*time.Millisecond, func() bool {
		return !l.alive(m.Proc) || httpOK(ctx, c, m.ClientURL+"/health")
	})
	switch {
	case !l.alive(m.Proc):
		return fmt.Errorf("etcd member %s exited; end of %s:\n%s", m.Name, m.Log, tail(m.Log, 15))
	case !ok:
		return fmt.Errorf("etcd member %s not healthy at %s after %s; end of %s:\n%s", m.Name, m.ClientURL, l.timeout, m.Log, tail(m.Log, 15))
	}
	return nil
}

// Member returns the etcd cluster member of that name, or nil.
func (e *Etcd) Member(name string) *EtcdMember {
	for _, m := range e.Members {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// stopProc stops p (SIGTERM, then SIGKILL after the grace; or SIGKILL at
// once) and waits until it is gone as alive judges it, so a start right
// after it never finds the process still running.
func (l *Lab) stopProc(ctx context.Context, p *Proc, kill bool) error {
	if !kill {
		if err := p.stop(ctx, stopGrace); err != nil {
			return err
		}
	} else if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	if !l.waitGone(ctx, p, 5*time.Second) {
		return fmt.Errorf("process %d (%s) still runs after being stopped", p.PID, p.Cmd)
	}
	return nil
}

// StopEtcd stops the lab's single etcd: SIGKILL when kill, else SIGTERM.
// Its data directory stays, so StartEtcd brings back every key.
func (l *Lab) StopEtcd(ctx context.Context, kill bool) error {
	if len(l.Etcd.Members) > 0 {
		return errors.New("lab runs an etcd cluster: use StopEtcdMember")
	}
	l.progress.step("etcd: stopping (pid %d, kill=%v)", l.Etcd.Proc.PID, kill)
	return l.stopProc(ctx, l.Etcd.Proc, kill)
}

// StartEtcd starts the lab's single etcd again on its data directory and
// waits until it is healthy on its plain endpoint. extra are more `weftctl
// etcd` flags (a later flag wins), e.g. an https:// client URL with
// certificates; the lab's own endpoint must stay among the client URLs.
func (l *Lab) StartEtcd(ctx context.Context, extra ...string) error {
	e := &l.Etcd
	if len(e.Members) > 0 {
		return errors.New("lab runs an etcd cluster: use StartEtcdMember")
	}
	if l.alive(e.Proc) {
		return fmt.Errorf("etcd %d is still running", e.Proc.PID)
	}
	argv := append([]string{l.bin("weftctl"), "etcd", "--data-dir", e.DataDir, "--listen-client-urls", e.Endpoint}, extra...)
	p, done, err := startInNS(e.NS, e.Log, nil, argv...)
	if err != nil {
		return err
	}
	e.Proc = p
	l.exited[p.PID] = done
	if err := l.save(); err != nil {
		return err
	}
	l.progress.step("etcd: started again (pid %d)", p.PID)
	return l.waitMember(ctx, &EtcdMember{Name: "etcd", ClientURL: e.Endpoint, Log: e.Log, Proc: p})
}

// FreezeEtcd stops the lab's single etcd with SIGSTOP: its port still
// accepts connections and its open connections stay up, but nothing
// answers — a hung control plane, which clients notice only by timeouts.
// ThawEtcd resumes it; Down resumes it too.
func (l *Lab) FreezeEtcd() error {
	if len(l.Etcd.Members) > 0 {
		return errors.New("lab runs an etcd cluster: freeze one member's process instead")
	}
	if !l.alive(l.Etcd.Proc) {
		return errors.New("etcd is not running")
	}
	l.progress.step("etcd: frozen (SIGSTOP pid %d)", l.Etcd.Proc.PID)
	return l.Etcd.Proc.signal(syscall.SIGSTOP)
}

// ThawEtcd resumes an etcd FreezeEtcd stopped (SIGCONT).
func (l *Lab) ThawEtcd() error {
	if len(l.Etcd.Members) > 0 {
		return errors.New("lab runs an etcd cluster")
	}
	l.progress.step("etcd: thawed (SIGCONT pid %d)", l.Etcd.Proc.PID)
	return l.Etcd.Proc.signal(syscall.SIGCONT)
}

// StopEtcdMember stops one member of the lab's etcd cluster.
func (l *Lab) StopEtcdMember(ctx context.Context, name string, kill bool) error {
	m := l.Etcd.Member(name)
	if m == nil {
		return fmt.Errorf("lab %s has no etcd member %q", l.Name, name)
	}
	l.progress.step("etcd member %s: stopping (pid %d, kill=%v)", m.Name, m.Proc.PID, kill)
	return l.stopProc(ctx, m.Proc, kill)
}

// StartEtcdMember starts a stopped member again on its data directory (it
// rejoins the cluster) and waits until it is healthy.
func (l *Lab) StartEtcdMember(ctx context.Context, name string) error {
	m := l.Etcd.Member(name)
	if m == nil {
		return fmt.Errorf("lab %s has no etcd member %q", l.Name, name)
	}
	if l.alive(m.Proc) {
		return fmt.Errorf("etcd member %s (%d) is still running", m.Name, m.Proc.PID)
	}
	var initial []string
	for _, x := range l.Etcd.Members {
		initial = append(initial, x.Name+"="+x.PeerURL)
	}
	if err := l.runMember(m, strings.Join(initial, ",")); err != nil {
		return err
	}
	if m == l.Etcd.Members[0] {
		l.Etcd.Proc = m.Proc
	}
	return l.waitMember(ctx, m)
}

// StartNode adds a node (namespace and weftd) without waiting for its weftd
// to become ready, e.g. while etcd is down; WaitNode finishes the join.
func (l *Lab) StartNode(ctx context.Context) (*Node, error) {
	return l.startNode(ctx)
}

// WaitNode waits until the node's weftd is ready, records its subnet and
// attaches the lab's PodsPerNode pods when it has none.
func (l *Lab) WaitNode(ctx context.Context, name string) error {
	n := l.Node(name)
	if n == nil {
		return fmt.Errorf("lab %s has no node %q", l.Name, name)
	}
	if err := l.waitNodesReady(ctx, []*Node{n}); err != nil {
		return err
	}
	if len(n.Pods) == 0 {
		return l.addPods(ctx, n, l.PodsPerNode)
	}
	return nil
}

// AddPods attaches count more pods to the node through CNI ADD.
func (l *Lab) AddPods(ctx context.Context, name string, count int) ([]*Pod, error) {
	n := l.Node(name)
	if n == nil {
		return nil, fmt.Errorf("lab %s has no node %q", l.Name, name)
	}
	before := len(n.Pods)
	err := l.addPods(ctx, n, count)
	return n.Pods[before:], err
}

// DeletePod detaches a pod through CNI DEL and deletes its namespace.
func (l *Lab) DeletePod(ctx context.Context, pod string) error {
	for _, n := range l.Nodes {
		for i, p := range n.Pods {
			if p.Name != pod {
				continue
			}
			if err := l.cniDel(ctx, n, p); err != nil {
				return fmt.Errorf("pod %s: cni del: %w", p.Name, err)
			}
			if err := delNS(ctx, p.NS); err != nil {
				return err
			}
			l.dropNamespace(p.NS)
			n.Pods = append(n.Pods[:i:i], n.Pods[i+1:]...)
			return l.save()
		}
	}
	return fmt.Errorf("lab %s has no pod %q", l.Name, pod)
}

// RebootNode simulates a reboot of the node: weftd is SIGKILLed, the node's
// and its pods' namespaces are deleted (every route, device, neighbour and
// firewall rule with them) and the node's tmpfs-like files (the subnet
// file) removed, while its disk (IPAM store, CNI cache, CNI conf dir) stays.
// Then the namespace is made again, weftd started and awaited, and the pods
// re-created as a runtime would: new sandboxes with new container IDs. The
// old pods' IPAM entries are left for CNIGC, as after a real reboot.
func (l *Lab) RebootNode(ctx context.Context, name string) error {
	n := l.Node(name)
	if n == nil {
		return fmt.Errorf("lab %s has no node %q", l.Name, name)
	}
	l.progress.step("node %s: reboot (namespace deleted, disk kept)", n.Name)
	if err := l.stopProc(ctx, n.Weftd, true); err != nil {
		return err
	}
	pods := len(n.Pods)
	for _, p := range n.Pods {
		if err := delNS(ctx, p.NS); err != nil {
			return err
		}
		l.dropNamespace(p.NS)
	}
	n.Pods = nil
	if err := delNS(ctx, n.NS); err != nil {
		return err
	}
	// The switch's end of the node's veth goes with the namespace, but
	// asynchronously: wait for it (or remove it) before plugging again.
	sw := switchNS(l.Name)
	if !poll(ctx, 5*time.Second, 20*time.Millisecond, func() bool { return ipCmd(ctx, "-n", sw, "link", "show", n.Name) != nil }) {
		if err := ipCmd(ctx, "-n", sw, "link", "del", n.Name); err != nil {
			return err
		}
	}
	if err := os.Remove(n.SubnetFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	if err := l.plugNode(ctx, n); err != nil {
		return err
	}
	if err := l.startWeftd(n); err != nil {
		return err
	}
	if err := l.waitNodesReady(ctx, []*Node{n}); err != nil {
		return err
	}
	boot := time.Now().UnixNano()
	for range pods {
		if err := l.addPodID(ctx, n, fmt.Sprintf("-b%x", boot)); err != nil {
			return err
		}
	}
	return nil
}

// addPodID is addPod with idSuffix appended to the container ID.
func (l *Lab) addPodID(ctx context.Context, n *Node, idSuffix string) error {
	j := len(n.Pods) + 1
	for l.podExists(n, j) {
		j++
	}
	short := podName(n.Index, j)
	p := &Pod{Name: short, NS: nsName(l.Name, short), ContainerID: nsName(l.Name, short) + idSuffix}
	n.Pods = append(n.Pods, p)
	if err := l.addNamespace(p.NS); err != nil {
		return err
	}
	if err := addNS(ctx, p.NS); err != nil {
		return err
	}
	ip, ip6, err := l.cniAdd(ctx, n, p)
	if err != nil {
		return fmt.Errorf("pod %s: %w", p.Name, err)
	}
	p.IP, p.IPv6 = ip, ip6
	plugin := "weft"
	if n.Flannel {
		plugin = "flannel"
	}
	l.progress.step("pod %s: namespace %s, eth0 %s, container %s (%s CNI via libcni)", p.Name, p.NS, AddrsString(ip, ip6), p.ContainerID, plugin)
	return l.save()
}

// CNIGC runs the CNI GC verb of the node's conflist with the node's current
// pods as the valid attachments, as a runtime does after a restart.
func (l *Lab) CNIGC(ctx context.Context, name string) error {
	n := l.Node(name)
	if n == nil {
		return fmt.Errorf("lab %s has no node %q", l.Name, name)
	}
	cni, conf, err := l.cniConfig(n)
	if err != nil {
		return err
	}
	args := &libcni.GCArgs{}
	for _, p := range n.Pods {
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: p.ContainerID, IfName: "eth0"})
	}
	return ns.WithNetNSPath(nsPath(n.NS), func(ns.NetNS) error {
		return cni.GCNetworkList(ctx, conf, args)
	})
}

// DialContext returns a dial function whose connections are made from
// inside the namespace of target (sw, etcd, n1, n1-p1, or any namespace the
// lab recorded, such as one from AttachHost), e.g. for an etcd client of
// the test reaching the lab's etcd on the underlay.
func (l *Lab) DialContext(target string) (func(ctx context.Context, network, addr string) (net.Conn, error), error) {
	name, err := l.Resolve(target)
	if err != nil && slices.Contains(l.Namespaces, target) {
		name, err = target, nil
	}
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.WithNetNSPath(nsPath(name), func(ns.NetNS) error {
			var err error
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}, nil
}

// WeftdAlive reports whether the node's weftd runs.
func (l *Lab) WeftdAlive(name string) bool {
	n := l.Node(name)
	return n != nil && l.alive(n.Weftd)
}

// WeftdExited returns a channel closed when the node's current weftd exits
// (nil when this process did not start it).
func (l *Lab) WeftdExited(name string) <-chan struct{} {
	n := l.Node(name)
	if n == nil || n.Weftd == nil {
		return nil
	}
	return l.exited[n.Weftd.PID]
}

// StartWeftdNoWait starts a stopped node's weftd without waiting for it to
// become ready (e.g. to watch it refuse a bad configuration).
func (l *Lab) StartWeftdNoWait(name string) error {
	n := l.Node(name)
	if n == nil {
		return fmt.Errorf("lab %s has no node %q", l.Name, name)
	}
	if l.alive(n.Weftd) {
		return fmt.Errorf("node %s: weftd %d is still running", n.Name, n.Weftd.PID)
	}
	return l.startWeftd(n)
}

// Poll calls cond every interval until it returns true or timeout passes;
// it reports whether cond became true.
func Poll(ctx context.Context, timeout, interval time.Duration, cond func() bool) bool {
	return poll(ctx, timeout, interval, cond)
}

// AttachHost makes a namespace LAB-<short> on the lab's switch with
// underlay address .host (e.g. a stranger injecting packets), of each
// family the lab has; it returns the IPv4 one (IPv6 in an IPv6-only lab). Down removes
// it with the rest of the lab.
func (l *Lab) AttachHost(ctx context.Context, short string, host int) (string, netip.Addr, error) {
	if host <= etcdHost+MaxEtcdMembers || host >= nodeHostBase {
		return "", netip.Addr{}, fmt.Errorf("host %d: want %d..%d (outside etcd's and the nodes' addresses)", host, etcdHost+MaxEtcdMembers+1, nodeHostBase-1)
	}
	name := nsName(l.Name, short)
	v4, v6 := l.underlayAddrs(host)
	if err := l.plug(ctx, name, short, v4, v6); err != nil {
		return "", netip.Addr{}, err
	}
	return name, cmp.Or(v4, v6), l.save()
}
