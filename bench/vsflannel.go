package main

import (
	"fmt"
	"slices"
	"strings"
)

// flannelDataPlaneTargets are the data-plane targets against Flannel, each
// from figures of the same lab and run: host-gw and vxlan-DirectRouting
// single stream against Flannel host-gw, vxlan against Flannel vxlan, and
// for every backend Flannel has, no throughput figure below Flannel's and
// ping p50 not above it.
func flannelDataPlaneTargets(dp *DataPlane, profiles []Profile) []Target {
	var ts []Target
	vsOther := func(a, b string, want float64) {
		t := Target{Area: "data plane", Name: fmt.Sprintf("%s single stream ≥ %.2f× Flannel %s", a, want, b), Want: fmt.Sprintf("≥ %.2f×", want)}
		ra, rb := dp.backend(a), dp.backend(b)
		if ra != nil && rb != nil && ra.Pod != nil && rb.Flannel != nil && ra.Pod.TCP1.MedianGbps > 0 && rb.Flannel.TCP1.MedianGbps > 0 {
			r := ra.Pod.TCP1.MedianGbps / rb.Flannel.TCP1.MedianGbps
			t.Got = fmt.Sprintf("%.2f× (%.2f vs %.2f Gbit/s)", r, ra.Pod.TCP1.MedianGbps, rb.Flannel.TCP1.MedianGbps)
			t.Met = boolp(r >= want)
			if !*t.Met {
				t.Note = vsFlannelNote(a, ra.Pod, rb.Flannel)
				if a == "vxlan" {
					t.Note += vxlanProfilesNote(profiles)
				}
			}
		}
		ts = append(ts, t)
	}
	vsOther("host-gw", "host-gw", targetVsFlannelHostGW)
	vsOther("vxlan-directrouting", "host-gw", targetVsFlannelHostGW)
	vsOther("vxlan", "vxlan", targetVsFlannelVXLAN)
	for _, br := range dp.Backends {
		if br.Flannel == nil || br.Pod == nil || br.VsFlannel == nil || br.Variant {
			continue
		}
		c := br.VsFlannel
		floor := Target{Area: "data plane", Name: fmt.Sprintf("%s: every throughput figure ≥ %.1f× Flannel %s", br.Name, targetVsFlannelFloor, br.Name), Want: fmt.Sprintf("≥ %.1f×", targetVsFlannelFloor)}
		figs := []struct {
			name string
			r    float64
		}{{"1 stream", c.TCP1}, {"4 streams", c.TCP4}, {"UDP", c.UDPGbps}}
		low, got, measured := "", "", 0
		for _, f := range figs {
			if f.r == 0 {
				continue
			}
			measured++
			got += fmt.Sprintf("%s%s %.2f×", sep(got), f.name, f.r)
			if f.r < targetVsFlannelFloor {
				low += fmt.Sprintf("%s%s", sep(low), f.name)
			}
		}
		if measured > 0 {
			floor.Got, floor.Met = got, boolp(low == "")
			if low != "" {
				floor.Note = "Below Flannel: " + low + "." + lowRuns(br, low)
			}
		}
		lat := Target{Area: "data plane", Name: fmt.Sprintf("%s ping p50 ≤ %.1f× Flannel %s", br.Name, targetVsFlannelPing, br.Name), Want: fmt.Sprintf("≤ %.1f×", targetVsFlannelPing)}
		if c.PingP50 > 0 {
			lat.Got = fmt.Sprintf("%.2f× (%.3f vs %.3f ms)", c.PingP50, br.Pod.Ping.RTTms.P50, br.Flannel.Ping.RTTms.P50)
			lat.Met = boolp(c.PingP50 <= targetVsFlannelPing)
			if !*lat.Met {
				lat.Note = pingNote(br)
			}
		}
		ts = append(ts, floor, lat)
	}
	return ts
}

// heapTopOf says whether weft's run with n peers has a heap profile.
func (c *Control) heapTopOf(n int) bool {
	for _, p := range c.Peers {
		if p.Peers == n && p.Daemon != cniFlannel && len(p.HeapTop) > 0 {
			return true
		}
	}
	return false
}

// weftdDefaultGCPercent is weftd's default --gc-percent (cmd/weftd's
// defaultGCPercent; TestGCPercentInStep keeps the two in step).
const weftdDefaultGCPercent = 50

