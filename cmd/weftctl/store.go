package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/daemon"
	"github.com/weftnet/weft/internal/flagenv"
	"github.com/weftnet/weft/subnet"
	etcdstore "github.com/weftnet/weft/subnet/etcd"
)

// storeFlags are the etcd flags every store command takes, the same as
// weftd's (with WEFTCTL_ variables).
type storeFlags struct {
	endpoints                 string
	prefix                    string
	caFile, certFile, keyFile string
	username, password        string
	passwordFile              string
	timeout                   time.Duration
}

func addStoreFlags(fs *flag.FlagSet) *storeFlags {
	s := &storeFlags{}
	fs.StringVar(&s.endpoints, "etcd-endpoints", daemon.DefaultEtcdEndpoint, "comma-separated etcd client URLs")
	fs.StringVar(&s.prefix, "etcd-prefix", "/coreos.com/network", "etcd key prefix of the network")
	fs.StringVar(&s.caFile, "etcd-cafile", "", "CA certificate file for etcd")
	fs.StringVar(&s.certFile, "etcd-certfile", "", "client certificate file for etcd")
	fs.StringVar(&s.keyFile, "etcd-keyfile", "", "client key file for etcd")
	fs.StringVar(&s.username, "etcd-username", "", "etcd user name")
	fs.StringVar(&s.password, "etcd-password", "", "etcd password (prefer --etcd-password-file or WEFTCTL_ETCD_PASSWORD)")
	fs.StringVar(&s.passwordFile, "etcd-password-file", "", "file holding the etcd password")
	fs.DurationVar(&s.timeout, "timeout", 10*time.Second, "give up on etcd after this long")
	return s
}

// open connects to etcd and returns the lease store; close the client when
// done.
func (s *storeFlags) open(ctx context.Context, e *env) (subnet.Manager, *clientv3.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	client, err := etcdstore.Dial(dctx, etcdstore.ClientConfig{
		Endpoints: flagenv.SplitList(s.endpoints), CAFile: s.caFile, CertFile: s.certFile, KeyFile: s.keyFile,
		Username: s.username, Password: s.password, PasswordFile: s.passwordFile, DialTimeout: s.timeout,
	})
	if err != nil {
		return nil, nil, err
	}
	return etcdstore.New(client, etcdstore.Options{Prefix: s.prefix, Logger: e.logger}), client, nil
}

// withStore parses fs, opens the store and runs f with a bounded context.
func withStore(ctx context.Context, e *env, fs *flag.FlagSet, sf *storeFlags, args []string, parse func([]string) error, f func(context.Context, subnet.Manager) error) error {
	if err := parseFlags(fs, e, args); err != nil {
		return err
	}
	if err := parse(fs.Args()); err != nil {
		return err
	}
	m, client, err := sf.open(ctx, e)
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, sf.timeout)
	defer cancel()
	err = f(ctx, m)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: etcd at %s did not answer within %s", err, sf.endpoints, sf.timeout)
	}
	return err
}
