// Package etcdtest starts a real, in-process etcd for tests:
//
//	e := etcdtest.Start(t)           // loopback, free port, data in t.TempDir()
//	m := etcd.New(e.Client, ...)     // e.Client is connected; closed in t.Cleanup
//	e.Stop(); e.Restart()            // same data dir and port: clients reconnect
//
// Everything is torn down in t.Cleanup. Logs of etcd at warn level and
// above go to t.Log.
package etcdtest

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/subnet/etcd/embedded"
)

// Etcd is a running test etcd.
type Etcd struct {
	// Endpoints are the client URLs, e.g. ["http://127.0.0.1:41234"]. They
	// stay the same across Stop and Restart.
	Endpoints []string
	// Client is connected to Endpoints and closed in t.Cleanup.
	Client *clientv3.Client
	// DataDir is the member's data directory.
	DataDir string

	t   testing.TB
	cfg embedded.Config

	mu  sync.Mutex
	srv *embedded.Server // nil while stopped; guarded by mu
}

// Options tune Start. The zero value is what most tests want.
type Options struct {
	// Config overrides the embedded config (TLS files, ...). DataDir,
	// ListenClientURLs and ListenPeerURL are filled in when empty.
	Config embedded.Config
	// NoClient skips creating Client (e.g. for TLS tests that dial
	// themselves).
	NoClient bool
}

// Start starts etcd on 127.0.0.1 with free ports and a fresh data dir, and
// connects Client to it. It fails t if etcd does not start in 30 s.
func Start(t testing.TB) *Etcd { return StartWith(t, Options{}) }

// StartWith is Start with options.
func StartWith(t testing.TB, opts Options) *Etcd {
	t.Helper()
	cfg := opts.Config
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir() + "/etcd"
	}
	scheme := "http"
	if cfg.CertFile != "" {
		scheme = "https"
	}
	// Port 0: etcd binds a port the kernel picks, so no other process can
	// take it first (a port found free and closed again, then handed to
	// etcd, could be: "address already in use" under a loaded test run).
	// The peer URL is embedded's default, a free loopback port too.
	if len(cfg.ListenClientURLs) == 0 {
		cfg.ListenClientURLs = []string{scheme + "://127.0.0.1:0"}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(tWriter{t}, nil))
	}
	cfg.UnsafeNoFsync = true
	e := &Etcd{t: t, cfg: cfg, DataDir: cfg.DataDir}
	e.start()
	e.Endpoints = e.srv.Endpoints()
	// A restart listens where clients already point.
	e.cfg.ListenClientURLs = e.Endpoints
	t.Cleanup(e.Stop)
	if !opts.NoClient {
		e.Client = e.NewClient(t)
	}
	return e
}

func (e *Etcd) start() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := embedded.Start(ctx, e.cfg)
	if err != nil {
		e.t.Fatalf("etcdtest: %v", err)
	}
	e.mu.Lock()
	e.srv = srv
	e.mu.Unlock()
}

// Stop stops etcd gracefully; clients see it as down. Stopping a stopped
// etcd does nothing.
func (e *Etcd) Stop() {
	e.mu.Lock()
	srv := e.srv
	e.srv = nil
	e.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// Restart stops etcd if it runs and starts it again on the same data dir
// and client port. Existing clients reconnect on their own.
func (e *Etcd) Restart() {
	e.t.Helper()
	e.Stop()
	e.start()
}

// NewClient returns a new client for Endpoints, closed in t.Cleanup.
func (e *Etcd) NewClient(t testing.TB) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   e.Endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// RefusedAddr returns a loopback host:port that refuses connections until
// the test ends: its port is bound but not listening, so nothing else can
// listen on it or get it as an ephemeral port meanwhile. (A port found free
// and closed again may be another test's listener by the time it is used.)
func RefusedAddr(t testing.TB) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("etcdtest: refused address: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("etcdtest: refused address: %v", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatalf("etcdtest: refused address: %v", err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
}

// Host returns the host:port of endpoint.
func Host(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return endpoint
	}
	return u.Host
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}
