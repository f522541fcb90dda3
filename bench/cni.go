package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weftnet/weft/daemon"
	"github.com/weftnet/weft/lab"
	"github.com/weftnet/weft/subnet"
)

// cniBridge is the node bridge of the CNI runs (the plugin's default).
const cniBridge = "weft0"

// cniImpl is one CNI implementation under test: weft's plugin, or
// Flannel's chain (flannel → bridge → host-local), each in a node namespace
// of its own.
type cniImpl struct {
	name    string // "weft" or "Flannel"
	node    string // namespace
	binDirs []string
	// plain and chained are the conflists without and with portmap, and
	// what they run.
	plain, chained               string
	plainPlugins, chainedPlugins string
	// binary answers VERSION for the exec floor.
	binary string
}

// cniBench is the namespaces and files the CNI runs share: the pods are
// used by every implementation in turn (DEL leaves them empty).
type cniBench struct {
	cfg        *config
	dir        string
	subnetFile string
	impls      []*cniImpl
	pods       []string // pod namespaces
}

// cniKind is one way of calling the plugins, run for every implementation.
type cniKind struct {
	name    string
	chained bool
	conc    int
}

// runCNI measures the CNI plugins the way a runtime calls them: libcni
// execs bin/weft (and bin/portmap when chained) on a thread inside a node
// namespace the harness made, with a subnet file it wrote; each pod is a
// namespace of its own. Flannel's chain is called the same way in a second
// node namespace with the same subnet file, and every kind of run
// alternates weft and Flannel cfg.cniRounds times, latencies pooled.
//
// With cfg.profiles, weft's slowest kind (by ADD p50) is run once more
// under a machine-wide perf recording: the time is spent in short-lived
// plugin processes and the kernel, which no single PID covers.
func runCNI(ctx context.Context, cfg *config) (*CNI, *Profile, error) {
	b := &cniBench{cfg: cfg}
	out := &CNI{Pods: cfg.cniPods, Parallel: cfg.cniParallel, Rounds: cfg.cniRounds}
	cleanup, err := b.setup(ctx)
	defer cleanup()
	if err != nil {
		return out, nil, err
	}
	for _, im := range b.impls {
		floor, err := b.execFloor(ctx, im.binary, 20)
		if err != nil {
			return out, nil, err
		}
		if im.name == cniWeft {
			out.ExecFloorMS = floor
		} else {
			out.FlannelExecFloorMS = &floor
		}
	}
	kinds := []cniKind{
		{"sequential", false, 1},
		{"parallel", false, cfg.cniParallel},
		{"sequential, chained", true, 1},
		{"parallel, chained", true, cfg.cniParallel},
	}
	var slowest *cniKind
	var slowestP50 float64
	for _, k := range kinds {
		if ctx.Err() != nil {
			break
		}
		runs := make([]*cniPool, len(b.impls))
		for i, im := range b.impls {
			runs[i] = newCNIPool(k, im)
		}
		for range max(1, cfg.cniRounds) {
			for i, im := range b.impls {
				r, err := b.run(ctx, im, k)
				if err != nil {
					return out, nil, err
				}
				runs[i].add(r)
			}
		}
		for _, pool := range runs {
			run := pool.result()
			cfg.logf("  cni %s, %s: ADD p50 %.1f ms p99 %.1f ms, DEL p50 %.1f ms, errors %d/%d",
				k.name, run.Impl, run.AddMS.P50, run.AddMS.P99, run.DelMS.P50, run.AddErrors, run.DelErrors)
			if run.Impl == cniWeft && (slowest == nil || run.AddMS.P50 > slowestP50) {
				slowest, slowestP50 = &k, run.AddMS.P50
			}
			out.Runs = append(out.Runs, run)
		}
	}
	if !cfg.profiles || slowest == nil || ctx.Err() != nil {
		return out, nil, nil
	}
	weft := b.impls[0]
	cfg.logf("  profiling weft's %s run (machine-wide perf)", slowest.name)
	plugins := weft.plainPlugins
	if slowest.chained {
		plugins = weft.chainedPlugins
	}
	prof := newProfiler("cni", fmt.Sprintf("%d pods, %s (%s): ADD then DEL, re-run under perf", cfg.cniPods, slowest.name, plugins), nil, cniComms())
	if err := prof.start(ctx); err != nil {
		res := prof.result()
		return out, &res, nil
	}
	_, err = b.run(ctx, weft, *slowest)
	prof.stop(ctx)
	res := prof.result()
	if err != nil && res.Error == "" {
		res.Error = err.Error()
	}
	return out, &res, nil
}

// cniWeft and cniFlannel name the implementations in the results.
const (
	cniWeft    = "weft"
	cniFlannel = "Flannel"
)

// cniPool pools the rounds of one kind of run of one implementation.
type cniPool struct {
	out          *CNIRun
	addLat, dels []float64
	ips          map[string]bool
}

