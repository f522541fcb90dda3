package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
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
// are 198.18.80.1 … 198.18.99.250 (never on any wire: the FDB entries
// pointing at them are only counted), MACs locally administered.
func fakePeerAt(i int) fakePeer {
	return fakePeer{
		pub: netip.AddrFrom4([4]byte{198, 18, byte(80 + (i/250)%20), byte(1 + i%250)}),
		mac: net.HardwareAddr{0x0e, 0x77, 0x62, byte(i >> 16), byte(i >> 8), byte(i)},
	}
}

// fakePeers returns n fake peers with subnets 10.x.y.0/24 counted from
// first (an index into 10.1.0.0/24, 10.1.1.0/24, …), skipping own.
func fakePeers(first, n int, own netip.Prefix) []fakePeer {
	out := make([]fakePeer, 0, n)
	for k := 256 + first; len(out) < n; k++ {
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(k >> 8), byte(k), 0}), 24)
		if sn.Overlaps(own) {
			continue
		}
		p := fakePeerAt(len(out))
		p.sn = sn
		out = append(out, p)
	}
	return out
}

func (p fakePeer) key() string { return subnetsDir + subnet.KeyName(p.sn, netip.Prefix{}) }

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

// count reads the kernel's state for s on the VXLAN device.
func (k *kernelView) count(s *peerSet) (peerState, error) {
	var st peerState
	link, err := k.h.LinkByName(k.dev)
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

// vxlanDev is the VXLAN device of VNI 1 (the config default).
const vxlanDev = "weft.1"

// cpLab is the control-plane lab: one vxlan node whose weftd programs the
// fake peers; a /8 pod network so 5000 /24 peers fit.
type cpLab struct {
	l    *lab.Lab
	cli  *clientv3.Client
	view *kernelView
	node *lab.Node
}

const cpLabName = "wb-cp"

func upCPLab(ctx context.Context, cfg *config) (*cpLab, func(), error) {
	c := &cpLab{}
	down := func() {
		if c.view != nil {
			c.view.close()
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
	l, err := lab.Up(ctx, lab.Options{
		Name: cpLabName, Nodes: 1, Backend: "vxlan", BinDir: cfg.binDir,
		Network: "10.0.0.0/8", Progress: cfg.progress, ReadyTimeout: 60 * time.Second,
	})
	if err != nil {
		return nil, down, fmt.Errorf("lab up: %w", err)
	}
	c.l, c.node = l, l.Nodes[0]
	if c.cli, err = dialLabEtcd(ctx, l); err != nil {
		return nil, down, err
	}
	if c.view, err = openKernelView(c.node.NS, vxlanDev); err != nil {
		return nil, down, err
	}
	return c, down, nil
}

// peerRun writes n fake peer leases (bound to one etcd lease, 100 puts per
// transaction), waits for the node's kernel to hold all of them, revokes
// the etcd lease (deleting every key at once) and waits for all of it to
// be gone. prof, when set, is started before the writes and stopped after
// the removal.
func (c *cpLab) peerRun(ctx context.Context, cfg *config, n int, prof *profiler) *PeerRun {
	out := &PeerRun{Peers: n}
	pid := c.node.Weftd.PID
	fail := func(err error) *PeerRun { out.Error = err.Error(); return out }
	peers := fakePeers(0, n, c.node.Subnet)
	set := newPeerSet(peers)
	vals := make([]string, n)
	for i, p := range peers {
		v, err := p.value()
		if err != nil {
			return fail(err)
		}
		vals[i] = v
	}
	grant, err := c.cli.Grant(ctx, 3600)
	if err != nil {
		return fail(fmt.Errorf("etcd grant: %w", err))
	}
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
	first := time.Now()
	for i := 0; i < n; i += 100 {
		var ops []clientv3.Op
		for j := i; j < min(i+100, n); j++ {
			ops = append(ops, clientv3.OpPut(peers[j].key(), vals[j], clientv3.WithLease(grant.ID)))
		}
		if _, err := c.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return fail(fmt.Errorf("etcd write: %w", err))
		}
	}
	last := time.Now()
	out.WriteMS = round3(ms(last.Sub(first)))
	at, _, err := c.view.waitState(ctx, set, 60*time.Second, 10*time.Millisecond, func(s peerState) bool { return s.all(n) })
	if err != nil {
		return fail(fmt.Errorf("programming %d peers: %w", n, err))
	}
	out.ProgramMS = round3(ms(max(0, at.Sub(last))))
	out.ProgramFromFirstMS = round3(ms(at.Sub(first)))
	if out.Loaded, err = procUsage(pid); err != nil {
		return fail(err)
	}
	out.CPUProgramSec = round3(out.Loaded.CPUSeconds - before.CPUSeconds)
	t := time.Now()
	if _, err := c.cli.Revoke(ctx, grant.ID); err != nil {
		return fail(fmt.Errorf("etcd revoke: %w", err))
	}
	at, _, err = c.view.waitState(ctx, set, 60*time.Second, 10*time.Millisecond, peerState.none)
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

// convergence writes one lease at a time and times write → the node's
// kernel holds its route, neighbour and FDB entry, then delete → all gone,
// polling every millisecond.
func (c *cpLab) convergence(ctx context.Context, samples int) *Convergence {
	out := &Convergence{Samples: samples}
	fail := func(err error) {
		out.Errors++
		if out.FirstError == "" {
			out.FirstError = err.Error()
		}
	}
	grant, err := c.cli.Grant(ctx, 3600)
	if err != nil {
		fail(fmt.Errorf("etcd grant: %w", err))
		return out
	}
	defer func() {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		_, _ = c.cli.Revoke(cctx, grant.ID)
	}()
	peers := fakePeers(6000, samples, c.node.Subnet)
	var add, del []float64
	for _, p := range peers {
		if ctx.Err() != nil {
			break
		}
		set := newPeerSet([]fakePeer{p})
		v, err := p.value()
		if err != nil {
			fail(err)
			continue
		}
		t := time.Now()
		if _, err := c.cli.Put(ctx, p.key(), v, clientv3.WithLease(grant.ID)); err != nil {
			fail(err)
			continue
		}
		at, _, err := c.view.waitState(ctx, set, 5*time.Second, time.Millisecond, func(s peerState) bool { return s.all(1) })
		if err != nil {
			fail(fmt.Errorf("add %s: %w", p.sn, err))
			continue
		}
		add = append(add, ms(max(0, at.Sub(t))))
		t = time.Now()
		if _, err := c.cli.Delete(ctx, p.key()); err != nil {
			fail(err)
			continue
		}
		at, _, err = c.view.waitState(ctx, set, 5*time.Second, time.Millisecond, peerState.none)
		if err != nil {
			fail(fmt.Errorf("remove %s: %w", p.sn, err))
			continue
		}
		del = append(del, ms(max(0, at.Sub(t))))
	}
	out.AddMS, out.RemoveMS = summarize(add), summarize(del)
	return out
}

// runControl runs the control-plane measurements.
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
	for i, n := range cfg.peerCounts {
		if ctx.Err() != nil {
			break
		}
		cfg.logf("control plane: %d fake peers into etcd", n)
		var prof *profiler
		if cfg.profiles && i == len(cfg.peerCounts)-1 {
			prof = newProfiler("control plane", fmt.Sprintf("weftd programming %d peers (vxlan), then removing them", n), []int{c.node.Weftd.PID}, nil)
		}
		pr := c.peerRun(ctx, cfg, n, prof)
		if prof != nil {
			res.Profiles = append(res.Profiles, prof.result())
		}
		cfg.logf("  %d peers: programmed %.0f ms after the last write, removed in %.0f ms, RSS %.1f MB", n, pr.ProgramMS, pr.RemoveMS, pr.Loaded.RSSMB)
		if pr.Error != "" {
			out.Errors = append(out.Errors, fmt.Sprintf("%d peers: %s", n, pr.Error))
		}
		out.Peers = append(out.Peers, pr)
	}
	if ctx.Err() != nil {
		return out
	}
	cfg.logf("control plane: convergence, %d single leases", cfg.convSamples)
	out.Convergence = c.convergence(ctx, cfg.convSamples)
	cfg.logf("  add p50 %.1f ms p99 %.1f ms; remove p50 %.1f ms p99 %.1f ms", out.Convergence.AddMS.P50, out.Convergence.AddMS.P99, out.Convergence.RemoveMS.P50, out.Convergence.RemoveMS.P99)
	return out
}
