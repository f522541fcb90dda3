package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// IperfRun is one iperf3 client run as its JSON report (-J) tells it.
type IperfRun struct {
	Gbps        float64 `json:"gbps"` // receiver side
	Bytes       int64   `json:"bytes"`
	Seconds     float64 `json:"seconds"`
	Retransmits int     `json:"retransmits,omitempty"` // TCP
	LostPercent float64 `json:"lostPercent,omitempty"` // UDP
	JitterMS    float64 `json:"jitterMs,omitempty"`    // UDP
	// HostCPU and RemoteCPU are iperf3's own CPU use (percent of one
	// CPU-second per second, user+system) on the client and the server.
	HostCPU   float64 `json:"hostCpuPercent"`
	RemoteCPU float64 `json:"remoteCpuPercent"`
}

type iperfSum struct {
	Seconds     float64 `json:"seconds"`
	Bytes       int64   `json:"bytes"`
	BPS         float64 `json:"bits_per_second"`
	Retransmits int     `json:"retransmits"`
	JitterMS    float64 `json:"jitter_ms"`
	LostPercent float64 `json:"lost_percent"`
}

type iperfReport struct {
	Error string `json:"error"`
	End   struct {
		SumSent     *iperfSum `json:"sum_sent"`
		SumReceived *iperfSum `json:"sum_received"`
		CPU         struct {
			HostTotal   float64 `json:"host_total"`
			RemoteTotal float64 `json:"remote_total"`
		} `json:"cpu_utilization_percent"`
	} `json:"end"`
}

// parseIperf reads an iperf3 -J report. Throughput is what the receiver
// got; for UDP, loss and jitter are the receiver's too.
func parseIperf(data []byte) (IperfRun, error) {
	var r iperfReport
	if err := json.Unmarshal(data, &r); err != nil {
		return IperfRun{}, fmt.Errorf("parse iperf3 report: %w", err)
	}
	if r.Error != "" {
		return IperfRun{}, fmt.Errorf("iperf3: %s", r.Error)
	}
	rx, tx := r.End.SumReceived, r.End.SumSent
	if rx == nil || tx == nil || rx.Seconds == 0 {
		return IperfRun{}, errors.New("iperf3 report has no end sums")
	}
	return IperfRun{
		Gbps:        rx.BPS / 1e9,
		Bytes:       rx.Bytes,
		Seconds:     rx.Seconds,
		Retransmits: tx.Retransmits,
		LostPercent: rx.LostPercent,
		JitterMS:    rx.JitterMS,
		HostCPU:     r.End.CPU.HostTotal,
		RemoteCPU:   r.End.CPU.RemoteTotal,
	}, nil
}

// iperfClient says what one client run does.
type iperfClient struct {
	NS       string // source namespace
	Dst      netip.Addr
	Port     int
	Duration time.Duration
	Streams  int    // -P
	UDPRate  string // non-empty: UDP at this offered load (-b)
}

// udpLen is the UDP payload size of the UDP test: below every backend's
// pod MTU (udp and vxlan take 28 and 50 bytes of a 1500 underlay), so no
// datagram is fragmented on any path.
const udpLen = 1200

// run runs the client; the whole run is bounded by Duration + 20 s.
func (c iperfClient) run(ctx context.Context) (IperfRun, error) {
	secs := max(1, int(c.Duration/time.Second))
	args := []string{"iperf3", "-c", c.Dst.String(), "-p", strconv.Itoa(c.Port), "-t", strconv.Itoa(secs),
		"-J", "--connect-timeout", "3000"}
	if c.Streams > 1 {
		args = append(args, "-P", strconv.Itoa(c.Streams))
	}
	if c.UDPRate != "" {
		args = append(args, "-u", "-b", c.UDPRate, "-l", strconv.Itoa(udpLen), "-w", "4M")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+20*time.Second)
	defer cancel()
	out, err := nsRunOut(ctx, c.NS, args...)
	if r, perr := parseIperf(out); perr == nil {
		return r, nil
	} else if err == nil {
		err = perr
	}
	return IperfRun{}, err
}

// iperfServer is an iperf3 server bound to one address in a namespace.
type iperfServer struct {
	d    *proc
	port int
}

