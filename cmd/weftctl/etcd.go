package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/flagenv"
	"github.com/weftnet/weft/subnet/etcd/embedded"
)

// runEtcd runs a single-member etcd in this process until interrupted: the
// one-host default, and the lab's etcd.
func runEtcd(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	dataDir := fs.String("data-dir", "/var/lib/weft/etcd", "where etcd keeps its data (kept across restarts)")
	clientURLs := fs.String("listen-client-urls", "http://127.0.0.1:2379", "comma-separated client URLs to serve")
	peerURL := fs.String("listen-peer-url", "", "raft peer URL (default: a free loopback port; one member never dials it)")
	name := fs.String("name", "weft", "member name")
	initialCluster := fs.String("initial-cluster", "", "members of a new multi-member cluster, name=peerURL,... (each member sets --listen-peer-url to its own)")
	clusterToken := fs.String("initial-cluster-token", "", "token that tells clusters apart at bootstrap (default weft)")
	certFile := fs.String("cert-file", "", "server certificate for https:// client URLs")
	keyFile := fs.String("key-file", "", "server key for https:// client URLs")
	caFile := fs.String("trusted-ca-file", "", "CA that client certificates must be signed by (turns on client certificate auth)")
	if err := flagenv.Parse(fs, "WEFTCTL", args, e.getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	srv, err := embedded.Start(startCtx, embedded.Config{
		DataDir:             *dataDir,
		ListenClientURLs:    flagenv.SplitList(*clientURLs),
		ListenPeerURL:       *peerURL,
		Name:                *name,
		InitialCluster:      *initialCluster,
		InitialClusterToken: *clusterToken,
		Logger:              e.logger,
		CertFile:            *certFile,
		KeyFile:             *keyFile,
		TrustedCAFile:       *caFile,
		ClientCertAuth:      *caFile != "",
	})
	if err != nil {
		return err
	}
	e.logger.Info("etcd serving", "endpoints", strings.Join(srv.Endpoints(), ","), "dataDir", *dataDir)
	err = srv.Wait(ctx)
	if !srv.Stop(10 * time.Second) {
		e.logger.Warn("etcd did not stop within 10s")
	}
	if err == nil {
		e.logger.Info("etcd stopped")
	}
	return err
}
