package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// machineInfo describes this machine for the report.
func machineInfo(ctx context.Context) Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), LoadStart: loadavg()}
	m.Hostname, _ = os.Hostname()
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUModel = cpuinfoField(data, "model name")
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		if kb, err := strconv.Atoi(strings.Fields(cpuinfoField(data, "MemTotal") + " 0")[0]); err == nil {
			m.MemoryMB = kb / 1024
		}
	}
	if out, err := exec.CommandContext(ctx, "iperf3", "--version").Output(); err == nil {
		m.Iperf3, _, _ = strings.Cut(string(out), "\n")
	}
	return m
}

// cpuinfoField returns the value of the first "key : value" line.
func cpuinfoField(data []byte, key string) string {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func loadavg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(data))
	return strings.Join(f[:min(3, len(f))], " ")
}

// gitCommit is the checked-out commit, "-dirty" when the tree has changes.
func gitCommit(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
