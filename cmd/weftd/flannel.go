package main

import (
	"flag"
	"log/slog"

	"github.com/weftnet/weft/internal/flagenv"
)

// flanneldFlags are the flags of flanneld v0.28.9 (its main.go, and the
// klog flags it registers), as `flanneld --help` lists them. weftd has the
// ones a migrating node passes under the same name, and reads them from
// Flannel's FLANNELD_<FLAG> variables too; Documentation/
// flannel-compatibility.md maps each to weftd's (TestFlanneldFlagTable), and
// e2e/interop checks this list against the real flanneld.
var flanneldFlags = []string{
	"etcd-cafile", "etcd-certfile", "etcd-endpoints", "etcd-keyfile", "etcd-password", "etcd-prefix", "etcd-username",
	"healthz-ip", "healthz-port",
	"iface", "iface-can-reach", "iface-regex",
	"ip-blackhole-route", "ip-masq", "ip-masq-fully-random-disable",
	"iptables-forward-rules", "iptables-resync",
	"kube-annotation-prefix", "kube-api-url", "kube-subnet-mgr", "kubeconfig-file",
	"log_backtrace_at", "net-config-path", "public-ip", "public-ipv6", "set-node-network-unavailable",
	"subnet-file", "subnet-lease-renew-margin", "v", "version", "vmodule",
}

// warnFlannelEnv logs, once at start, each FLANNELD_<FLAG> variable set
// for a flanneld flag weftd does not have: it has no effect, and the
// operator should know.
func warnFlannelEnv(log *slog.Logger, fs *flag.FlagSet, getenv func(string) string) {
	for _, name := range flanneldFlags {
		if fs.Lookup(name) != nil {
			continue
		}
		if v := flagenv.VarName("FLANNELD", name); getenv(v) != "" {
			log.Warn("ignoring a Flannel setting weftd does not have; see Documentation/flannel-compatibility.md for its equivalent", "variable", v)
		}
	}
}
