package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/weftnet/weft/internal/kubeplane"
	"github.com/weftnet/weft/lab"
)

// KubeScale is the Kubernetes-mode scale run: fake Node objects in a real
// kube-apiserver, programmed by one real weftd --kube-subnet-mgr.
type KubeScale struct {
	Runs []*KubeRun `json:"runs,omitempty"`
	// Lifetime are all of weftd's requests to the API server, from its
	// start to the end of the last run, by verb and resource.
	Lifetime map[string]int `json:"weftdRequestsLifetime,omitempty"`
	Errors   []string       `json:"errors,omitempty"`
}

// KubeRun is N fake Nodes created (podCIDR set, Flannel's annotations) and
// then deleted.
type KubeRun struct {
	Nodes int `json:"nodes"`
	// CreateMS is first create → last create answered (16 clients).
	CreateMS float64 `json:"createMs"`
	// ProgramMS is last create → the kernel holds every route, neighbour
	// and FDB entry.
	ProgramMS float64 `json:"programAfterLastCreateMs"`
	// RemoveMS is the delete of all of them (one DELETE collection) →
	// all of it gone.
	RemoveMS float64   `json:"removeMs"`
	Before   ProcUsage `json:"weftdBefore"`
	Loaded   ProcUsage `json:"weftdWithNodes"`
	After    ProcUsage `json:"weftdAfterRemoval"`
	// GoBefore, GoLoaded and GoAfter are weftd's Go runtime figures at the
	// same points, from its /metrics: what of the RSS is Go heap, and what
	// the run allocated.
	GoBefore GoMem `json:"weftdGoBefore"`
	GoLoaded GoMem `json:"weftdGoWithNodes"`
	GoAfter  GoMem `json:"weftdGoAfterRemoval"`
	// PeakRSSMB is weftd's peak RSS (VmHWM) at the end of the run.
	PeakRSSMB float64 `json:"weftdPeakRssMB"`
	// HeapTop is weftd's heap in use with the Nodes programmed, by
	// function: the lines of `go tool pprof -top` (heapTopCmd).
	HeapTop []string `json:"weftdHeapTop,omitempty"`
	// GCPercent is the --gc-percent weftd ran with, when the run set one
	// (0: weftd's default): the largest run again at Go's own GOGC.
	GCPercent int `json:"gcPercent,omitempty"`
	// CPUProgramSec and CPURemoveSec are weftd's CPU seconds.
	CPUProgramSec float64 `json:"weftdCpuProgramSec"`
	CPURemoveSec  float64 `json:"weftdCpuRemoveSec"`
	// Requests are weftd's requests to the API server during the run, by
	// verb (from the API server's audit log).
	Requests map[string]int `json:"weftdRequests"`
	Error    string         `json:"error,omitempty"`
}

const kubeLabName = "wb-kube"

// GoMem is what weftd's /metrics says of its Go runtime's memory.
type GoMem struct {
	// HeapMB is the heap's allocated bytes (live and not yet collected,
	// go_memstats_heap_alloc_bytes).
	HeapMB float64 `json:"heapMB"`
	// GoalMB is the heap size at which the next collection runs
	// (go_memstats_next_gc_bytes): the live heap after the last one
	// times 1 + GOGC/100. The heap, and so the RSS, grows to it.
	GoalMB float64 `json:"heapGoalMB"`
	// AllocMB is all the heap allocated since start
	// (go_memstats_alloc_bytes_total).
	AllocMB float64 `json:"allocTotalMB"`
	// GCs is the collections since start (go_gc_duration_seconds_count).
	GCs int64 `json:"gcs"`
}

// weftdMetrics is where the lab's weftd serves /metrics, in its node's
// namespace (lab/names.go's healthzAddr).
const weftdMetrics = "http://127.0.0.1:9474/metrics"

// weftdHeap is where the lab's weftd, run with --pprof, serves its heap
// profile.
const weftdHeap = "http://127.0.0.1:9474/debug/pprof/heap"

// heapTopArgs summarize a heap profile: the live heap by function, the
// largest first.
var heapTopArgs = []string{"tool", "pprof", "-top", "-nodecount=12", "-sample_index=inuse_space"}

