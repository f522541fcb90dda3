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
	"github.com/weftnet/weft/subnet"
)

// cniBridge is the node bridge of the CNI runs (the plugin's default).
const cniBridge = "weft0"

// cniBench is the node namespace and files the CNI runs share.
type cniBench struct {
	cfg        *config
	node       string // namespace
	dir        string
	subnetFile string
	pods       []string // pod namespaces
}

// runCNI measures the weft plugin the way a runtime calls it: libcni execs
// bin/weft (and bin/portmap when chained) on a thread inside a node
// namespace the harness made, with a subnet file it wrote; each pod is a
// namespace of its own.
//
// With cfg.profiles, the slowest run (by ADD p50) is run once more under a
// machine-wide perf recording: the time is spent in short-lived plugin
// processes and the kernel, which no single PID covers.
func runCNI(ctx context.Context, cfg *config) (*CNI, *Profile, error) {
	b := &cniBench{cfg: cfg, node: uniqueNS("cni")}
	out := &CNI{Pods: cfg.cniPods, Parallel: cfg.cniParallel}
	cleanup, err := b.setup(ctx)
	defer cleanup()
	if err != nil {
		return out, nil, err
	}
	floor, err := b.execFloor(ctx, 20)
	if err != nil {
		return out, nil, err
	}
	out.ExecFloorMS = floor
	plain := fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "weft", "plugins": [{"type": "weft", "subnetFile": %q, "dataDir": %q, "bridge": %q}]}`,
		b.subnetFile, filepath.Join(b.dir, "ipam"), cniBridge)
	chained := string(daemon.CNIConfList(daemon.CNIConf{SubnetFile: b.subnetFile, IPAMDir: filepath.Join(b.dir, "ipam"), Network: daemon.CNINetworkName, Bridge: cniBridge}))
	runs := []struct {
		name, plugins, conf string
		conc                int
	}{
		{"sequential", "weft", plain, 1},
		{"parallel", "weft", plain, cfg.cniParallel},
		{"sequential, chained", "weft + portmap", chained, 1},
		{"parallel, chained", "weft + portmap", chained, cfg.cniParallel},
	}
	slowest := -1
	for i, r := range runs {
		if ctx.Err() != nil {
			break
		}
		run, err := b.run(ctx, r.name, r.plugins, r.conf, r.conc)
		if err != nil {
			return out, nil, err
		}
		if slowest < 0 || run.AddMS.P50 > out.Runs[slowest].AddMS.P50 {
			slowest = i
		}
		cfg.logf("  cni %s: ADD p50 %.1f ms p99 %.1f ms, DEL p50 %.1f ms, errors %d/%d",
			r.name, run.AddMS.P50, run.AddMS.P99, run.DelMS.P50, run.AddErrors, run.DelErrors)
		out.Runs = append(out.Runs, run)
	}
	if !cfg.profiles || slowest < 0 || ctx.Err() != nil {
		return out, nil, nil
	}
	r := runs[slowest]
	cfg.logf("  profiling the %s run (machine-wide perf)", r.name)
	prof := newProfiler("cni", fmt.Sprintf("%d pods, %s (%s): ADD then DEL, re-run under perf", cfg.cniPods, r.name, r.plugins), nil, cniComms())
	if err := prof.start(ctx); err != nil {
		res := prof.result()
		return out, &res, nil
	}
	_, err = b.run(ctx, r.name+" (profiled)", r.plugins, r.conf, r.conc)
	prof.stop(ctx)
	res := prof.result()
	if err != nil && res.Error == "" {
		res.Error = err.Error()
	}
	return out, &res, nil
}

// setup makes the node namespace, the pod namespaces and the subnet file.
// The returned cleanup removes all of it and is never nil.
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
	made = append(made, b.node)
	if err := addNS(ctx, b.node); err != nil {
		return cleanup, fmt.Errorf("cni: %w", err)
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

// execFloor times `weft` answering VERSION: process start, Go runtime
// start, one JSON round trip.
func (b *cniBench) execFloor(ctx context.Context, n int) (Dist, error) {
	var lat []float64
	for range n {
		cmd := exec.CommandContext(ctx, filepath.Join(b.cfg.binDir, "weft"))
		cmd.Env = []string{"CNI_COMMAND=VERSION"}
		cmd.Stdin = strings.NewReader(`{"cniVersion": "1.1.0"}`)
		t := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			return Dist{}, fmt.Errorf("weft VERSION: %w: %s", err, out)
		}
		lat = append(lat, ms(time.Since(t)))
	}
	return summarize(lat), nil
}

// run ADDs every pod, then DELs every pod, conc at a time, timing each
// libcni call. Container IDs are unique per run.
func (b *cniBench) run(ctx context.Context, name, plugins, conf string, conc int) (*CNIRun, error) {
	list, err := libcni.ConfListFromBytes([]byte(conf))
	if err != nil {
		return nil, fmt.Errorf("cni %s: conflist: %w", name, err)
	}
	cache := filepath.Join(b.dir, "cache-"+strings.NewReplacer(" ", "", ",", "-").Replace(name))
	cni := libcni.NewCNIConfigWithCacheDir([]string{b.cfg.binDir}, cache, nil)
	chained := len(list.Plugins) > 1
	rt := func(i int) *libcni.RuntimeConf {
		r := &libcni.RuntimeConf{
			ContainerID: fmt.Sprintf("wbench-%d-%d", time.Now().UnixNano()%1e6, i),
			NetNS:       nsPath(b.pods[i]),
			IfName:      "eth0",
		}
		if chained {
			r.CapabilityArgs = map[string]any{"portMappings": []map[string]any{
				{"hostPort": 20000 + i, "containerPort": 80, "protocol": "tcp"},
			}}
		}
		return r
	}
	rts := make([]*libcni.RuntimeConf, len(b.pods))
	for i := range rts {
		rts[i] = rt(i)
	}
	out := &CNIRun{Name: name, Plugins: plugins, Concurrency: conc}
	var mu sync.Mutex
	ips := map[netip.Addr]bool{}
	var addLat, delLat []float64
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
	b.each(ctx, conc, func(i int) {
		var res *types100.Result
		t := time.Now()
		err := ns.WithNetNSPath(nsPath(b.node), func(ns.NetNS) error {
			r, err := cni.AddNetworkList(ctx, list, rts[i])
			if err != nil {
				return err
			}
			res, err = types100.NewResultFromResult(r)
			return err
		})
		record(&addLat, &out.AddErrors, time.Since(t), err)
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
	b.each(ctx, conc, func(i int) {
		t := time.Now()
		err := ns.WithNetNSPath(nsPath(b.node), func(ns.NetNS) error {
			return cni.DelNetworkList(ctx, list, rts[i])
		})
		record(&delLat, &out.DelErrors, time.Since(t), err)
	})
	out.WallSec = round3(time.Since(start).Seconds())
	out.AddMS, out.DelMS = summarize(addLat), summarize(delLat)
	out.UniqueIPs = len(ips)
	if left, err := b.leftoverVeths(ctx); err != nil {
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

// leftoverVeths counts veth links still in the node namespace.
func (b *cniBench) leftoverVeths(ctx context.Context) (int, error) {
	out, err := nsRun(ctx, b.node, "ip", "-j", "link", "show", "type", "veth")
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
