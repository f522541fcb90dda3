package daemon

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/weftnet/weft/subnet"
)

// Config is weftd's configuration, filled from flags (cmd/weftd).
type Config struct {
	// Iface lists underlay interfaces, by name or by one of their
	// addresses, tried in order; IfaceRegex expressions tried after them;
	// IfaceCanReach an address whose route names the interface, tried last
	// (Flannel's --iface, --iface-regex, --iface-can-reach; UnderlayChoice
	// has the rules). All empty: the interface of PublicIP, else of the
	// default route.
	Iface         []string
	IfaceRegex    []*regexp.Regexp
	IfaceCanReach netip.Addr
	// PublicIP is the IPv4 address peers reach this node at. Empty: the
	// underlay interface's IPv4 address. Another address than the interface's
	// puts the node behind a 1:1 NAT: tunnels use the interface's address,
	// the lease carries PublicIP.
	PublicIP netip.Addr
	// PublicIPv6 is the IPv6 address peers reach this node at (dual-stack
	// and IPv6-only networks). Empty: the underlay interface's first global
	// IPv6 address; another address than the interface's is a 1:1 NAT, as
	// for PublicIP.
	PublicIPv6 netip.Addr

	SubnetFile     string
	SubnetLeaseTTL time.Duration
	// SubnetLeaseRenewMargin is how much of the lease must be left when it
	// is renewed (Flannel's --subnet-lease-renew-margin); zero: half the
	// TTL.
	SubnetLeaseRenewMargin time.Duration

	IPMasq bool
	// ForwardRules installs rules accepting forwarded pod traffic (Flannel's
	// --iptables-forward-rules). With it and IPMasq both off, weftd installs
	// no masquerade or forwarding rules; the vxlan backend's peer filter
	// (Backend.PeerFilter, on by default) is installed regardless.
	ForwardRules bool
	// MasqBackend is the firewall API weft's rules go through: "nftables",
	// "iptables", or "auto" (the default): iptables when the network config
	// says EnableNFTables false, else nftables.
	MasqBackend string
	// MasqFullyRandomDisable turns off random-fully on weft's masquerade
	// rules (Flannel's --ip-masq-fully-random-disable).
	MasqFullyRandomDisable bool
	// FirewallResync is how often weft's firewall rules are checked and
	// restored when something removed them (Flannel's --iptables-resync);
	// 0 turns the check off.
	FirewallResync time.Duration
	// BlackholeRoute keeps an unreachable route for the whole pod network
	// (Flannel's --ip-blackhole-route, on by default in weftd) so traffic
	// to subnets no peer holds never leaves through the default route.
	BlackholeRoute bool

	// BigTCP lets the CNI plugin raise the GSO/GRO sizes of the bridge and
	// pod veths above 64 KiB, as far as the devices pod traffic leaves the
	// node by take (see Daemon.bigTCP); cmd/weftd turns it on by default.
	BigTCP bool

	HealthzAddr string
	// Pprof serves Go's runtime profiles (net/http/pprof) under
	// /debug/pprof/ on HealthzAddr, which must then be a loopback address:
	// a heap profile shows what weftd's memory holds, and a profile is
	// nothing to offer beyond the node.
	Pprof bool

	CNIConfDir string
	CNIIPAMDir string
	// CNINetwork is the conflist's network name, which names the IPAM
	// store's directory under CNIIPAMDir.
	CNINetwork string
	CNIBridge  string

	// StateDir is the node's own state directory (cmd/weftd defaults it to
	// DefaultStateDir): what weftd keeps across restarts that is not in the
	// lease store. Empty keeps nothing there (tests, embedders).
	StateDir string

	// ResyncInterval is the period of full reconcile passes.
	ResyncInterval time.Duration
	// ConfigPollInterval is how often the network config is re-read.
	ConfigPollInterval time.Duration
	// PeerFilterGrace is how long the VXLAN peer filter may keep letting
	// in the address of a peer whose lease is gone (or the subnet a peer
	// left): such entries are gathered and taken out at most once per
	// grace, in one transaction. Taking an element out of an nftables set
	// makes the kernel wait for an RCU grace period while it holds the
	// nftables commit lock (~10 ms on a busy machine, however many go), so
	// doing it per removal delayed the next peer's programming by that
	// much. New peers are let in at once, before their routes.
	PeerFilterGrace time.Duration

	// NotifySocket is systemd's $NOTIFY_SOCKET (empty when not run by a
	// Type=notify unit) and WatchdogInterval its watchdog period (0: off).
	NotifySocket     string
	WatchdogInterval time.Duration
}

