package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/lab"
	"github.com/weftnet/weft/subnet"
	subnetetcd "github.com/weftnet/weft/subnet/etcd"
	"github.com/weftnet/weft/subnet/etcd/embedded"
)

// runAcquire starts an embedded etcd on loopback and has nodes simulated
// nodes (each with its own etcd client and Manager, connected first) call
// AcquireLease at the same instant on a /16 with /24 subnets (254
// candidates, as a default Kubernetes pod network).
func runAcquire(ctx context.Context, cfg *config, nodes int) (*AcquireRun, error) {
	dir, err := os.MkdirTemp("", "wbench-etcd-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	srv, err := embedded.Start(ctx, embedded.Config{DataDir: dir, ListenClientURLs: []string{"http://127.0.0.1:0"}})
	if err != nil {
		return nil, err
	}
	defer srv.Stop(30 * time.Second)
	cc := subnetetcd.ClientConfig{Endpoints: srv.Endpoints()}
	admin, err := subnetetcd.Dial(ctx, cc)
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	am := subnetetcd.New(admin, subnetetcd.Options{})
	if err := am.SetNetworkConfig(ctx, []byte(`{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`)); err != nil {
		return nil, err
	}
	netCfg, err := am.GetNetworkConfig(ctx)
	if err != nil {
		return nil, err
	}
	mgrs := make([]*subnetetcd.Manager, nodes)
	for i := range mgrs {
		cli, err := subnetetcd.Dial(ctx, cc)
		if err != nil {
			return nil, fmt.Errorf("client %d: %w", i, err)
		}
		defer cli.Close()
		mgrs[i] = subnetetcd.New(cli, subnetetcd.Options{})
	}
	out := &AcquireRun{Nodes: nodes}
	lat := make([]float64, nodes)
	got := make([]netip.Prefix, nodes)
	errs := make([]error, nodes)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, m := range mgrs {
		p := fakePeerAt(i)
		data, _ := json.Marshal(map[string]any{"VNI": 1, "VtepMAC": p.mac.String()})
		req := subnet.AcquireRequest{
			Config: netCfg,
			Attrs:  subnet.LeaseAttrs{PublicIP: p.pub, BackendType: subnet.BackendVXLAN, BackendData: data},
			TTL:    time.Hour,
		}
		wg.Go(func() {
			<-start
			t := time.Now()
			l, err := m.AcquireLease(ctx, req)
			lat[i] = ms(time.Since(t))
			if err != nil {
				errs[i] = err
				return
			}
			got[i] = l.Subnet
		})
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	out.TotalMS = round3(ms(time.Since(t0)))
	seen := map[netip.Prefix]bool{}
	var ok []float64
	for i := range nodes {
		if errs[i] != nil {
			out.Errors++
			if out.FirstError == "" {
				out.FirstError = errs[i].Error()
			}
			continue
		}
		ok = append(ok, lat[i])
		if seen[got[i]] {
			out.Duplicates++
		}
		seen[got[i]] = true
	}
	out.PerNodeMS = summarize(ok)
	leases, _, err := am.ListLeases(ctx)
	if err != nil {
		return out, err
	}
	out.Stored = len(leases)
	return out, nil
}

// fakePeer is a node that exists only as a lease in etcd.
type fakePeer struct {
	sn  netip.Prefix
	pub netip.Addr
	mac net.HardwareAddr
}

// fakePeerAt returns the i-th fake node's PublicIP and VtepMAC. PublicIPs
// are 198.18.64.1 … 198.18.254.250, distinct for i < 47750 (never on any
// wire: the FDB entries pointing at them are only counted; lab underlays
// are in 198.19.0.0/16), MACs locally administered.
func fakePeerAt(i int) fakePeer {
	return fakePeer{
		pub: netip.AddrFrom4([4]byte{198, 18, byte(64 + (i/250)%191), byte(1 + i%250)}),
		mac: net.HardwareAddr{0x0e, 0x77, 0x62, byte(i >> 16), byte(i >> 8), byte(i)},
	}
}

// fakePeers returns n fake peers with subnets of length bits counted from
// 10.1.0.0 (first is an index into 10.1.0.0/bits, the next one, …),
// skipping own.
func fakePeers(first, n, bits int, own netip.Prefix) []fakePeer {
	out := make([]fakePeer, 0, n)
	base := uint32(10)<<24 | uint32(1)<<16
	for k := first; len(out) < n; k++ {
		a := base + uint32(k)<<(32-bits)
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), bits)
		if sn.Overlaps(own) {
			continue
		}
		p := fakePeerAt(len(out))
		p.sn = sn
		out = append(out, p)
	}
	return out
}

