package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAuditVerbs counts each request once (a watch is logged when it starts
// and when it ends), by verb and resource/subresource, from the offset on.
func TestAuditVerbs(t *testing.T) {
	before := `{"auditID":"0","verb":"list","objectRef":{"resource":"nodes"}}` + "\n"
	log := before + strings.Join([]string{
		`{"auditID":"a","stage":"ResponseStarted","verb":"watch","objectRef":{"resource":"nodes"}}`,
		`{"auditID":"b","stage":"ResponseComplete","verb":"get","objectRef":{"resource":"nodes","name":"n1"}}`,
		`{"auditID":"c","stage":"ResponseComplete","verb":"patch","objectRef":{"resource":"nodes","subresource":"status"}}`,
		`{"auditID":"a","stage":"ResponseComplete","verb":"watch","objectRef":{"resource":"nodes"}}`,
		`not json`,
		`{"auditID":"d","stage":"ResponseComplete","verb":"get","objectRef":{"resource":"nodes","name":"n1"}}`,
	}, "\n") + "\n"
	path := filepath.Join(t.TempDir(), "audit.log")
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		from int64
		want string
	}{
		{int64(len(before)), "2 get nodes, 1 patch nodes/status, 1 watch nodes"},
		{0, "2 get nodes, 1 list nodes, 1 patch nodes/status, 1 watch nodes"},
	}
	for _, tt := range tests {
		got, err := auditVerbs(path, tt.from)
		if err != nil {
			t.Fatal(err)
		}
		if s := requestsText(got); s != tt.want {
			t.Errorf("from %d: %s, want %s", tt.from, s, tt.want)
		}
	}
}

func TestKubeTargets(t *testing.T) {
	ok := &KubeRun{Nodes: 5000, ProgramMS: 1200, Loaded: ProcUsage{RSSMB: 45}, PeakRSSMB: 52, Requests: map[string]int{"get nodes": 1}}
	tests := []struct {
		name        string
		runs        []*KubeRun
		prog, rss   *bool
		noPoll      *bool
		wantPollGot string
	}{
		{"met", []*KubeRun{{Nodes: 1000, Requests: map[string]int{}}, ok}, boolp(true), boolp(true), boolp(true), "0 list or watch requests in 2 runs"},
		{"slow, big, a re-list", []*KubeRun{{Nodes: 5000, ProgramMS: 9000, Before: ProcUsage{RSSMB: 30}, Loaded: ProcUsage{RSSMB: 80},
			GoLoaded: GoMem{HeapMB: 16, GoalMB: 32, AllocMB: 170}, GoAfter: GoMem{AllocMB: 420}, Requests: map[string]int{"list nodes": 1, "watch nodes": 1}}},
			boolp(false), boolp(false), boolp(false), "2 list or watch requests in 1 runs"},
		{"5000 failed", []*KubeRun{{Nodes: 5000, Error: "x"}}, nil, nil, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := kubeTargets(&KubeScale{Runs: tt.runs})
			if len(ts) != 3 {
				t.Fatalf("%d targets", len(ts))
			}
			for i, want := range []*bool{tt.prog, tt.rss, tt.noPoll} {
				if (want == nil) != (ts[i].Met == nil) || (want != nil && *want != *ts[i].Met) {
					t.Errorf("%s: met %v, want %v (got %q)", ts[i].Name, ts[i].Met, want, ts[i].Got)
				}
			}
			if tt.rss != nil && !*tt.rss && !strings.Contains(ts[1].Note, "RSS 30.0 MB before any Node; with the Nodes, Go heap 16.0 MB and GC goal 32.0 MB; weftd allocated 170 MB while they were created and 250 MB while they were deleted") {
				t.Errorf("RSS note %q lacks the run's figures", ts[1].Note)
			}
			if ts[2].Got != tt.wantPollGot {
				t.Errorf("polling target got %q, want %q", ts[2].Got, tt.wantPollGot)
			}
		})
	}
}

// TestParseGoMem reads the four Go runtime figures from weftd's /metrics
// (labelled and other series left alone), and names the ones missing.
func TestParseGoMem(t *testing.T) {
	text := `# HELP go_gc_duration_seconds A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0"} 2.1e-05
go_gc_duration_seconds_sum 0.0123
go_gc_duration_seconds_count 43
go_memstats_alloc_bytes 1.2e+07
go_memstats_alloc_bytes_total 4.718592e+08
go_memstats_heap_alloc_bytes 3.145728e+07
go_memstats_next_gc_bytes 6.291456e+07
weft_peers{backend="vxlan"} 5000
`
	m, err := parseGoMem(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if want := (GoMem{HeapMB: 30, GoalMB: 60, AllocMB: 450, GCs: 43}); m != want {
		t.Errorf("got %+v, want %+v", m, want)
	}
	_, err = parseGoMem(strings.NewReader("go_memstats_heap_alloc_bytes 1\ngo_gc_duration_seconds_count 1\n"))
	if err == nil || !strings.Contains(err.Error(), "go_memstats_alloc_bytes_total, go_memstats_next_gc_bytes") {
		t.Errorf("missing metrics: %v", err)
	}
}

// TestPprofTop keeps the "Showing nodes" line and the table of `go tool
// pprof -top`, not the file and time lines before them.
func TestPprofTop(t *testing.T) {
	out := `File: weftd
Type: inuse_space
Time: 2026-12-04 23:00:00 UTC
Showing nodes accounting for 12MB, 80% of 15MB total
      flat  flat%   sum%        cum   cum%
    4.50MB 30.00% 30.00%     4.50MB 30.00%  github.com/weftnet/weft/backend/vxlan.(*kernelState).add
`
	got := pprofTop(out)
	if len(got) != 3 || !strings.HasPrefix(got[0], "Showing nodes") || !strings.Contains(got[2], "kernelState") {
		t.Errorf("pprofTop = %q", got)
	}
}

// TestRenderHeapTop: a run's heap profile top is shown under what it was
// taken with; a run without one shows nothing.
func TestRenderHeapTop(t *testing.T) {
	var b strings.Builder
	p := printer(func(format string, args ...any) { fmt.Fprintf(&b, format, args...) })
	renderHeapTop(p, "5000 Nodes", nil)
	if b.Len() != 0 {
		t.Errorf("no profile rendered %q", b.String())
	}
	renderHeapTop(p, "5000 Nodes", []string{"Showing nodes accounting for 1MB", "  1MB 100% vxlan.planPeer"})
	if out := b.String(); !strings.Contains(out, "with 5000 Nodes programmed") || !strings.Contains(out, "```\nShowing nodes accounting for 1MB\n  1MB 100% vxlan.planPeer\n```") {
		t.Errorf("rendered %q", out)
	}
}
