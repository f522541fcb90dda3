package etcdtest

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStartRestart(t *testing.T) {
	e := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := e.Client.Put(ctx, "/k", "v"); err != nil {
		t.Fatal(err)
	}
	e.Restart()
	r, err := e.Client.Get(ctx, "/k")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v" {
		t.Fatalf("after restart Get = %v", r.Kvs)
	}
}

// TestRefusedAddr: connections to it are refused, and its port cannot be
// taken by a listener while the test runs.
func TestRefusedAddr(t *testing.T) {
	addr := RefusedAddr(t)
	if _, err := net.DialTimeout("tcp", addr, 5*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial %s: %v, want connection refused", addr, err)
	}
	if l, err := net.Listen("tcp", addr); err == nil {
		l.Close()
		t.Errorf("a listener got %s's port", addr)
	}
}

// TestStartOnPortZero: etcd listens where the kernel put it, and the
// endpoints name that port, not 0.
func TestStartOnPortZero(t *testing.T) {
	e := Start(t)
	if len(e.Endpoints) != 1 || strings.HasSuffix(e.Endpoints[0], ":0") {
		t.Fatalf("endpoints %v", e.Endpoints)
	}
}
