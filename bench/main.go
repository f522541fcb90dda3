package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/lab"
	"github.com/weftnet/weft/subnet"
)

// labPrefix starts the name of every lab the harness brings up.
const labPrefix = "wb-"

// config is the command line, resolved.
type config struct {
	render   string // results file to render again, measuring nothing
	binDir   string
	out      string
	jsonOut  string
	quick    bool
	areas    map[string]bool
	backends map[string]bool
	profiles bool
	timeout  time.Duration

	iperfDuration time.Duration
	reps          int
	udpRate       string
	pingCount     int
	pingInterval  time.Duration

	cniPods, cniParallel int
	// cniRounds is how many times each CNI run alternates weft and Flannel.
	cniRounds int

	// flannelBinDir holds the reference Flannel (scripts/flannel.sh);
	// empty with --no-flannel.
	flannelBinDir string
	noFlannel     bool
	flannelScript string
	// reference is the wireguard backend's reference implementation, built
	// by the data-plane area (reference.go); referenceErr says why not.
	reference    reference
	referenceErr error

	acquireNodes int
	// peerCounts are programmed by weft and Flannel in turn, cpReps times;
	// scalePeers by weft alone.
	peerCounts  []int
	cpReps      int
	scalePeers  int
	convSamples int
	// kubeNodes are the fake Node counts of the Kubernetes-mode area.
	kubeNodes []int

	command  string
	progress io.Writer
}

func (c *config) logf(format string, args ...any) {
	fmt.Fprintf(c.progress, "bench: "+format+"\n", args...)
}

func (c *config) wantBackend(name string) bool { return len(c.backends) == 0 || c.backends[name] }

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