// heapTop fetches weftd's heap profile through dial and returns what
// `go heapTopArgs` prints of it, from its column header on.
func heapTop(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error), bin string) ([]string, error) {
	body, err := weftdGet(ctx, dial, weftdHeap, "heap profile")
	if err != nil {
		return nil, err
	}
	defer body.Close()
	f, err := os.CreateTemp("", "wbench-heap-*.pb.gz")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	_, err = io.Copy(f, body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("weftd heap profile: %w", err)
	}
	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(tctx, "go", append(slices.Clone(heapTopArgs), bin, f.Name())...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go %s: %w: %.300s", strings.Join(heapTopArgs, " "), err, out)
	}
	return pprofTop(string(out)), nil
}

// pprofTop is the "Showing nodes …" line and the table of `pprof -top`
// output, without the lines before them (file, type, time).
func pprofTop(out string) []string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "Showing nodes") {
			return lines[i:]
		}
	}
	return lines
}

// goMem scrapes weftd's /metrics through dial (into its namespace).
func goMem(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (GoMem, error) {
	body, err := weftdGet(ctx, dial, weftdMetrics, "/metrics")
	if err != nil {
		return GoMem{}, err
	}
	defer body.Close()
	return parseGoMem(body)
}

// weftdGet GETs url from the lab's weftd through dial (into its
// namespace) and returns the body of a 200 answer; what names it in
// errors.
func weftdGet(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error), url, what string) (io.ReadCloser, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("weftd %s: %w", what, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("weftd %s: %s", what, resp.Status)
	}
	return resp.Body, nil
}

// parseGoMem reads GoMem's metrics from a Prometheus text exposition.
func parseGoMem(r io.Reader) (GoMem, error) {
	var m GoMem
	want := map[string]func(float64){
		"go_memstats_heap_alloc_bytes":  func(v float64) { m.HeapMB = v / (1 << 20) },
		"go_memstats_next_gc_bytes":     func(v float64) { m.GoalMB = v / (1 << 20) },
		"go_memstats_alloc_bytes_total": func(v float64) { m.AllocMB = v / (1 << 20) },
		"go_gc_duration_seconds_count":  func(v float64) { m.GCs = int64(v) },
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		set := want[name]
		if !ok || set == nil {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			return m, fmt.Errorf("weftd /metrics: %s %q: %w", name, val, err)
		}
		set(v)
		delete(want, name)
	}
	if err := sc.Err(); err != nil {
		return m, fmt.Errorf("weftd /metrics: %w", err)
	}
	if len(want) > 0 {
		missing := make([]string, 0, len(want))
		for name := range want {
			missing = append(missing, name)
		}
		sort.Strings(missing)
		return m, fmt.Errorf("weftd /metrics lacks %s", strings.Join(missing, ", "))
	}
	return m, nil
}

// targetKube5000MS is issue 18's target: 5000 Nodes programmed this long
// after the last create at most (with weftd's RSS ≤ targetRSSMB).
const targetKube5000MS = 5000.0

// benchNodeLabel marks the fake Nodes, for the one DELETE collection.
const benchNodeLabel = "weft-bench"

func runKube(ctx context.Context, cfg *config) *KubeScale {
	out := &KubeScale{}
	if err := kubeplane.CheckBinaries(); err != nil {
		out.Errors = append(out.Errors, err.Error())
		return out
	}
	cfg.logf("kube: 1-node vxlan lab in Kubernetes mode; %v fake Nodes", cfg.kubeNodes)
	down := func() {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		if err := lab.Down(cctx, "", kubeLabName); err != nil {
			cfg.logf("lab %s down: %v", kubeLabName, err)
		}
	}
	defer down()
	l, err := lab.Up(ctx, lab.Options{
		Name: kubeLabName, Nodes: 1, Backend: "vxlan", BinDir: cfg.binDir, Kube: true,
		Network: "10.0.0.0/8", Progress: cfg.progress, ReadyTimeout: 90 * time.Second,
		WeftdArgs: []string{"--pprof"}, // for the heap profile with the Nodes (heapTop)
	})
	if err != nil {
		out.Errors = append(out.Errors, "lab up: "+err.Error())
		return out
	}
	admin, err := l.KubeAdmin()
	if err != nil {
		out.Errors = append(out.Errors, err.Error())
		return out
	}
	dial, err := l.DialContext(l.Nodes[0].Name)
	if err != nil {
		out.Errors = append(out.Errors, err.Error())
		return out
	}
	view, err := openKernelView(l.Nodes[0].NS, vxlanDev)
	if err != nil {
		out.Errors = append(out.Errors, err.Error())
		return out
	}
	defer view.close()
	for _, n := range cfg.kubeNodes {
		if ctx.Err() != nil {
			break
		}
		cfg.logf("kube: %d fake Nodes", n)
		r := kubeRun(ctx, admin, view, l.Nodes[0], dial, n, filepath.Join(cfg.binDir, "weftd"))
		if r.Error != "" {
			out.Errors = append(out.Errors, fmt.Sprintf("%d nodes: %s", n, r.Error))
		}
		out.Runs = append(out.Runs, r)
	}
	if out.Lifetime, err = auditVerbs(admin.AuditLog(), 0); err != nil {
		out.Errors = append(out.Errors, err.Error())
	}
	if len(cfg.kubeNodes) > 0 && ctx.Err() == nil {
		n := slices.Max(cfg.kubeNodes)
		cfg.logf("kube: %d fake Nodes, weftd at Go's GOGC (--gc-percent=%d)", n, goGCPercent)
		var r *KubeRun
		if err := withGCPercent(ctx, l, l.Nodes[0], goGCPercent, cfg.logf, func() {
			r = kubeRun(ctx, admin, view, l.Nodes[0], dial, n, "") // the default's heap profile is the one shown
		}); err != nil {
			r = &KubeRun{Nodes: n, Error: err.Error()}
		}
		r.GCPercent = goGCPercent
		if r.Error != "" {
			out.Errors = append(out.Errors, fmt.Sprintf("%d nodes, --gc-percent=%d: %s", n, goGCPercent, r.Error))
		}
		out.Runs = append(out.Runs, r)
	}
	return out
}

