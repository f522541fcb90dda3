package reliability

import (
	"testing"
	"time"

	"github.com/weftnet/weft/backend/udp"
	"github.com/weftnet/weft/lab"
)

// TestWeftdKillRestart SIGKILLs weftd on the node of a pinging pod and
// starts it again, on each backend. Measured: ping loss across the kill and
// the restart (zero expected for vxlan and host-gw, whose data plane is the
// kernel; the udp backend's data plane is weftd, so its loss window is
// measured), the subnet (must be the same), and the ifindex of the
// backend's device (weft.1, or udp's persistent TUN device) and of the pod
// bridge (unchanged: nothing re-created).
func TestWeftdKillRestart(t *testing.T) {
	bins(t)
	parallelEach(t, allBackends, func(t *testing.T, backend string) {
		l := up(t, lab.Options{Name: labName("kr"), Nodes: 2, PodsPerNode: 1, Backend: backend})
		n1 := l.Node("n1")
		src, dst := n1.Pods[0], l.Node("n2").Pods[0]
		devices := []string{"weft0"}
		switch backend {
		case "vxlan":
			devices = append(devices, "weft.1")
		case "udp":
			// The TUN device is persistent: the restarted weftd
			// attaches to it, so it and its route stay.
			devices = append(devices, udp.DeviceName)
		}
		before := map[string]int{}
		for _, d := range devices {
			before[d] = ifindex(t, l, "n1", d)
		}
		routesBefore := run(t, l, "n1", "ip", "route", "show", "proto", "all")
		oldSubnet := n1.Subnet

		const interval = 20 * time.Millisecond
		p := startPing(t, l, src.Name, dst.IP, interval, 8*time.Second)
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
		record(t, "weftd SIGKILL + restart on the pinging pod's node, backend %s: ready again %v after the kill; ping n1→n2 %v; same subnet %v; of %v re-created: %v",
			backend, readyAfter.Round(10*time.Millisecond), st, sn == oldSubnet, devices, recreated(t, l, before))
		if sn != oldSubnet {
			t.Errorf("subnet %s after the restart, had %s", sn, oldSubnet)
		}
		if r := recreated(t, l, before); len(r) > 0 {
			t.Errorf("devices re-created by the restart: %v", r)
		}
		if backend != "udp" {
			if st.Lost() != 0 {
				t.Errorf("lost %d pings across the restart (want 0 on a kernel backend)", st.Lost())
			}
			if routesAfter := run(t, l, "n1", "ip", "route", "show", "proto", "all"); routesAfter != routesBefore {
				t.Errorf("routes changed across the restart:\nbefore:\n%s\nafter:\n%s", routesBefore, routesAfter)
			}
		} else if st.Window() > readyAfter+2*time.Second {
			t.Errorf("udp lost %v of pings, more than the %v restart window", st.Window(), readyAfter)
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
