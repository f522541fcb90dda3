package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/weftnet/weft/internal/version"
	kubestore "github.com/weftnet/weft/subnet/kube"
)

// KubeConfig says how to reach the Kubernetes API when it is the lease
// store (weftd --kube-subnet-mgr). Flannel's flags and defaults.
type KubeConfig struct {
	// APIURL overrides the API server address (--kube-api-url).
	APIURL string
	// Kubeconfig is a kubeconfig file (--kubeconfig-file). With neither
	// set, weftd uses the in-cluster config of its Pod's ServiceAccount.
	Kubeconfig string
	// NodeName is this node's Node object ($NODE_NAME).
	NodeName string
	// AnnotationPrefix of the Node annotations (--kube-annotation-prefix).
	AnnotationPrefix string
	// NetConfigPath is the network config file (--net-config-path).
	NetConfigPath string
	// SetNodeNetworkUnavailable clears the Node's NetworkUnavailable
	// condition once the node is ready (--set-node-network-unavailable).
	SetNodeNetworkUnavailable bool
}

// DefaultNetConfigPath is Flannel's --net-config-path default, where its
// manifest mounts the ConfigMap.
const DefaultNetConfigPath = "/etc/kube-flannel/net-conf.json"

// RunKube is weftd with the Kubernetes API as its lease store.
func RunKube(ctx context.Context, cfg Config, kc KubeConfig, log *slog.Logger) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	if kc.NodeName == "" {
		return errors.New("kubernetes store: NODE_NAME is not set; set it to the Node's name (in a DaemonSet: valueFrom.fieldRef.fieldPath spec.nodeName)")
	}
	// client-go logs through klog, a process-wide logger: send it to ours,
	// at debug level (the store reports what matters itself, once).
	klog.SetSlogLogger(slog.New(debugOnly{log.Handler()}))
	rc, err := clientcmd.BuildConfigFromFlags(kc.APIURL, kc.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubernetes client config (--kube-api-url, --kubeconfig-file, or in-cluster): %w", err)
	}
	rc.UserAgent = "weftd/" + version.Version
	// Only the Node client (protobuf): a clientset would register every
	// API group.
	nodes, err := kubestore.NewNodes(rc)
	if err != nil {
		return err
	}
	m, err := kubestore.New(kubestore.Options{
		Nodes: nodes, NodeName: kc.NodeName, AnnotationPrefix: kc.AnnotationPrefix,
		NetConfigPath: kc.NetConfigPath, Logger: log,
	})
	if err != nil {
		return err
	}
	log.Info("lease store: the Kubernetes API", "server", rc.Host, "node", kc.NodeName, "netConfig", kc.NetConfigPath)
	// The last known state is recorded per store and network: another API
	// server or annotation prefix is another cluster's state.
	deps := Deps{Manager: m, StoreScope: "kubernetes " + rc.Host + " " + m.AnnotationPrefix()}
	if kc.SetNodeNetworkUnavailable {
		deps.OnReady = m.MarkNetworkAvailable
	}
	d, err := newProduction(cfg, log, deps)
	if err != nil {
		return err
	}
	return d.Run(ctx)
}

// debugOnly hands every record to h at debug level.
type debugOnly struct{ h slog.Handler }

func (d debugOnly) Enabled(ctx context.Context, _ slog.Level) bool {
	return d.h.Enabled(ctx, slog.LevelDebug)
}

func (d debugOnly) Handle(ctx context.Context, r slog.Record) error {
	r.Level = slog.LevelDebug
	return d.h.Handle(ctx, r)
}

func (d debugOnly) WithAttrs(as []slog.Attr) slog.Handler { return debugOnly{d.h.WithAttrs(as)} }
func (d debugOnly) WithGroup(g string) slog.Handler       { return debugOnly{d.h.WithGroup(g)} }