// allAreas are the areas --areas chooses from.
func allAreas() []string { return []string{"dataplane", "cni", "control", "kube", "ipv6"} }

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{progress: stderr}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.render, "render", "", "measure nothing: write --out (and --json) again from this results file of an earlier run, its targets evaluated anew (after a change to the report)")
	fs.StringVar(&c.binDir, "bin-dir", "bin", "directory with weftd, weft, weftctl and portmap (`make build`)")
	fs.StringVar(&c.out, "out", "Documentation/performance.md", "Markdown report to write (\"\" for none)")
	fs.StringVar(&c.jsonOut, "json", "bench/results.json", "machine-readable results to write (\"\" for none)")
	fs.BoolVar(&c.quick, "quick", false, "shorter runs and fewer samples (under 3 minutes); no profiles")
	areas := fs.String("areas", strings.Join(allAreas(), ","), "comma-separated areas to run: "+strings.Join(allAreas(), ", "))
	backends := fs.String("backends", "", "comma-separated data-plane backends (default all: vxlan, host-gw, vxlan-directrouting, udp, wireguard)")
	fs.StringVar(&c.udpRate, "udp-rate", "500M", "offered load of the UDP test (iperf3 -b)")
	noProf := fs.Bool("no-profiles", false, "skip the perf profiles")
	fs.StringVar(&c.flannelBinDir, "flannel-bin-dir", "", "directory with the reference Flannel (flanneld, flannel, bridge, host-local); default: what scripts/flannel.sh built")
	fs.BoolVar(&c.noFlannel, "no-flannel", false, "measure weft alone, without the reference Flannel beside it")
	fs.StringVar(&c.flannelScript, "flannel-script", "scripts/flannel.sh", "script that says where the reference Flannel is built (its `dir` command)")
	kubeNodes := fs.String("kube-nodes", "1000,5000", "comma-separated fake Node counts of the kube area")
	fs.DurationVar(&c.timeout, "timeout", 20*time.Minute, "abort (and clean up) after this long")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c.areas = map[string]bool{}
	for _, a := range splitList(*areas) {
		if !contains(allAreas(), a) {
			return nil, fmt.Errorf("--areas: unknown area %q (have %s)", a, strings.Join(allAreas(), ", "))
		}
		c.areas[a] = true
	}
	names := []string{}
	for _, s := range backendSpecs(labNetwork) {
		if !contains(names, s.selector()) {
			names = append(names, s.selector())
		}
	}
	if *backends != "" {
		c.backends = map[string]bool{}
		for _, b := range splitList(*backends) {
			if !contains(names, b) {
				return nil, fmt.Errorf("--backends: unknown backend %q (have %s)", b, strings.Join(names, ", "))
			}
			c.backends[b] = true
		}
	}
	c.profiles = !*noProf && !c.quick
	if c.quick {
		c.iperfDuration, c.reps, c.pingCount = 2*time.Second, 3, 50
		c.cniPods, c.cniParallel, c.cniRounds = 40, 20, 1
		c.acquireNodes, c.peerCounts, c.cpReps, c.scalePeers, c.convSamples = 200, []int{1000}, 1, 10000, 30
	} else {
		c.iperfDuration, c.reps, c.pingCount = 5*time.Second, 3, 200
		c.cniPods, c.cniParallel, c.cniRounds = 100, 20, 2
		c.acquireNodes, c.peerCounts, c.cpReps, c.scalePeers, c.convSamples = 200, []int{1000}, 3, 10000, 100
	}
	c.pingInterval = 10 * time.Millisecond
	for _, v := range splitList(*kubeNodes) {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--kube-nodes: %q is not a positive count", v)
		}
		c.kubeNodes = append(c.kubeNodes, n)
	}
	c.command = "go run ./bench " + strings.Join(args, " ")
	return c, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func run(args []string, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	if cfg.render != "" {
		if err := renderAgain(cfg); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
		return 0
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "bench: needs root (it builds network namespaces); run `sudo make bench`")
		return 1
	}
	if err := checkBinaries(cfg.binDir); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	if abs, err := filepath.Abs(cfg.binDir); err == nil {
		cfg.binDir = abs
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal cancels the run and its cleanups still happen; a
	// second one kills the process (the next run sweeps what is left).
	go func() {
		<-ctx.Done()
		stop()
	}()
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	if !cfg.noFlannel && cfg.flannelBinDir == "" {
		dir, err := lab.FlannelRef(ctx, cfg.flannelScript)
		if err != nil {
			fmt.Fprintf(stderr, "bench: %v (or pass --no-flannel to measure weft alone)\n", err)
			return 1
		}
		cfg.flannelBinDir = dir
	}
	if cfg.noFlannel {
		cfg.flannelBinDir = ""
	}

	unlock, err := lockRun()
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	defer unlock()
	sweep(ctx, cfg)

	res := &Results{Date: time.Now().UTC().Truncate(time.Second), Command: cfg.command, Quick: cfg.quick,
		Commit: gitCommit(ctx), Machine: machineInfo(ctx)}
	start := time.Now()
	costs, err := measureCallCosts()
	if err != nil {
		res.Errors = append(res.Errors, "call costs: "+err.Error())
	}
	res.Machine.Costs = &costs // what was measured before an error
	if cfg.areas["dataplane"] {
		res.DataPlane = runDataPlane(ctx, cfg, res)
		if cfg.profiles && ctx.Err() == nil {
			res.Profiles = append(res.Profiles, profileDataPlane(ctx, cfg, res.DataPlane))
			res.Profiles = append(res.Profiles, profileVXLANPaths(ctx, cfg)...)
		}
	}
	if cfg.areas["cni"] && ctx.Err() == nil {
		cfg.logf("cni: %d pods, sequential and %d-way parallel, alone and chained with portmap", cfg.cniPods, cfg.cniParallel)
		c, prof, err := runCNI(ctx, cfg)
		if err != nil {
			res.Errors = append(res.Errors, "cni: "+err.Error())
		}
		res.CNI = c
		if prof != nil {
			res.Profiles = append(res.Profiles, *prof)
		}
	}
	if cfg.areas["control"] && ctx.Err() == nil {
		res.Control = runControl(ctx, cfg, res)
		res.Errors = append(res.Errors, prefixAll("control plane: ", res.Control.Errors)...)
	}
	if cfg.areas["kube"] && ctx.Err() == nil {
		res.Kube = runKube(ctx, cfg)
		res.Errors = append(res.Errors, prefixAll("kubernetes mode: ", res.Kube.Errors)...)
	}
	if cfg.areas["ipv6"] && ctx.Err() == nil {
		res.IPv6 = runIPv6(ctx, cfg)
		for _, r := range res.IPv6.Backends {
			if r.Error != "" {
				res.Errors = append(res.Errors, "ipv6 "+r.Name+": "+r.Error)
			}
		}
	}
	if err := ctx.Err(); err != nil {
		fmt.Fprintf(stderr, "bench: stopped (%v); nothing written\n", context.Cause(ctx))
		return 1
	}
	res.DurationSec = round3(time.Since(start).Seconds())
	res.Machine.LoadEnd = loadavg()
	res.Targets = evaluate(res)
	if err := writeOutputs(cfg, res); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	cfg.logf("done in %s", time.Since(start).Round(time.Second))
	for _, t := range res.Targets {
		cfg.logf("target %-13s %-52s %s (%s)", t.Area, t.Name, metString(t.Met), t.Got)
	}
	return 0
}

