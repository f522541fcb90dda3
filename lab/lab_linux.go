package lab

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sync/errgroup"

	"github.com/weftnet/weft/subnet"
)

// Binaries the lab runs, looked up in Options.BinDir.
var binaries = []string{"weftd", "weft", "weftctl", "portmap"}

// ErrWeftdExited is returned when a node's weftd exits before it is ready;
// the error carries the end of its log.
var ErrWeftdExited = errors.New("weftd exited")

// ErrNotReady is returned when a node's weftd is still not ready at the
// deadline.
var ErrNotReady = errors.New("weftd not ready")

// Options configure Up.
type Options struct {
	Name        string // default DefaultName
	Nodes       int    // at least 1
	Backend     string // vxlan, host-gw, udp or wireguard
	PodsPerNode int
	// BinDir holds weftd, weft, weftctl and portmap.
	BinDir string
	// StateRoot holds the lab's state directory; default DefaultStateRoot.
	StateRoot string
	// Network is the pod network; default 10.244.0.0/16.
	Network string
	// IPMasq turns on weftd's --ip-masq on every node.
	IPMasq bool
	// Progress gets one line per step; nil for none.
	Progress io.Writer
	// ReadyTimeout bounds each wait (etcd health, weftd /readyz); default 60s.
	ReadyTimeout time.Duration
	// EtcdMembers > 1 runs an etcd cluster of that many members (at most
	// 5) instead of a single etcd; every weftd gets all endpoints.
	EtcdMembers int
	// WeftdArgs are extra flags for every weftd (Node.Args).
	WeftdArgs []string
	// Kube runs the lab in Kubernetes mode: a kube-apiserver and
	// kube-controller-manager on the lab's etcd, one Node object per lab
	// node (the lab plays kubelet's part) and every weftd with
	// --kube-subnet-mgr. Needs the binaries of scripts/kube.sh.
	Kube bool
	// Config, when set, is the network config JSON to write instead of
	// NetworkConfig(Network, Backend); Backend must still name the backend
	// it runs.
	Config string
	// FlannelNodes names the nodes (n2, n3, ...) that run the real Flannel
	// instead of weft: flanneld and the flannel CNI plugin from
	// FlannelBinDir (scripts/flannel.sh), on the same etcd and prefix.
	FlannelNodes []string
	// FlannelBinDir holds flanneld, flannel, bridge and host-local.
	FlannelBinDir string
	// FlanneldArgs are extra flags for every flanneld.
	FlanneldArgs []string
	// IPv6 makes the lab dual stack: the underlay gets an IPv6 /64 beside
	// its IPv4 /24, the network config enables IPv6 (IPv6Network), pods get
	// an address of each family and the matrix probes both.
	IPv6 bool
	// IPv6Only makes the lab IPv6-only: an IPv6 underlay (etcd included)
	// and an IPv6-only network (EnableIPv4 false).
	IPv6Only bool
	// IPv6Network is the IPv6 pod network; default DefaultIPv6Network.
	IPv6Network string
}

// Lab is a running lab: its recorded state plus the handles of the processes
// this process started. Methods are not safe for concurrent use.
type Lab struct {
	State
	root     string
	progress *progress
	timeout  time.Duration
	// exited holds, for processes started by this process, a channel closed
	// when they exit.
	exited map[int]<-chan struct{}
}

// Load opens an existing lab (e.g. one started from another shell).
func Load(root, name string) (*Lab, error) {
	if root == "" {
		root = DefaultStateRoot
	}
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	s, err := loadState(root, name)
	if err != nil {
		return nil, err
	}
	return &Lab{State: *s, root: root, progress: newProgress(nil), timeout: 60 * time.Second, exited: map[int]<-chan struct{}{}}, nil
}

// SetProgress sets where later steps are reported (nil: nowhere).
func (l *Lab) SetProgress(w io.Writer) { l.progress = newProgress(w) }

