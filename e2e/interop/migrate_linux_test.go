package interop

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/daemon"
	"github.com/weftnet/weft/lab"
	"github.com/weftnet/weft/lab/labtest"
)

// switchInterval is the ping interval the switches are measured at.
const switchInterval = 20 * time.Millisecond

// TestMigrate moves, per backend and in parallel, a node with pods from
// Flannel to weft and back, by the steps of
// Documentation/migrating-from-flannel.md, in a cluster of one weft node
// (n1) and two Flannel nodes (n2 moves, n3 stays): the node keeps its
// subnet, its pods keep their addresses and reach every other pod, pods
// made on one side keep working on the other, and the pings lost between
// the node's pods and its peers' during each switch are counted at 20 ms
// and bounded.
func TestMigrate(t *testing.T) {
	bins(t)
	for _, tc := range mixedCases {
		t.Run(tc.backend, func(t *testing.T) {
			t.Parallel()
			testMigrate(t, tc)
		})
	}
}

func testMigrate(t *testing.T, tc mixedCase) {
	l := up(t, lab.Options{
		Name:         labName("mg" + strings.ReplaceAll(tc.backend, "-", "") + "-"),
		Nodes:        3,
		PodsPerNode:  1,
		Backend:      tc.backend,
		Config:       tc.config,
		IPMasq:       tc.ipMasq,
		FlannelNodes: []string{"n2", "n3"},
	})
	const moving = "n2"
	n := l.Node(moving)
	sn := n.Subnet
	gone, err := l.AddPods(t.Context(), moving, 1) // deleted under weft
	if err != nil {
		t.Fatal(err)
	}
	requireMatrix(t, l, "before: n1 weft, n2 and n3 Flannel")
	flannelPod := *n.Pods[0]

	// Flannel -> weft.
	logSize := fileSize(n.Log)
	lost := measureSwitch(t, l, moving, func() { mustSwitch(t, l, moving) })
	record(t, "Flannel -> weft on %s: %s", tc.backend, lost)
	requireBounded(t, lost)
	requireQuietStart(t, n.Log, logSize)
	if got := l.Node(moving).Subnet; got != sn {
		t.Fatalf("%s held %s under Flannel and %s under weft", moving, sn, got)
	}
	if got := podAddr(t, l, flannelPod.Name); got != flannelPod.IP {
		t.Fatalf("pod %s had %s under Flannel, has %s under weft", flannelPod.Name, flannelPod.IP, got)
	}
	// A Flannel pod deleted under weft gives its address back to the store
	// both share.
	if err := l.DeletePod(t.Context(), gone[0].Name); err != nil {
		t.Fatalf("delete Flannel's pod %s under weft: %v", gone[0].Name, err)
	}
	if path := hostLocalFile(n, gone[0].IP); fileExists(path) {
		t.Errorf("Flannel's pod %s deleted under weft, but its address file %s stays", gone[0].Name, path)
	}
	weftPods, err := l.AddPods(t.Context(), moving, 1)
	if err != nil {
		t.Fatalf("a pod on %s under weft: %v", moving, err)
	}
	weftPod := *weftPods[0]
	if weftPod.IP == flannelPod.IP || !sn.Contains(weftPod.IP) {
		t.Fatalf("weft gave its pod %s %s (Flannel's pod has %s, the subnet is %s)", weftPod.Name, weftPod.IP, flannelPod.IP, sn)
	}
	if b, err := os.ReadFile(hostLocalFile(n, weftPod.IP)); err != nil || !strings.HasSuffix(string(b), "\r\neth0") {
		t.Errorf("weft's pod %s is not in host-local's store in host-local's form: %q, %v", weftPod.Name, b, err)
	}
	requireMatrix(t, l, moving+" moved to weft, its Flannel pod kept, one pod added by weft")

	// weft -> Flannel.
	lost = measureSwitch(t, l, moving, func() { mustSwitch(t, l, moving) })
	record(t, "weft -> Flannel on %s: %s", tc.backend, lost)
	requireBounded(t, lost)
	if got := l.Node(moving).Subnet; got != sn {
		t.Fatalf("%s held %s under weft and %s under Flannel again", moving, sn, got)
	}
	for _, p := range []lab.Pod{flannelPod, weftPod} {
		if got := podAddr(t, l, p.Name); got != p.IP {
			t.Fatalf("pod %s had %s, has %s back under Flannel", p.Name, p.IP, got)
		}
	}
	again, err := l.AddPods(t.Context(), moving, 1)
	if err != nil {
		t.Fatalf("a pod on %s back under Flannel: %v", moving, err)
	}
	if ip := again[0].IP; ip == flannelPod.IP || ip == weftPod.IP {
		t.Fatalf("Flannel gave its new pod %s the address of a pod still running", ip)
	}
	requireMatrix(t, l, moving+" back on Flannel with the pods of both")

	// The flannel plugin's DEL undoes only what it added (it finds its
	// record of the ADD in its dataDir, or does nothing): weft's pod
	// deleted under Flannel leaves its address reserved, which
	// migrating-from-flannel.md says to remove by hand.
	if err := l.DeletePod(t.Context(), weftPod.Name); err != nil {
		t.Fatalf("delete weft's pod %s under Flannel: %v", weftPod.Name, err)
	}
	if path := hostLocalFile(n, weftPod.IP); !fileExists(path) {
		t.Errorf("weft's pod deleted under Flannel released %s: migrating-from-flannel.md says it stays reserved", path)
	}
}

