package sdnotify

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

func TestNotify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := New(path).Notify("READY=1\nSTATUS=ok"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	_ = ln.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := ln.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1\nSTATUS=ok" {
		t.Fatalf("got %q, %v", buf[:n], err)
	}
	if err := New("").Notify("READY=1"); err != nil {
		t.Errorf("without a socket Notify must be a no-op, got %v", err)
	}
	if err := New(filepath.Join(t.TempDir(), "absent")).Notify("READY=1"); err == nil {
		t.Error("notify to a missing socket must fail")
	}
}

func TestWatchdogInterval(t *testing.T) {
	tests := []struct {
		usec, pid string
		want      time.Duration
	}{
		{"", "", 0},
		{"30000000", "", 30 * time.Second},
		{"30000000", "42", 30 * time.Second},
		{"30000000", "7", 0},
		{"x", "", 0},
		{"-5", "", 0},
	}
	for _, tt := range tests {
		if got := WatchdogInterval(tt.usec, tt.pid, 42); got != tt.want {
			t.Errorf("WatchdogInterval(%q, %q) = %v, want %v", tt.usec, tt.pid, got, tt.want)
		}
	}
}