func prefixAll(p string, ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = p + s
	}
	return out
}

func checkBinaries(dir string) error {
	var missing []string
	for _, b := range []string{"weftd", "weft", "weftctl", "portmap"} {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s lacks %s: run `make build` or pass --bin-dir", dir, strings.Join(missing, ", "))
	}
	return nil
}

// lockRun takes /run/weft-bench.lock so two runs never sweep each other.
func lockRun() (func(), error) {
	f, err := os.OpenFile("/run/weft-bench.lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, errors.New("another benchmark run holds /run/weft-bench.lock; wait for it to finish")
	}
	fmt.Fprintf(f, "%d\n", os.Getpid())
	return func() { f.Close() }, nil
}

// sweep removes what a killed earlier run left: its labs and namespaces.
func sweep(ctx context.Context, cfg *config) {
	names, _ := lab.List(lab.DefaultStateRoot)
	for _, n := range names {
		if strings.HasPrefix(n, labPrefix) {
			cfg.logf("removing lab %s left by an earlier run", n)
			if err := lab.Down(ctx, "", n); err != nil {
				cfg.logf("  %v", err)
			}
		}
	}
	for _, n := range listNS(nsPrefix) {
		cfg.logf("removing namespace %s left by an earlier run", n)
		if err := delNS(ctx, n); err != nil {
			cfg.logf("  %v", err)
		}
	}
}

// cleanupContext is for teardown: it outlives a cancelled run, bounded.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 90*time.Second)
}

// renderAgain writes the outputs of cfg from the results in cfg.render:
// the same run's figures, the targets evaluated by this code.
func renderAgain(cfg *config) error {
	data, err := os.ReadFile(cfg.render)
	if err != nil {
		return err
	}
	res := &Results{}
	if err := json.Unmarshal(data, res); err != nil {
		return fmt.Errorf("%s: %w", cfg.render, err)
	}
	res.Targets = evaluate(res)
	return writeOutputs(cfg, res)
}

func writeOutputs(cfg *config, res *Results) error {
	if cfg.jsonOut != "" {
		data, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return fmt.Errorf("encode results: %w", err)
		}
		if err := subnet.WriteFileAtomic(cfg.jsonOut, append(data, '\n'), 0o644); err != nil {
			return err
		}
		cfg.logf("wrote %s", cfg.jsonOut)
	}
	if cfg.out != "" {
		if err := subnet.WriteFileAtomic(cfg.out, renderMarkdown(res), 0o644); err != nil {
			return err
		}
		cfg.logf("wrote %s", cfg.out)
	}
	return nil
}

func metString(m *bool) string {
	switch {
	case m == nil:
		return "not measured"
	case *m:
		return "met"
	}
	return "NOT met"
}
