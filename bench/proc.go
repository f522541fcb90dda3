package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc CPU times. Linux has fixed it at
// 100 on every architecture weft runs on.
const clockTicks = 100

// ProcUsage is a process's CPU time and resident memory at one moment.
type ProcUsage struct {
	CPUSeconds float64 `json:"cpuSeconds"` // user + system
	RSSMB      float64 `json:"rssMB"`
	// RSSFileMB is the part of the RSS that is file pages (RssFile): the
	// program's own binary mapped in, shared and reclaimable.
	RSSFileMB float64 `json:"rssFileMB,omitempty"`
}

// procUsage reads /proc/PID/stat and /proc/PID/status.
func procUsage(pid int) (ProcUsage, error) {
	cpu, err := procCPU(pid)
	if err != nil {
		return ProcUsage{}, err
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ProcUsage{}, err
	}
	rss, err := parseStatusRSS(data)
	if err != nil {
		return ProcUsage{}, err
	}
	file, err := parseStatusMB(data, "RssFile")
	if err != nil {
		return ProcUsage{}, err
	}
	return ProcUsage{CPUSeconds: cpu, RSSMB: rss, RSSFileMB: file}, nil
}

// procCPU is utime+stime of pid in seconds.
func procCPU(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(data)
}

// parseStatCPU extracts utime (field 14) and stime (field 15) from a
// /proc/PID/stat line. comm (field 2) may hold spaces and parentheses, so
// fields are counted from after the last ')'.
func parseStatCPU(data []byte) (float64, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse stat: no ')'")
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state); utime is field 14 → f[11].
	if len(f) < 13 {
		return 0, fmt.Errorf("parse stat: %d fields", len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse stat: utime %q stime %q", f[11], f[12])
	}
	return float64(ut+st) / clockTicks, nil
}

func parseStatusRSS(data []byte) (float64, error) { return parseStatusMB(data, "VmRSS") }

// parseStatusMB is the /proc/PID/status field (a "… kB" one: VmRSS, VmHWM)
// in MiB.
func parseStatusMB(data []byte, field string) (float64, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) < 1 {
				break
			}
			kb, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				return 0, fmt.Errorf("parse %s %q: %w", field, rest, err)
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("no %s in status", field)
}

// kernelCPU is the machine-wide time (seconds, all CPUs) spent in system,
// irq and softirq context, from the first line of /proc/stat. It includes
// whatever else runs on the machine; deltas over a busy interval are what
// the data path costs the kernel, plus that noise.
func kernelCPU() (float64, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return parseKernelCPU(data)
}

func parseKernelCPU(data []byte) (float64, error) {
	line, _, _ := bytes.Cut(data, []byte("\n"))
	f := strings.Fields(string(line))
	// cpu user nice system idle iowait irq softirq ...
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("parse /proc/stat: %q", line)
	}
	var sum uint64
	for _, i := range []int{3, 6, 7} {
		v, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc/stat field %d: %w", i, err)
		}
		sum += v
	}
	return float64(sum) / clockTicks, nil
}

// cpuOf sums the CPU seconds of pids; a process that is gone counts 0.
func cpuOf(pids []int) float64 {
	sum := 0.0
	for _, p := range pids {
		if c, err := procCPU(p); err == nil {
			sum += c
		}
	}
	return sum
}
