// Command weftd is weft's node daemon. See package daemon.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/weftnet/weft/daemon"
	"github.com/weftnet/weft/internal/flagenv"
	"github.com/weftnet/weft/internal/sdnotify"
	"github.com/weftnet/weft/internal/version"
	"github.com/weftnet/weft/subnet"
	kubestore "github.com/weftnet/weft/subnet/kube"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// options is everything weftd's command line says.
type options struct {
	node        daemon.Config
	etcd        daemon.EtcdConfig
	kubeMgr     bool
	kube        daemon.KubeConfig
	logFormat   string
	logLevel    slog.Level
	showVersion bool
}

// newFlagSet defines weftd's flags into o. Documentation/configuration.md
// lists them; a test keeps the two in step.
func newFlagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("weftd", flag.ContinueOnError)
	o.etcd.Endpoints = []string{daemon.DefaultEtcdEndpoint}
	fs.Func("etcd-endpoints", "comma-separated etcd client URLs (default "+daemon.DefaultEtcdEndpoint+")", func(s string) error {
		o.etcd.Endpoints = flagenv.SplitList(s)
		if len(o.etcd.Endpoints) == 0 {
			return errors.New("no endpoint given")
		}
		return nil
	})
	fs.StringVar(&o.etcd.Prefix, "etcd-prefix", "/coreos.com/network", "etcd key prefix of the network (Flannel's default)")
	fs.StringVar(&o.etcd.CAFile, "etcd-cafile", "", "CA certificate file to verify etcd's server certificate")
	fs.StringVar(&o.etcd.CertFile, "etcd-certfile", "", "client certificate file for etcd")
	fs.StringVar(&o.etcd.KeyFile, "etcd-keyfile", "", "client key file for etcd")
	fs.StringVar(&o.etcd.Username, "etcd-username", "", "etcd user name (etcd auth)")
	fs.StringVar(&o.etcd.Password, "etcd-password", "", "etcd password (etcd auth); prefer the WEFTD_ETCD_PASSWORD variable")
	fs.BoolVar(&o.kubeMgr, "kube-subnet-mgr", false, "use the Kubernetes API as the lease store instead of etcd: the subnet is the Node's podCIDR (Flannel's flag)")
	fs.StringVar(&o.kube.APIURL, "kube-api-url", "", "Kubernetes API server URL (default: in-cluster config)")
	fs.StringVar(&o.kube.Kubeconfig, "kubeconfig-file", "", "kubeconfig file (default: in-cluster config)")
	fs.StringVar(&o.kube.AnnotationPrefix, "kube-annotation-prefix", kubestore.DefaultAnnotationPrefix, "prefix of the Node annotations (Flannel's, so Flannel nodes are peers)")
	fs.StringVar(&o.kube.NetConfigPath, "net-config-path", daemon.DefaultNetConfigPath, "network config file in Kubernetes mode (the mounted ConfigMap)")
	fs.BoolVar(&o.kube.SetNodeNetworkUnavailable, "set-node-network-unavailable", true, "in Kubernetes mode, clear the Node's NetworkUnavailable condition once the node is ready")
	fs.StringVar(&o.node.Iface, "iface", "", "underlay interface, by name or address (default: the interface of --public-ip, else of the default route)")
	fs.Func("public-ip", "address other nodes reach this node at (default: first IPv4 address of the underlay interface)", func(s string) error {
		ip, err := netip.ParseAddr(s)
		o.node.PublicIP = ip
		return err
	})
	fs.StringVar(&o.node.SubnetFile, "subnet-file", subnet.DefaultFilePath, "where to write the node's subnet file")
	fs.DurationVar(&o.node.SubnetLeaseTTL, "subnet-lease-ttl", subnet.DefaultLeaseTTL, "lifetime of the subnet lease; renewed well before it ends")
	fs.BoolVar(&o.node.IPMasq, "ip-masq", false, "masquerade traffic from the pod network to outside it")
	fs.BoolVar(&o.node.ForwardRules, "forward-rules", true, "install rules that accept forwarded pod-network traffic")
	fs.StringVar(&o.node.MasqBackend, "masq-backend", daemon.MasqNFTables, "masquerade rules through nftables or iptables")
	fs.BoolVar(&o.node.BlackholeRoute, "ip-blackhole-route", true, "keep an unreachable route for the whole pod network, so traffic to subnets no node holds never leaves through the default route")
	fs.StringVar(&o.node.HealthzAddr, "healthz-addr", daemon.DefaultHealthzAddr, "address of /healthz, /readyz, /metrics and /status (\"off\" to disable)")
	fs.StringVar(&o.node.CNIConfDir, "cni-conf-dir", daemon.DefaultCNIConfDir, "directory to install the CNI conflist into")
	fs.StringVar(&o.node.CNIIPAMDir, "cni-ipam-dir", daemon.DefaultCNIIPAMDir, "IPAM data directory written into the CNI conflist")
	fs.StringVar(&o.node.StateDir, "state-dir", daemon.DefaultStateDir, "directory for the node's own state kept across restarts (created 0700)")
	fs.StringVar(&o.node.CNIBridge, "cni-bridge", daemon.DefaultCNIBridge, "bridge name written into the CNI conflist (cni0 to keep a Flannel node's bridge)")
	fs.StringVar(&o.node.CNINetwork, "cni-network-name", daemon.CNINetworkName, "network name in the CNI conflist; the IPAM store is <cni-ipam-dir>/<name> (cbr0 with --cni-ipam-dir /var/lib/cni/networks shares a Flannel node's host-local store)")
	fs.DurationVar(&o.node.ResyncInterval, "resync-interval", daemon.DefaultResyncInterval, "period of full reconcile passes that repair drifted kernel state")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.TextVar(&o.logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn or error")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	return fs
}

func run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	var o options
	fs := newFlagSet(&o)
	fs.SetOutput(stderr)
	if err := flagenv.Parse(fs, "WEFTD", args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "weftd: %v\n", err)
		return 1
	}
	if o.showVersion {
		fmt.Fprintln(stdout, version.String("weftd"))
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "weftd: unexpected arguments %q\n", fs.Args())
		return 1
	}
	// Set by systemd for a Type=notify unit, not flags: the protocol's own
	// variables.
	o.node.NotifySocket = getenv("NOTIFY_SOCKET")
	o.node.WatchdogInterval = sdnotify.WatchdogInterval(getenv("WATCHDOG_USEC"), getenv("WATCHDOG_PID"), os.Getpid())
	logger, err := newLogger(stderr, o.logFormat, o.logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "weftd: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger.Info("starting", "version", version.Version, "commit", version.Commit)
	if o.kubeMgr {
		// The downward API's name for it, as Flannel reads it.
		o.kube.NodeName = getenv("NODE_NAME")
		err = daemon.RunKube(ctx, o.node, o.kube, logger)
	} else {
		err = daemon.Run(ctx, o.node, o.etcd, logger)
	}
	if err != nil {
		logger.Error("weftd stopped", "err", err)
		return 1
	}
	logger.Info("stopped cleanly; the lease is kept for the next start")
	return 0
}

func newLogger(w io.Writer, format string, level slog.Level) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: use text or json", format)
}
