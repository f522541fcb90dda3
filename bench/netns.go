package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// nsPrefix starts the name of every namespace the harness makes itself
// (labs are named labPrefix*), so a later run can sweep what a crashed one
// left behind.
const nsPrefix = "wbench-"

const netnsDir = "/run/netns"

func nsPath(name string) string { return filepath.Join(netnsDir, name) }

// uniqueNS returns wbench-<what>-<4 random hex bytes>.
func uniqueNS(what string) string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // never fails on Linux
	return nsPrefix + what + "-" + hex.EncodeToString(b[:])
}

// ipCmd runs `ip ARGS`; it is only ever called with -n NS or netns add/del,
// never to change the root namespace.
func ipCmd(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// addNS creates a namespace with loopback up.
func addNS(ctx context.Context, name string) error {
	if err := ipCmd(ctx, "netns", "add", name); err != nil {
		return err
	}
	return ipCmd(ctx, "-n", name, "link", "set", "lo", "up")
}

// nsPIDs lists the processes inside namespace name.
func nsPIDs(name string) []int {
	out, err := exec.Command("ip", "netns", "pids", name).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}

// delNS SIGKILLs the processes left inside a namespace the harness made
// (only its own children live there; never this process) and deletes it.
// A namespace that does not exist is a success.
func delNS(ctx context.Context, name string) error {
	if !strings.HasPrefix(name, nsPrefix) {
		return fmt.Errorf("refusing to delete namespace %q: not made by the benchmark", name)
	}
	if _, err := os.Stat(nsPath(name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids := nsPIDs(name)
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v still in namespace %s", pids, name)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	return ipCmd(ctx, "netns", "del", name)
}

// listNS returns the names in /run/netns that start with prefix.
func listNS(prefix string) []string {
	ents, err := os.ReadDir(netnsDir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// nsRun runs argv inside namespace name and returns its combined output.
func nsRun(ctx context.Context, name string, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", name}, argv...)...)
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s in %s: %w: %s", strings.Join(argv, " "), name, err, lastLines(string(out), 3))
	}
	return string(out), nil
}

// nsRunOut is nsRun that returns stdout only (stderr goes into the error).
func nsRunOut(ctx context.Context, name string, argv ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", name}, argv...)...)
	cmd.WaitDelay = 2 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s in %s: %w: %s", strings.Join(argv, " "), name, err, lastLines(stderr.String()+string(out), 3))
	}
	return out, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// proc is a long-running process the harness started (iperf3 server,
// perf). It is stopped by its PID only.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	out  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startDaemon starts argv (inside namespace name when it is not empty; `ip
// netns exec` execs, so the PID is the command's own).
func startDaemon(name string, argv ...string) (*proc, error) {
	if name != "" {
		argv = append([]string{"ip", "netns", "exec", name}, argv...)
	}
	d := &proc{cmd: exec.Command(argv[0], argv[1:]...), done: make(chan struct{}), out: &syncBuffer{}}
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", strings.Join(argv, " "), err)
	}
	go func() {
		_ = d.cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

func (d *proc) pid() int { return d.cmd.Process.Pid }

func (d *proc) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// signalWait sends sig and waits up to grace for the exit, then SIGKILLs.
func (d *proc) signalWait(sig syscall.Signal, grace time.Duration) {
	if d == nil || d.exited() {
		return
	}
	_ = d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
		return
	case <-time.After(grace):
	}
	_ = d.cmd.Process.Kill()
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
	}
}

// stop ends the process: SIGTERM, then SIGKILL after 3 s.
func (d *proc) stop() { d.signalWait(syscall.SIGTERM, 3*time.Second) }

// nsDialer returns a dialer whose sockets are created inside namespace name
// (on a thread switched into it with ns.Do); a socket stays in the
// namespace it was created in, whichever thread later uses it.
func nsDialer(name string, timeout time.Duration) func(ctx context.Context, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	return func(ctx context.Context, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.WithNetNSPath(nsPath(name), func(ns.NetNS) error {
			var err error
			c, err = d.DialContext(ctx, "tcp", addr)
			return err
		})
		return c, err
	}
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// pollUntil calls cond every interval until it returns true, or fails
// when timeout passes or ctx ends. It returns how long it took.
func pollUntil(ctx context.Context, timeout, interval time.Duration, cond func() (bool, error)) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return time.Since(start), err
		}
		if ok {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			return time.Since(start), fmt.Errorf("not reached within %s", timeout)
		}
		if err := sleepCtx(ctx, interval); err != nil {
			return time.Since(start), err
		}
	}
}