// rssNote says what the RSS of weftd follows, for the notes of the memory
// targets; fileMB is the RSS of weftd's file pages with the peers.
func rssNote(fileMB float64) string {
	return fmt.Sprintf("Of the RSS, %.1f MB are weftd's binary mapped in (file pages, shared and reclaimable); the rest follows the Go heap's GC goal, the live heap and --gc-percent of it again: 1.5× at weftd's default %d, 2× at Go's %d (the same run at it is in the table).",
		fileMB, weftdDefaultGCPercent, goGCPercent)
}

// kernelPath says, for a backend Flannel also has, why weft's pod→pod
// stream is not faster than Flannel's: what the two share.
var kernelPath = map[string]string{
	"vxlan":               "Both run the kernel's VXLAN path at the same 64 KiB GSO size: weftd keeps BIG TCP off on VXLAN, as this kernel does not carry an IPv4 VXLAN packet with a larger inner packet (backends.md, BIG TCP).",
	"vxlan-directrouting": "A DirectRouting pod sends at its VXLAN device's 64 KiB GSO size, as Flannel's pods do: weftd keeps BIG TCP off on VXLAN, as this kernel does not carry an IPv4 VXLAN packet with a larger inner packet (backends.md, BIG TCP).",
	"host-gw":             "Both forward in the kernel; weft's gain is BIG TCP on the bridge and pod veths, capped by the underlay's GSO size (backends.md, BIG TCP).",
}

// vsFlannelNote says what stands in the way of a single-stream target
// against Flannel: the shared kernel path, each side's runs and the kernel
// CPU each spent per GB.
func vsFlannelNote(name string, weft, flannel *PathResult) string {
	n := kernelPath[name]
	n += fmt.Sprintf("%sRuns: weft %s, Flannel %s Gbit/s; kernel CPU per GB %.2f vs %.2f s.",
		map[bool]string{true: " ", false: ""}[n != ""], runRange(weft.TCP1), runRange(flannel.TCP1), weft.KernelCPUPerGB, flannel.KernelCPUPerGB)
	return n
}

// vxlanProfilesNote compares the perf profiles of a vxlan stream by weft
// and by Flannel (profileVXLANPaths): how many of each side's hottest
// kernel symbols are the other's, and each side's hottest. Empty without
// both profiles.
func vxlanProfilesNote(profiles []Profile) string {
	const top = 10
	var w, f []Share
	for _, p := range profiles {
		switch {
		case p.Error != "":
		case strings.HasPrefix(p.Case, "vxlan, weft:"):
			w = kernelSymbols(p.BySym, top)
		case strings.HasPrefix(p.Case, "vxlan, Flannel:"):
			f = kernelSymbols(p.BySym, top)
		}
	}
	if len(w) == 0 || len(f) == 0 {
		return ""
	}
	common := 0
	for _, a := range w {
		if slices.ContainsFunc(f, func(b Share) bool { return b.What == a.What }) {
			common++
		}
	}
	return fmt.Sprintf(" perf of one stream each (Profiles): %d of weft's %d hottest kernel symbols are among Flannel's %d; hottest, weft `%s` %.1f%%, Flannel `%s` %.1f%%.",
		common, len(w), len(f), w[0].What, w[0].Percent, f[0].What, f[0].Percent)
}

// kernelSymbols are the first n kernel symbols ("[k] name") of a profile's
// symbol shares, named by the symbol alone (whichever command ran it).
func kernelSymbols(shares []Share, n int) []Share {
	var out []Share
	for _, s := range shares {
		_, sym, ok := strings.Cut(s.What, "[k] ")
		if !ok || slices.ContainsFunc(out, func(o Share) bool { return o.What == sym }) {
			continue
		}
		if out = append(out, Share{Percent: s.Percent, What: strings.TrimSuffix(sym, "`")}); len(out) == n {
			break
		}
	}
	return out
}

