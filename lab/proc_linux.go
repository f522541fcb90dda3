package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc identifies a process the lab started. StartTime (clock ticks since
// boot, /proc/PID/stat field 22) guards against PID reuse: a PID whose start
// time differs is someone else's process and is never signalled.
type Proc struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"startTime"`
	Cmd       string `json:"cmd"`
}

// procStat returns the state letter and start time of pid.
func procStat(pid int) (state byte, start uint64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// comm may hold spaces and parens: fields start after the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat start time: %w", pid, err)
	}
	return f[0][0], start, nil
}

// newProc identifies a just-started pid.
func newProc(pid int, cmd string) (*Proc, error) {
	_, start, err := procStat(pid)
	if err != nil {
		return nil, fmt.Errorf("identify process %d: %w", pid, err)
	}
	return &Proc{PID: pid, StartTime: start, Cmd: cmd}, nil
}

// Alive reports whether p still runs (a zombie does not count). A killed
// multi-threaded process shows its leader as a zombie while other threads
// are still exiting, holding its descriptors (a listening port a restart
// needs): it counts as running until its last thread is gone.
func (p *Proc) Alive() bool {
	if p == nil || p.PID <= 0 {
		return false
	}
	state, start, err := procStat(p.PID)
	if err != nil || start != p.StartTime {
		return false
	}
	if state != 'Z' && state != 'X' {
		return true
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", p.PID))
	return err == nil && len(tasks) > 1
}

// signal sends sig to p if it is still the process we started.
func (p *Proc) signal(sig syscall.Signal) error {
	if !p.Alive() {
		return nil
	}
	if err := syscall.Kill(p.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %d (%s): %w", p.PID, p.Cmd, err)
	}
	return nil
}

// waitGone polls until p has exited or the deadline passes.
func (p *Proc) waitGone(ctx context.Context, timeout time.Duration) bool {
	return poll(ctx, timeout, 20*time.Millisecond, func() bool { return !p.Alive() })
}

// stop sends SIGTERM (and SIGCONT, for a frozen process), waits up to
// grace, then SIGKILLs and waits again.
func (p *Proc) stop(ctx context.Context, grace time.Duration) error {
	if p == nil {
		return nil
	}
	if err := p.signal(syscall.SIGTERM); err != nil {
		return err
	}
	// A frozen process (FreezeEtcd) acts on the SIGTERM only once resumed.
	if err := p.signal(syscall.SIGCONT); err != nil {
		return err
	}
	if p.waitGone(ctx, grace) {
		return nil
	}
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	if !p.waitGone(ctx, 5*time.Second) {
		return fmt.Errorf("process %d (%s) did not exit after SIGKILL", p.PID, p.Cmd)
	}
	return nil
}

// poll calls cond every interval until it returns true (true) or timeout or
// ctx ends (false).
func poll(ctx context.Context, timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return cond()
		case <-tick.C:
		}
	}
}

// startInNS starts argv as a daemon inside the named network namespace
// (through `ip netns exec`, which execs, so the PID is the daemon's), in its
// own session so a ^C of weftctl does not reach it, with stdout and stderr
// appended to logPath. The returned channel closes when the process exits;
// a goroutine reaps it while this process lives (after weftctl exits, init
// does).
func startInNS(ns, logPath string, env []string, argv ...string) (*Proc, <-chan struct{}, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("open log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s in %s: %w", argv[0], ns, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p, err := newProc(cmd.Process.Pid, argv[0])
	if err != nil {
		_ = cmd.Process.Kill()
		<-done
		return nil, nil, err
	}
	return p, done, nil
}

// nsRun runs a command inside the namespace and returns its combined output.
func nsRun(ctx context.Context, ns string, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s in %s: %w: %s", strings.Join(argv, " "), ns, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// ipCmd runs `ip ARGS` (in the root namespace, only ever with -n NS or
// netns add/del).
func ipCmd(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