func newCNIPool(k cniKind, im *cniImpl) *cniPool {
	plugins := im.plainPlugins
	if k.chained {
		plugins = im.chainedPlugins
	}
	return &cniPool{out: &CNIRun{Name: k.name, Impl: im.name, Plugins: plugins, Concurrency: k.conc}, ips: map[string]bool{}}
}

func (p *cniPool) add(r *CNIRun) {
	p.out.AddErrors += r.AddErrors
	p.out.DelErrors += r.DelErrors
	p.out.WallSec = round3(p.out.WallSec + r.WallSec)
	p.out.UniqueIPs = max(p.out.UniqueIPs, r.UniqueIPs)
	if p.out.FirstError == "" {
		p.out.FirstError = r.FirstError
	}
	p.addLat = append(p.addLat, r.addLat...)
	p.dels = append(p.dels, r.delLat...)
}

func (p *cniPool) result() *CNIRun {
	p.out.AddMS, p.out.DelMS = summarize(p.addLat), summarize(p.dels)
	return p.out
}

// setup makes the node namespaces, the pod namespaces, the subnet file and
// the conflists. The returned cleanup removes all of it and is never nil.
func (b *cniBench) setup(ctx context.Context) (func(), error) {
	var mu sync.Mutex
	var made []string
	dir, err := os.MkdirTemp("", "wbench-cni-")
	cleanup := func() {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		mu.Lock()
		defer mu.Unlock()
		for _, n := range made {
			if err := delNS(cctx, n); err != nil {
				b.cfg.logf("cleanup: %v", err)
			}
		}
		if dir != "" {
			os.RemoveAll(dir)
		}
	}
	if err != nil {
		return cleanup, fmt.Errorf("cni: %w", err)
	}
	b.dir = dir
	b.subnetFile = filepath.Join(dir, "subnet.env")
	if err := subnet.WriteFile(b.subnetFile, subnet.FileInfo{
		Network: netip.MustParsePrefix("10.250.0.0/16"),
		Subnet:  netip.MustParsePrefix("10.250.1.1/24"),
		MTU:     1450,
	}); err != nil {
		return cleanup, fmt.Errorf("cni: %w", err)
	}
	impls, err := b.implementations()
	if err != nil {
		return cleanup, err
	}
	b.impls = impls
	for _, im := range b.impls {
		made = append(made, im.node)
		if err := addNS(ctx, im.node); err != nil {
			return cleanup, fmt.Errorf("cni: %w", err)
		}
	}
	b.pods = make([]string, b.cfg.cniPods)
	for i := range b.pods {
		b.pods[i] = uniqueNS(fmt.Sprintf("cnipod%d", i))
	}
	// Namespaces are made 8 at a time: `ip netns add` is mostly waiting.
	sem := make(chan struct{}, 8)
	errs := make(chan error, len(b.pods))
	var wg sync.WaitGroup
	for _, p := range b.pods {
		mu.Lock()
		made = append(made, p)
		mu.Unlock()
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := addNS(ctx, p); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return cleanup, fmt.Errorf("cni: pod namespaces: %w", err)
	}
	return cleanup, nil
}

// implementations returns weft's plugin and, unless the run has no
// Flannel, Flannel's chain, each with the conflist its node installs
// (weftd's CNIConfList, the lab's FlannelConfList) and the same list
// without portmap.
func (b *cniBench) implementations() ([]*cniImpl, error) {
	chained := daemon.CNIConfList(daemon.CNIConf{SubnetFile: b.subnetFile, IPAMDir: filepath.Join(b.dir, "ipam"), Network: daemon.CNINetworkName, Bridge: cniBridge})
	plain, err := firstPluginOnly(chained)
	if err != nil {
		return nil, err
	}
	impls := []*cniImpl{{
		name: cniWeft, node: uniqueNS("cni"), binDirs: []string{b.cfg.binDir},
		plain: plain, chained: string(chained), plainPlugins: "weft", chainedPlugins: "weft + portmap",
		binary: filepath.Join(b.cfg.binDir, "weft"),
	}}
	if b.cfg.flannelBinDir == "" {
		return impls, nil
	}
	fchained := lab.FlannelConfList(&lab.Node{
		SubnetFile:    b.subnetFile,
		FlannelCNIDir: filepath.Join(b.dir, "flannel-cni"),
		HostLocalDir:  filepath.Join(b.dir, "host-local"),
	})
	fplain, err := firstPluginOnly(fchained)
	if err != nil {
		return nil, err
	}
	return append(impls, &cniImpl{
		name: cniFlannel, node: uniqueNS("cniflannel"), binDirs: []string{b.cfg.flannelBinDir, b.cfg.binDir},
		plain: fplain, chained: string(fchained),
		plainPlugins: "flannel → bridge → host-local", chainedPlugins: "flannel → bridge → host-local + portmap",
		binary: filepath.Join(b.cfg.flannelBinDir, "flannel"),
	}), nil
}