// Up builds a lab: switch, etcd, nodes with weftd, pods. On error the
// partial lab is left for inspection (logs are in its state directory) and
// must be removed with Down; everything made so far is recorded.
func Up(ctx context.Context, o Options) (*Lab, error) {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.StateRoot == "" {
		o.StateRoot = DefaultStateRoot
	}
	if o.Network == "" {
		o.Network = DefaultNetwork
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 60 * time.Second
	}
	if err := ValidateName(o.Name); err != nil {
		return nil, err
	}
	if o.Nodes < 1 || o.Nodes > MaxNodes {
		return nil, fmt.Errorf("--nodes %d: want 1..%d", o.Nodes, MaxNodes)
	}
	if o.PodsPerNode < 0 {
		return nil, fmt.Errorf("--pods-per-node %d: want 0 or more", o.PodsPerNode)
	}
	if !validBackend(o.Backend) {
		return nil, fmt.Errorf("--backend %q: want one of %s", o.Backend, strings.Join(subnet.BackendTypes(), ", "))
	}
	if _, err := netip.ParsePrefix(o.Network); err != nil {
		return nil, fmt.Errorf("--network %q: %w", o.Network, err)
	}
	if err := checkIPv6Options(&o); err != nil {
		return nil, err
	}
	binDir, err := checkBinaries(o.BinDir)
	if err != nil {
		return nil, err
	}
	if _, err := flannelNodeNames(o); err != nil {
		return nil, err
	}
	if len(o.FlannelNodes) > 0 || o.FlannelBinDir != "" {
		if o.FlannelBinDir, err = checkFlannelBinaries(o.FlannelBinDir); err != nil {
			return nil, err
		}
	}
	if o.Config != "" {
		if _, err := subnet.ParseConfig([]byte(o.Config)); err != nil {
			return nil, fmt.Errorf("lab config: %w", err)
		}
	}
	l := &Lab{root: o.StateRoot, progress: newProgress(o.Progress), timeout: o.ReadyTimeout, exited: map[int]<-chan struct{}{}}
	if err := l.create(o, binDir); err != nil {
		return nil, err
	}
	if err := l.build(ctx, o); err != nil {
		return l, err
	}
	return l, nil
}

func validBackend(b string) bool {
	for _, t := range subnet.BackendTypes() {
		if b == t {
			return true
		}
	}
	return false
}

func checkBinaries(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("bin dir: %w", err)
	}
	var missing []string
	for _, b := range binaries {
		if st, err := os.Stat(filepath.Join(abs, b)); err != nil || st.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("bin dir %s lacks %s: run `make build` or pass --bin-dir", abs, strings.Join(missing, ", "))
	}
	return abs, nil
}