// kubeRun creates n fake Nodes, waits for node's kernel to hold them all,
// deletes them and waits for all of it to be gone. weftdBin, when set, is
// the weftd binary for its heap profile with the Nodes programmed.
func kubeRun(ctx context.Context, admin *kubeplane.Plane, view *kernelView, node *lab.Node,
	dial func(ctx context.Context, network, addr string) (net.Conn, error), n int, weftdBin string) *KubeRun {
	out := &KubeRun{Nodes: n}
	fail := func(err error) *KubeRun { out.Error = err.Error(); return out }
	pid := node.Weftd.PID
	peers := fakePeers(0, n, node.Subnet.Bits(), node.Subnet)
	set := newPeerSet(peers)
	objs := make([][]byte, n)
	for i, p := range peers {
		data, err := json.Marshal(map[string]any{"VNI": 1, "VtepMAC": p.mac.String()})
		if err != nil {
			return fail(err)
		}
		objs[i], err = json.Marshal(map[string]any{
			"apiVersion": "v1", "kind": "Node",
			"metadata": map[string]any{
				"name":   fmt.Sprintf("fake-%05d", i),
				"labels": map[string]string{benchNodeLabel: "fake"},
				"annotations": map[string]string{
					"flannel.alpha.coreos.com/kube-subnet-manager": "true",
					"flannel.alpha.coreos.com/backend-type":        "vxlan",
					"flannel.alpha.coreos.com/backend-data":        string(data),
					"flannel.alpha.coreos.com/public-ip":           p.pub.String(),
				},
			},
			"spec": map[string]any{"podCIDR": p.sn.String(), "podCIDRs": []string{p.sn.String()}},
		})
		if err != nil {
			return fail(err)
		}
	}
	auditFrom := fileSize(admin.AuditLog())
	before, err := procUsage(pid)
	if err != nil {
		return fail(err)
	}
	out.Before = before
	if out.GoBefore, err = goMem(ctx, dial); err != nil {
		return fail(err)
	}
	first := time.Now()
	if err := createAll(ctx, admin, objs, 16); err != nil {
		return fail(err)
	}
	last := time.Now()
	out.CreateMS = round3(ms(last.Sub(first)))
	at, _, err := view.waitState(ctx, set, 120*time.Second, 10*time.Millisecond, func(s peerState) bool { return s.all(n) })
	if err != nil {
		return fail(fmt.Errorf("programming %d nodes: %w", n, err))
	}
	out.ProgramMS = round3(ms(max(0, at.Sub(last))))
	if out.Loaded, err = procUsage(pid); err != nil {
		return fail(err)
	}
	out.CPUProgramSec = round3(out.Loaded.CPUSeconds - before.CPUSeconds)
	if out.GoLoaded, err = goMem(ctx, dial); err != nil {
		return fail(err)
	}
	if weftdBin != "" {
		if out.HeapTop, err = heapTop(ctx, dial, weftdBin); err != nil {
			out.HeapTop = []string{"no heap profile: " + err.Error()}
		}
	}
	t := time.Now()
	code, body, err := admin.Do(ctx, http.MethodDelete, "/api/v1/nodes?labelSelector="+benchNodeLabel+"%3Dfake", nil)
	if err != nil || code/100 != 2 {
		return fail(fmt.Errorf("delete the fake Nodes: %v HTTP %d %.200s", err, code, body))
	}
	at, _, err = view.waitState(ctx, set, 120*time.Second, 10*time.Millisecond, peerState.none)
	if err != nil {
		return fail(fmt.Errorf("removing %d nodes: %w", n, err))
	}
	out.RemoveMS = round3(ms(max(0, at.Sub(t))))
	if out.After, err = procUsage(pid); err != nil {
		return fail(err)
	}
	out.CPURemoveSec = round3(out.After.CPUSeconds - out.Loaded.CPUSeconds)
	if out.GoAfter, err = goMem(ctx, dial); err != nil {
		return fail(err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return fail(err)
	}
	if out.PeakRSSMB, err = parseStatusMB(status, "VmHWM"); err != nil {
		return fail(err)
	}
	if out.Requests, err = auditVerbs(admin.AuditLog(), auditFrom); err != nil {
		return fail(err)
	}
	return out
}

// createAll POSTs every Node with workers concurrent clients.
func createAll(ctx context.Context, admin *kubeplane.Plane, objs [][]byte, workers int) error {
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	next := make(chan []byte)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for o := range next {
				if err := admin.Create(ctx, "/api/v1/nodes", o); err != nil {
					select {
					case errc <- err:
					default:
					}
					return
				}
			}
		}()
	}
	var err error
