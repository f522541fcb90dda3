package main

import (
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
		{"slow, big, a re-list", []*KubeRun{{Nodes: 5000, ProgramMS: 9000, Loaded: ProcUsage{RSSMB: 80}, Requests: map[string]int{"list nodes": 1, "watch nodes": 1}}},
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
			if ts[2].Got != tt.wantPollGot {
				t.Errorf("polling target got %q, want %q", ts[2].Got, tt.wantPollGot)
			}
		})
	}
}
