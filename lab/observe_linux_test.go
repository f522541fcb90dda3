package lab

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/weftnet/weft/daemon"
)

// scrape GETs path from node's weftd health listener, from inside the
// node's namespace, and returns the body.
func scrape(t *testing.T, l *Lab, node, path string) []byte {
	t.Helper()
	dial, err := l.DialContext(node)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: dial}}
	resp, err := c.Get("http://" + healthzAddr + path)
	if err != nil {
		t.Fatalf("%s %s: %v", node, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %d %v", node, path, resp.StatusCode, err)
	}
	return body
}

// metricValue finds one sample of a Prometheus text exposition.
func metricValue(t *testing.T, body []byte, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("no sample %s in /metrics", series)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// requireObservable checks what an operator sees of a healthy node n1 in a
// lab of nodes nodes: /healthz, /status and /metrics agree with the lab.
func requireObservable(t *testing.T, l *Lab, backend string, nodes int) {
	t.Helper()
	n1 := l.Node("n1")
	scrape(t, l, "n1", "/healthz")
	var st daemon.Status
	if err := json.Unmarshal(scrape(t, l, "n1", "/status"), &st); err != nil {
		t.Fatal(err)
	}
	got := st.Subnet
	if l.IPv6Only {
		got = st.IPv6Subnet // the key of an IPv6-only lease (Node.Subnet)
	}
	if got != n1.Subnet || st.IPv6Subnet != n1.IPv6Subnet || st.Backend != backend || len(st.Peers) != nodes-1 {
		t.Fatalf("n1 /status: subnets %s %s backend %s with %d peers; want %s %s %s with %d", st.Subnet, st.IPv6Subnet, st.Backend, len(st.Peers), n1.Subnet, n1.IPv6Subnet, backend, nodes-1)
	}
	for _, p := range st.Peers {
		if p.State != "programmed" {
			t.Errorf("n1 /status: peer %s is %s (%s)", p.Subnet, p.State, p.Reason)
		}
	}
	metrics := scrape(t, l, "n1", "/metrics")
	if got := metricValue(t, metrics, `weft_peers{backend="`+backend+`",state="programmed"}`); got != float64(nodes-1) {
		t.Errorf("weft_peers programmed = %v, want %d", got, nodes-1)
	}
	// The lab's weftd runs with no GOGC in its environment: weftd's own.
	if got := metricValue(t, metrics, "go_gc_gogc_percent"); got != 50 {
		t.Errorf("go_gc_gogc_percent = %v, want weftd's default 50 (--gc-percent)", got)
	}
	if got := metricValue(t, metrics, "weft_lease_acquisitions_total"); got < 1 {
		t.Errorf("weft_lease_acquisitions_total = %v", got)
	}
	if exp := metricValue(t, metrics, "weft_lease_expiry_timestamp_seconds"); exp < float64(time.Now().Unix()) {
		t.Errorf("lease expiry %v is in the past", exp)
	}
	if backend == "udp" {
		// The matrix just sent pings through n1's tunnel.
		if tx := metricValue(t, metrics, `weft_udp_packets_total{direction="tx"}`); tx == 0 {
			t.Error("the udp tunnel counted no packets after a full matrix")
		}
	}
}
