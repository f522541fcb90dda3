package reliability

import (
	"fmt"
	"testing"
	"time"

	"github.com/weftnet/weft/backend/udp"
	"github.com/weftnet/weft/backend/vxlan"
	"github.com/weftnet/weft/backend/wireguard"
	"github.com/weftnet/weft/lab"
)

// TestWeftdKillRestart SIGKILLs weftd on the node of a pinging pod and
// starts it again, on each backend. Measured: ping loss across the kill and
// the restart (zero expected for vxlan, host-gw and a kernel WireGuard
// device, whose data plane is the kernel; the udp backend's and the embedded
// WireGuard's data plane is weftd, so their loss window is measured, for
// wireguard in both directions), the subnet (must be the same), and the
// ifindex of the backend's device (weft.1, udp's persistent TUN device,
// weft-wg) and of the pod bridge (unchanged: nothing re-created). The
// dual-stack rows ping in both families and hold both to the same bounds.
func TestWeftdKillRestart(t *testing.T) {
	bins(t)
	scenarios := append(ipv4Scenarios(allBackends...), dualStackScenarios(allBackends...)...)
	parallelScenarios(t, scenarios, func(t *testing.T, s scenario) {
		backend := s.backend
		l := up(t, s.lab(lab.Options{Name: labName("kr"), Nodes: 2, PodsPerNode: 1}))
		n1 := l.Node("n1")
		src, dst := n1.Pods[0], l.Node("n2").Pods[0]
		devices := []string{"weft0"}
		switch backend {
		case "vxlan":
			devices = append(devices, "weft.1")
			if s.ipv6 {
				devices = append(devices, vxlan.DeviceName6(1))
			}
		case "udp":
			// The TUN device is persistent: the restarted weftd
			// attaches to it, so it and its route stay.
			devices = append(devices, udp.DeviceName)
		case "wireguard":
			devices = append(devices, wireguard.DeviceName)
			if s.ipv6 {
				devices = append(devices, wireguard.DeviceNameV6)
			}
		}
		// The embedded WireGuard, like udp, is weftd itself; the kernel's
		// forwards without it.
		kernelPath := backend != "udp" && (backend != "wireguard" || wgKernel(t, l, "n1"))
		before := map[string]int{}
		for _, d := range devices {
			before[d] = ifindex(t, l, "n1", d)
		}
		routes := func() string {
			r := run(t, l, "n1", "ip", "route", "show", "proto", "all")
			if s.ipv6 {
				r += run(t, l, "n1", "ip", "-6", "route", "show", "proto", "all")
			}
			return r
		}
		routesBefore := routes()
		oldSubnet := n1.Subnet

		const interval = 20 * time.Millisecond
		p := startPings(t, l, src.Name, s.addrs(dst), interval, 8*time.Second)
		var back *familyPings
		if backend == "wireguard" {
			// The peer holds the session of n1's old device: traffic it
			// starts itself must come back as soon as n1's does.
			bp := startPings(t, l, dst.Name, s.addrs(src), interval, 8*time.Second)
			back = &bp
		}
		// Let the ping run a moment before the kill, so it measures the
		// path before, during and after.
		requireReach(t, l, src.Name, dst.IP, 5*time.Second)
		killed := time.Now()
		if err := l.StopWeftd(t.Context(), "n1", true); err != nil {
			t.Fatal(err)
		}
		sn, err := l.StartWeftd(t.Context(), "n1")
		if err != nil {
			t.Fatal(err)
		}
		readyAfter := time.Since(killed)
		st := p.Wait(t)
		reverse := ""
		var bst familyStats
		if back != nil {
			bst = back.Wait(t)
			reverse = fmt.Sprintf("; ping n2→n1 %v", bst)
		}
		impl := ""
		if backend == "wireguard" {
			impl = map[bool]string{true: " (kernel)", false: " (userspace)"}[kernelPath]
		}
		record(t, "weftd SIGKILL + restart on the pinging pod's node, backend %s%s: ready again %v after the kill; ping n1→n2 %v%s; same subnet %v; of %v re-created: %v",
			s, impl, readyAfter.Round(10*time.Millisecond), st, reverse, sn == oldSubnet, devices, recreated(t, l, before))
		if sn != oldSubnet {
			t.Errorf("subnet %s after the restart, had %s", sn, oldSubnet)
		}
		if r := recreated(t, l, before); len(r) > 0 {
			t.Errorf("devices re-created by the restart: %v", r)
		}
		if backend != "udp" {
			// The embedded WireGuard's TUN device outlives weftd: its
			// routes too.
			if routesAfter := routes(); routesAfter != routesBefore {
				t.Errorf("routes changed across the restart:\nbefore:\n%s\nafter:\n%s", routesBefore, routesAfter)
			}
		}
		switch {
		case kernelPath && st.Lost() != 0:
			t.Errorf("lost %d pings across the restart (want 0 on a kernel data path)", st.Lost())
		case kernelPath && back != nil && bst.Lost() != 0:
			t.Errorf("lost %d pings n2→n1 across the restart (want 0 on a kernel data path)", bst.Lost())
		case !kernelPath && st.Window() > readyAfter+2*time.Second:
			t.Errorf("%s lost %v of pings, more than the %v restart window", backend, st.Window(), readyAfter)
		case !kernelPath && back != nil && bst.Window() > readyAfter+2*time.Second:
			t.Errorf("%s lost %v of pings n2→n1, more than the %v restart window: the peer kept the old session", backend, bst.Window(), readyAfter)
		}
		requireMatrix(t, l, "after the restart")
	})
}

func recreated(t *testing.T, l *lab.Lab, before map[string]int) []string {
	var out []string
	for d, i := range before {
		if ifindex(t, l, "n1", d) != i {
			out = append(out, d)
		}
	}
	return out
}