// key is the peer's lease key under the subnets directory dir.
func (p fakePeer) key(dir string) string { return dir + subnet.KeyName(p.sn, netip.Prefix{}) }

func (p fakePeer) value() (string, error) {
	data, err := json.Marshal(map[string]any{"VNI": 1, "VtepMAC": p.mac.String()})
	if err != nil {
		return "", err
	}
	v, err := json.Marshal(subnet.LeaseAttrs{PublicIP: p.pub, BackendType: subnet.BackendVXLAN, BackendData: data})
	return string(v), err
}

// kernelView reads a node namespace's VXLAN peer state through a netlink
// handle opened in that namespace (usable from any thread).
type kernelView struct {
	h   *netlink.Handle
	nsh netns.NsHandle
	dev string
}

func openKernelView(nsName, dev string) (*kernelView, error) {
	nsh, err := netns.GetFromPath(nsPath(nsName))
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", nsName, err)
	}
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		nsh.Close()
		return nil, fmt.Errorf("netlink in %s: %w", nsName, err)
	}
	return &kernelView{h: h, nsh: nsh, dev: dev}, nil
}

func (k *kernelView) close() {
	k.h.Close()
	k.nsh.Close()
}

// peerState is how many of a peer set's routes, neighbours and FDB entries
// the kernel holds.
type peerState struct{ routes, neighs, fdb int }

func (s peerState) all(n int) bool { return s.routes == n && s.neighs == n && s.fdb == n }
func (s peerState) none() bool     { return s.routes == 0 && s.neighs == 0 && s.fdb == 0 }

// peerSet indexes fake peers by what the kernel shows of them: the route
// to the subnet, the neighbour entry of its .0 gateway, the FDB entry of
// its VtepMAC.
type peerSet struct {
	n    int
	sns  map[netip.Prefix]bool
	gws  map[netip.Addr]bool
	macs map[string]bool
}

func newPeerSet(ps []fakePeer) *peerSet {
	s := &peerSet{n: len(ps), sns: map[netip.Prefix]bool{}, gws: map[netip.Addr]bool{}, macs: map[string]bool{}}
	for _, p := range ps {
		s.sns[p.sn] = true
		s.gws[p.sn.Addr()] = true
		s.macs[p.mac.String()] = true
	}
	return s
}

// count reads the kernel's state for s on the VXLAN device; a device that
// does not exist (a daemon restarting) holds nothing.
func (k *kernelView) count(s *peerSet) (peerState, error) {
	var st peerState
	link, err := k.h.LinkByName(k.dev)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("link %s: %w", k.dev, err)
	}
	idx := link.Attrs().Index
	routes, err := k.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: idx}, netlink.RT_FILTER_OIF)
	if err != nil {
		return st, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		if a, ok := netip.AddrFromSlice(r.Dst.IP); ok {
			bits, _ := r.Dst.Mask.Size()
			if s.sns[netip.PrefixFrom(a.Unmap(), bits)] {
				st.routes++
			}
		}
	}
	neighs, err := k.h.NeighList(idx, netlink.FAMILY_V4)
	if err != nil {
		return st, fmt.Errorf("list neighbours: %w", err)
	}
	for _, n := range neighs {
		if a, ok := netip.AddrFromSlice(n.IP); ok && s.gws[a.Unmap()] {
			st.neighs++
		}
	}
	fdb, err := k.h.NeighList(idx, unix.AF_BRIDGE)
	if err != nil {
		return st, fmt.Errorf("list fdb: %w", err)
	}
	for _, n := range fdb {
		if s.macs[n.HardwareAddr.String()] {
			st.fdb++
		}
	}
	return st, nil
}