// startIperfServer starts `iperf3 -s` in ns on addr:port and waits until it
// listens. --idle-timeout makes it exit on its own should the harness die
// without stopping it.
func startIperfServer(ctx context.Context, ns string, addr netip.Addr, port int) (*iperfServer, error) {
	d, err := startDaemon(ns, "iperf3", "-s", "-B", addr.String(), "-p", strconv.Itoa(port), "--idle-timeout", "120")
	if err != nil {
		return nil, err
	}
	s := &iperfServer{d: d, port: port}
	_, err = pollUntil(ctx, 10*time.Second, 20*time.Millisecond, func() (bool, error) {
		if d.exited() {
			return false, fmt.Errorf("iperf3 server exited: %s", lastLines(d.out.String(), 3))
		}
		out, err := nsRun(ctx, ns, "ss", "-Hltn", "sport", "=", ":"+strconv.Itoa(port))
		return err == nil && strings.TrimSpace(out) != "", nil
	})
	if err != nil {
		d.stop()
		return nil, fmt.Errorf("iperf3 server in %s: %w", ns, err)
	}
	return s, nil
}

func (s *iperfServer) stop() { s.d.stop() }

// PingResult is one bounded ping run.
type PingResult struct {
	Sent     int  `json:"sent"`
	Received int  `json:"received"`
	RTTms    Dist `json:"rttMs"`
	// RoundP50ms is the p50 of each pooled run (add), in order: the spread
	// of one path's latency within a bench run.
	RoundP50ms []float64 `json:"roundP50Ms,omitempty"`
	// rtts are the replies' times, for pooling runs (add).
	rtts []float64
}

// add pools another run's replies into r.
func (r *PingResult) add(o PingResult) {
	r.Sent += o.Sent
	r.Received += o.Received
	r.rtts = append(r.rtts, o.rtts...)
	r.RTTms = summarize(r.rtts)
	if len(o.rtts) > 0 {
		r.RoundP50ms = append(r.RoundP50ms, summarize(o.rtts).P50)
	}
}

var (
	pingRTT   = regexp.MustCompile(`time=([0-9.]+) ms`)
	pingTotal = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)
)

// parsePing reads ping's per-reply lines and its summary.
func parsePing(out string) (PingResult, error) {
	var rtts []float64
	for _, m := range pingRTT.FindAllStringSubmatch(out, -1) {
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			return PingResult{}, fmt.Errorf("parse ping time %q: %w", m[1], err)
		}
		rtts = append(rtts, v)
	}
	m := pingTotal.FindStringSubmatch(out)
	if m == nil {
		return PingResult{}, fmt.Errorf("no ping summary in %q", lastLines(out, 2))
	}
	sent, _ := strconv.Atoi(m[1])
	recv, _ := strconv.Atoi(m[2])
	return PingResult{Sent: sent, Received: recv, RTTms: summarize(rtts), rtts: rtts}, nil
}

// pingArgv is the command runPing runs: ping on pingCPU, count echoes
// interval apart, ending after deadline seconds.
func pingArgv(dst netip.Addr, count int, interval time.Duration, deadline int) []string {
	return []string{"taskset", "-c", pingCPU, "ping", "-n", "-c", strconv.Itoa(count), "-i", fmt.Sprintf("%.3f", interval.Seconds()),
		"-W", "1", "-w", strconv.Itoa(deadline), dst.String()}
}

// pingCPU is the CPU every measured ping runs on (taskset). The echo's
// reply wakes ping from softirq; whether that is on ping's own CPU or the
// other changes the round trip by tens of µs on this 2-CPU machine (see
// costs.go), so the scheduler's placement of each ping process would
// otherwise decide more than the path does.
const pingCPU = "0"

// runPing sends count echo requests interval apart (bounded by a deadline
// of count*interval + 5 s) from ns to dst, on pingCPU.
func runPing(ctx context.Context, ns string, dst netip.Addr, count int, interval time.Duration) (PingResult, error) {
	deadline := int((time.Duration(count)*interval)/time.Second) + 5
	ctx, cancel := context.WithTimeout(ctx, time.Duration(deadline+5)*time.Second)
	defer cancel()
	argv := pingArgv(dst, count, interval, deadline)
	out, err := nsRun(ctx, ns, argv...)
	r, perr := parsePing(out)
	if perr != nil {
		if err != nil {
			return PingResult{}, err
		}
		return PingResult{}, perr
	}
	if r.Received == 0 {
		return r, fmt.Errorf("ping %s from %s: no reply", dst, ns)
	}
	return r, nil
}

// waitReachable pings dst from ns once a second until one reply comes back
// or timeout passes: routes, ARP and tunnels are up before timing starts.
func waitReachable(ctx context.Context, ns string, dst netip.Addr, timeout time.Duration) error {
	_, err := pollUntil(ctx, timeout, 200*time.Millisecond, func() (bool, error) {
		_, err := nsRun(ctx, ns, "ping", "-n", "-q", "-c", "1", "-W", "1", dst.String())
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("%s unreachable from %s: %w", dst, ns, err)
	}
	return nil
}
