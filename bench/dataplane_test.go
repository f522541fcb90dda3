package main

import (
	"strings"
	"testing"
)

// A variant (a weft feature turned off) runs when its backend is chosen,
// turns something off, and is never judged against the targets.
func TestDataPlaneVariants(t *testing.T) {
	specs := backendSpecs(labNetwork)
	names := map[string]bool{}
	for _, s := range specs {
		names[s.name] = true
	}
	var variants int
	for _, s := range specs {
		if s.base == "" {
			continue
		}
		variants++
		if !names[s.base] || s.base == s.name || len(s.weftdArgs) == 0 {
			t.Errorf("variant %q: base %q, weftd args %q", s.name, s.base, s.weftdArgs)
		}
		c, err := parseFlags([]string{"--backends", s.base}, &strings.Builder{})
		if err != nil || !c.wantBackend(s.selector()) {
			t.Errorf("--backends %s does not select %q: %v", s.base, s.name, err)
		}
	}
	if variants == 0 {
		t.Fatal("no variants")
	}
	path := func(gbps float64) *PathResult { return &PathResult{TCP1: Series{MedianGbps: gbps}} }
	dp := &DataPlane{Backends: []*BackendRun{
		{Name: "host-gw", Pod: path(12), Flannel: path(10), VsFlannel: &Comparison{TCP1: 1.2}},
		{Name: "host-gw, BIG TCP off", Variant: true, Pod: path(5), Flannel: path(10), VsFlannel: &Comparison{TCP1: 0.5}},
	}}
	judged := false
	for _, tg := range flannelDataPlaneTargets(dp) {
		if strings.Contains(tg.Name, "BIG TCP off") {
			t.Errorf("target judged on a variant: %q", tg.Name)
		}
		judged = judged || strings.HasPrefix(tg.Name, "host-gw: every throughput")
	}
	if !judged {
		t.Error("host-gw itself was not judged")
	}
}