// waitState polls the kernel every interval until cond holds and returns
// the time the successful read started (the state held by then), or an
// error at the deadline.
func (k *kernelView) waitState(ctx context.Context, s *peerSet, timeout, interval time.Duration, cond func(peerState) bool) (time.Time, peerState, error) {
	deadline := time.Now().Add(timeout)
	for {
		at := time.Now()
		st, err := k.count(s)
		if err != nil {
			return at, st, err
		}
		if cond(st) {
			return at, st, nil
		}
		if at.After(deadline) {
			return at, st, fmt.Errorf("kernel has %d/%d routes, %d/%d neighbours, %d/%d fdb entries after %s",
				st.routes, s.n, st.neighs, s.n, st.fdb, s.n, timeout)
		}
		if err := sleepCtx(ctx, interval); err != nil {
			return at, st, err
		}
	}
}

// vxlanDev and flannelDev are the VXLAN devices of VNI 1 (the config
// default) that weftd and flanneld make.
const (
	vxlanDev   = "weft.1"
	flannelDev = "flannel.1"
)

// flannelPrefix is the etcd prefix of the control-plane lab's Flannel node:
// a network of its own, so a write reaches one daemon only and the two are
// measured in turn, never competing for the CPUs.
const flannelPrefix = "/wbench-flannel/network"

// cpNetwork is the control-plane labs' network config: a /8 of /26 subnets
// (2^18 of them), so 10000 peers fit in a network of the size the scale
// target names.
const cpNetwork = `{"Network": "10.0.0.0/8", "SubnetLen": 26, "Backend": {"Type": "vxlan"}}`

// cpSubnetLen is cpNetwork's SubnetLen.
const cpSubnetLen = 26

// cpNode is one daemon of the control-plane lab and what the harness needs
// to drive it.
type cpNode struct {
	daemon     string // weft or Flannel
	node       *lab.Node
	view       *kernelView
	subnetsDir string // etcd key prefix of its network's leases
}

func (n *cpNode) pid() int {
	if n.node.Flannel {
		return n.node.Flanneld.PID
	}
	return n.node.Weftd.PID
}

// cpLab is the control-plane lab: one vxlan weft node and, unless the run
// has no Flannel, one Flannel node on its own etcd prefix.
type cpLab struct {
	l     *lab.Lab
	cli   *clientv3.Client
	nodes []*cpNode // weft first
}

const cpLabName = "wb-cp"

func upCPLab(ctx context.Context, cfg *config) (*cpLab, func(), error) {
	c := &cpLab{}
	down := func() {
		for _, n := range c.nodes {
			if n.view != nil {
				n.view.close()
			}
		}
		if c.cli != nil {
			c.cli.Close()
		}
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		if err := lab.Down(cctx, "", cpLabName); err != nil {
			cfg.logf("lab %s down: %v", cpLabName, err)
		}
	}
	o := lab.Options{
		Name: cpLabName, Nodes: 1, Backend: "vxlan", Config: cpNetwork, BinDir: cfg.binDir,
		Progress: cfg.progress, ReadyTimeout: 60 * time.Second,
		WeftdArgs: []string{"--pprof"}, // for the heap profile of the scale run (heapTop)
	}
	if cfg.flannelBinDir != "" {
		o.FlannelBinDir, o.FlanneldArgs = cfg.flannelBinDir, []string{"--etcd-prefix=" + flannelPrefix}
	}
	l, err := lab.Up(ctx, o)
	if err != nil {
		return nil, down, fmt.Errorf("lab up: %w", err)
	}
	c.l = l
	if c.cli, err = dialLabEtcd(ctx, l); err != nil {
		return nil, down, err
	}
	weft := &cpNode{daemon: cniWeft, node: l.Nodes[0], subnetsDir: subnetsDir}
	c.nodes = append(c.nodes, weft)
	if weft.view, err = openKernelView(weft.node.NS, vxlanDev); err != nil {
		return nil, down, err
	}
	if cfg.flannelBinDir == "" {
		return c, down, nil
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = c.cli.Put(cctx, flannelPrefix+"/config", cpNetwork)
	cancel()
	if err != nil {
		return nil, down, fmt.Errorf("write Flannel's network config: %w", err)
	}
	fn, err := l.AddFlannelNode(ctx)
	if err != nil {
		return nil, down, fmt.Errorf("Flannel node: %w", err)
	}
	fl := &cpNode{daemon: cniFlannel, node: fn, subnetsDir: flannelPrefix + "/subnets/"}
	c.nodes = append(c.nodes, fl)
	if fl.view, err = openKernelView(fn.NS, flannelDev); err != nil {
		return nil, down, err
	}
	return c, down, nil
}

// writePeers writes peers under n's network, bound to one fresh etcd lease
// (100 puts per transaction), and returns the lease and the times of the
// first and the last write.
func (c *cpLab) writePeers(ctx context.Context, n *cpNode, peers []fakePeer) (clientv3.LeaseID, time.Time, time.Time, error) {
	vals := make([]string, len(peers))
	for i, p := range peers {
		v, err := p.value()
		if err != nil {
			return 0, time.Time{}, time.Time{}, err
		}
		vals[i] = v
	}
	grant, err := c.cli.Grant(ctx, 3600)
	if err != nil {
		return 0, time.Time{}, time.Time{}, fmt.Errorf("etcd grant: %w", err)
	}
	first := time.Now()
	for i := 0; i < len(peers); i += 100 {
		var ops []clientv3.Op
		for j := i; j < min(i+100, len(peers)); j++ {
			ops = append(ops, clientv3.OpPut(peers[j].key(n.subnetsDir), vals[j], clientv3.WithLease(grant.ID)))
		}
		if _, err := c.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return grant.ID, first, time.Now(), fmt.Errorf("etcd write: %w", err)
		}
	}
	return grant.ID, first, time.Now(), nil
}

