package lab

// Mixed clusters: nodes that run the real Flannel (flanneld and the flannel
// CNI plugin delegating to bridge + host-local, built by scripts/flannel.sh)
// next to weft nodes, on the lab's one etcd and prefix. A Flannel node is a
// namespace like any other; flanneld runs inside it with every file it
// writes (subnet file, CNI conf, the flannel plugin's and host-local's data)
// under the node's state directory, never in /run/flannel or /var/lib/cni.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/subnet"
)

// FlannelBinaries are what a Flannel node runs, looked up in
// Options.FlannelBinDir: `scripts/flannel.sh` builds them and prints the
// directory.
var FlannelBinaries = []string{"flanneld", "flannel", "bridge", "host-local"}

// FlannelConfFile is the conflist a Flannel node's runtime uses, named as
// kube-flannel installs it. It sorts before weftd's 10-weft.conflist, so a
// runtime takes it while both are there.
const FlannelConfFile = "10-flannel.conflist"

// FlannelBridge is the bridge the flannel CNI plugin's bridge delegate
// makes (the bridge plugin's default).
const FlannelBridge = "cni0"

// flannelHealthzPort is where flanneld answers /healthz inside its node.
const flannelHealthzPort = 9475

func checkFlannelBinaries(dir string) (string, error) {
	if dir == "" {
		return "", fmt.Errorf("Flannel nodes need --flannel-bin-dir: build Flannel with scripts/flannel.sh and pass the directory it prints")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("flannel bin dir: %w", err)
	}
	var missing []string
	for _, b := range FlannelBinaries {
		if st, err := os.Stat(filepath.Join(abs, b)); err != nil || st.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("flannel bin dir %s lacks %s: run scripts/flannel.sh", abs, strings.Join(missing, ", "))
	}
	return abs, nil
}

// flannelNodeNames validates Options.FlannelNodes against the node count.
func flannelNodeNames(o Options) (map[string]bool, error) {
	names := map[string]bool{}
	for _, n := range o.FlannelNodes {
		k, ok := nodeIndex(n)
		if !ok || k > o.Nodes {
			return nil, fmt.Errorf("--flannel-nodes %q: want node names n1..n%d", n, o.Nodes)
		}
		names[n] = true
	}
	return names, nil
}

// nodeIndex parses "n3" into 3.
func nodeIndex(name string) (int, bool) {
	var k int
	if _, err := fmt.Sscanf(name, "n%d", &k); err != nil || nodeName(k) != name || k < 1 {
		return 0, false
	}
	return k, true
}

// flannelPaths fills a Flannel node's file locations, all under its state
// directory.
func (n *Node) flannelPaths() {
	n.FlannelLog = filepath.Join(n.Dir, "flanneld.log")
	n.FlannelCNIDir = filepath.Join(n.Dir, "flannel-cni")
	n.HostLocalDir = filepath.Join(n.Dir, "host-local")
}