// maxSwitchLoss bounds what one stream may lose during a switch: 2 s at
// 20 ms (measured: 0 to 9, see migrating-from-flannel.md).
const maxSwitchLoss = 100

func requireBounded(t *testing.T, l switchLoss) {
	t.Helper()
	if m := l.maxLost(); m > maxSwitchLoss {
		t.Errorf("a switch lost %d pings on one stream, more than %d: %s", m, maxSwitchLoss, l)
	}
}

// requireQuietStart fails if weftd, since its log had size from bytes,
// logged a warning or an error about its peers or routes: after the
// documented steps nothing Flannel left is in its way.
func requireQuietStart(t *testing.T, log string, from int64) {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b[min(from, int64(len(b))):]), "\n") {
		if strings.Contains(line, "level=ERROR") || strings.Contains(line, "level=WARN") {
			t.Errorf("weftd after the switch: %s", line)
		}
	}
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// hostLocalFile is the address file of ip in the node's host-local store
// (network cbr0), which weft shares after the switch.
func hostLocalFile(n *lab.Node, ip netip.Addr) string {
	return filepath.Join(n.HostLocalDir, "cbr0", ip.String())
}

// switchLoss is what the pings between the moving node's pods and its
// peers' lost during one switch.
type switchLoss struct {
	streams []string
	stats   []labtest.PingStats
}

func (s switchLoss) maxLost() int {
	m := 0
	for _, st := range s.stats {
		m = max(m, st.Lost())
	}
	return m
}

func (s switchLoss) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "lost at %v:", switchInterval)
	for i, st := range s.stats {
		fmt.Fprintf(&b, " %s %d/%d", s.streams[i], st.Lost(), st.Sent)
	}
	fmt.Fprintf(&b, " (max %d = %v)", s.maxLost(), time.Duration(s.maxLost())*switchInterval)
	return b.String()
}

// measureSwitch pings between the first pod of node and the first pod of
// every other node, both ways, at switchInterval while switch runs, until
// every pair answers again, and returns what each stream lost.
func measureSwitch(t *testing.T, l *lab.Lab, node string, switchFn func()) switchLoss {
	t.Helper()
	me := l.Node(node).Pods[0]
	type pair struct {
		from string
		to   netip.Addr
	}
	var pairs []pair
	var loss switchLoss
	for _, o := range l.Nodes {
		if o.Name == node || len(o.Pods) == 0 {
			continue
		}
		pairs = append(pairs, pair{me.Name, o.Pods[0].IP}, pair{o.Pods[0].Name, me.IP})
		loss.streams = append(loss.streams, me.Name+"->"+o.Pods[0].Name, o.Pods[0].Name+"->"+me.Name)
	}
	var ps []*labtest.Pinger
	for _, p := range pairs {
		ps = append(ps, labtest.StartPing(t, l, p.from, p.to, switchInterval, 6000))
	}
	switchFn()
	back := lab.Poll(t.Context(), 60*time.Second, 50*time.Millisecond, func() bool {
		for _, p := range pairs {
			if !labtest.PingOnce(t.Context(), l, p.from, p.to) {
				return false
			}
		}
		return true
	})
	if !back {
		t.Fatalf("pods of %s and its peers not reachable again within 60s of the switch", node)
	}
	// A second of pings after the last pair answered, so a late loss counts.
	deadline := time.Now().Add(time.Second)
	lab.Poll(t.Context(), time.Second, 100*time.Millisecond, func() bool { return time.Now().After(deadline) })
	for _, p := range ps {
		loss.stats = append(loss.stats, p.Stop(t))
	}
	return loss
}

// mustSwitch moves node from Flannel to weft or back by the steps of
// migrating-from-flannel.md (lab.MoveToWeft, lab.MoveToFlannel).
func mustSwitch(t *testing.T, l *lab.Lab, node string) {
	t.Helper()
	if _, err := l.Switch(t.Context(), node); err != nil {
		t.Fatal(err)
	}
}

// TestMigrationDocCommands: migrating-from-flannel.md gives the commands
// lab.MoveToWeft and lab.MoveToFlannel run, which TestMigrate measures (the
// lab's Network is the doc's example, 10.244.0.0/16).
func TestMigrationDocCommands(t *testing.T) {
	b, err := os.ReadFile("../../Documentation/migrating-from-flannel.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, want := range []string{
		"systemctl stop flanneld",
		"rm /etc/cni/net.d/" + lab.FlannelConfFile,
		lab.HandOverRoutes(netip.MustParsePrefix(lab.DefaultNetwork)),
		strings.Join(lab.FlannelCNIFlags("/var/lib/cni/networks"), " "),
		"--subnet-file /run/flannel/subnet.env",
		"systemctl stop weftd",
		"ip link del weft.1",
		"ip link del weft-udp",
		"rm /etc/cni/net.d/" + daemon.CNIConfFile,
		"systemctl start flanneld",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("migrating-from-flannel.md lacks %q", want)
		}
	}
}