// heapTop is heapTop of nd's weftd, reached in its node's namespace.
func (c *cpLab) heapTop(ctx context.Context, nd *cpNode, bin string) ([]string, error) {
	dial, err := c.l.DialContext(nd.node.Name)
	if err != nil {
		return nil, err
	}
	return heapTop(ctx, dial, bin)
}

// programTimeout bounds the wait for a daemon to program or remove a run's
// peers.
const programTimeout = 120 * time.Second

// peerRun writes n fake peer leases into nd's network, waits for its
// kernel to hold all of them, revokes the etcd lease (deleting every key at
// once) and waits for all of it to be gone. prof, when set, is started
// before the writes and stopped after the removal; with heap, weftd's heap
// profile is taken with the peers programmed.
func (c *cpLab) peerRun(ctx context.Context, cfg *config, nd *cpNode, n int, prof *profiler, heap bool) *PeerRun {
	out := &PeerRun{Peers: n, Daemon: nd.daemon}
	pid := nd.pid()
	fail := func(err error) *PeerRun { out.Error = err.Error(); return out }
	peers := fakePeers(0, n, cpSubnetLen, nd.node.Subnet)
	set := newPeerSet(peers)
	before, err := procUsage(pid)
	if err != nil {
		return fail(err)
	}
	out.Before = before
	if prof != nil {
		if err := prof.start(ctx); err != nil {
			cfg.logf("profile: %v", err)
		} else {
			defer prof.stop(ctx)
		}
	}
	grant, first, last, err := c.writePeers(ctx, nd, peers)
	if err != nil {
		return fail(err)
	}
	out.WriteMS = round3(ms(last.Sub(first)))
	at, _, err := nd.view.waitState(ctx, set, programTimeout, 10*time.Millisecond, func(s peerState) bool { return s.all(n) })
	if err != nil {
		return fail(fmt.Errorf("programming %d peers: %w", n, err))
	}
	out.ProgramMS = round3(ms(max(0, at.Sub(last))))
	out.ProgramFromFirstMS = round3(ms(at.Sub(first)))
	if out.Loaded, err = procUsage(pid); err != nil {
		return fail(err)
	}
	out.CPUProgramSec = round3(out.Loaded.CPUSeconds - before.CPUSeconds)
	if heap && !nd.node.Flannel {
		if out.HeapTop, err = c.heapTop(ctx, nd, filepath.Join(cfg.binDir, "weftd")); err != nil {
			out.HeapTop = []string{"no heap profile: " + err.Error()}
		}
	}
	t := time.Now()
	if _, err := c.cli.Revoke(ctx, grant); err != nil {
		return fail(fmt.Errorf("etcd revoke: %w", err))
	}
	at, _, err = nd.view.waitState(ctx, set, programTimeout, 10*time.Millisecond, peerState.none)
	if err != nil {
		return fail(fmt.Errorf("removing %d peers: %w", n, err))
	}
	out.RemoveMS = round3(ms(max(0, at.Sub(t))))
	if out.After, err = procUsage(pid); err != nil {
		return fail(err)
	}
	out.CPURemoveSec = round3(out.After.CPUSeconds - out.Loaded.CPUSeconds)
	return out
}

