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
	for _, tg := range flannelDataPlaneTargets(dp, nil) {
		if strings.Contains(tg.Name, "BIG TCP off") {
			t.Errorf("target judged on a variant: %q", tg.Name)
		}
		judged = judged || strings.HasPrefix(tg.Name, "host-gw: every throughput")
	}
	if !judged {
		t.Error("host-gw itself was not judged")
	}
}

// The vxlan note compares the two profiles' kernel symbols, by symbol
// whatever command ran it; without both profiles it says nothing.
func TestVXLANProfilesNote(t *testing.T) {
	w := Profile{Case: "vxlan, weft: pod→pod iperf3 TCP, 1 stream, 5s", BySym: []Share{
		{30, "iperf3 [kernel.kallsyms] [k] copy_user"}, {20, "ksoftirqd/0 [kernel.kallsyms] [k] copy_user"},
		{10, "iperf3 [kernel.kallsyms] [k] vxlan_xmit"}, {5, "weftd weftd [.] main"}, {4, "iperf3 [kernel.kallsyms] [k] only_weft"}}}
	f := Profile{Case: "vxlan, Flannel: pod→pod iperf3 TCP, 1 stream, 5s", BySym: []Share{
		{25, "iperf3 [kernel.kallsyms] [k] vxlan_xmit"}, {22, "iperf3 [kernel.kallsyms] [k] copy_user"}}}
	got := vxlanProfilesNote([]Profile{w, f})
	want := " perf of one stream each (Profiles): 2 of weft's 3 hottest kernel symbols are among Flannel's 2; hottest, weft `copy_user` 30.0%, Flannel `vxlan_xmit` 25.0%."
	if got != want {
		t.Errorf("note\n%q, want\n%q", got, want)
	}
	if n := vxlanProfilesNote([]Profile{w}); n != "" {
		t.Errorf("one profile gave %q", n)
	}
	f.Error = "perf is not installed: no profile"
	if n := vxlanProfilesNote([]Profile{w, f}); n != "" {
		t.Errorf("a failed profile gave %q", n)
	}
}
