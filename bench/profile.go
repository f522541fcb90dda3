package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// profiler samples CPU with perf while a case runs: the processes in pids,
// or the whole machine when pids is empty (needed when the time is spent
// in short-lived processes or in the kernel's softirq context). weftd
// serves no /debug/pprof, and perf sees both its Go frames and the kernel.
type profiler struct {
	area, what string
	pids       []int
	// comms, when set, limits the report to these commands (a machine-wide
	// recording also catches whatever else runs on the machine).
	comms []string
	file  string
	args  []string
	rec   *proc
	res   Profile
	done  bool
}

// perfFreq is the sampling rate (Hz per CPU): fine enough for a few seconds
// of a case, light enough not to change it much.
const perfFreq = 499

func newProfiler(area, what string, pids []int, comms []string) *profiler {
	return &profiler{area: area, what: what, pids: pids, comms: comms, res: Profile{Area: area, Case: what, Comms: comms}}
}

// dataPlaneComms are the commands that move a data-plane benchmark's
// packets: iperf3 and weftd, whose syscalls also run most of the kernel's
// packet processing, and the softirq threads that run the rest.
func dataPlaneComms() []string {
	cs := []string{"iperf3", "weftd"}
	for i := range runtime.NumCPU() {
		cs = append(cs, fmt.Sprintf("ksoftirqd/%d", i))
	}
	return cs
}

// cniComms are the commands of a CNI run: the harness (libcni, as the
// runtime), the plugins and what portmap execs.
func cniComms() []string {
	return []string{"bench", "weft", "portmap", "iptables", "ip6tables", "iptables-restor", "ip6tables-resto", "iptables-save", "ip6tables-save", "nft"}
}

// start launches `perf record` and waits until it writes its file.
func (p *profiler) start(ctx context.Context) error {
	if _, err := exec.LookPath("perf"); err != nil {
		p.res.Error = "perf is not installed: no profile"
		return fmt.Errorf("%s", p.res.Error)
	}
	f, err := os.CreateTemp("", "wbench-perf-*.data")
	if err != nil {
		return err
	}
	f.Close()
	os.Remove(f.Name())
	p.file = f.Name()
	p.args = []string{"perf", "record", "-F", strconv.Itoa(perfFreq), "-o", p.file}
	if len(p.pids) == 0 {
		p.args = append(p.args, "-a")
	} else {
		var ps []string
		for _, pid := range p.pids {
			ps = append(ps, strconv.Itoa(pid))
		}
		p.args = append(p.args, "-p", strings.Join(ps, ","))
	}
	p.res.Command = strings.Join(p.args, " ")
	if p.rec, err = startDaemon("", p.args...); err != nil {
		p.res.Error = err.Error()
		return err
	}
	_, err = pollUntil(ctx, 10*time.Second, 20*time.Millisecond, func() (bool, error) {
		if p.rec.exited() {
			return false, fmt.Errorf("perf record exited: %s", lastLines(p.rec.out.String(), 3))
		}
		st, err := os.Stat(p.file)
		return err == nil && st.Size() > 0, nil
	})
	if err != nil {
		p.rec.stop()
		os.Remove(p.file)
		p.res.Error = err.Error()
		p.done = true
		return err
	}
	return nil
}

// stop ends the recording (SIGINT makes perf write its file) and reduces it
// to shares by command and by symbol. Safe to call more than once.
func (p *profiler) stop(ctx context.Context) {
	if p.done || p.rec == nil {
		return
	}
	p.done = true
	defer os.Remove(p.file)
	p.rec.signalWait(syscall.SIGINT, 20*time.Second)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancel()
	byComm, samples, err := perfReport(rctx, p.file, "comm", p.comms)
	if err != nil {
		p.res.Error = err.Error()
		return
	}
	bySym, _, err := perfReport(rctx, p.file, "comm,dso,sym", p.comms)
	if err != nil {
		p.res.Error = err.Error()
		return
	}
	p.res.Samples = samples
	p.res.ByComm = top(byComm, 8)
	p.res.BySym = top(bySym, 15)
	p.res.Note = profileNote(p.res)
}

func (p *profiler) result() Profile { return p.res }

func top(s []Share, n int) []Share { return s[:min(n, len(s))] }

var perfSamples = regexp.MustCompile(`(?m)^# Samples: (\S+) of event '([^']+)'`)

// perfReport runs `perf report --sort keys` and parses its lines. With
// comms, only those commands are reported, as percentages of their own
// samples.
func perfReport(ctx context.Context, file, keys string, comms []string) ([]Share, string, error) {
	args := []string{"report", "-i", file, "--stdio", "--no-children", "--sort", keys, "--percent-limit", "0.5"}
	if len(comms) > 0 {
		args = append(args, "--comms", strings.Join(comms, ","), "--percentage", "relative")
	}
	cmd := exec.CommandContext(ctx, "perf", args...)
	out, err := cmd.Output()
	if err != nil {
		return nil, "", fmt.Errorf("perf report: %w", err)
	}
	shares, samples := parsePerfReport(string(out))
	return shares, samples, nil
}

// parsePerfReport reads the "  12.34%  comm  [k] symbol" lines of a perf
// report and its "# Samples:" header.
func parsePerfReport(out string) ([]Share, string) {
	var shares []Share
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		pct, rest, ok := strings.Cut(line, "%")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(pct), 64)
		if err != nil {
			continue
		}
		shares = append(shares, Share{Percent: v, What: strings.Join(strings.Fields(rest), " ")})
	}
	samples := ""
	if m := perfSamples.FindStringSubmatch(out); m != nil {
		samples = m[1] + " samples of " + m[2]
	}
	return shares, samples
}