// goGCPercent is Go's own GOGC, which the memory figures are measured
// against: weftd's default --gc-percent is lower.
const goGCPercent = 100

// gcPercentRun is peerRun of n peers with nd's weftd restarted with
// --gc-percent=pct (then restarted as it was), without the heap profile:
// the default's is the one shown.
func (c *cpLab) gcPercentRun(ctx context.Context, cfg *config, nd *cpNode, n, pct int) *PeerRun {
	var r *PeerRun
	if err := withGCPercent(ctx, c.l, nd.node, pct, cfg.logf, func() { r = c.peerRun(ctx, cfg, nd, n, nil, false) }); err != nil {
		r = &PeerRun{Peers: n, Daemon: nd.daemon, Error: err.Error()}
	}
	r.GCPercent = pct
	return r
}

// withGCPercent calls f with node's weftd restarted with --gc-percent=pct,
// and restarts it as it was afterwards.
func withGCPercent(ctx context.Context, l *lab.Lab, node *lab.Node, pct int, logf func(string, ...any), f func()) error {
	args := node.Args
	node.Args = append(slices.Clone(args), fmt.Sprintf("--gc-percent=%d", pct))
	defer func() {
		node.Args = args
		if _, err := l.RestartWeftd(ctx, node.Name, false); err != nil && ctx.Err() == nil {
			logf("restart %s's weftd as it was: %v", node.Name, err)
		}
	}()
	if _, err := l.RestartWeftd(ctx, node.Name, false); err != nil {
		return fmt.Errorf("restart weftd with --gc-percent=%d: %w", pct, err)
	}
	f()
	return nil
}

// restartRun restarts nd's daemon with n peers in its network: the peers
// are written and programmed, the daemon stopped (SIGTERM), its VXLAN
// device (with every route, neighbour and FDB entry on it) and its subnet
// file deleted, and the daemon started again, timing start → subnet file
// written and start → the kernel holds every peer again.
func (c *cpLab) restartRun(ctx context.Context, nd *cpNode, n int) *RestartRun {
	out := &RestartRun{Peers: n, Daemon: nd.daemon}
	fail := func(err error) *RestartRun { out.Error = err.Error(); return out }
	peers := fakePeers(0, n, cpSubnetLen, nd.node.Subnet)
	set := newPeerSet(peers)
	grant, _, _, err := c.writePeers(ctx, nd, peers)
	if err != nil {
		return fail(err)
	}
	defer func() {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		_, _ = c.cli.Revoke(cctx, grant)
		_, _, _ = nd.view.waitState(cctx, set, programTimeout, 10*time.Millisecond, peerState.none)
	}()
	if _, _, err := nd.view.waitState(ctx, set, programTimeout, 10*time.Millisecond, func(s peerState) bool { return s.all(n) }); err != nil {
		return fail(fmt.Errorf("programming %d peers: %w", n, err))
	}
	name := nd.node.Name
	if nd.node.Flannel {
		err = c.l.StopFlanneld(ctx, name, false)
	} else {
		err = c.l.StopWeftd(ctx, name, false)
	}
	if err != nil {
		return fail(err)
	}
	if err := ipCmd(ctx, "-n", nd.node.NS, "link", "del", nd.view.dev); err != nil {
		return fail(err)
	}
	if err := os.Remove(nd.node.SubnetFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fail(err)
	}
	// Both waits start before the daemon does and record when the state
	// first held, whatever the start call waits for.
	var wg sync.WaitGroup
	var fileAt, routesAt time.Time
	var fileErr, routesErr error
	start := time.Now()
	wg.Go(func() {
		_, fileErr = pollUntil(ctx, programTimeout, time.Millisecond, func() (bool, error) {
			_, err := os.Stat(nd.node.SubnetFile)
			return err == nil, nil
		})
		fileAt = time.Now()
	})
	wg.Go(func() {
		routesAt, _, routesErr = nd.view.waitState(ctx, set, programTimeout, 5*time.Millisecond, func(s peerState) bool { return s.all(n) })
	})
	if nd.node.Flannel {
		_, err = c.l.StartFlanneld(ctx, name)
	} else {
		_, err = c.l.StartWeftd(ctx, name)
	}
	wg.Wait()
	switch {
	case err != nil:
		return fail(err)
	case fileErr != nil:
		return fail(fmt.Errorf("subnet file after restart: %w", fileErr))
	case routesErr != nil:
		return fail(fmt.Errorf("peers after restart: %w", routesErr))
	}
	out.SubnetFileMS = round3(ms(fileAt.Sub(start)))
	out.RoutesMS = round3(ms(routesAt.Sub(start)))
	u, err := procUsage(nd.pid())
	if err != nil {
		return fail(err)
	}
	out.RSSMB = u.RSSMB
	return out
}

