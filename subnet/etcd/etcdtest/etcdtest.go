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
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

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
	if len(cfg.ListenClientURLs) == 0 {
		cfg.ListenClientURLs = []string{fmt.Sprintf("%s://127.0.0.1:%d", scheme, FreePort(t))}
	}
	if cfg.ListenPeerURL == "" {
		cfg.ListenPeerURL = fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(tWriter{t}, nil))
	}
	cfg.UnsafeNoFsync = true
	e := &Etcd{t: t, cfg: cfg, DataDir: cfg.DataDir}
	e.start()
	e.Endpoints = e.srv.Endpoints()
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
// and ports. Existing clients reconnect on their own.
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

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("etcdtest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
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
