package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/subnet"
)

// Status is what GET /status returns: this node as weftd sees it.
type Status struct {
	Network  netip.Prefix `json:"network"`
	Subnet   netip.Prefix `json:"subnet"`
	PublicIP netip.Addr   `json:"publicIP"`
	// IPv6Network, IPv6Subnet and PublicIPv6 are the IPv6 side of a
	// dual-stack or IPv6-only network; absent otherwise.
	IPv6Network     netip.Prefix    `json:"ipv6Network,omitzero"`
	IPv6Subnet      netip.Prefix    `json:"ipv6Subnet,omitzero"`
	PublicIPv6      netip.Addr      `json:"publicIPv6,omitzero"`
	Backend         string          `json:"backend"`
	Device          string          `json:"device,omitempty"`
	MTU             int             `json:"mtu"`
	LeaseExpiration time.Time       `json:"leaseExpiration"`
	LastSync        time.Time       `json:"lastSync"`
	LastSyncError   string          `json:"lastSyncError,omitempty"`
	Ready           map[string]bool `json:"ready"`
	// ControlPlaneConnected is whether the lease store answered weftd's
	// last request. While it is false a ready node serves from its current
	// or last known state: /readyz says "degraded".
	ControlPlaneConnected bool                 `json:"controlPlaneConnected"`
	Peers                 []backend.PeerStatus `json:"peers"`
	// StrandedPods are the pod addresses, as "IP (container ID)", that the
	// CNI plugin's store holds outside Subnet and IPv6Subnet: those pods
	// have no network until they are recreated.
	StrandedPods []string `json:"strandedPods,omitempty"`
	// Ignored are the leases in the store this node does not use as peers,
	// each with the reason (logged once, counted in
	// weft_peer_leases_ignored_total).
	Ignored []IgnoredLease `json:"ignored,omitempty"`
}

func (d *Daemon) setLease(l subnet.Lease) {
	d.mu.Lock()
	d.status.Subnet, d.status.IPv6Subnet = l.Subnet, l.IPv6Subnet
	d.status.PublicIP, d.status.PublicIPv6 = l.Attrs.PublicIP, l.Attrs.PublicIPv6
	d.mu.Unlock()
}

func (d *Daemon) setGeneration(cfg *subnet.Config, mtu int) {
	d.mu.Lock()
	d.status.Network, d.status.IPv6Network = netip.Prefix{}, netip.Prefix{}
	if cfg.EnableIPv4 {
		d.status.Network = cfg.Network
	}
	if cfg.EnableIPv6 {
		d.status.IPv6Network = cfg.IPv6Network
	}
	d.status.Backend = cfg.BackendType
	d.status.MTU = mtu
	d.mu.Unlock()
}

// Status returns a snapshot of the node's state. Safe for concurrent use.
func (d *Daemon) Status() Status {
	d.mu.Lock()
	s := d.status
	d.mu.Unlock()
	s.LeaseExpiration = d.leaseExpiry()
	s.Ready = d.readiness()
	s.ControlPlaneConnected = d.controlPlane.Load()
	if s.Subnet.IsValid() || s.IPv6Subnet.IsValid() {
		s.StrandedPods, _ = d.strandedPods(s.Subnet, s.IPv6Subnet) // an unreadable store is logged at adoption
	}
	if r := d.running.Load(); r != nil {
		if dev, ok := r.Backend.(backend.Device); ok {
			s.Device = dev.Device()
		}
		s.Peers = r.Peers()
		sort.Slice(s.Peers, func(i, j int) bool { return s.Peers[i].Key().Addr().Less(s.Peers[j].Key().Addr()) })
	}
	return s
}

func (d *Daemon) readiness() map[string]bool {
	return map[string]bool{
		"leaseHeld":         d.leaseHeld.Load(),
		"subnetFileWritten": d.subnetFileWritten.Load(),
		"backendReady":      d.backendReady.Load(),
		"cniConfInstalled":  d.cniConfInstalled.Load(),
		"peersProgrammed":   d.peersProgrammed.Load(),
	}
}

// pprofAddrOK refuses profiles on a health address that is not loopback
// (or off: then there is nothing to serve them on).
func pprofAddrOK(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if addr == "" || addr == "off" || err != nil {
		return fmt.Errorf("--pprof serves on the health address, which is %q: give --healthz-addr a loopback address such as %s", addr, DefaultHealthzAddr)
	}
	if a, err := netip.ParseAddr(host); err != nil || !a.IsLoopback() {
		return fmt.Errorf("--pprof serves only on loopback, and --healthz-addr is %s: use e.g. %s (and reach it with kubectl port-forward or from the node)", addr, DefaultHealthzAddr)
	}
	return nil
}

// listen opens the health listener early, so a port clash fails the start
// instead of a later goroutine.
func (d *Daemon) listen() (net.Listener, error) {
	if d.cfg.HealthzAddr == "" || d.cfg.HealthzAddr == "off" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", d.cfg.HealthzAddr)
	if err != nil {
		return nil, fmt.Errorf("health listener: %w (change --healthz-addr)", err)
	}
	d.healthAddr.Store(ptr(ln.Addr().String()))
	return ln, nil
}

// HealthAddr is the address the health server listens on, once Run has
// opened it; "" before.
func (d *Daemon) HealthAddr() string {
	if a := d.healthAddr.Load(); a != nil {
		return *a
	}
	return ""
}

func (d *Daemon) serveHTTP(ctx context.Context, ln net.Listener) error {
	if ln == nil {
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", d.handleHealthz)
	mux.HandleFunc("GET /readyz", d.handleReadyz)
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, d.Status()) })
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.metrics.registry, promhttp.HandlerOpts{}))
	if d.cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index) // heap, goroutine, allocs, ... by name
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("health server: %w", err)
	case <-ctx.Done():
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

// handleHealthz fails when a running reconcile loop has not come round for
// three resync intervals: the process is alive but stuck.
func (d *Daemon) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	if stuck := d.stuckFor(); stuck > 0 {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "stuck", "lastLoop": stuck.String()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// stuckFor returns how long ago a running reconcile loop last came round,
// when that is more than three resync intervals; 0 when healthy.
func (d *Daemon) stuckFor() time.Duration {
	hb := d.heartbeat.Load()
	if hb == 0 {
		return 0
	}
	if age := time.Since(time.Unix(0, hb)); age > 3*d.cfg.ResyncInterval+10*time.Second {
		return age
	}
	return 0
}

// Statuses of /readyz.
const (
	readyOK       = "ready"
	readyDegraded = "degraded"
	readyNot      = "not ready"
)

// handleReadyz answers 200 when the node serves pods: "ready", or
// "degraded" while the lease store does not answer (peers are as last
// known, changes wait for the store). 503 "not ready" names the missing
// step.
func (d *Daemon) handleReadyz(w http.ResponseWriter, _ *http.Request) {
	r := d.readiness()
	code, status := http.StatusOK, readyOK
	for _, ok := range r {
		if !ok {
			code, status = http.StatusServiceUnavailable, readyNot
		}
	}
	connected := d.controlPlane.Load()
	if code == http.StatusOK && !connected {
		status = readyDegraded
	}
	body := map[string]any{"status": status, "controlPlaneConnected": connected}
	for k, ok := range r {
		body[k] = ok
	}
	writeJSON(w, code, body)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