// convergence writes one lease at a time into each daemon's network in
// turn and times write → the node's kernel holds its route, neighbour and
// FDB entry, then delete → all gone, polling every millisecond.
func (c *cpLab) convergence(ctx context.Context, samples int) []*Convergence {
	outs := make([]*Convergence, len(c.nodes))
	adds, dels := make([][]float64, len(c.nodes)), make([][]float64, len(c.nodes))
	for i, nd := range c.nodes {
		outs[i] = &Convergence{Samples: samples, Daemon: nd.daemon}
	}
	fail := func(out *Convergence, err error) {
		out.Errors++
		if out.FirstError == "" {
			out.FirstError = err.Error()
		}
	}
	grant, err := c.cli.Grant(ctx, 3600)
	if err != nil {
		for _, o := range outs {
			fail(o, fmt.Errorf("etcd grant: %w", err))
		}
		return outs
	}
	defer func() {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		_, _ = c.cli.Revoke(cctx, grant.ID)
	}()
	for s := range samples {
		for i, nd := range c.nodes {
			if ctx.Err() != nil {
				break
			}
			out := outs[i]
			p := fakePeers(60000+s, 1, cpSubnetLen, nd.node.Subnet)[0]
			set := newPeerSet([]fakePeer{p})
			v, err := p.value()
			if err != nil {
				fail(out, err)
				continue
			}
			t := time.Now()
			if _, err := c.cli.Put(ctx, p.key(nd.subnetsDir), v, clientv3.WithLease(grant.ID)); err != nil {
				fail(out, err)
				continue
			}
			at, _, err := nd.view.waitState(ctx, set, 5*time.Second, time.Millisecond, func(s peerState) bool { return s.all(1) })
			if err != nil {
				fail(out, fmt.Errorf("add %s: %w", p.sn, err))
				continue
			}
			adds[i] = append(adds[i], ms(max(0, at.Sub(t))))
			t = time.Now()
			if _, err := c.cli.Delete(ctx, p.key(nd.subnetsDir)); err != nil {
				fail(out, err)
				continue
			}
			at, _, err = nd.view.waitState(ctx, set, 5*time.Second, time.Millisecond, peerState.none)
			if err != nil {
				fail(out, fmt.Errorf("remove %s: %w", p.sn, err))
				continue
			}
			dels[i] = append(dels[i], ms(max(0, at.Sub(t))))
		}
	}
	for i, out := range outs {
		out.AddMS, out.RemoveMS = summarize(adds[i]), summarize(dels[i])
	}
	return outs
}