// Defaults for Config fields left zero.
const (
	DefaultHealthzAddr        = "127.0.0.1:9474"
	DefaultCNIConfDir         = "/etc/cni/net.d"
	DefaultCNIIPAMDir         = "/var/lib/weft/ipam"
	DefaultCNIBridge          = "weft0"
	DefaultStateDir           = "/var/lib/weft"
	DefaultResyncInterval     = 30 * time.Second
	DefaultConfigPollInterval = 10 * time.Second
	MasqAuto                  = "auto"
	MasqNFTables              = "nftables"
	MasqIPTables              = "iptables"
	DefaultFirewallResync     = 5 * time.Second
	DefaultPeerFilterGrace    = time.Second
)

// withDefaults returns c with zero fields defaulted, or an error naming the
// field that is wrong.
func (c Config) withDefaults() (Config, error) {
	if c.SubnetFile == "" {
		c.SubnetFile = subnet.DefaultFilePath
	}
	if c.SubnetLeaseTTL == 0 {
		c.SubnetLeaseTTL = subnet.DefaultLeaseTTL
	}
	if c.SubnetLeaseTTL < 10*time.Second {
		return c, fmt.Errorf("subnet lease TTL %s is too short: use at least 10s", c.SubnetLeaseTTL)
	}
	if c.SubnetLeaseRenewMargin < 0 || c.SubnetLeaseRenewMargin >= c.SubnetLeaseTTL {
		return c, fmt.Errorf("subnet lease renew margin %s must be more than 0 and less than the lease TTL %s", c.SubnetLeaseRenewMargin, c.SubnetLeaseTTL)
	}
	if c.MasqBackend == "" {
		c.MasqBackend = MasqAuto
	}
	if c.MasqBackend != MasqAuto && c.MasqBackend != MasqNFTables && c.MasqBackend != MasqIPTables {
		return c, fmt.Errorf("masquerade backend %q: use %s, %s or %s", c.MasqBackend, MasqAuto, MasqNFTables, MasqIPTables)
	}
	if c.FirewallResync < 0 {
		return c, fmt.Errorf("firewall resync period %s is negative: use 0 to turn it off", c.FirewallResync)
	}
	if c.Pprof {
		if err := pprofAddrOK(c.HealthzAddr); err != nil {
			return c, err
		}
	}
	if c.CNIConfDir == "" {
		c.CNIConfDir = DefaultCNIConfDir
	}
	if c.CNIIPAMDir == "" {
		c.CNIIPAMDir = DefaultCNIIPAMDir
	}
	if c.CNIBridge == "" {
		c.CNIBridge = DefaultCNIBridge
	}
	if c.CNINetwork == "" {
		c.CNINetwork = CNINetworkName
	}
	if c.CNINetwork == "." || c.CNINetwork == ".." || strings.ContainsAny(c.CNINetwork, "/\\\x00") {
		return c, fmt.Errorf("CNI network name %q cannot name a directory: use e.g. %s, or cbr0 for Flannel's host-local store", c.CNINetwork, CNINetworkName)
	}
	if c.ResyncInterval == 0 {
		c.ResyncInterval = DefaultResyncInterval
	}
	if c.ResyncInterval < 100*time.Millisecond {
		return c, fmt.Errorf("resync interval %s is too short: use at least 100ms", c.ResyncInterval)
	}
	if c.ConfigPollInterval == 0 {
		c.ConfigPollInterval = DefaultConfigPollInterval
	}
	if c.PeerFilterGrace == 0 {
		c.PeerFilterGrace = DefaultPeerFilterGrace
	}
	if c.PeerFilterGrace < 0 {
		return c, fmt.Errorf("peer filter grace %s is negative", c.PeerFilterGrace)
	}
	return c, nil
}

// EtcdConfig says how to reach the lease store.
type EtcdConfig struct {
	Endpoints []string
	Prefix    string
	CAFile    string
	CertFile  string
	KeyFile   string
	Username  string
	Password  string
	// PasswordFile holds the password instead (etcdstore.ClientConfig).
	PasswordFile string
}

// DefaultEtcdEndpoint is where weftd and weftctl look for etcd by default:
// the embedded one `weftctl etcd` runs.
const DefaultEtcdEndpoint = "http://127.0.0.1:2379"
