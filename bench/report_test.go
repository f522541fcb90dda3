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
				{Peers: 1000, ProgramMS: 400},
				{Peers: 5000, ProgramMS: 6000, Loaded: ProcUsage{RSSMB: 70}},
			},
			Convergence: &Convergence{AddMS: Dist{N: 100, P50: 10, P99: 50}},
		},
	}
	ts := evaluate(res)
	want := map[string]bool{
		"ADD p50":        true,
		"no error under": false,
		"200 nodes":      true,
		"1000 peers":     true,
		"5000 peers":     false,
		"weftd RSS":      false,
		"one new lease":  true,
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
		"| vxlan | pod → pod | **6.00**", "| vxlan | 60% |", "Where the time goes: weftd 50%.", `a \| b`, "vxlan single stream ≥ 50% of underlay",
		"| system call (`getppid`, median of 5 × 200000) | 1.02 µs |\n| thread wake-up round trip after 10ms idle (pipe, p50 of 100): same CPU / other CPU | 26 / 177 µs |\n\n",
		"a system call costs 1.02 µs on this machine", "takes 26 µs on one CPU, 177 µs across two"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