// runControl runs the control-plane measurements: lease acquisition, then
// on the control-plane lab each peer count programmed and removed by weft
// and Flannel in turn, restarts with peers present in turn, weft alone at
// the scale count, and single-lease convergence in turn.
func runControl(ctx context.Context, cfg *config, res *Results) *Control {
	out := &Control{}
	cfg.logf("control plane: %d nodes acquiring leases at once", cfg.acquireNodes)
	a, err := runAcquire(ctx, cfg, cfg.acquireNodes)
	if err != nil {
		out.Errors = append(out.Errors, "lease acquisition: "+err.Error())
	}
	out.Acquire = a
	if a != nil {
		cfg.logf("  %d nodes: all done in %.0f ms, p99 %.0f ms, %d errors, %d duplicates", a.Nodes, a.TotalMS, a.PerNodeMS.P99, a.Errors, a.Duplicates)
	}
	if ctx.Err() != nil {
		return out
	}
	c, down, err := upCPLab(ctx, cfg)
	defer down()
	if err != nil {
		out.Errors = append(out.Errors, "control-plane lab: "+err.Error())
		return out
	}
	record := func(pr *PeerRun) {
		cfg.logf("  %s, %d peers: programmed %.0f ms after the last write, removed in %.0f ms, RSS %.1f MB", pr.Daemon, pr.Peers, pr.ProgramMS, pr.RemoveMS, pr.Loaded.RSSMB)
		if pr.Error != "" {
			out.Errors = append(out.Errors, fmt.Sprintf("%s, %d peers: %s", pr.Daemon, pr.Peers, pr.Error))
		}
		out.Peers = append(out.Peers, pr)
	}
	for _, n := range cfg.peerCounts {
		cfg.logf("control plane: %d fake peers, %s in turn, %d round(s)", n, daemonNames(c.nodes), cfg.cpReps)
		for range cfg.cpReps {
			for _, nd := range c.nodes {
				if ctx.Err() != nil {
					return out
				}
				record(c.peerRun(ctx, cfg, nd, n, nil, false))
			}
		}
	}
	if n := firstOr(cfg.peerCounts, 1000); ctx.Err() == nil {
		cfg.logf("control plane: restart with %d peers, %s in turn, %d round(s)", n, daemonNames(c.nodes), cfg.cpReps)
		for range cfg.cpReps {
			for _, nd := range c.nodes {
				if ctx.Err() != nil {
					return out
				}
				r := c.restartRun(ctx, nd, n)
				cfg.logf("  %s: subnet file %.0f ms, %d peers back %.0f ms after the start", r.Daemon, r.SubnetFileMS, n, r.RoutesMS)
				if r.Error != "" {
					out.Errors = append(out.Errors, fmt.Sprintf("%s restart: %s", r.Daemon, r.Error))
				}
				out.Restarts = append(out.Restarts, r)
			}
		}
	}
	if cfg.scalePeers > 0 && ctx.Err() == nil {
		cfg.logf("control plane: %d fake peers, weft alone", cfg.scalePeers)
		var prof *profiler
		if cfg.profiles {
			prof = newProfiler("control plane", fmt.Sprintf("weftd programming %d peers (vxlan, /%d subnets), then removing them", cfg.scalePeers, cpSubnetLen), []int{c.nodes[0].pid()}, nil)
		}
		pr := c.peerRun(ctx, cfg, c.nodes[0], cfg.scalePeers, prof, true)
		if prof != nil {
			res.Profiles = append(res.Profiles, prof.result())
		}
		record(pr)
		if ctx.Err() == nil {
			cfg.logf("control plane: %d fake peers, weft at Go's GOGC (--gc-percent=%d)", cfg.scalePeers, goGCPercent)
			record(c.gcPercentRun(ctx, cfg, c.nodes[0], cfg.scalePeers, goGCPercent))
		}
	}
	if ctx.Err() != nil {
		return out
	}
	cfg.logf("control plane: convergence, %d single leases, %s in turn", cfg.convSamples, daemonNames(c.nodes))
	for _, cv := range c.convergence(ctx, cfg.convSamples) {
		cfg.logf("  %s: add p50 %.1f ms p99 %.1f ms; remove p50 %.1f ms p99 %.1f ms", cv.Daemon, cv.AddMS.P50, cv.AddMS.P99, cv.RemoveMS.P50, cv.RemoveMS.P99)
		if cv.Daemon == cniWeft {
			out.Convergence = cv
		} else {
			out.FlannelConvergence = cv
		}
	}
	return out
}

func daemonNames(ns []*cpNode) string {
	var names []string
	for _, n := range ns {
		names = append(names, n.daemon)
	}
	return strings.Join(names, " and ")
}

func firstOr(vs []int, d int) int {
	if len(vs) == 0 {
		return d
	}
	return vs[0]
}
