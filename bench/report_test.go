package main

import (
	"strings"
	"testing"
)

func pathTCP1(gbps, pingP50 float64) *PathResult {
	return &PathResult{TCP1: Series{MedianGbps: gbps}, Ping: &PingResult{Sent: 1, Received: 1, RTTms: Dist{N: 1, P50: pingP50}}}
}

func findTarget(ts []Target, prefix string) *Target {
	for i := range ts {
		if strings.HasPrefix(ts[i].Name, prefix) {
			return &ts[i]
		}
	}
	return nil
}

func TestEvaluateDataPlane(t *testing.T) {
	res := &Results{Machine: Machine{CPUs: 2}, DataPlane: &DataPlane{Backends: []*BackendRun{
		{Name: "vxlan", Underlay: pathTCP1(10, 0.05), Pod: pathTCP1(6, 0.1), SingleStreamRatio: 0.6},
		{Name: "host-gw", Underlay: pathTCP1(10, 0.05), Pod: pathTCP1(6.5, 0.08), SingleStreamRatio: 0.65},
		{Name: "udp", Pod: pathTCP1(2, 0.3)},
	}}}
	ts := evaluate(res)
	tests := []struct {
		prefix string
		met    *bool
	}{
		{"vxlan single stream", boolp(true)},
		{"host-gw single stream", boolp(false)},
		{"udp single stream", boolp(false)}, // 2/6 = 33%
		{"udp ping", boolp(false)},          // 3×
	}
	for _, tt := range tests {
		got := findTarget(ts, tt.prefix)
		if got == nil {
			t.Fatalf("no target %q in %+v", tt.prefix, ts)
		}
		if got.Met == nil || *got.Met != *tt.met {
			t.Errorf("%s: met = %v, want %v (got %q)", tt.prefix, got.Met, *tt.met, got.Got)
		}
		if !*tt.met && got.Note == "" {
			t.Errorf("%s: unmet target without an explanation", tt.prefix)
		}
	}
}

func TestEvaluateMissingFigures(t *testing.T) {
	res := &Results{DataPlane: &DataPlane{}, CNI: &CNI{}, Control: &Control{}}
	for _, tg := range evaluate(res) {
		if tg.Met != nil {
			t.Errorf("%s: met = %v with nothing measured, want nil", tg.Name, *tg.Met)
		}
	}
}

func TestEvaluateControlAndCNI(t *testing.T) {
	res := &Results{
		CNI: &CNI{Pods: 100, Parallel: 10, Runs: []*CNIRun{
			{Name: "sequential", Concurrency: 1, AddMS: Dist{N: 100, P50: 9}},
			{Name: "parallel", Concurrency: 10, AddMS: Dist{N: 99, P50: 40}, AddErrors: 1, FirstError: "boom"},
		}},
		Control: &Control{
			Acquire: &AcquireRun{Nodes: 200, Stored: 200},
			Peers: []*PeerRun{
				{Peers: 1000, Daemon: cniWeft, ProgramMS: 400, RemoveMS: 300},
				{Peers: 1000, Daemon: cniFlannel, ProgramMS: 2000, RemoveMS: 500},
				{Peers: 1000, Daemon: cniWeft, ProgramMS: 500, RemoveMS: 320},
				{Peers: 1000, Daemon: cniFlannel, ProgramMS: 1000, RemoveMS: 700},
				{Peers: 10000, Daemon: cniWeft, ProgramMS: 6000, Loaded: ProcUsage{RSSMB: 50}},
			},
			Convergence: &Convergence{AddMS: Dist{N: 100, P50: 10, P99: 50}},
		},
	}
	ts := evaluate(res)
	want := map[string]bool{
		"ADD p50":                          true,
		"no error under":                   false,
		"200 nodes":                        true,
		"1000 peers programmed ≤ 1 s":      true,
		"1000 peers programmed ≤ 0.33×":    true,  // median 450 / 1500 = 0.3
		"removal of all 1000 ≤ 0.5×":       false, // median 310 / 600 = 0.52
		"10000 peers (vxlan, /26 subnets)": false,
		"weftd RSS at 10000 peers":         true,
		"one new lease":                    true,
	}
	for prefix, met := range want {
		got := findTarget(ts, prefix)
		if got == nil || got.Met == nil {
			t.Errorf("%s: not evaluated: %+v", prefix, got)
			continue
		}
		if *got.Met != met {
			t.Errorf("%s: met = %v, want %v (%s)", prefix, *got.Met, met, got.Got)
		}
	}
	res.Control.Peers[4].Before, res.Control.Peers[4].Loaded = ProcUsage{RSSMB: 30}, ProcUsage{RSSMB: 70}
	if n := findTarget(evaluate(res), "weftd RSS at 10000 peers"); n == nil || n.Met == nil || *n.Met || !strings.Contains(n.Note, "RSS 30.0 MB before the peers; 4194 bytes per peer above it.") {
		t.Errorf("RSS at 70 MB: want unmet with the run's figures, got %+v", n)
	}
	if n := findTarget(ts, "removal of all 1000"); n == nil || !strings.Contains(n.Note, "Runs: weft 300, 320, Flannel 500, 700 ms") {
		t.Errorf("removal at 0.52×: want the runs in its note, got %+v", n)
	}
	if n := findTarget(ts, "no error under"); n.Note != "boom" {
		t.Errorf("parallel errors: note = %q, want the first error", n.Note)
	}
}

