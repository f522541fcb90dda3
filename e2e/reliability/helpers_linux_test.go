package reliability

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/internal/nstest"
	"github.com/weftnet/weft/lab"
	"github.com/weftnet/weft/lab/labtest"
)

const prefix = "/coreos.com/network"

// bins returns the built binaries or ends the test: skipped when not root
// or under -short (failed in CI: nstest.CannotRun), failed when they did
// not build.
func bins(t *testing.T) string {
	t.Helper()
	nstest.RequireRoot(t)
	if binDir == "" {
		nstest.CannotRun(t, "reliability: skipped under -short")
	}
	if buildErr != nil {
		t.Fatalf("binaries: %v", buildErr)
	}
	return binDir
}

// labName is a lab name no other test uses at once.
func labName(p string) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "rl" + p + hex.EncodeToString(b[:])
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// up brings a lab up and always tears it down in t.Cleanup.
func up(t *testing.T, o lab.Options) *lab.Lab {
	t.Helper()
	o.BinDir = bins(t)
	o.Progress = testWriter{t}
	if o.StateRoot == "" {
		o.StateRoot = t.TempDir()
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 60 * time.Second
	}
	var l *lab.Lab
	t.Cleanup(func() {
		// Race-built binaries (a -race run: lab.BuildBinaries) report
		// data races in their logs, which Down deletes.
		if l != nil {
			if err := l.DataRaces(); err != nil {
				t.Errorf("a lab process reported a data race: %v", err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := lab.Down(ctx, o.StateRoot, o.Name); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	l, err := lab.Up(t.Context(), o)
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	return l
}

// ctxFor is a context bounded by d and by the test.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// record logs a measured result and appends it to -results.
func record(t *testing.T, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf("RESULT %s: %s", t.Name(), fmt.Sprintf(format, args...))
	t.Log(line)
	if err := appendResults(time.Now().UTC().Format(time.RFC3339) + " " + line); err != nil {
		t.Error(err)
	}
}

// resultsMu serialises appends to the -results file: parallel tests record
// at once, and each line must land whole.
var resultsMu sync.Mutex

// appendResults appends line to the -results file, if one was given.
func appendResults(line string) error {
	if *resultsFlag == "" {
		return nil
	}
	resultsMu.Lock()
	defer resultsMu.Unlock()
	f, err := os.OpenFile(*resultsFlag, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("results file: %w", err)
	}
	if _, err := fmt.Fprintln(f, line); err != nil {
		f.Close()
		return fmt.Errorf("results file: %w", err)
	}
	return f.Close()
}

// pingStats and pinger are labtest's, shared with the other lab e2e tests.
type (
	pingStats = labtest.PingStats
	pinger    = labtest.Pinger
)

// startPing pings to from inside the namespace of pod for about d at
// interval (count = d/interval); Wait returns what it saw.
func startPing(t *testing.T, l *lab.Lab, pod string, to netip.Addr, interval, d time.Duration) *pinger {
	t.Helper()
	return labtest.StartPing(t, l, pod, to, interval, int(d/interval))
}

// startTimedPing is startPing that also records when the first reply came.
func startTimedPing(t *testing.T, l *lab.Lab, pod string, to netip.Addr, interval, d time.Duration) *pinger {
	t.Helper()
	return labtest.StartTimedPing(t, l, pod, to, interval, int(d/interval))
}

// pingOnce reports whether one ping from pod to addr is answered within 1s.
func pingOnce(ctx context.Context, l *lab.Lab, pod string, to netip.Addr) bool {
	_, err := l.Run(ctx, pod, "ping", "-n", "-q", "-c", "1", "-W", "1", to.String())
	return err == nil
}

// requireReach polls until pod reaches addr, for at most d.
func requireReach(t *testing.T, l *lab.Lab, pod string, to netip.Addr, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	if !lab.Poll(t.Context(), d, 200*time.Millisecond, func() bool { return pingOnce(t.Context(), l, pod, to) }) {
		t.Fatalf("%s does not reach %s within %v", pod, to, d)
	}
	return time.Since(start)
}

// requireMatrix fails unless every pod reaches every other pod.
func requireMatrix(t *testing.T, l *lab.Lab, what string) {
	t.Helper()
	m, err := l.Test(t.Context(), lab.TestOptions{Timeout: 60 * time.Second, SkipNodes: true})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	var b bytes.Buffer
	_ = m.WriteTable(&b)
	if !m.OK {
		t.Fatalf("%s: pods not fully connected:\n%s", what, b.String())
	}
}

// httpIn, get and metric are labtest's, shared with the other lab e2e
// tests.
func httpIn(t *testing.T, l *lab.Lab, target string) *http.Client {
	t.Helper()
	return labtest.HTTPClient(t, l, target)
}

func get(t *testing.T, l *lab.Lab, node, path string) (int, string, error) {
	t.Helper()
	return labtest.WeftdGet(t, l, node, path)
}

func metric(t *testing.T, l *lab.Lab, node, name string) float64 {
	t.Helper()
	return labtest.Metric(t, l, node, name)
}

// etcdClient is a client of the lab's etcd whose connections start in the
// etcd namespace (the only place the underlay is reachable from).
func etcdClient(t *testing.T, l *lab.Lab) *clientv3.Client {
	t.Helper()
	return etcdClientWith(t, l, clientv3.Config{})
}

func etcdClientWith(t *testing.T, l *lab.Lab, cfg clientv3.Config) *clientv3.Client {
	t.Helper()
	return labtest.EtcdClient(t, l, cfg)
}

// leaseKey is the etcd key of a subnet's lease.
func leaseKey(sn netip.Prefix) string {
	return fmt.Sprintf("%s/subnets/%s-%d", prefix, sn.Addr(), sn.Bits())
}

func freeSubnets(l *lab.Lab, n int) []netip.Prefix { return labtest.FreeSubnets(l, n) }

// logSince returns the lines of node's weftd log from byte offset off on.
func logSince(t *testing.T, l *lab.Lab, node string, off int64) []string {
	t.Helper()
	data, err := os.ReadFile(l.Node(node).Log)
	if err != nil {
		t.Fatal(err)
	}
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	s := strings.TrimSpace(string(data[off:]))
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// logSize is the current length of node's weftd log.
func logSize(t *testing.T, l *lab.Lab, node string) int64 {
	t.Helper()
	st, err := os.Stat(l.Node(node).Log)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// grepLines returns the lines containing every one of words.
func grepLines(lines []string, words ...string) []string {
	var out []string
next:
	for _, line := range lines {
		for _, w := range words {
			if !strings.Contains(line, w) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}

// ifindex returns the index of a link in target's namespace.
func ifindex(t *testing.T, l *lab.Lab, target, link string) int {
	t.Helper()
	out, err := l.Run(t.Context(), target, "cat", "/sys/class/net/"+link+"/ifindex")
	if err != nil {
		t.Fatal(err)
	}
	i, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// run runs a command in target's namespace and fails the test on error.
func run(t *testing.T, l *lab.Lab, target string, argv ...string) string {
	t.Helper()
	out, err := l.Run(t.Context(), target, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// parallelEach runs f for each backend (on an IPv4 lab) as parallel
// subtests.
func parallelEach(t *testing.T, backends []string, f func(t *testing.T, backend string)) {
	parallelScenarios(t, ipv4Scenarios(backends...), func(t *testing.T, s scenario) { f(t, s.backend) })
}

// scenario is one row of a fault's table: a backend on a lab of one or both
// address families. A test written over scenarios runs its fault and its
// checks the same way on each, once per family the lab has.
type scenario struct {
	name    string // the subtest: the backend, + "-dualstack"
	backend string
	ipv6    bool // dual stack: lab.Options.IPv6
}

// ipv4Scenarios are the backends on IPv4 labs.
func ipv4Scenarios(backends ...string) []scenario {
	out := make([]scenario, 0, len(backends))
	for _, b := range backends {
		out = append(out, scenario{name: b, backend: b})
	}
	return out
}

// dualStackScenarios are the backends on dual-stack labs.
func dualStackScenarios(backends ...string) []scenario {
	out := make([]scenario, 0, len(backends))
	for _, b := range backends {
		out = append(out, scenario{name: b + "-dualstack", backend: b, ipv6: true})
	}
	return out
}

// String names the row in RESULT lines: the backend, "vxlan dual-stack".
func (s scenario) String() string {
	if s.ipv6 {
		return s.backend + " dual-stack"
	}
	return s.backend
}

// lab fills o's backend and families from the scenario.
func (s scenario) lab(o lab.Options) lab.Options {
	o.Backend, o.IPv6 = s.backend, s.ipv6
	return o
}

// addrs are pod p's addresses the scenario's checks reach: one per family
// of the lab, IPv4 first.
func (s scenario) addrs(p *lab.Pod) []netip.Addr {
	if s.ipv6 {
		return []netip.Addr{p.IP, p.IPv6}
	}
	return []netip.Addr{p.IP}
}

// parallelScenarios runs f for each scenario as parallel subtests.
func parallelScenarios(t *testing.T, scenarios []scenario, f func(t *testing.T, s scenario)) {
	for _, s := range scenarios {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			f(t, s)
		})
	}
}

// familyPings are one bounded ping per address of a pod, run side by side.
type familyPings struct {
	to []netip.Addr
	ps []*pinger
}

// startPings starts a ping from pod to each of to (see startPing).
func startPings(t *testing.T, l *lab.Lab, pod string, to []netip.Addr, interval, d time.Duration) familyPings {
	t.Helper()
	fp := familyPings{to: to}
	for _, a := range to {
		fp.ps = append(fp.ps, startPing(t, l, pod, a, interval, d))
	}
	return fp
}

// Wait waits for every ping (see pinger.Wait).
func (fp familyPings) Wait(t *testing.T) familyStats {
	t.Helper()
	out := make(familyStats, len(fp.ps))
	for i, p := range fp.ps {
		out[i] = familyStat{v6: fp.to[i].Is6(), pingStats: p.Wait(t)}
	}
	return out
}

// familyStat is what the ping to one address saw.
type familyStat struct {
	v6 bool
	pingStats
}

// familyStats are what familyPings saw, in the order of their addresses.
type familyStats []familyStat

// Lost is the sum of the lost pings of every family.
func (s familyStats) Lost() int {
	n := 0
	for _, st := range s {
		n += st.Lost()
	}
	return n
}

// Window is the longest loss window of any family.
func (s familyStats) Window() time.Duration {
	var w time.Duration
	for _, st := range s {
		w = max(w, st.Window())
	}
	return w
}

// String is the one ping's summary, or per family "IPv4 …; IPv6 …".
func (s familyStats) String() string {
	if len(s) == 1 {
		return s[0].String()
	}
	parts := make([]string, len(s))
	for i, st := range s {
		parts[i] = map[bool]string{false: "IPv4 ", true: "IPv6 "}[st.v6] + st.String()
	}
	return strings.Join(parts, "; ")
}

// Output is every ping's output, one after the other.
func (s familyStats) Output() string {
	var b strings.Builder
	for _, st := range s {
		b.WriteString(st.Out)
	}
	return b.String()
}

var allBackends = []string{"vxlan", "host-gw", "udp", "wireguard"}

// wgKernel reports whether node's weft-wg is the kernel's WireGuard rather
// than the embedded one (a TUN device).
func wgKernel(t *testing.T, l *lab.Lab, node string) bool {
	t.Helper()
	return strings.Contains(run(t, l, node, "ip", "-d", "link", "show", "weft-wg"), "wireguard")
}