// create claims the lab's name and underlay under a lock on the state root
// and writes the first state.
func (l *Lab) create(o Options, binDir string) error {
	if err := os.MkdirAll(o.StateRoot, 0o755); err != nil {
		return fmt.Errorf("state root: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(o.StateRoot, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("lock state root: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock state root: %w", err)
	}
	dir := filepath.Join(o.StateRoot, o.Name)
	if _, err := os.Stat(dir); err == nil {
		return fmt.Errorf("%w: %s (remove it with `weftctl lab down --name %s`)", ErrExists, o.Name, o.Name)
	}
	pat := labNSPattern(o.Name)
	nss, err := listNamespaces()
	if err != nil {
		return err
	}
	for _, n := range nss {
		if pat.MatchString(n) {
			return fmt.Errorf("%w: namespace %s is left over (remove it with `weftctl lab down --name %s`)", ErrExists, n, o.Name)
		}
	}
	used := map[int]bool{}
	others, err := List(o.StateRoot)
	if err != nil {
		return err
	}
	for _, name := range others {
		if s, err := loadState(o.StateRoot, name); err == nil {
			used[s.Octet] = true
		}
	}
	octet, err := pickOctet(o.Name, used)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	l.State = State{
		Name:        o.Name,
		Dir:         dir,
		BinDir:      binDir,
		Backend:     o.Backend,
		Network:     o.Network,
		Octet:       octet,
		Underlay:    underlayPrefix(octet),
		Created:     time.Now().UTC().Truncate(time.Second),
		NextNode:    1,
		PodsPerNode: o.PodsPerNode,
		IPMasq:      o.IPMasq,
		WeftdArgs:   o.WeftdArgs,
		Config:      o.Config,

		FlannelBinDir: o.FlannelBinDir,
		FlanneldArgs:  o.FlanneldArgs,

		IPv6:        o.IPv6,
		IPv6Only:    o.IPv6Only,
		IPv6Network: o.IPv6Network,
	}
	if l.hasIPv6() {
		l.UnderlayV6 = underlayPrefix6(octet)
	}
	return l.save()
}

func (l *Lab) bin(name string) string { return filepath.Join(l.BinDir, name) }

func (l *Lab) build(ctx context.Context, o Options) error {
	l.progress.step("lab %s: underlay %s, backend %s, %s, state in %s", l.Name, l.underlayString(), l.Backend, l.Families(), l.Dir)
	if err := l.buildSwitch(ctx); err != nil {
		return err
	}
	if err := l.startEtcdMembers(ctx, o.EtcdMembers); err != nil {
		return err
	}
	if o.Kube {
		if err := l.startKube(ctx); err != nil {
			return err
		}
	} else if err := l.writeConfig(ctx); err != nil {
		return err
	}
	flannel, _ := flannelNodeNames(o) // checked by Up
	var nodes []*Node
	for range o.Nodes {
		n, err := l.startNodeKind(ctx, flannel[nodeName(l.NextNode)])
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
	}
	if err := l.waitNodesReady(ctx, nodes); err != nil {
		return err
	}
	if err := l.waitPeers(ctx); err != nil {
		return err
	}
	for _, n := range nodes {
		if err := l.addPods(ctx, n, o.PodsPerNode); err != nil {
			return err
		}
	}
	l.Ready = true
	if err := l.save(); err != nil {
		return err
	}
	l.progress.step("lab %s is up", l.Name)
	return nil
}

// buildSwitch makes the switch namespace with its bridge.
func (l *Lab) buildSwitch(ctx context.Context) error {
	sw := switchNS(l.Name)
	l.progress.step("switch: namespace %s, bridge %s", sw, bridgeName)
	if err := l.addNamespace(sw); err != nil {
		return err
	}
	if err := addNS(ctx, sw); err != nil {
		return err
	}
	if err := ipCmd(ctx, "-n", sw, "link", "add", bridgeName, "type", "bridge"); err != nil {
		return err
	}
	return ipCmd(ctx, "-n", sw, "link", "set", bridgeName, "up")
}

// plug makes namespace name and joins it to the switch: port in the switch,
// eth0 (both ends with the NIC's BIG TCP sizes, modelNIC) with the valid
// ones of v4 and v6 in the namespace (v6 without
// duplicate address detection: the lab picks distinct addresses, and a
// tentative address would delay the first packets by a second or two).
func (l *Lab) plug(ctx context.Context, name, port string, v4, v6 netip.Addr) error {
	sw := switchNS(l.Name)
	if err := l.addNamespace(name); err != nil {
		return err
	}
	if err := addNS(ctx, name); err != nil {
		return err
	}
	steps := [][]string{
		{"-n", sw, "link", "add", port, "type", "veth", "peer", "name", underlayIface, "netns", name},
		{"-n", sw, "link", "set", port, "master", bridgeName},
		{"-n", sw, "link", "set", port, "up"},
	}
	if v4.IsValid() {
		steps = append(steps, []string{"-n", name, "addr", "add", netip.PrefixFrom(v4, l.Underlay.Bits()).String(), "dev", underlayIface})
	}
	if v6.IsValid() {
		steps = append(steps, []string{"-n", name, "addr", "add", netip.PrefixFrom(v6, l.UnderlayV6.Bits()).String(), "dev", underlayIface, "nodad"})
	}
	steps = append(steps, []string{"-n", name, "link", "set", underlayIface, "up"})
	for _, s := range steps {
		if err := ipCmd(ctx, s...); err != nil {
			return err
		}
	}
	if err := modelNIC(sw, port); err != nil {
		return err
	}
	return modelNIC(name, underlayIface)
}

func (l *Lab) startEtcd(ctx context.Context) error {
	e := &l.Etcd
	e.NS = etcdNS(l.Name)
	v4, v6 := l.underlayAddrs(etcdHost)
	e.Addr = cmp.Or(v4, v6)
	e.Endpoint = "http://" + netip.AddrPortFrom(e.Addr, etcdPort).String()
	e.DataDir = filepath.Join(l.Dir, "etcd")
	e.Log = filepath.Join(l.Dir, "etcd.log")
	l.progress.step("etcd: namespace %s, %s", e.NS, e.Endpoint)
	if err := l.plug(ctx, e.NS, etcdPortName, v4, v6); err != nil {
		return err
	}
	p, done, err := startInNS(e.NS, e.Log, nil, l.bin("weftctl"), "etcd", "--data-dir", e.DataDir, "--listen-client-urls", e.Endpoint)
	if err != nil {
		return err
	}
	e.Proc = p
	l.exited[p.PID] = done
	if err := l.save(); err != nil {
		return err
	}
	c := httpClientIn(e.NS, 2*time.Second)
	ok := poll(ctx, l.timeout, 100*time.Millisecond, func() bool {
		return !l.alive(p) || httpOK(ctx, c, e.Endpoint+"/health")
	})
	switch {
	case !l.alive(p):
		return fmt.Errorf("etcd exited; end of %s:\n%s", e.Log, tail(e.Log, 15))
	case !ok:
		return fmt.Errorf("etcd not healthy at %s after %s; end of %s:\n%s", e.Endpoint, l.timeout, e.Log, tail(e.Log, 15))
	}
	return nil
}

// alive reports whether p runs. For a process this one started, the exit
// channel alone decides: it closes when the process is reaped, which the
// kernel allows only once every thread has exited, whereas reading /proc
// while a multi-threaded process dies can report it gone and then alive
// again (a SIGKILLed weftd seen gone, then "still running" on restart).
func (l *Lab) alive(p *Proc) bool {
	if p == nil {
		return false
	}
	if done, ok := l.exited[p.PID]; ok {
		select {
		case <-done:
			return false
		default:
			return true
		}
	}
	return p.Alive()
}

// waitGone polls until p is not alive (see alive) or the deadline passes.
func (l *Lab) waitGone(ctx context.Context, p *Proc, timeout time.Duration) bool {
	return poll(ctx, timeout, 20*time.Millisecond, func() bool { return !l.alive(p) })
}

// weftctl runs weftctl inside the etcd namespace against the lab's etcd.
func (l *Lab) weftctl(ctx context.Context, stdin string, args ...string) (string, error) {
	argv := append([]string{"ip", "netns", "exec", l.Etcd.NS, l.bin("weftctl")}, args...)
	cmd := execCommand(ctx, argv, []string{"WEFTCTL_ETCD_ENDPOINTS=" + l.Etcd.Endpoint}, stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("weftctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// NetworkConfig is the config the lab writes for its network and backend.
func NetworkConfig(network, backend string) string {
	return fmt.Sprintf(`{"Network": %q, "Backend": {"Type": %q}}`, network, backend)
}

func (l *Lab) writeConfig(ctx context.Context) error {
	cfg := l.networkConfig()
	l.progress.step("config: %s (weftctl config set)", cfg)
	cctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	_, err := l.weftctl(cctx, cfg, "config", "set", "-")
	return err
}

// startNode makes the next node's namespace and starts its weftd.
func (l *Lab) startNode(ctx context.Context) (*Node, error) { return l.startNodeKind(ctx, false) }

// startNodeKind makes the next node's namespace and starts its weftd, or
// its flanneld when flannel is set.
func (l *Lab) startNodeKind(ctx context.Context, flannel bool) (*Node, error) {
	k := l.NextNode
	l.NextNode++
	name := nodeName(k)
	dir := filepath.Join(l.Dir, name)
	v4, v6 := l.underlayAddrs(nodeHostBase + k)
	n := &Node{
		Name:       name,
		Index:      k,
		NS:         nsName(l.Name, name),
		Underlay:   v4,
		UnderlayV6: v6,
		Dir:        dir,
		SubnetFile: filepath.Join(dir, "subnet.env"),
		CNIConfDir: filepath.Join(dir, "net.d"),
		IPAMDir:    filepath.Join(dir, "ipam"),
		CNICache:   filepath.Join(dir, "cni-cache"),
		StateDir:   filepath.Join(dir, "state"),
		Log:        filepath.Join(dir, "weftd.log"),
	}
	if k > MaxNodes {
		return nil, fmt.Errorf("lab %s: node index %d exceeds %d", l.Name, k, MaxNodes)
	}
	l.Nodes = append(l.Nodes, n)
	l.progress.step("node %s: namespace %s, underlay %s", n.Name, n.NS, n.underlayString())
	for _, d := range []string{n.Dir, n.CNIConfDir, n.IPAMDir, n.CNICache} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	if err := l.plugNode(ctx, n); err != nil {
		return nil, err
	}
	if l.Kube != nil {
		if err := l.registerNode(ctx, n); err != nil {
			return nil, err
		}
	}
	if flannel {
		n.flannelPaths()
		return n, l.startFlanneld(n)
	}
	return n, l.startWeftd(n)
}

// PrivateRun wraps argv so that it runs with its own, empty /run/wireguard
// (a tmpfs in the mount namespace `ip netns exec` gives it): the WireGuard
// device of every node is served on /run/wireguard/weft-wg.sock, a path
// wgctrl and wg(8) fix, which separate hosts have each for themselves but
// the lab's nodes would share. sh execs argv, so the PID is still argv's.
// To look at a node's device: nsenter -t <weftd pid> -m -n wg show.
func PrivateRun(argv []string) []string {
	const script = `mkdir -p /run/wireguard && mount -t tmpfs -o mode=0755,size=1m weft-lab /run/wireguard && exec "$@"`
	return append([]string{"sh", "-c", script, filepath.Base(argv[0])}, argv...)
}

func (l *Lab) startWeftd(n *Node) error {
	store := []string{"--etcd-endpoints", l.Etcd.Endpoint}
	var env []string
	if l.Kube != nil {
		store = l.kubeWeftdArgs()
		env = []string{"NODE_NAME=" + n.Name}
	}
	args := append([]string{l.bin("weftd")}, store...)
	args = append(args,
		"--iface", underlayIface,
		"--subnet-file", n.SubnetFile,
		"--cni-conf-dir", n.CNIConfDir,
		"--cni-ipam-dir", n.IPAMDir,
		"--healthz-addr", healthzAddr,
	)
	if n.Underlay.IsValid() {
		args = append(args, "--public-ip", n.Underlay.String())
	}
	if n.UnderlayV6.IsValid() {
		args = append(args, "--public-ipv6", n.UnderlayV6.String())
	}
	if n.StateDir != "" {
		args = append(args, "--state-dir", n.StateDir)
	}
	if l.IPMasq {
		args = append(args, "--ip-masq")
	}
	args = append(append(args, l.WeftdArgs...), n.Args...)
	p, done, err := startInNS(n.NS, n.Log, env, PrivateRun(args)...)
	if err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	p.Cmd = args[0]
	n.Weftd = p
	l.exited[p.PID] = done
	return l.save()
}

// waitNodesReady waits, in parallel, for every node's /readyz and then
// records its subnet.
func (l *Lab) waitNodesReady(ctx context.Context, nodes []*Node) error {
	var g errgroup.Group
	for _, n := range nodes {
		if n.Flannel {
			g.Go(func() error { return l.waitFlannelReady(ctx, n) })
			continue
		}
		g.Go(func() error { return l.waitReady(ctx, n) })
	}
	err := g.Wait()
	for _, n := range nodes {
		if fi, e := subnet.ReadFile(n.SubnetFile); e == nil {
			n.setSubnets(fi)
		}
	}
	if e := l.save(); err == nil {
		err = e
	}
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if !n.Subnet.IsValid() {
			return fmt.Errorf("node %s is ready but its subnet file %s is unreadable", n.Name, n.SubnetFile)
		}
		l.progress.step("node %s: %s ready (pid %d), lease %s", n.Name, n.DaemonName(), n.daemon().PID, n.subnetsString())
	}
	return nil
}

func (l *Lab) waitReady(ctx context.Context, n *Node) error {
	c := httpClientIn(n.NS, time.Second)
	url := "http://" + healthzAddr + "/readyz"
	ok := poll(ctx, l.timeout, 100*time.Millisecond, func() bool {
		return !l.alive(n.Weftd) || httpOK(ctx, c, url)
	})
	switch {
	case !l.alive(n.Weftd):
		return fmt.Errorf("node %s: %w; end of %s:\n%s", n.Name, ErrWeftdExited, n.Log, tail(n.Log, 15))
	case !ok:
		return fmt.Errorf("node %s: %w at %s after %s; end of %s:\n%s", n.Name, ErrNotReady, url, l.timeout, n.Log, tail(n.Log, 15))
	}
	return nil
}

// addPods attaches count more pods to node n.
func (l *Lab) addPods(ctx context.Context, n *Node, count int) error {
	for range count {
		if err := l.addPod(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// addPod attaches the node's next pod. Its container ID is the namespace
// name and a lab-wide count: a deleted pod's name is given again, its ID
// never, so no state a plugin kept of the old sandbox (the flannel
// plugin's record of its ADD) is taken for the new one.
func (l *Lab) addPod(ctx context.Context, n *Node) error {
	l.PodAdds++
	return l.addPodID(ctx, n, fmt.Sprintf("-%d", l.PodAdds))
}

func (l *Lab) podExists(n *Node, j int) bool {
	for _, p := range n.Pods {
		if p.Name == podName(n.Index, j) {
			return true
		}
	}
	return false
}

// cniConfig returns the CNI runner and the conflist a runtime would use on
// n now (Node.ActiveConfList): weftd's, or on a Flannel node the flannel one.
func (l *Lab) cniConfig(n *Node) (*libcni.CNIConfig, *libcni.NetworkConfigList, error) {
	path, err := n.ActiveConfList()
	if err != nil {
		return nil, nil, err
	}
	conf, err := libcni.ConfListFromFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read conflist %s: %w", path, err)
	}
	dirs := []string{l.BinDir}
	if l.FlannelBinDir != "" {
		dirs = append(dirs, l.FlannelBinDir)
	}
	return libcni.NewCNIConfigWithCacheDir(dirs, n.CNICache, nil), conf, nil
}

// cniAdd runs the CNI ADD of the node's conflist for pod p, the way a
// runtime does, and returns the pod's addresses: one of each family the lab
// has. libcni execs the plugins; they must run in the node's namespace, so
// the call is made on a thread switched into it (ns.Do), and the plugin
// processes inherit that thread's namespace.
func (l *Lab) cniAdd(ctx context.Context, n *Node, p *Pod) (v4, v6 netip.Addr, err error) {
	cni, conf, err := l.cniConfig(n)
	if err != nil {
		return v4, v6, err
	}
	rt := &libcni.RuntimeConf{ContainerID: p.ContainerID, NetNS: nsPath(p.NS), IfName: "eth0"}
	var res *types100.Result
	err = ns.WithNetNSPath(nsPath(n.NS), func(ns.NetNS) error {
		r, err := cni.AddNetworkList(ctx, conf, rt)
		if err != nil {
			return err
		}
		res, err = types100.NewResultFromResult(r)
		return err
	})
	if err != nil {
		return v4, v6, fmt.Errorf("cni add: %w", err)
	}
	for _, ipc := range res.IPs {
		a, ok := netip.AddrFromSlice(ipc.Address.IP)
		switch {
		case !ok:
		case a.Unmap().Is4() && !v4.IsValid():
			v4 = a.Unmap()
		case a.Is6() && !a.Is4In6() && !v6.IsValid():
			v6 = a
		}
	}
	if l.hasIPv4() && !v4.IsValid() {
		return v4, v6, fmt.Errorf("cni add: result has no IPv4 address: %v", res.IPs)
	}
	if l.hasIPv6() && !v6.IsValid() {
		return v4, v6, fmt.Errorf("cni add: result has no IPv6 address (the lab's network enables IPv6): %v", res.IPs)
	}
	return v4, v6, nil
}

// cniDel runs the CNI DEL for pod p (idempotent in the plugin).
func (l *Lab) cniDel(ctx context.Context, n *Node, p *Pod) error {
	cni, conf, err := l.cniConfig(n)
	if err != nil {
		return err
	}
	rt := &libcni.RuntimeConf{ContainerID: p.ContainerID, NetNS: nsPath(p.NS), IfName: "eth0"}
	return ns.WithNetNSPath(nsPath(n.NS), func(ns.NetNS) error {
		return cni.DelNetworkList(ctx, conf, rt)
	})
}