func TestRenderMarkdown(t *testing.T) {
	res := &Results{
		Command: "go run ./bench --quick", Machine: Machine{CPUs: 2, Kernel: "6.1",
			Costs: &CallCosts{SyscallNs: 1020, WakeSameCPUus: 26, WakeOtherCPUus: 177}},
		DataPlane: &DataPlane{Backends: []*BackendRun{
			{Name: "vxlan", Underlay: pathTCP1(10, 0.05), Pod: pathTCP1(6, 0.1), SingleStreamRatio: 0.6},
			{Name: "udp", Pod: pathTCP1(2, 0.3)},
		}},
		Profiles: []Profile{{Area: "data plane", Case: "x", ByComm: []Share{{50, "weftd"}}, Note: "Where the time goes: weftd 50%."}},
		Errors:   []string{"a | b"},
	}
	res.Targets = evaluate(res)
	md := string(renderMarkdown(res))
	for _, want := range []string{"# Performance", "go run ./bench --quick", "| CPUs (nproc) | 2 |", "| kernel | 6.1 |",
		"| vxlan | weft pod → pod | **6.00**", "| vxlan | 60% |", "Where the time goes: weftd 50%.", `a \| b`, "vxlan single stream ≥ 50% of underlay",
		"| system call (`getppid`, median of 5 × 200000) | 1.02 µs |\n| thread wake-up round trip after 10ms idle (pipe, p50 of 100): same CPU / other CPU | 26 / 177 µs |\n\n",
		"a system call costs 1.02 µs on this machine", "takes 26 µs on one CPU, 177 µs across two"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestEvaluateAgainstFlannel(t *testing.T) {
	withUDP := func(p *PathResult, gbps float64) *PathResult {
		p.UDP = &IperfRun{Gbps: gbps}
		p.TCP4.MedianGbps = p.TCP1.MedianGbps * 2
		return p
	}
	backends := []*BackendRun{
		// vxlan 1.2× Flannel's, every figure above, ping lower.
		{Name: "vxlan", Pod: withUDP(pathTCP1(12, 0.09), 0.5), Flannel: withUDP(pathTCP1(10, 0.1), 0.5)},
		// host-gw 1.1× (below 1.15×), ping higher.
		{Name: "host-gw", Pod: withUDP(pathTCP1(11, 0.09), 0.5), Flannel: withUDP(pathTCP1(10, 0.08), 0.5)},
		// DirectRouting against Flannel host-gw: 12/10.
		{Name: "vxlan-directrouting", Pod: withUDP(pathTCP1(12, 0.09), 0.4), Flannel: withUDP(pathTCP1(9, 0.09), 0.5)},
		{Name: "wireguard", Pod: pathTCP1(1, 0.3), FlannelNote: "no kernel WireGuard"},
	}
	for _, b := range backends {
		b.ratios()
	}
	res := &Results{DataPlane: &DataPlane{Backends: backends}}
	ts := evaluate(res)
	want := map[string]bool{
		"host-gw single stream ≥ 1.15× Flannel host-gw":             false,
		"vxlan-directrouting single stream ≥ 1.15× Flannel host-gw": true,
		"vxlan single stream ≥ 1.10× Flannel vxlan":                 true,
		"vxlan: every throughput figure":                            true,
		"vxlan ping p50 ≤ 1.0× Flannel":                             true,
		"host-gw: every throughput figure":                          true,
		"host-gw ping p50 ≤ 1.0× Flannel":                           false,
		"vxlan-directrouting: every throughput figure":              false, // UDP 0.8×
	}
	for prefix, met := range want {
		got := findTarget(ts, prefix)
		if got == nil || got.Met == nil {
			t.Errorf("%s: not evaluated: %+v", prefix, got)
			continue
		}
		if *got.Met != met {
			t.Errorf("%s: met = %v, want %v (%s)", prefix, *got.Met, met, got.Got)
		}
	}
	if n := findTarget(ts, "vxlan-directrouting: every throughput figure"); n != nil && !strings.Contains(n.Note, "UDP") {
		t.Errorf("the figure below Flannel is not named: %q", n.Note)
	}
	if findTarget(ts, "wireguard: every throughput") != nil {
		t.Errorf("a backend without Flannel figures got a Flannel target")
	}
	md := string(renderMarkdown(res))
	for _, s := range []string{"| vxlan | **1.20×** | 1.20× | 1.00× | 0.90×", "| wireguard | — (no kernel WireGuard) |", "| vxlan | Flannel pod → pod | **10.00**"} {
		if !strings.Contains(md, s) {
			t.Errorf("report lacks %q", s)
		}
	}
}

func TestEvaluateCNIAgainstFlannel(t *testing.T) {
	c := &CNI{Pods: 100, Parallel: 20, FlannelExecFloorMS: &Dist{N: 1, P50: 3}, Runs: []*CNIRun{
		{Name: "sequential", Impl: cniWeft, Concurrency: 1, AddMS: Dist{N: 100, P50: 4}, DelMS: Dist{N: 100, P50: 3}},
		{Name: "sequential", Impl: cniFlannel, Concurrency: 1, AddMS: Dist{N: 100, P50: 10}, DelMS: Dist{N: 100, P50: 5}},
		{Name: "parallel", Impl: cniWeft, Concurrency: 20, AddMS: Dist{N: 100, P50: 30}, DelMS: Dist{N: 100, P50: 10}},
		{Name: "parallel", Impl: cniFlannel, Concurrency: 20, AddMS: Dist{N: 100, P50: 100}, DelMS: Dist{N: 100, P50: 50}, AddErrors: 3},
	}}
	ts := evaluate(&Results{CNI: c})
	want := map[string]bool{
		"ADD p50 ≤ 0.5× Flannel's chain, sequential": true,  // 0.4
		"DEL p50 ≤ 0.5× Flannel's chain, sequential": false, // 0.6
		"ADD p50 ≤ 0.4× Flannel's chain, parallel":   true,  // 0.3
		"DEL p50 ≤ 0.4× Flannel's chain, parallel":   true,  // 0.2
		"no error under": true, // Flannel's errors are not weft's
	}
	for prefix, met := range want {
		got := findTarget(ts, prefix)
		if got == nil || got.Met == nil {
			t.Errorf("%s: not evaluated: %+v", prefix, got)
			continue
		}
		if *got.Met != met {
			t.Errorf("%s: met = %v, want %v (%s)", prefix, *got.Met, met, got.Got)
		}
	}
	md := string(renderMarkdown(&Results{CNI: c}))
	if !strings.Contains(md, "| sequential | **0.40×** | ") || !strings.Contains(md, "| parallel | **0.30×** | ") {
		t.Errorf("report lacks the weft / Flannel CNI rows:\n%s", md)
	}
}

// TestNotesOfUnmetFlannelTargets: an unmet target against Flannel says what
// the two paths share and gives each side's runs, so a reader sees whether
// they overlap; a ping target gives each round's p50; a met one has no
// note.
func TestNotesOfUnmetFlannelTargets(t *testing.T) {
	runs := func(gbps ...float64) Series {
		s := Series{MedianGbps: gbps[len(gbps)/2]}
		for _, g := range gbps {
			s.Runs = append(s.Runs, IperfRun{Gbps: g})
		}
		return s
	}
	pinged := func(rounds ...[]float64) *PingResult {
		p := &PingResult{}
		for _, r := range rounds {
			p.add(PingResult{Sent: len(r), Received: len(r), rtts: r})
		}
		return p
	}
	weft := &PathResult{TCP1: runs(12.1, 12.5, 12.3), TCP4: runs(20, 21, 22), Ping: pinged([]float64{0.07, 0.08, 0.07}, []float64{0.05, 0.05, 0.06}), KernelCPUPerGB: 0.75}
	fl := &PathResult{TCP1: runs(11.9, 12.4, 12.2), TCP4: runs(22, 23, 24), Ping: pinged([]float64{0.05, 0.04, 0.05}), KernelCPUPerGB: 0.79}
	hg := &PathResult{TCP1: runs(20, 20, 20), TCP4: runs(40, 40, 40), Ping: pinged([]float64{0.04}), KernelCPUPerGB: 0.5}
	hgFlannel := &PathResult{TCP1: runs(14, 14, 14), TCP4: runs(30, 30, 30), Ping: pinged([]float64{0.05}), KernelCPUPerGB: 0.6}
	backends := []*BackendRun{{Name: "vxlan", Pod: weft, Flannel: fl}, {Name: "host-gw", Pod: hg, Flannel: hgFlannel}}
	for _, b := range backends {
		b.ratios()
	}
	ts := evaluate(&Results{DataPlane: &DataPlane{Backends: backends}})
	for prefix, want := range map[string][]string{
		"vxlan single stream ≥ 1.10× Flannel vxlan": {"BIG TCP off on VXLAN", "weft 12.10–12.50, Flannel 11.90–12.40 Gbit/s", "0.75 vs 0.79 s"},
		"vxlan: every throughput figure":            {"Below Flannel: 4 streams.", "4 streams runs: weft 20.00–22.00, Flannel 22.00–24.00"},
		"vxlan ping p50 ≤ 1.0× Flannel":             {"weft 0.070, 0.050, Flannel 0.050 ms", "No daemon is on the echo's path"},
	} {
		got := findTarget(ts, prefix)
		if got == nil || got.Met == nil || *got.Met {
			t.Errorf("%s: want unmet, got %+v", prefix, got)
			continue
		}
		for _, w := range want {
			if !strings.Contains(got.Note, w) {
				t.Errorf("%s: note %q lacks %q", prefix, got.Note, w)
			}
		}
	}
	if got := findTarget(ts, "host-gw single stream ≥ 1.15× Flannel host-gw"); got == nil || got.Met == nil || !*got.Met || got.Note != "" {
		t.Errorf("host-gw at 1.43×: want met without a note, got %+v", got)
	}
}

// TestProfileNotesNameTheirBackend: an unmet target's note points at the
// data plane profile only when the profile is of its backend (the profiled
// case was wireguard's, and udp's note sent the reader to it).
func TestProfileNotesNameTheirBackend(t *testing.T) {
	res := &Results{Machine: Machine{CPUs: 2}, DataPlane: &DataPlane{Backends: []*BackendRun{
		{Name: "vxlan", Underlay: pathTCP1(10, 0.05), Pod: pathTCP1(6, 0.1), SingleStreamRatio: 0.6},
		{Name: "udp", Pod: pathTCP1(2, 0.3)},
		{Name: "wireguard", Pod: pathTCP1(0.5, 0.6)},
	}}, Profiles: []Profile{{Area: "data plane", Case: "wireguard (slowest, 0.50 Gbit/s): pod→pod iperf3 TCP, 1 stream, 5s"}}}
	ts := evaluate(res)
	for _, tt := range []struct {
		prefix string
		points bool
	}{{"udp single stream", false}, {"wireguard single stream", true}} {
		got := findTarget(ts, tt.prefix)
		if got == nil || got.Met == nil || *got.Met {
			t.Fatalf("%s: want an unmet target, got %+v", tt.prefix, got)
		}
		if points := strings.Contains(got.Note, "profile below"); points != tt.points {
			t.Errorf("%s: note points at the profile: %v, want %v (%q)", tt.prefix, points, tt.points, got.Note)
		}
	}
	if hasProfile(res, "data plane", "vxlan-directrouting") || hasProfile(res, "data plane", "wire") || !hasProfile(res, "data plane", "") {
		t.Error("hasProfile matches a backend by a prefix of its name, or misses the area")
	}
}