// lowRuns lists, for each figure named in low ("4 streams", ...) of a
// backend, weft's and Flannel's runs, so a reader sees whether they overlap.
func lowRuns(br *BackendRun, low string) string {
	var out string
	for _, f := range []struct {
		name string
		w, f Series
	}{{"1 stream", br.Pod.TCP1, br.Flannel.TCP1}, {"4 streams", br.Pod.TCP4, br.Flannel.TCP4}} {
		if strings.Contains(low, f.name) && len(f.w.Runs) > 0 && len(f.f.Runs) > 0 {
			out += fmt.Sprintf(" %s runs: weft %s, Flannel %s Gbit/s.", f.name, runRange(f.w), runRange(f.f))
		}
	}
	if k := kernelPath[br.Name]; k != "" {
		out += " " + k
	}
	return out
}

// pingNote gives both sides' p50 of each ping round of one backend, and
// whether weftd is on the echo's path.
func pingNote(br *BackendRun) string {
	n := ""
	if len(br.Pod.Ping.RoundP50ms) > 0 && len(br.Flannel.Ping.RoundP50ms) > 0 {
		n = fmt.Sprintf("p50 of each round: weft %s, Flannel %s ms. ", joinf("%.3f", br.Pod.Ping.RoundP50ms), joinf("%.3f", br.Flannel.Ping.RoundP50ms))
	}
	if br.Name == "udp" {
		return n + "Both daemons carry every echo in userspace (weft's wake-ups: backend-udp.md)."
	}
	return n + "No daemon is on the echo's path: both are the kernel's forwarding."
}

// runRange is a series' lowest and highest run, "a–b" (one run: "a").
func runRange(s Series) string {
	if len(s.Runs) == 0 {
		return "none"
	}
	lo, hi := s.Runs[0].Gbps, s.Runs[0].Gbps
	for _, r := range s.Runs[1:] {
		lo, hi = min(lo, r.Gbps), max(hi, r.Gbps)
	}
	if len(s.Runs) == 1 {
		return fmt.Sprintf("%.2f", lo)
	}
	return fmt.Sprintf("%.2f–%.2f", lo, hi)
}

// joinf formats each of vs with format, joined by ", ": "48, 73, 53";
// "none" for none.
func joinf(format string, vs []float64) string {
	if len(vs) == 0 {
		return "none"
	}
	var out string
	for _, v := range vs {
		out += sep(out) + fmt.Sprintf(format, v)
	}
	return out
}

func sep(s string) string {
	if s == "" {
		return ""
	}
	return ", "
}

// Targets of the CNI plugin against Flannel's chain (weft / Flannel p50,
// same run): sequential and parallel, ADD and DEL.
const (
	targetCNISeqVsFlannel = 0.5
	targetCNIParVsFlannel = 0.4
)

// flannelCNITargets compares weft's runs with Flannel's of the same kind.
func flannelCNITargets(c *CNI) []Target {
	var ts []Target
	for _, k := range []struct {
		name string
		want float64
	}{{"sequential", targetCNISeqVsFlannel}, {"parallel", targetCNIParVsFlannel}} {
		w, f := c.run(k.name, false), c.run(k.name, true)
		for _, verb := range []string{"ADD", "DEL"} {
			name := fmt.Sprintf("%s p50 ≤ %.1f× Flannel's chain, %s", verb, k.want, k.name)
			if k.name == "parallel" {
				name += fmt.Sprintf(" (%d in flight)", c.Parallel)
			}
			t := Target{Area: "cni", Name: name, Want: fmt.Sprintf("≤ %.1f×", k.want)}
			if w != nil && f != nil {
				wd, fd := w.AddMS, f.AddMS
				if verb == "DEL" {
					wd, fd = w.DelMS, f.DelMS
				}
				if wd.N > 0 && fd.N > 0 && fd.P50 > 0 {
					r := wd.P50 / fd.P50
					t.Got = fmt.Sprintf("%.2f× (%.1f vs %.1f ms)", r, wd.P50, fd.P50)
					t.Met = boolp(r <= k.want)
				}
			}
			ts = append(ts, t)
		}
	}
	return ts
}

// Control-plane targets against Flannel and at scale.
const (
	targetProgramVsFlannel = 0.33 // N peers programmed after the last write, weft / Flannel
	targetRemoveVsFlannel  = 0.5  // all removed, weft / Flannel
	targetScaleMS          = 5000.0
)