// firstPluginOnly returns conflist with only its first plugin (the
// network plugin, without portmap).
func firstPluginOnly(conflist []byte) (string, error) {
	var m map[string]any
	if err := json.Unmarshal(conflist, &m); err != nil {
		return "", fmt.Errorf("cni: conflist: %w", err)
	}
	ps, ok := m["plugins"].([]any)
	if !ok || len(ps) == 0 {
		return "", fmt.Errorf("cni: conflist has no plugins: %s", conflist)
	}
	m["plugins"] = ps[:1]
	out, err := json.Marshal(m)
	return string(out), err
}

// execFloor times binary answering VERSION: process start, Go runtime
// start, one JSON round trip.
func (b *cniBench) execFloor(ctx context.Context, binary string, n int) (Dist, error) {
	var lat []float64
	for range n {
		cmd := exec.CommandContext(ctx, binary)
		cmd.Env = []string{"CNI_COMMAND=VERSION"}
		cmd.Stdin = strings.NewReader(`{"cniVersion": "0.3.1"}`)
		t := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			return Dist{}, fmt.Errorf("%s VERSION: %w: %s", filepath.Base(binary), err, out)
		}
		lat = append(lat, ms(time.Since(t)))
	}
	return summarize(lat), nil
}

// run ADDs every pod, then DELs every pod, k.conc at a time, timing each
// libcni call, in im's node namespace. Container IDs are unique per run.
func (b *cniBench) run(ctx context.Context, im *cniImpl, k cniKind) (*CNIRun, error) {
	conf := im.plain
	if k.chained {
		conf = im.chained
	}
	list, err := libcni.ConfListFromBytes([]byte(conf))
	if err != nil {
		return nil, fmt.Errorf("cni %s %s: conflist: %w", im.name, k.name, err)
	}
	cache, err := os.MkdirTemp(b.dir, "cache-")
	if err != nil {
		return nil, fmt.Errorf("cni: %w", err)
	}
	cni := libcni.NewCNIConfigWithCacheDir(im.binDirs, cache, nil)
	id := fmt.Sprintf("wbench-%d", time.Now().UnixNano()%1e9)
	rts := make([]*libcni.RuntimeConf, len(b.pods))
	for i := range rts {
		rts[i] = &libcni.RuntimeConf{
			ContainerID: fmt.Sprintf("%s-%d", id, i),
			NetNS:       nsPath(b.pods[i]),
			IfName:      "eth0",
		}
		if k.chained {
			rts[i].CapabilityArgs = map[string]any{"portMappings": []map[string]any{
				{"hostPort": 20000 + i, "containerPort": 80, "protocol": "tcp"},
			}}
		}
	}
	out := &CNIRun{Name: k.name, Impl: im.name, Concurrency: k.conc}
	var mu sync.Mutex
	ips := map[netip.Addr]bool{}
	record := func(lat *[]float64, errCount *int, d time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			*errCount++
			if out.FirstError == "" {
				out.FirstError = err.Error()
			}
			return
		}
		*lat = append(*lat, ms(d))
	}
	start := time.Now()
	b.each(ctx, k.conc, func(i int) {
		var res *types100.Result
		t := time.Now()
		err := ns.WithNetNSPath(nsPath(im.node), func(ns.NetNS) error {
			r, err := cni.AddNetworkList(ctx, list, rts[i])
			if err != nil {
				return err
			}
			res, err = types100.NewResultFromResult(r)
			return err
		})
		record(&out.addLat, &out.AddErrors, time.Since(t), err)
		if err == nil {
			for _, ipc := range res.IPs {
				if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
					mu.Lock()
					ips[a.Unmap()] = true
					mu.Unlock()
				}
			}
		}
	})
	b.each(ctx, k.conc, func(i int) {
		t := time.Now()
		err := ns.WithNetNSPath(nsPath(im.node), func(ns.NetNS) error {
			return cni.DelNetworkList(ctx, list, rts[i])
		})
		record(&out.delLat, &out.DelErrors, time.Since(t), err)
	})
	out.WallSec = round3(time.Since(start).Seconds())
	out.AddMS, out.DelMS = summarize(out.addLat), summarize(out.delLat)
	out.UniqueIPs = len(ips)
	if left, err := leftoverVeths(ctx, im.node); err != nil {
		return out, err
	} else if left > 0 {
		out.DelErrors += left
		if out.FirstError == "" {
			out.FirstError = fmt.Sprintf("%d veth(s) left on the node after DEL", left)
		}
	}
	return out, nil
}

// each calls f(i) for every pod, conc at a time.
func (b *cniBench) each(ctx context.Context, conc int, f func(i int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range max(1, conc) {
		wg.Go(func() {
			for i := range next {
				f(i)
			}
		})
	}
	for i := range b.pods {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
}

// leftoverVeths counts veth links still in namespace node.
func leftoverVeths(ctx context.Context, node string) (int, error) {
	out, err := nsRun(ctx, node, "ip", "-j", "link", "show", "type", "veth")
	if err != nil {
		return 0, err
	}
	var links []json.RawMessage
	if s := strings.TrimSpace(out); s != "" {
		if err := json.Unmarshal([]byte(s), &links); err != nil {
			return 0, fmt.Errorf("parse ip -j link: %w", err)
		}
	}
	return len(links), nil
}
