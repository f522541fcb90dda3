package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Config says where the embedded etcd keeps its data and listens.
type Config struct {
	// DataDir holds the member's data; created (mode 0700) if missing.
	// Starting again on the same DataDir keeps every key and revision.
	DataDir string
	// ListenClientURLs are the client URLs, e.g. "http://127.0.0.1:2379"
	// (the default). Port 0 picks a free port; Endpoints tells which.
	// "https://" URLs need CertFile and KeyFile.
	ListenClientURLs []string
	// ListenPeerURL is the raft peer URL; "http://127.0.0.1:0" (a free
	// loopback port: a single member never dials it) when empty.
	ListenPeerURL string
	// Name is the member name; "weft" when empty.
	Name string
	// InitialCluster lists every member of a new cluster as
	// "name=peerURL,name=peerURL,..." (etcd's --initial-cluster); empty for
	// a single member. Each member must then set ListenPeerURL to the URL it
	// has in the list. Ignored when DataDir already holds a member.
	InitialCluster string
	// InitialClusterToken tells clusters apart at bootstrap; "weft" when
	// empty.
	InitialClusterToken string
	// Logger receives etcd's warnings and errors; discarded when nil.
	Logger *slog.Logger

	// CertFile and KeyFile are the server certificate for https:// client
	// URLs. TrustedCAFile with ClientCertAuth makes clients present a
	// certificate signed by that CA.
	CertFile, KeyFile, TrustedCAFile string
	ClientCertAuth                   bool

	// UnsafeNoFsync skips fsync: faster, and loses data on a crash. For
	// tests only.
	UnsafeNoFsync bool
}

// Server is a running embedded etcd.
type Server struct {
	e         *embed.Etcd
	endpoints []string
	stopped   chan struct{}
}

// Start starts etcd and waits until it serves clients or ctx is done.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("start etcd: no data dir")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	ec := embed.NewConfig()
	ec.Dir = cfg.DataDir
	if cfg.Name != "" {
		ec.Name = cfg.Name
	} else {
		ec.Name = "weft"
	}
	clientURLs := cfg.ListenClientURLs
	if len(clientURLs) == 0 {
		clientURLs = []string{"http://127.0.0.1:2379"}
	}
	cu, err := parseURLs(clientURLs)
	if err != nil {
		return nil, fmt.Errorf("start etcd: listen client URLs: %w", err)
	}
	peer := cfg.ListenPeerURL
	if peer == "" {
		peer = "http://127.0.0.1:0"
	}
	pu, err := parseURLs([]string{peer})
	if err != nil {
		return nil, fmt.Errorf("start etcd: listen peer URL: %w", err)
	}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = cu, cu
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = pu, pu
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	if cfg.InitialCluster != "" {
		ec.InitialCluster = cfg.InitialCluster
	}
	ec.InitialClusterToken = "weft"
	if cfg.InitialClusterToken != "" {
		ec.InitialClusterToken = cfg.InitialClusterToken
	}
	ec.ClientTLSInfo.CertFile = cfg.CertFile
	ec.ClientTLSInfo.KeyFile = cfg.KeyFile
	ec.ClientTLSInfo.TrustedCAFile = cfg.TrustedCAFile
	ec.ClientTLSInfo.ClientCertAuth = cfg.ClientCertAuth
	ec.UnsafeNoFsync = cfg.UnsafeNoFsync
	ec.LogLevel = "warn"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(newSlogCore(cfg.Logger, zap.WarnLevel)))
	ec.EnableGRPCGateway = false

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start etcd in %s: %w", cfg.DataDir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("start etcd in %s: %w", cfg.DataDir, err)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("start etcd in %s: %w", cfg.DataDir, ctx.Err())
	}
	s := &Server{e: e, stopped: make(chan struct{})}
	for i, l := range e.Clients {
		scheme := "http"
		if i < len(cu) && cu[i].Scheme == "https" {
			scheme = "https"
		}
		s.endpoints = append(s.endpoints, scheme+"://"+l.Addr().String())
	}
	return s, nil
}

func parseURLs(ss []string) ([]url.URL, error) {
	out := make([]url.URL, 0, len(ss))
	for _, s := range ss {
		u, err := url.Parse(s)
		if err != nil {
			return nil, err
		}
		if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("%q: want http://HOST:PORT or https://HOST:PORT", s)
		}
		out = append(out, *u)
	}
	return out, nil
}

// Endpoints returns the client URLs etcd listens on, with the real ports
// (a configured port 0 is resolved).
func (s *Server) Endpoints() []string { return append([]string(nil), s.endpoints...) }

// Err delivers a fatal server error, if one happens while running.
func (s *Server) Err() <-chan error { return s.e.Err() }

// Wait blocks until ctx is done or the server fails; it returns nil when
// ctx ended (the caller then calls Close) or the server's error.
func (s *Server) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-s.e.Err():
		if err == nil { // the channel is closed by Close
			return nil
		}
		return fmt.Errorf("etcd: %w", err)
	case <-s.stopped:
		return nil
	}
}

// Close stops etcd gracefully: in-flight requests finish, clients are
// disconnected, data is flushed. Safe to call more than once.
func (s *Server) Close() {
	select {
	case <-s.stopped:
		return
	default:
	}
	s.e.Close()
	close(s.stopped)
}

// Stop is Close bounded by timeout; it reports whether etcd stopped in time.
func (s *Server) Stop(timeout time.Duration) bool {
	done := make(chan struct{})
	go func() {
		s.Close()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}
