package daemon

import (
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/weftnet/weft/internal/version"
)

// metrics are weftd's Prometheus series. Each daemon has its own registry,
// so tests can run several daemons in one process.
type metrics struct {
	registry *prometheus.Registry

	leaseAcquisitions, leaseFailures, leaseLosses prometheus.Counter
	peersIgnored                                  prometheus.Counter
	reconcilePasses, reconcileErrors              *prometheus.CounterVec
	repairs                                       prometheus.Counter
	firewallRestores                              prometheus.Counter
	reconcileSeconds                              *prometheus.HistogramVec
}

// newMetrics builds the series; leaseExpiry and connected are read at
// scrape time.
func newMetrics(leaseExpiry func() time.Time, connected func() bool) *metrics {
	r := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &metrics{
		registry:          r,
		leaseAcquisitions: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_lease_acquisitions_total", Help: "Subnet leases acquired (including re-acquisitions)."}),
		leaseFailures:     prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_lease_acquire_failures_total", Help: "Failed lease acquisition attempts."}),
		leaseLosses:       prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_lease_losses_total", Help: "Times the lease was found lost and had to be acquired again."}),
		peersIgnored:      prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_peer_leases_ignored_total", Help: "Peer leases ignored as unusable (outside the network, overlapping, wrong backend, unusable PublicIP), counted once per subnet and reason."}),
		reconcilePasses:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_reconcile_passes_total", Help: "Reconcile passes by kind (full, incremental)."}, []string{"kind"}),
		firewallRestores:  prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_firewall_restores_total", Help: "Times weft's firewall rules were found removed or changed outside weft and restored (--iptables-resync)."}),
		repairs:           prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_reconcile_repairs_total", Help: "Kernel entries (routes, neighbours, FDB entries) a periodic full pass had to write or delete: drift."}),
		reconcileErrors:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_reconcile_errors_total", Help: "Reconcile passes that returned an error, by kind."}, []string{"kind"}),
		reconcileSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "weft_reconcile_duration_seconds",
			Help:    "Time from receiving lease changes (or a resync tick) to the kernel state applied, by kind.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"kind"}),
	}
	for _, c := range []prometheus.Collector{m.leaseAcquisitions, m.leaseFailures, m.leaseLosses, m.peersIgnored, m.reconcilePasses, m.reconcileErrors, m.repairs, m.firewallRestores, m.reconcileSeconds} {
		f(c)
	}
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "weft_lease_expiry_timestamp_seconds",
		Help: "Unix time the node's lease expires unless renewed; 0 without a lease or for a reservation.",
	}, func() float64 {
		if t := leaseExpiry(); !t.IsZero() {
			return float64(t.Unix())
		}
		return 0
	}))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "weft_control_plane_connected",
		Help: "1 when the lease store (etcd) answered weftd's last request, 0 while it does not (the node runs on its current or last known state).",
	}, func() float64 {
		if connected() {
			return 1
		}
		return 0
	}))
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "weft_build_info",
		Help:        "Build of this weftd; always 1.",
		ConstLabels: prometheus.Labels{"version": version.Version, "commit": version.Commit, "goversion": runtime.Version()},
	})
	build.Set(1)
	f(build)
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
