package main

import (
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"
)

func TestParseIperf(t *testing.T) {
	tests := []struct {
		file      string
		wantBytes int64
		wantLost  bool
	}{
		{"testdata/iperf3-tcp.json", 1528299520, false},
		{"testdata/iperf3-udp.json", 54242400, true},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			r, err := parseIperf(data)
			if err != nil {
				t.Fatal(err)
			}
			if r.Bytes != tt.wantBytes {
				t.Errorf("bytes = %d, want %d (the receiver's count)", r.Bytes, tt.wantBytes)
			}
			if r.Gbps <= 0 || r.Seconds <= 0 || r.HostCPU <= 0 {
				t.Errorf("run = %+v: want positive throughput, duration, CPU", r)
			}
			if (r.LostPercent > 0) != tt.wantLost {
				t.Errorf("lost = %v%%, want lost %v", r.LostPercent, tt.wantLost)
			}
		})
	}
}

func TestParseIperfErrors(t *testing.T) {
	for name, in := range map[string]string{
		"not json":   "iperf3: error",
		"error":      `{"error": "unable to connect to server"}`,
		"no summary": `{"end": {}}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := parseIperf([]byte(in)); err == nil {
				t.Error("want an error")
			}
		})
	}
}

func TestParsePing(t *testing.T) {
	data, err := os.ReadFile("testdata/ping.txt")
	if err != nil {
		t.Fatal(err)
	}
	r, err := parsePing(string(data))
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent != 5 || r.Received != 4 {
		t.Errorf("sent/received = %d/%d, want 5/4", r.Sent, r.Received)
	}
	if r.RTTms.N != 4 || r.RTTms.Min != 0.080 || r.RTTms.Max != 1.2 || r.RTTms.P50 != 0.095 {
		t.Errorf("rtt = %+v", r.RTTms)
	}
	if _, err := parsePing("connect: Network is unreachable"); err == nil {
		t.Error("no summary: want an error")
	}
}

// TestPingPinned: every measured ping runs on pingCPU, so the scheduler's
// placement of the ping process does not decide its wake-up cost.
func TestPingPinned(t *testing.T) {
	argv := pingArgv(netip.MustParseAddr("10.244.1.2"), 67, 10*time.Millisecond, 5)
	if !slices.Equal(argv[:4], []string{"taskset", "-c", pingCPU, "ping"}) || argv[len(argv)-1] != "10.244.1.2" || !slices.Contains(argv, "0.010") {
		t.Errorf("ping command %q", argv)
	}
}
