// Command weftd is weft's node daemon. See package daemon.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"regexp"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

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
	// verbosity is Flannel's -v.
	verbosity int
	// healthzIP and healthzPort are Flannel's spelling of --healthz-addr.
	healthzIP   string
	healthzPort int
	// gcPercent is the Go collector's GOGC (gcPercentFor).
	gcPercent int
}

// defaultGCPercent is weftd's GOGC unless told otherwise. weftd's heap is
// mostly long-lived peer state, and between collections Go lets it grow by
// GOGC percent of what is live: at Go's 100 the RSS is about twice the
// peer state, at 50 one and a half times, for more collections while
// peers change (performance.md measures both in one run).
const defaultGCPercent = 50

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
	fs.StringVar(&o.etcd.Password, "etcd-password", "", "etcd password (etcd auth); prefer --etcd-password-file or the WEFTD_ETCD_PASSWORD variable")
	fs.StringVar(&o.etcd.PasswordFile, "etcd-password-file", "", "file holding the etcd password (etcd auth; e.g. a mounted Secret), read at every connection")
	fs.BoolVar(&o.kubeMgr, "kube-subnet-mgr", false, "use the Kubernetes API as the lease store instead of etcd: the subnet is the Node's podCIDR (Flannel's flag)")
	fs.StringVar(&o.kube.APIURL, "kube-api-url", "", "Kubernetes API server URL (default: in-cluster config)")
	fs.StringVar(&o.kube.Kubeconfig, "kubeconfig-file", "", "kubeconfig file (default: in-cluster config)")
	fs.StringVar(&o.kube.AnnotationPrefix, "kube-annotation-prefix", kubestore.DefaultAnnotationPrefix, "prefix of the Node annotations (Flannel's, so Flannel nodes are peers)")
	fs.StringVar(&o.kube.NetConfigPath, "net-config-path", daemon.DefaultNetConfigPath, "network config file in Kubernetes mode (the mounted ConfigMap)")
	fs.BoolVar(&o.kube.SetNodeNetworkUnavailable, "set-node-network-unavailable", true, "in Kubernetes mode, clear the Node's NetworkUnavailable condition once the node is ready")
	fs.Func("iface", "underlay interface, by name or address; repeat (or separate with commas) to try each in order, the first that exists wins (default: the interface of --public-ip, else of the default route)", func(s string) error {
		o.node.Iface = append(o.node.Iface, flagenv.SplitList(s)...)
		return nil
	})
	fs.Func("iface-regex", "regular expression matched against the interfaces' IPv4 addresses, then IPv6 addresses, then names; repeatable, tried in order after every --iface", func(s string) error {
		re, err := regexp.Compile(s)
		if err != nil {
			return fmt.Errorf("regular expression %q: %w", s, err)
		}
		o.node.IfaceRegex = append(o.node.IfaceRegex, re)
		return nil
	})
	fs.Func("iface-can-reach", "use the interface (and source address) of the route to this address, as ip route get says; tried after --iface and --iface-regex", func(s string) error {
		ip, err := netip.ParseAddr(s)
		o.node.IfaceCanReach = ip
		return err
	})
	fs.Func("public-ip", "IPv4 address other nodes reach this node at (default: the underlay interface's IPv4 address); another address than the interface's means a 1:1 NAT in front of the node", func(s string) error {
		ip, err := netip.ParseAddr(s)
		o.node.PublicIP = ip
		return err
	})
	fs.Func("public-ipv6", "IPv6 address other nodes reach this node at, for dual-stack and IPv6-only networks (default: the underlay interface's first global IPv6 address)", func(s string) error {
		ip, err := netip.ParseAddr(s)
		o.node.PublicIPv6 = ip
		return err
	})
	fs.StringVar(&o.node.SubnetFile, "subnet-file", subnet.DefaultFilePath, "where to write the node's subnet file")
	fs.DurationVar(&o.node.SubnetLeaseTTL, "subnet-lease-ttl", subnet.DefaultLeaseTTL, "lifetime of the subnet lease; renewed well before it ends")
	fs.Func("subnet-lease-renew-margin", "renew the lease when this many minutes of it are left (Flannel's flag; default: when half the TTL is left)", func(s string) error {
		m, err := strconv.Atoi(s)
		if err != nil || m < 1 {
			return fmt.Errorf("%q is not a number of minutes, 1 or more", s)
		}
		o.node.SubnetLeaseRenewMargin = time.Duration(m) * time.Minute
		return nil
	})
	fs.BoolVar(&o.node.IPMasq, "ip-masq", false, "masquerade traffic from the pod network to outside it")
	fs.BoolVar(&o.node.ForwardRules, "forward-rules", true, "install rules that accept forwarded pod-network traffic")
	fs.BoolVar(&o.node.ForwardRules, "iptables-forward-rules", true, "Flannel's name for --forward-rules")
	fs.StringVar(&o.node.MasqBackend, "masq-backend", daemon.MasqAuto, "firewall API for weft's rules: nftables, iptables, or auto (iptables when the network config says EnableNFTables false, else nftables)")
	fs.BoolVar(&o.node.MasqFullyRandomDisable, "ip-masq-fully-random-disable", false, "masquerade without random-fully (Flannel's flag)")
	o.node.FirewallResync = daemon.DefaultFirewallResync
	fs.Var(secondsFlag{&o.node.FirewallResync}, "iptables-resync", "how often weft's firewall rules are checked and restored when removed: whole seconds (Flannel's form) or a duration; 0 turns it off")
	fs.BoolVar(&o.node.BlackholeRoute, "ip-blackhole-route", true, "keep an unreachable route for the whole pod network, so traffic to subnets no node holds never leaves through the default route")
	fs.BoolVar(&o.node.BigTCP, "big-tcp", true, "BIG TCP: give the bridge and pod veths GSO/GRO sizes above 64 KiB, as far as the underlay and the backend's device take them (raise the NIC's gso_max_size/gso_ipv4_max_size for more); false keeps the kernel default")
	fs.StringVar(&o.node.HealthzAddr, "healthz-addr", daemon.DefaultHealthzAddr, "address of /healthz, /readyz, /metrics and /status (\"off\" to disable)")
	fs.BoolVar(&o.node.Pprof, "pprof", false, "also serve Go's runtime profiles under /debug/pprof/ on --healthz-addr (loopback only), e.g. go tool pprof http://127.0.0.1:9474/debug/pprof/heap")
	fs.IntVar(&o.gcPercent, "gc-percent", defaultGCPercent, "the Go garbage collector's GOGC: how far, in percent of the live heap, the heap grows before the next collection (GOGC from the environment, when set, replaces the default; Go's own is 100: more memory, fewer collections)")
	fs.StringVar(&o.healthzIP, "healthz-ip", "0.0.0.0", "Flannel's: with --healthz-port, the address to serve on instead of --healthz-addr's")
	fs.IntVar(&o.healthzPort, "healthz-port", 0, "Flannel's: serve /healthz (and the rest) on --healthz-ip:PORT instead of --healthz-addr; 0 turns it off")
	fs.StringVar(&o.node.CNIConfDir, "cni-conf-dir", daemon.DefaultCNIConfDir, "directory to install the CNI conflist into")
	fs.StringVar(&o.node.CNIIPAMDir, "cni-ipam-dir", daemon.DefaultCNIIPAMDir, "IPAM data directory written into the CNI conflist")
	fs.StringVar(&o.node.StateDir, "state-dir", daemon.DefaultStateDir, "directory for the node's own state kept across restarts (created 0700)")
	fs.StringVar(&o.node.CNIBridge, "cni-bridge", daemon.DefaultCNIBridge, "bridge name written into the CNI conflist (cni0 to keep a Flannel node's bridge)")
	fs.StringVar(&o.node.CNINetwork, "cni-network-name", daemon.CNINetworkName, "network name in the CNI conflist; the IPAM store is <cni-ipam-dir>/<name> (cbr0 with --cni-ipam-dir /var/lib/cni/networks shares a Flannel node's host-local store)")
	fs.DurationVar(&o.node.ResyncInterval, "resync-interval", daemon.DefaultResyncInterval, "period of full reconcile passes that repair drifted kernel state")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.TextVar(&o.logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn or error")
	fs.IntVar(&o.verbosity, "v", 0, "Flannel's (klog's) verbosity: 1 or more logs at debug level, unless --log-level is given")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	return fs
}

