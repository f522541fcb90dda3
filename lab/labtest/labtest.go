// Package labtest holds what e2e tests on labs share: bounded background
// pings that count what they lose, an etcd client that reaches a lab's
// etcd from inside its namespace, and reads of a node's weftd endpoint. It imports the testing package; only
// tests import it.
package labtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/weftnet/weft/lab"
)

// PingStats is what one bounded ping run saw.
type PingStats struct {
	Sent, Received int
	Interval       time.Duration
	Elapsed        time.Duration
	Out            string
	// FirstReply is when the first reply arrived (StartTimedPing only).
	FirstReply time.Time
}

// Lost is how many requests got no reply.
func (s PingStats) Lost() int { return s.Sent - s.Received }

// Window is the time the lost pings cover.
func (s PingStats) Window() time.Duration { return time.Duration(s.Lost()) * s.Interval }

func (s PingStats) String() string {
	return fmt.Sprintf("%d sent, %d received, %d lost (%v at %v intervals)", s.Sent, s.Received, s.Lost(), s.Window(), s.Interval)
}

var (
	pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)
	// pingReply is a reply line of ping -D: "[1733212345.123456] 64 bytes from ...".
	pingReply = regexp.MustCompile(`(?m)^\[(\d+)\.(\d+)\] \d+ bytes from`)
	// pingSeq is a reply line of ping -D with its sequence number.
	pingSeq = regexp.MustCompile(`(?m)^\[(\d+)\.(\d+)\] \d+ bytes from .*\bicmp_seq=(\d+)\b`)
)

// LostAt estimates when each request of a StartTimedPing run that got no
// reply was sent: the wall-clock time of the nearest earlier reply (else
// the nearest later one) moved by the requests between them at Interval.
// (A reply's time is its request's plus the round trip, a millisecond or
// so in a lab.) Nil for a StartPing run, whose output has no replies.
func (s PingStats) LostAt() []time.Time {
	got := map[int]time.Time{}
	for _, m := range pingSeq.FindAllStringSubmatch(s.Out, -1) {
		sec, _ := strconv.ParseInt(m[1], 10, 64)
		usec, _ := strconv.ParseInt((m[2] + "000000")[:6], 10, 64)
		seq, _ := strconv.Atoi(m[3])
		if _, dup := got[seq]; !dup {
			got[seq] = time.Unix(sec, usec*1000)
		}
	}
	if len(got) == 0 {
		return nil
	}
	// ping numbers requests from 1 (iputils) or 0; take the run's own.
	first := 1
	if _, ok := got[0]; ok {
		first = 0
	}
	var lost []time.Time
	for seq := first; seq < first+s.Sent; seq++ {
		if _, ok := got[seq]; ok {
			continue
		}
		for d := 1; d < s.Sent; d++ {
			if at, ok := got[seq-d]; ok {
				lost = append(lost, at.Add(time.Duration(d)*s.Interval))
				break
			}
			if at, ok := got[seq+d]; ok {
				lost = append(lost, at.Add(-time.Duration(d)*s.Interval))
				break
			}
		}
	}
	return lost
}

// Pinger is a bounded ping running in the background.
type Pinger struct {
	done   chan struct{}
	cancel context.CancelFunc
	stats  PingStats
	err    error
	count  int
}

// StartPing pings to from inside the namespace of target (a pod or node of
// l) at interval, at most max requests (each reply awaited at most 1 s),
// until max is reached or Stop. It is stopped when the test ends.
func StartPing(t testing.TB, l *lab.Lab, target string, to netip.Addr, interval time.Duration, max int) *Pinger {
	t.Helper()
	return startPing(t, l, target, to, interval, max, false)
}

// StartTimedPing is StartPing that also records when the first reply came
// (ping -D timestamps each reply with the wall clock, as time.Now's).
func StartTimedPing(t testing.TB, l *lab.Lab, target string, to netip.Addr, interval time.Duration, max int) *Pinger {
	t.Helper()
	return startPing(t, l, target, to, interval, max, true)
}

