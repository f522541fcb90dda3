package main

import "fmt"

// flannelDataPlaneTargets are the data-plane targets against Flannel, each
// from figures of the same lab and run: host-gw and vxlan-DirectRouting
// single stream against Flannel host-gw, vxlan against Flannel vxlan, and
// for every backend Flannel has, no throughput figure below Flannel's and
// ping p50 not above it.
func flannelDataPlaneTargets(dp *DataPlane) []Target {
	var ts []Target
	vsOther := func(a, b string, want float64) {
		t := Target{Area: "data plane", Name: fmt.Sprintf("%s single stream ≥ %.2f× Flannel %s", a, want, b), Want: fmt.Sprintf("≥ %.2f×", want)}
		ra, rb := dp.backend(a), dp.backend(b)
		if ra != nil && rb != nil && ra.Pod != nil && rb.Flannel != nil && ra.Pod.TCP1.MedianGbps > 0 && rb.Flannel.TCP1.MedianGbps > 0 {
			r := ra.Pod.TCP1.MedianGbps / rb.Flannel.TCP1.MedianGbps
			t.Got = fmt.Sprintf("%.2f× (%.2f vs %.2f Gbit/s)", r, ra.Pod.TCP1.MedianGbps, rb.Flannel.TCP1.MedianGbps)
			t.Met = boolp(r >= want)
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
				floor.Note = "Below Flannel: " + low + "."
			}
		}
		lat := Target{Area: "data plane", Name: fmt.Sprintf("%s ping p50 ≤ %.1f× Flannel %s", br.Name, targetVsFlannelPing, br.Name), Want: fmt.Sprintf("≤ %.1f×", targetVsFlannelPing)}
		if c.PingP50 > 0 {
			lat.Got = fmt.Sprintf("%.2f× (%.3f vs %.3f ms)", c.PingP50, br.Pod.Ping.RTTms.P50, br.Flannel.Ping.RTTms.P50)
			lat.Met = boolp(c.PingP50 <= targetVsFlannelPing)
		}
		ts = append(ts, floor, lat)
	}
	return ts
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
		}
		if f.removeMS > 0 {
			r := w.removeMS / f.removeMS
			rem.Got = fmt.Sprintf("%.2f× (%.0f vs %.0f ms)", r, w.removeMS, f.removeMS)
			rem.Met = boolp(r <= targetRemoveVsFlannel)
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
	}
	return append(ts, sc, rss)
}