// controlTargets are the peer-programming targets: 1000 peers within a
// second and ≤ 0.33× Flannel's time, removal ≤ 0.5× Flannel's, and the
// scale run (the largest weft-only count) within 5 s and 60 MB.
func controlTargets(c *Control, profNote string) []Target {
	var ts []Target
	n := 1000
	w, f := c.peers(n, cniWeft), c.peers(n, cniFlannel)
	abs := Target{Area: "control plane", Name: fmt.Sprintf("%d peers programmed ≤ %.0f s after the last write", n, target1000MS/1000), Want: fmt.Sprintf("≤ %.0f ms", target1000MS)}
	if w != nil {
		abs.Got = fmt.Sprintf("%.0f ms (median of %d)", w.programMS, w.runs)
		abs.Met = boolp(w.programMS <= target1000MS)
		if !*abs.Met {
			abs.Note = fmt.Sprintf("weftd used %.2f CPU-s to program %d peers.", w.cpuProgram, n) + profNote
		}
	}
	prog := Target{Area: "control plane", Name: fmt.Sprintf("%d peers programmed ≤ %.2f× Flannel's time after the last write", n, targetProgramVsFlannel), Want: fmt.Sprintf("≤ %.2f×", targetProgramVsFlannel)}
	rem := Target{Area: "control plane", Name: fmt.Sprintf("removal of all %d ≤ %.1f× Flannel's", n, targetRemoveVsFlannel), Want: fmt.Sprintf("≤ %.1f×", targetRemoveVsFlannel)}
	if w != nil && f != nil {
		if f.programMS > 0 {
			r := w.programMS / f.programMS
			prog.Got = fmt.Sprintf("%.2f× (%.0f vs %.0f ms)", r, w.programMS, f.programMS)
			prog.Met = boolp(r <= targetProgramVsFlannel)
			if !*prog.Met {
				prog.Note = fmt.Sprintf("Runs: weft %s, Flannel %s ms; weftd used %.2f CPU-s to program %d peers.", joinf("%.0f", w.programRuns), joinf("%.0f", f.programRuns), w.cpuProgram, n) + profNote
			}
		}
		if f.removeMS > 0 {
			r := w.removeMS / f.removeMS
			rem.Got = fmt.Sprintf("%.2f× (%.0f vs %.0f ms)", r, w.removeMS, f.removeMS)
			rem.Met = boolp(r <= targetRemoveVsFlannel)
			if !*rem.Met {
				rem.Note = fmt.Sprintf("Runs: weft %s, Flannel %s ms; weftd used %.2f CPU-s to remove %d peers.", joinf("%.0f", w.removeRuns), joinf("%.0f", f.removeRuns), w.cpuRemove, n) + profNote
			}
		}
	}
	ts = append(ts, abs, prog, rem)
	scale := 0
	for _, p := range c.Peers {
		if p.Daemon != cniFlannel && p.Peers > scale {
			scale = p.Peers
		}
	}
	if scale <= n {
		scale = 10000
	}
	sc := Target{Area: "control plane", Name: fmt.Sprintf("%d peers (vxlan, /%d subnets) programmed ≤ %.0f s after the last write", scale, cpSubnetLen, targetScaleMS/1000), Want: fmt.Sprintf("≤ %.0f ms", targetScaleMS)}
	rss := Target{Area: "control plane", Name: fmt.Sprintf("weftd RSS at %d peers ≤ %.0f MB", scale, targetRSSMB), Want: fmt.Sprintf("≤ %.0f MB", targetRSSMB)}
	if s := c.peers(scale, cniWeft); s != nil {
		sc.Got = fmt.Sprintf("%.0f ms", s.programMS)
		sc.Met = boolp(s.programMS <= targetScaleMS)
		if !*sc.Met {
			sc.Note = fmt.Sprintf("weftd used %.2f CPU-s to program %d peers.", s.cpuProgram, scale) + profNote
		}
		rss.Got = fmt.Sprintf("%.1f MB", s.rssLoaded)
		rss.Met = boolp(s.rssLoaded <= targetRSSMB)
		if !*rss.Met && s.rssBefore > 0 {
			rss.Note = fmt.Sprintf("RSS %.1f MB before the peers; %.0f bytes per peer above it. %s", s.rssBefore, (s.rssLoaded-s.rssBefore)*(1<<20)/float64(scale), rssNote(s.rssFileLoaded))
			if c.heapTopOf(scale) {
				rss.Note += " What the heap holds: the heap profile in Control plane."
			}
		}
	}
	return append(ts, sc, rss)
}