feed:
	for _, o := range objs {
		select {
		case next <- o:
		case err = <-errc:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errc:
		default:
		}
	}
	if err != nil {
		return fmt.Errorf("create Nodes: %w", err)
	}
	return nil
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// auditVerbs counts the requests in the audit log from offset on, by verb
// and resource ("list nodes", "watch nodes", "patch nodes/status"), each
// request once (a watch is logged when it starts and when it ends).
func auditVerbs(path string, from int64) (map[string]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(from, 0); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev struct {
			AuditID   string `json:"auditID"`
			Verb      string `json:"verb"`
			ObjectRef struct {
				Resource    string `json:"resource"`
				Subresource string `json:"subresource"`
			} `json:"objectRef"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil || seen[ev.AuditID] {
			continue
		}
		seen[ev.AuditID] = true
		what := ev.Verb + " " + ev.ObjectRef.Resource
		if ev.ObjectRef.Subresource != "" {
			what += "/" + ev.ObjectRef.Subresource
		}
		out[what]++
	}
	return out, sc.Err()
}

// requestsText renders a request count map, largest first.
func requestsText(m map[string]int) string {
	type kv struct {
		k string
		v int
	}
	var all []kv
	for k, v := range m {
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v || (all[i].v == all[j].v && all[i].k < all[j].k) })
	var parts []string
	for _, e := range all {
		parts = append(parts, fmt.Sprintf("%d %s", e.v, e.k))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func renderKube(p printer, k *KubeScale) {
	p("## Kubernetes mode\n\n")
	p("**Node programming.** A 1-node vxlan lab in Kubernetes mode (`weftctl lab up --kube`: kube-apiserver %s with RBAC on the lab's etcd, kube-controller-manager, weftd `--kube-subnet-mgr` with the manifest's ServiceAccount; pod network 10.0.0.0/8). "+
		"N fake Node objects — podCIDR set, Flannel's annotations (vxlan, distinct public IPs and VtepMACs) — are created by 16 concurrent clients; the harness polls the node's kernel every 10 ms until it holds every route, neighbour and FDB entry, "+
		"then deletes them all (one DELETE collection) and waits until all of it is gone. The largest run is made again with weftd restarted at Go's own GOGC (`--gc-percent=%d`; weftd's default is %d): what the default saves, and costs, in the same run. weftd's requests are counted from the API server's audit log; its Go heap, heap goal (the heap size of the next collection: the heap, and the RSS with it, grows to it), allocations and collections are read from its /metrics.\n\n", kubeplane.Version, goGCPercent, weftdDefaultGCPercent)
	p("| nodes | create, ms | programmed after last create, ms | removed, ms | weftd RSS before / with nodes / after / peak, MB | weftd Go heap / GC goal with nodes, MB | weftd allocated, MB / GCs: program, remove | weftd CPU program / remove, s | weftd's requests during the run |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range k.Runs {
		nodes := strconv.Itoa(r.Nodes)
		if r.GCPercent != 0 {
			nodes += fmt.Sprintf(", weftd `--gc-percent=%d`", r.GCPercent)
		}
		if r.Error != "" {
			p("| %s | error: %s | | | | | | | |\n", nodes, cell(r.Error))
			continue
		}
		p("| %s | %.0f | **%.0f** | %.0f | %.1f / %.1f / %.1f / %.1f | %.1f / %.1f | %.0f / %d, %.0f / %d | %.2f / %.2f | %s |\n", nodes, r.CreateMS, r.ProgramMS, r.RemoveMS,
			r.Before.RSSMB, r.Loaded.RSSMB, r.After.RSSMB, r.PeakRSSMB, r.GoLoaded.HeapMB, r.GoLoaded.GoalMB,
			r.GoLoaded.AllocMB-r.GoBefore.AllocMB, r.GoLoaded.GCs-r.GoBefore.GCs, r.GoAfter.AllocMB-r.GoLoaded.AllocMB, r.GoAfter.GCs-r.GoLoaded.GCs,
			r.CPUProgramSec, r.CPURemoveSec, requestsText(r.Requests))
	}
	p("\n")
	for _, r := range k.Runs {
		renderHeapTop(p, fmt.Sprintf("%d Nodes", r.Nodes), r.HeapTop)
	}
	if k.Lifetime != nil {
		p("All of weftd's requests, from its start (lease, its Node's annotations and condition, the informer's list and watch) to the end of the last run: %s.\n\n", requestsText(k.Lifetime))
	}
	for _, e := range k.Errors {
		p("Error: %s\n\n", cell(e))
	}
}

// run is the run of n Nodes at weftd's default --gc-percent.
func (k *KubeScale) run(n int) *KubeRun {
	for _, r := range k.Runs {
		if r.Nodes == n && r.Error == "" && r.GCPercent == 0 {
			return r
		}
	}
	return nil
}

func kubeTargets(k *KubeScale) []Target {
	t := Target{Area: "kubernetes", Name: "5000 Nodes programmed ≤ 5 s after the last create", Want: fmt.Sprintf("≤ %.0f ms", targetKube5000MS)}
	r := Target{Area: "kubernetes", Name: "weftd RSS with 5000 Nodes ≤ 60 MB (its peak)", Want: "≤ 60 MB"}
	w := Target{Area: "kubernetes", Name: "one watch, no polling: no list or new watch while Nodes come and go", Want: "0 list, 0 watch requests"}
	if x := k.run(5000); x != nil {
		t.Got = fmt.Sprintf("%.0f ms", x.ProgramMS)
		t.Met = boolp(x.ProgramMS <= targetKube5000MS)
		r.Got = fmt.Sprintf("%.1f MB peak (%.1f MB with the Nodes programmed)", x.PeakRSSMB, x.Loaded.RSSMB)
		r.Met = boolp(max(x.PeakRSSMB, x.Loaded.RSSMB) <= targetRSSMB)
		if !*r.Met && x.Before.RSSMB > 0 {
			r.Note = fmt.Sprintf("RSS %.1f MB before any Node; with the Nodes, Go heap %.1f MB and GC goal %.1f MB; weftd allocated %.0f MB while they were created and %.0f MB while they were deleted; the peak comes while they come and go. %s",
				x.Before.RSSMB, x.GoLoaded.HeapMB, x.GoLoaded.GoalMB, x.GoLoaded.AllocMB-x.GoBefore.AllocMB, x.GoAfter.AllocMB-x.GoLoaded.AllocMB, rssNote(x.Loaded.RSSFileMB))
			if len(x.HeapTop) > 0 {
				r.Note += " What the heap holds: the heap profile in Kubernetes mode."
			}
		}
	}
	lists, runs := 0, 0
	for _, x := range k.Runs {
		if x.Error == "" && x.GCPercent == 0 { // a variant's weftd was just restarted
			runs++
			lists += x.Requests["list nodes"] + x.Requests["watch nodes"]
		}
	}
	if runs > 0 {
		w.Got = fmt.Sprintf("%d list or watch requests in %d runs", lists, runs)
		w.Met = boolp(lists == 0)
	}
	return []Target{t, r, w}
}
