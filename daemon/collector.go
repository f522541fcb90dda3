package daemon

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/backend/udp"
)

// scrapeCollector reads state that lives elsewhere at scrape time: the
// backend's peers and counters, and the lease store's watch counters. Reading
// it then, rather than copying it into gauges on every change, keeps the
// packet and reconcile paths free of metrics work.
type scrapeCollector struct{ d *Daemon }

var (
	peersDesc     = prometheus.NewDesc("weft_peers", "Peers by how the backend handled them (programmed, refused, failed).", []string{"backend", "state"}, nil)
	malformedDesc = prometheus.NewDesc("weft_peer_leases_malformed_total", "Lease values in etcd that could not be parsed and were skipped.", nil, nil)
	ignoredDesc   = prometheus.NewDesc("weft_peer_leases_ignored", "Leases in the store this node does not use as peers now (another backend, unusable PublicIP, outside the network); /status lists them with the reason.", nil, nil)
	relistsDesc   = prometheus.NewDesc("weft_lease_watch_relists_total", "Times the lease watch re-listed all leases (compaction, lost connection).", nil, nil)
	udpPackets    = prometheus.NewDesc("weft_udp_packets_total", "Packets through the udp tunnel by direction (tx: to peers, rx: from peers, local: own subnet).", []string{"direction"}, nil)
	udpBytes      = prometheus.NewDesc("weft_udp_bytes_total", "Bytes of inner packets through the udp tunnel by direction.", []string{"direction"}, nil)
	udpDrops      = prometheus.NewDesc("weft_udp_drops_total", "Packets the udp backend dropped, by reason.", []string{"reason"}, nil)
	udpOffload    = prometheus.NewDesc("weft_udp_offload_enabled", "1 when the udp backend uses the offload (tso, gso, gro).", []string{"offload"}, nil)
	udpQueues     = prometheus.NewDesc("weft_udp_queues", "TUN queues of the udp backend, each with its UDP socket and one packet goroutine serving both directions.", nil, nil)
)

// storeCounters is what the etcd store reports about its watch.
type storeCounters interface {
	Malformed() int64
	Relists() int64
}

// udpStats is the udp backend's counter report.
type udpStats interface{ Stats() udp.Stats }

func (c *scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{peersDesc, ignoredDesc, malformedDesc, relistsDesc, udpPackets, udpBytes, udpDrops, udpOffload, udpQueues} {
		ch <- d
	}
}

func (c *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	if s, ok := c.d.deps.Manager.(storeCounters); ok {
		ch <- prometheus.MustNewConstMetric(malformedDesc, prometheus.CounterValue, float64(s.Malformed()))
		ch <- prometheus.MustNewConstMetric(relistsDesc, prometheus.CounterValue, float64(s.Relists()))
	}
	c.d.mu.Lock()
	name, ignored := c.d.status.Backend, len(c.d.status.Ignored)
	c.d.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(ignoredDesc, prometheus.GaugeValue, float64(ignored))
	r := c.d.running.Load()
	if r == nil {
		return
	}
	counts := map[string]int{"programmed": 0, "refused": 0, "failed": 0}
	for _, p := range r.Peers() {
		counts[string(p.State)]++
	}
	for state, n := range counts {
		ch <- prometheus.MustNewConstMetric(peersDesc, prometheus.GaugeValue, float64(n), name, state)
	}
	u, ok := r.Backend.(udpStats)
	if !ok {
		return
	}
	st := u.Stats()
	counter := func(d *prometheus.Desc, v uint64, label string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), label)
	}
	counter(udpPackets, st.TxPackets, "tx")
	counter(udpPackets, st.RxPackets, "rx")
	counter(udpPackets, st.LocalPackets, "local")
	counter(udpBytes, st.TxBytes, "tx")
	counter(udpBytes, st.RxBytes, "rx")
	for reason, n := range st.Drops {
		counter(udpDrops, n, reason)
	}
	for offload, on := range map[string]bool{"tso": st.TSO, "gso": st.GSO, "gro": st.GRO} {
		v := 0.0
		if on {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(udpOffload, prometheus.GaugeValue, v, offload)
	}
	ch <- prometheus.MustNewConstMetric(udpQueues, prometheus.GaugeValue, float64(st.Queues))
}
