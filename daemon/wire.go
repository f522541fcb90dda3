package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/alloc"
	"github.com/weftnet/weft/backend/hostgw"
	"github.com/weftnet/weft/backend/udp"
	"github.com/weftnet/weft/backend/vxlan"
	"github.com/weftnet/weft/backend/wireguard"
	"github.com/weftnet/weft/daemon/masq"
	"github.com/weftnet/weft/internal/nl"
	"github.com/weftnet/weft/subnet"
	etcdstore "github.com/weftnet/weft/subnet/etcd"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
)

// Backends is every backend built into weftd, by Backend.Type. An explicit
// map, not init() registration: what weftd can run is visible here.
func Backends() map[string]backend.Constructor {
	return map[string]backend.Constructor{
		subnet.BackendVXLAN:     vxlan.New,
		subnet.BackendHostGW:    hostgw.New,
		subnet.BackendUDP:       udp.New,
		subnet.BackendWireGuard: wireguard.New,
		subnet.BackendAlloc:     alloc.New,
	}
}

// Run is weftd: it builds the production dependencies and runs the daemon
// until ctx is done. etcd is connected in the background (dialEtcd), so a
// node whose etcd is unreachable at start still comes up from its last
// known state; every store call waits for the connection.
func Run(ctx context.Context, cfg Config, ec EtcdConfig, log *slog.Logger) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	store := newConnectingStore()
	d, err := newProduction(cfg, log, Deps{Manager: store, StoreScope: "etcd " + ec.Prefix})
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	var client *etcdClient // set by the dial goroutine; read after g.Wait
	g.Go(func() error {
		c, err := dialEtcd(gctx, log, etcdstore.ClientConfig{
			Endpoints: ec.Endpoints, CAFile: ec.CAFile, CertFile: ec.CertFile, KeyFile: ec.KeyFile,
			Username: ec.Username, Password: ec.Password, PasswordFile: ec.PasswordFile,
		})
		if err != nil {
			return nilOnDone(gctx, err) // a refusal retrying cannot fix stops weftd
		}
		client = c
		log.Info("connected to etcd", "endpoints", ec.Endpoints, "prefix", ec.Prefix)
		store.connect(etcdstore.New(c, etcdstore.Options{Prefix: ec.Prefix, Logger: log}))
		return nil
	})
	g.Go(func() error { return d.Run(gctx) })
	err = g.Wait()
	if client != nil {
		client.Close()
	}
	return err
}

// newProduction completes deps, whose Manager is the chosen lease store
// (and StoreScope its name for the last known state), with the production
// parts and builds the daemon. Nothing from here on knows which store it
// has.
func newProduction(cfg Config, log *slog.Logger, deps Deps) (*Daemon, error) {
	deps.Logger = log
	deps.Backends = Backends()
	deps.Blackholes = nl.New(nil)
	deps.NewMasq = func(kind string) (masq.Manager, error) {
		if kind == MasqIPTables {
			return masq.NewIPTables(log)
		}
		return masq.NewNFTables(log, masq.Options{})
	}
	// An explicit choice that cannot work is reported at start.
	if cfg.MasqBackend == MasqNFTables || cfg.MasqBackend == MasqIPTables {
		if _, err := deps.NewMasq(cfg.MasqBackend); err != nil {
			return nil, fmt.Errorf("masquerade (%s): %w", cfg.MasqBackend, err)
		}
	}
	return New(cfg, deps)
}

type etcdClient = clientv3.Client

// dialEtcd connects to etcd, retrying transient failures (etcd down,
// timeouts) with backoff and logging each distinct error once. An error
// retrying cannot fix (etcdstore.ErrClientConfig: wrong CA, no client
// certificate, bad TLS files, rejected password) is returned at once, so
// weftd exits with the reason instead of hanging.
func dialEtcd(ctx context.Context, log *slog.Logger, cc etcdstore.ClientConfig) (*etcdClient, error) {
	if plain := etcdstore.PlainCredentials(cc); len(plain) > 0 {
		log.Warn("the etcd password goes over plain http to these endpoints: anyone on the path can read it; use https:// endpoints with --etcd-cafile, or TLS client certificates instead of a password", "endpoints", plain)
	}
	bo := newBackoff(250*time.Millisecond, 10*time.Second)
	last := ""
	for {
		c, err := etcdstore.Dial(ctx, cc)
		switch {
		case err == nil:
			if last != "" {
				log.Info("connect to etcd succeeded after retries")
			}
			return c, nil
		case errors.Is(err, etcdstore.ErrClientConfig):
			return nil, fmt.Errorf("connect to etcd: %w", err)
		case err.Error() != last:
			last = err.Error()
			log.Warn("connect to etcd failed; retrying with backoff", "err", err)
		}
		if err := sleepCtx(ctx, bo.next()); err != nil {
			return nil, err
		}
	}
}