func run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	o, fs, err := parseOptions(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "weftd: %v\n", err)
		return 1
	}
	if o.showVersion {
		fmt.Fprintln(stdout, version.String("weftd"))
		return 0
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
	gogc, gcFrom := gcPercentFor(o.gcPercent, isGiven(fs, "gc-percent"), getenv)
	if gogc > 0 {
		debug.SetGCPercent(gogc)
	}
	logger.Info("starting", "version", version.Version, "commit", version.Commit, "gogc", gcFrom)
	warnFlannelEnv(logger, fs, getenv)
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

// gcPercentFor is weftd's GOGC and what says so: the flag (or
// WEFTD_GC_PERCENT) when given, else weftd's default unless the GOGC
// environment variable is set; then pct is 0, as Go's runtime has applied
// GOGC already (it may say "off").
func gcPercentFor(flagValue int, given bool, getenv func(string) string) (pct int, from string) {
	switch {
	case given:
		return flagValue, fmt.Sprintf("%d (--gc-percent)", flagValue)
	case getenv("GOGC") != "":
		return 0, "GOGC=" + getenv("GOGC")
	}
	return defaultGCPercent, fmt.Sprintf("%d (default)", defaultGCPercent)
}

// parseOptions parses the command line and the environment (WEFTD_, then
// Flannel's FLANNELD_ names) into options; flag errors also go to stderr.
func parseOptions(args []string, getenv func(string) string, stderr io.Writer) (*options, *flag.FlagSet, error) {
	o := &options{}
	fs := newFlagSet(o)
	fs.SetOutput(stderr)
	if err := flagenv.Parse(fs, "WEFTD", args, getenv, "FLANNELD"); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.verbosity > 0 && !isGiven(fs, "log-level") {
		o.logLevel = slog.LevelDebug
	}
	if o.gcPercent < 1 {
		return nil, nil, fmt.Errorf("--gc-percent %d: want 1 or more (GOGC=off in the environment turns the collector off)", o.gcPercent)
	}
	if err := o.flannelHealthz(fs); err != nil {
		return nil, nil, err
	}
	return o, fs, nil
}

// isGiven reports whether the flag was set, on the command line or from
// the environment.
func isGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// flannelHealthz applies Flannel's --healthz-ip/--healthz-port, which
// replace --healthz-addr when given.
func (o *options) flannelHealthz(fs *flag.FlagSet) error {
	given := func(name string) bool { return isGiven(fs, name) }
	switch {
	case !given("healthz-port") && given("healthz-ip"):
		return errors.New("--healthz-ip needs --healthz-port (or give --healthz-addr IP:PORT)")
	case !given("healthz-port"):
		return nil
	case given("healthz-addr"):
		return errors.New("give --healthz-addr or Flannel's --healthz-port, not both")
	case o.healthzPort < 0 || o.healthzPort > 65535:
		return fmt.Errorf("--healthz-port %d is not a port", o.healthzPort)
	case o.healthzPort == 0:
		o.node.HealthzAddr = "off"
	default:
		o.node.HealthzAddr = net.JoinHostPort(o.healthzIP, strconv.Itoa(o.healthzPort))
	}
	return nil
}

// secondsFlag is a duration flag that also takes Flannel's whole seconds.
type secondsFlag struct{ d *time.Duration }

func (f secondsFlag) String() string {
	if f.d == nil {
		return ""
	}
	return f.d.String()
}

func (f secondsFlag) Set(s string) error {
	d, err := secondsOrDuration(s)
	if err == nil {
		*f.d = d
	}
	return err
}

// secondsOrDuration parses Flannel's whole seconds ("5") or a Go duration
// ("5s", "1m").
func secondsOrDuration(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 0 {
			return 0, errors.New("negative period; use 0 to turn the check off")
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is neither whole seconds nor a duration such as 5s", s)
	}
	if d < 0 {
		return 0, errors.New("negative period; use 0 to turn the check off")
	}
	return d, nil
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