func startPing(t testing.TB, l *lab.Lab, target string, to netip.Addr, interval time.Duration, max int, timed bool) *Pinger {
	t.Helper()
	ns, err := l.Resolve(target)
	if err != nil {
		t.Fatal(err)
	}
	d := time.Duration(max) * interval
	// ping's timers drift behind the wall clock under load, so the
	// deadline has slack that grows with the run. At the deadline (or on
	// Stop) ping gets SIGINT, on which it still prints its summary. (Not
	// -w: with it ping also stops at the first ICMP error, such as the
	// unreachable a restarting node answers.)
	ctx, cancel := context.WithTimeout(context.Background(), d+d/10+30*time.Second)
	mode := "-q"
	if timed {
		mode = "-D"
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "ping", "-n", mode,
		"-i", strconv.FormatFloat(interval.Seconds(), 'f', 3, 64), "-c", strconv.Itoa(max), "-W", "1", to.String())
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) } // `ip netns exec` execs ping: this PID is ping
	cmd.WaitDelay = 5 * time.Second
	p := &Pinger{done: make(chan struct{}), cancel: cancel, count: max}
	start := time.Now()
	go func() {
		defer close(p.done)
		defer cancel()
		out, _ := cmd.CombinedOutput() // exit 1 means "some lost": the summary says how many
		p.stats = PingStats{Interval: interval, Elapsed: time.Since(start), Out: string(out)}
		m := pingSummary.FindStringSubmatch(string(out))
		if m == nil {
			p.err = fmt.Errorf("ping %s from %s: no summary in %q", to, target, out)
			return
		}
		p.stats.Sent, _ = strconv.Atoi(m[1])
		p.stats.Received, _ = strconv.Atoi(m[2])
		if r := pingReply.FindStringSubmatch(string(out)); r != nil {
			sec, _ := strconv.ParseInt(r[1], 10, 64)
			usec, _ := strconv.ParseInt((r[2] + "000000")[:6], 10, 64)
			p.stats.FirstReply = time.Unix(sec, usec*1000)
		}
	}()
	t.Cleanup(func() { cancel(); <-p.done })
	return p
}

// Wait waits for the run to end by itself (max requests sent) and returns
// what it saw; a run cut short by its deadline fails the test.
func (p *Pinger) Wait(t testing.TB) PingStats {
	t.Helper()
	<-p.done
	if p.err != nil {
		t.Fatal(p.err)
	}
	if p.stats.Sent < p.count*9/10 {
		t.Fatalf("ping sent %d of %d (cut short?): %q", p.stats.Sent, p.count, p.stats.Out)
	}
	return p.stats
}

// Stop ends the run now (SIGINT) and returns what it saw.
func (p *Pinger) Stop(t testing.TB) PingStats {
	t.Helper()
	p.cancel()
	<-p.done
	if p.err != nil {
		t.Fatal(p.err)
	}
	return p.stats
}

// PingOnce reports whether one ping from target to addr is answered within
// 1 s.
func PingOnce(ctx context.Context, l *lab.Lab, target string, to netip.Addr) bool {
	_, err := l.Run(ctx, target, "ping", "-n", "-q", "-c", "1", "-W", "1", to.String())
	return err == nil
}

// EtcdClient is a client of the lab's etcd whose connections start in the
// etcd namespace (the only place its underlay is reachable from), closed
// when the test ends. Endpoints default to the lab's.
func EtcdClient(t testing.TB, l *lab.Lab, cfg clientv3.Config) *clientv3.Client {
	t.Helper()
	dial, err := l.DialContext("etcd")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Endpoints == nil {
		cfg.Endpoints = strings.Split(l.Etcd.Endpoint, ",")
	}
	cfg.DialTimeout = 5 * time.Second
	cfg.Logger = zap.NewNop()
	cfg.DialOptions = append(cfg.DialOptions, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		return dial(ctx, "tcp", addr)
	}))
	c, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// HTTPClient is a client whose connections start in target's namespace (a
// node, pod, "etcd"), for a node's weftd on its loopback.
func HTTPClient(t testing.TB, l *lab.Lab, target string) *http.Client {
	t.Helper()
	dial, err := l.DialContext(target)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: dial}}
}

// WeftdGet fetches a path of node's weftd HTTP endpoint (127.0.0.1:9474 in
// the node): status code and body.
func WeftdGet(t testing.TB, l *lab.Lab, node, path string) (int, string, error) {
	t.Helper()
	resp, err := HTTPClient(t, l, node).Get("http://127.0.0.1:9474" + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// Metric returns the value of a metric line of node's weftd (name with
// labels as written, e.g. `weft_reconcile_errors_total{kind="full"}`); 0
// when absent.
func Metric(t testing.TB, l *lab.Lab, node, name string) float64 {
	t.Helper()
	code, body, err := WeftdGet(t, l, node, "/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("metrics of %s: %d %v", node, code, err)
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	return 0
}

// FreeSubnets returns n /24s of 10.244.0.0/16 that no node of l holds,
// from the top down (new nodes pick at random, so a test that writes made-up
// leases there should do it after its nodes joined).
func FreeSubnets(l *lab.Lab, n int) []netip.Prefix {
	used := map[netip.Prefix]bool{}
	for _, node := range l.Nodes {
		used[node.Subnet] = true
	}
	var free []netip.Prefix
	for i := 254; i > 0 && len(free) < n; i-- {
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24)
		if !used[sn] {
			free = append(free, sn)
		}
	}
	return free
}