// FlannelConfList is the conflist the lab installs on a Flannel node, as
// kube-flannel's install-cni does: flannel (bridge cni0, hairpin, default
// gateway) then portmap, with every data path inside the node's directory.
func FlannelConfList(n *Node) []byte {
	conf := map[string]any{
		"name":       "cbr0",
		"cniVersion": "0.3.1",
		"plugins": []any{
			map[string]any{
				"type":       "flannel",
				"subnetFile": n.SubnetFile,
				"dataDir":    n.FlannelCNIDir,
				"ipam":       map[string]any{"dataDir": n.HostLocalDir},
				"delegate":   map[string]any{"hairpinMode": true, "isDefaultGateway": true},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	out, _ := json.MarshalIndent(conf, "", "  ") // maps of strings and bools always marshal
	return append(out, '\n')
}

// installFlannelConf writes the Flannel conflist into the node's CNI conf
// dir.
func (l *Lab) installFlannelConf(n *Node) error {
	for _, d := range []string{n.CNIConfDir, n.FlannelCNIDir, n.HostLocalDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	return subnet.WriteFileAtomic(filepath.Join(n.CNIConfDir, FlannelConfFile), FlannelConfList(n), 0o644)
}

// flanneldArgs is the flanneld command line of node n: its store (etcd on
// the underlay; in Kubernetes mode the lab's API server with weftd's
// ServiceAccount, whose ClusterRole is all flanneld needs with NODE_NAME
// set, and the lab's network config file), the underlay interface and
// address, the subnet file in the node's directory, then the lab's and the
// node's extra flags.
func (l *Lab) flanneldArgs(n *Node) []string {
	store := []string{"--etcd-endpoints=" + l.Etcd.Endpoint}
	if l.Kube != nil {
		store = []string{"--kube-subnet-mgr", "--kubeconfig-file=" + l.Kube.WeftKubeconfig, "--net-config-path=" + l.Kube.NetConfig}
	}
	args := append([]string{filepath.Join(l.FlannelBinDir, "flanneld")}, store...)
	args = append(args,
		"--iface="+underlayIface,
		"--public-ip="+n.Underlay.String(),
	)
	if n.UnderlayV6.IsValid() {
		// As weftd is given --public-ipv6 in a lab with IPv6.
		args = append(args, "--public-ipv6="+n.UnderlayV6.String())
	}
	args = append(args,
		"--subnet-file="+n.SubnetFile,
		"--healthz-ip=127.0.0.1",
		fmt.Sprintf("--healthz-port=%d", flannelHealthzPort),
	)
	if l.IPMasq {
		args = append(args, "--ip-masq")
	}
	return append(append(args, l.FlanneldArgs...), n.FlanneldArgs...)
}

// startFlanneld starts flanneld inside n's namespace and records it. The
// conflist is installed first, as kube-flannel's init container does.
func (l *Lab) startFlanneld(n *Node) error {
	if err := l.installFlannelConf(n); err != nil {
		return err
	}
	var env []string
	if l.Kube != nil {
		env = []string{"NODE_NAME=" + n.Name} // as kube-flannel.yml sets it
	}
	p, done, err := startInNS(n.NS, n.FlannelLog, env, l.flanneldArgs(n)...)
	if err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	n.Flanneld = p
	n.Flannel = true
	l.exited[p.PID] = done
	return l.save()
}

// flannelLeaseRace is what flanneld logs before it exits when another node
// took the subnet it picked between its read and its write (nodes starting
// together); its supervisor (kubelet, systemd) starts it again.
const flannelLeaseRace = "failed to acquire lease: subnet already exists"

// flannelRaceRestarts bounds how often the lab, as that supervisor, starts
// a flanneld again that lost the race.
const flannelRaceRestarts = 3

// lostLeaseRace reports whether a flanneld that exited with logTail the end
// of its log, started again restarts times already, is to be started again.
func lostLeaseRace(logTail string, restarts int) bool {
	return restarts < flannelRaceRestarts && strings.Contains(logTail, flannelLeaseRace)
}

// waitFlannelReady waits until flanneld answers /healthz and has written
// the subnet file. A flanneld that exited having lost the lease race is
// started again, as its supervisor would.
func (l *Lab) waitFlannelReady(ctx context.Context, n *Node) error {
	c := httpClientIn(n.NS, time.Second)
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", flannelHealthzPort)
	restarts := 0
	ok := poll(ctx, l.timeout, 100*time.Millisecond, func() bool {
		if !l.alive(n.Flanneld) {
			if !lostLeaseRace(tail(n.FlannelLog, 15), restarts) {
				return true
			}
			restarts++
			l.progress.step("node %s: flanneld lost the lease race (%q), starting it again (%d of %d)", n.Name, flannelLeaseRace, restarts, flannelRaceRestarts)
			if err := l.startFlanneld(n); err != nil {
				return true // not alive: reported below
			}
			return false
		}
		_, err := subnet.ReadFile(n.SubnetFile)
		return err == nil && httpOK(ctx, c, url)
	})
	switch {
	case !l.alive(n.Flanneld):
		return fmt.Errorf("node %s: flanneld exited; end of %s:\n%s", n.Name, n.FlannelLog, tail(n.FlannelLog, 15))
	case !ok:
		return fmt.Errorf("node %s: flanneld not ready (no subnet file %s or no /healthz) after %s; end of %s:\n%s",
			n.Name, n.SubnetFile, l.timeout, n.FlannelLog, tail(n.FlannelLog, 15))
	}
	return nil
}

// daemon returns the process the node runs now: flanneld on a Flannel node,
// else weftd.
func (n *Node) daemon() *Proc {
	if n.Flannel {
		return n.Flanneld
	}
	return n.Weftd
}

// DaemonName is "flanneld" or "weftd", what the node runs.
func (n *Node) DaemonName() string {
	if n.Flannel {
		return "flanneld"
	}
	return "weftd"
}

// AddFlannelNode adds a node that runs Flannel, with PodsPerNode pods
// attached through the flannel CNI plugin.
func (l *Lab) AddFlannelNode(ctx context.Context) (*Node, error) {
	if _, err := checkFlannelBinaries(l.FlannelBinDir); err != nil {
		return nil, err
	}
	n, err := l.startNodeKind(ctx, true)
	if err != nil {
		return nil, err
	}
	if err := l.waitNodesReady(ctx, []*Node{n}); err != nil {
		return n, err
	}
	return n, l.addPods(ctx, n, l.PodsPerNode)
}

// StopFlanneld stops a Flannel node's flanneld: SIGKILL when kill, else
// SIGTERM. Like a stopped weftd it leaves its lease in etcd and the
// node's kernel state and pods in place.
func (l *Lab) StopFlanneld(ctx context.Context, name string, kill bool) error {
	n := l.Node(name)
	if n == nil {
		return fmt.Errorf("lab %s has no node %q", l.Name, name)
	}
	if n.Flanneld == nil {
		return fmt.Errorf("node %s never ran flanneld", n.Name)
	}
	l.progress.step("node %s: stopping flanneld (pid %d, kill=%v)", n.Name, n.Flanneld.PID, kill)
	return l.stopProc(ctx, n.Flanneld, kill)
}

// StartFlanneld starts flanneld on a node (a stopped Flannel node, or a weft
// node moving back to Flannel once its weftd is stopped), waits until it is
// ready and returns the subnet it holds. The node runs Flannel from then on.
func (l *Lab) StartFlanneld(ctx context.Context, name string) (netip.Prefix, error) {
	n := l.Node(name)
	if n == nil {
		return netip.Prefix{}, fmt.Errorf("lab %s has no node %q", l.Name, name)
	}
	if _, err := checkFlannelBinaries(l.FlannelBinDir); err != nil {
		return netip.Prefix{}, err
	}
	if l.alive(n.Flanneld) || l.alive(n.Weftd) {
		return netip.Prefix{}, fmt.Errorf("node %s: stop its %s first", n.Name, n.DaemonName())
	}
	if n.FlannelLog == "" {
		n.flannelPaths()
	}
	if err := l.startFlanneld(n); err != nil {
		return netip.Prefix{}, err
	}
	if err := l.waitNodesReady(ctx, []*Node{n}); err != nil {
		return netip.Prefix{}, err
	}
	return n.Subnet, nil
}

// SwitchToWeft makes a node that ran Flannel run weftd from now on (its
// flanneld must be stopped): weftd starts with the same subnet file path,
// extra weftd flags appended, and the call waits until it is ready. Nothing
// else is changed: what a user must do between the two (devices, conflist)
// is the caller's, as in Documentation/migrating-from-flannel.md.
func (l *Lab) SwitchToWeft(ctx context.Context, name string, extra ...string) (netip.Prefix, error) {
	n := l.Node(name)
	if n == nil {
		return netip.Prefix{}, fmt.Errorf("lab %s has no node %q", l.Name, name)
	}
	if l.alive(n.Flanneld) {
		return netip.Prefix{}, fmt.Errorf("node %s: flanneld %d is still running", n.Name, n.Flanneld.PID)
	}
	n.Flannel = false
	n.Args = append(slices.Clip(n.Args), extra...)
	return l.StartWeftd(ctx, name)
}

// Restart stops the node's daemon (SIGKILL when kill, else SIGTERM) and
// starts it again: weftd, or flanneld on a Flannel node. It waits until the
// daemon is ready and returns the subnet it holds.
func (l *Lab) Restart(ctx context.Context, name string, kill bool) (netip.Prefix, error) {
	n := l.Node(name)
	if n == nil || !n.Flannel {
		return l.RestartWeftd(ctx, name, kill)
	}
	if err := l.StopFlanneld(ctx, name, kill); err != nil {
		return netip.Prefix{}, err
	}
	return l.StartFlanneld(ctx, name)
}

// Switch moves a node from Flannel to weft (MoveToWeft) or from weft to
// Flannel (MoveToFlannel), whichever it runs now.
func (l *Lab) Switch(ctx context.Context, name string) (netip.Prefix, error) {
	n := l.Node(name)
	if n == nil {
		return netip.Prefix{}, fmt.Errorf("lab %s has no node %q", l.Name, name)
	}
	if n.Flannel {
		return l.MoveToWeft(ctx, name)
	}
	return l.MoveToFlannel(ctx, name)
}

// FlannelCNIFlags are the weftd flags of migrating-from-flannel.md that
// keep a Flannel node's pods: new pods go on Flannel's bridge and take their
// addresses from host-local's store (network cbr0 under ipamDir, which is
// /var/lib/cni/networks on a real node).
func FlannelCNIFlags(ipamDir string) []string {
	return []string{"--cni-bridge=" + FlannelBridge, "--cni-ipam-dir=" + ipamDir, "--cni-network-name=cbr0"}
}

// weftRouteProtocol is the route protocol weft tags its routes with
// (internal/nl.RouteProtocol; the e2e tests see weftd own the routes).
const weftRouteProtocol = 87

// HandOverRoutes is the shell command of migrating-from-flannel.md that
// gives the routes flanneld left for the pod network (protocol boot: it sets
// none) to weft, without changing where a packet goes: weft never replaces
// a route it did not install, so Flannel's host-gw routes would stay in its
// way.
func HandOverRoutes(network netip.Prefix) string {
	return fmt.Sprintf("ip -o route show root %s proto boot | while read -r r; do ip route replace $r proto %d; done",
		network, weftRouteProtocol)
}

// MoveToWeft moves a node from Flannel to weft, its pods kept, by the steps
// of Documentation/migrating-from-flannel.md: flanneld stopped (SIGTERM),
// Flannel's conflist removed, Flannel's routes handed over
// (HandOverRoutes), weftd started on the same subnet file with
// FlannelCNIFlags. It waits until weftd is ready and returns its subnet.
func (l *Lab) MoveToWeft(ctx context.Context, name string) (netip.Prefix, error) {
	n := l.Node(name)
	if n == nil {
		return netip.Prefix{}, fmt.Errorf("lab %s has no node %q", l.Name, name)
	}
	if !n.Flannel {
		return netip.Prefix{}, fmt.Errorf("node %s runs weft already", n.Name)
	}
	network, err := netip.ParsePrefix(l.Network)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("lab network: %w", err)
	}
	if l.alive(n.Flanneld) {
		if err := l.StopFlanneld(ctx, name, false); err != nil {
			return netip.Prefix{}, err
		}
	}
	if err := os.Remove(filepath.Join(n.CNIConfDir, FlannelConfFile)); err != nil && !os.IsNotExist(err) {
		return netip.Prefix{}, fmt.Errorf("node %s: %w", n.Name, err)
	}
	l.progress.step("node %s: %s", n.Name, HandOverRoutes(network))
	if out, err := nsRun(ctx, n.NS, "sh", "-c", HandOverRoutes(network)); err != nil {
		return netip.Prefix{}, fmt.Errorf("node %s: hand Flannel's routes over: %w: %s", n.Name, err, out)
	}
	return l.SwitchToWeft(ctx, name, FlannelCNIFlags(n.HostLocalDir)...)
}

// weftDevice matches the devices weftd leaves in place when it stops, which
// flanneld cannot make its own beside: weft.<VNI> (vxlan: same VNI and
// port) and weft-udp (udp: the pod network's route).
var weftDevice = regexp.MustCompile(`^(weft\.[0-9]+|weft-udp)$`)

// MoveToFlannel moves a node from weft back to Flannel, its pods kept, by
// the steps of Documentation/migrating-from-flannel.md: weftd stopped
// (SIGTERM), weft's VXLAN or UDP device deleted, weft's conflist removed,
// flanneld started (with its conflist, as kube-flannel's init container
// installs it). It waits until flanneld is ready and returns its subnet.
func (l *Lab) MoveToFlannel(ctx context.Context, name string) (netip.Prefix, error) {
	n := l.Node(name)
	if n == nil {
		return netip.Prefix{}, fmt.Errorf("lab %s has no node %q", l.Name, name)
	}
	if n.Flannel {
		return netip.Prefix{}, fmt.Errorf("node %s runs Flannel already", n.Name)
	}
	if l.alive(n.Weftd) {
		if err := l.StopWeftd(ctx, name, false); err != nil {
			return netip.Prefix{}, err
		}
	}
	out, err := nsRun(ctx, n.NS, "ip", "-o", "link", "show")
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("node %s: list links: %w", n.Name, err)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line) // "6: weft.1: <...>"
		if len(f) < 2 || !weftDevice.MatchString(strings.TrimSuffix(f[1], ":")) {
			continue
		}
		dev := strings.TrimSuffix(f[1], ":")
		l.progress.step("node %s: ip link del %s", n.Name, dev)
		if out, err := nsRun(ctx, n.NS, "ip", "link", "del", dev); err != nil {
			return netip.Prefix{}, fmt.Errorf("node %s: ip link del %s: %w: %s", n.Name, dev, err, out)
		}
	}
	if err := os.Remove(n.ConfList()); err != nil && !os.IsNotExist(err) {
		return netip.Prefix{}, fmt.Errorf("node %s: %w", n.Name, err)
	}
	return l.StartFlanneld(ctx, name)
}

// ActiveConfList is the conflist a runtime would use on the node: the first
// *.conflist in its CNI conf dir in lexical order, as containerd and CRI-O
// pick it.
func (n *Node) ActiveConfList() (string, error) {
	ents, err := os.ReadDir(n.CNIConfDir)
	if err != nil {
		return "", fmt.Errorf("node %s: CNI conf dir: %w", n.Name, err)
	}
	var names []string
	for _, e := range ents {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".conflist") {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return "", fmt.Errorf("node %s: no conflist in %s", n.Name, n.CNIConfDir)
	}
	sort.Strings(names)
	return filepath.Join(n.CNIConfDir, names[0]), nil
}

// FlanneldPID returns the PID of the node's flanneld if it runs, else 0.
func (l *Lab) FlanneldPID(name string) int {
	if n := l.Node(name); n != nil && l.alive(n.Flanneld) {
		return n.Flanneld.PID
	}
	return 0
}

// stopDaemons SIGTERMs every weftd and flanneld of s at once (a node
// shutdown), then waits for each in turn.
func stopDaemons(ctx context.Context, s *State) []error {
	var procs []*Proc
	for _, n := range s.Nodes {
		procs = append(procs, n.Weftd, n.Flanneld)
	}
	for _, p := range procs {
		if p != nil {
			_ = p.signal(syscall.SIGTERM)
		}
	}
	var errs []error
	for _, p := range procs {
		if err := p.stop(ctx, stopGrace); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// FlannelRef returns the directory scripts/flannel.sh (at script) builds the
// reference Flannel into, or an error saying how to build it when that
// build is not complete: for tests, which must fail, not skip, without it.
func FlannelRef(ctx context.Context, script string) (string, error) {
	out, err := exec.CommandContext(ctx, script, "dir").Output()
	if err != nil {
		return "", fmt.Errorf("%s dir: %w", script, err)
	}
	dir := strings.TrimSpace(string(out))
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err != nil {
		return dir, fmt.Errorf("reference Flannel is not built in %s: run %s (make test does)", dir, script)
	}
	return checkFlannelBinaries(dir)
}
