package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sync/errgroup"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/daemon"
	"github.com/weftnet/weft/daemon/laststate"
	"github.com/weftnet/weft/internal/nl"
	"github.com/weftnet/weft/lab"
	"github.com/weftnet/weft/subnet"
)

// errWeftdUnreachable marks a failed request to weftd's HTTP API.
var errWeftdUnreachable = errors.New("weftd not reachable")

// fetchStatus asks weftd at addr (its --healthz-addr) for GET /status.
func fetchStatus(ctx context.Context, addr string, timeout time.Duration) (daemon.Status, error) {
	var st daemon.Status
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/status", nil)
	if err != nil {
		return st, fmt.Errorf("weftd address %q: %w", addr, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, fmt.Errorf("%w at %s: %v; is weftd running? it serves on --healthz-addr (default %s); pass --weftd-addr HOST:PORT if it was changed",
			errWeftdUnreachable, addr, err, daemon.DefaultHealthzAddr)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return st, fmt.Errorf("%w at %s: read /status: %v", errWeftdUnreachable, addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%w at %s: GET /status: %s: is something else listening there?", errWeftdUnreachable, addr, resp.Status)
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("weftd at %s: decode /status: %w", addr, err)
	}
	return st, nil
}

// statusView is `weftctl status -o json`: weftd's status plus what weftctl
// found out locally.
type statusView struct {
	daemon.Status
	// Device carries the node's pod traffic: the vxlan/udp device (it holds
	// <subnet>.0) or, for host-gw, the underlay link (it holds PublicIP).
	// Empty when it is not in this network namespace.
	Device string `json:"device,omitempty"`
	// Device6 is the same for IPv6 (weft-v6.<VNI> holding <IPv6 subnet>::,
	// weft-udp, or the underlay link holding PublicIPv6), when the node has
	// an IPv6 subnet.
	Device6 string `json:"device6,omitempty"`
}

func runStatus(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	sf := addStoreFlags(fs)
	addr := fs.String("weftd-addr", daemon.DefaultHealthzAddr, "weftd's HTTP address (its --healthz-addr)")
	output := fs.String("o", "table", "output format: table or json")
	stateDir := fs.String("state-dir", daemon.DefaultStateDir, "weftd's --state-dir: where the last known state is read from when weftd is down")
	cluster := fs.Bool("cluster", false, "list every lease in etcd with its reachability from this node")
	probeTimeout := fs.Duration("probe-timeout", time.Second, "with --cluster: how long to wait for each peer's echo reply")
	workers := fs.Int("probe-workers", 16, "with --cluster: peers probed at once")
	if err := parseFlags(fs, e, args); err != nil {
		return err
	}
	if err := noArgs(fs.Args()); err != nil {
		return err
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("%w: -o %q: use table or json", errUsage, *output)
	}
	if *cluster {
		if *workers < 1 || *probeTimeout <= 0 {
			return fmt.Errorf("%w: --probe-workers and --probe-timeout must be positive", errUsage)
		}
		m, client, err := sf.open(ctx, e)
		if err != nil {
			return err
		}
		defer client.Close()
		p := clusterProbe{timeout: *probeTimeout, workers: *workers, ping: pingOnce}
		return clusterStatus(ctx, e, m, *addr, sf.timeout, p, *output)
	}
	st, err := fetchStatus(ctx, *addr, sf.timeout)
	if errors.Is(err, errWeftdUnreachable) {
		return lastKnownStatus(e, err, filepath.Join(*stateDir, laststate.FileName), *output, time.Now())
	}
	if err != nil {
		return err
	}
	v := statusView{Status: st, Device: findDevice(st.Subnet, st.PublicIP), Device6: findDevice(st.IPv6Subnet, st.PublicIPv6)}
	if *output == "json" {
		return writeJSONOut(e.stdout, v)
	}
	return writeStatusTable(e.stdout, v, time.Now())
}

func writeJSONOut(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeStatusTable renders one node's status for people.
func writeStatusTable(w io.Writer, v statusView, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, a...)...) }
	row("Node", "%s", pairOrDash(v.PublicIP, v.PublicIPv6))
	row("Network", "%s", pairOrDash(v.Network, v.IPv6Network))
	lease := pairOrDash(v.Subnet, v.IPv6Subnet)
	if (v.Subnet.IsValid() || v.IPv6Subnet.IsValid()) && !v.LeaseExpiration.IsZero() {
		lease += fmt.Sprintf("  (expires in %s)", v.LeaseExpiration.Sub(now).Round(time.Second))
	}
	row("Subnet", "%s", lease)
	row("Backend", "%s", dash(v.Backend))
	dev := dash(v.Device)
	if v.Device6 != "" && v.Device6 != v.Device {
		dev = strings.TrimPrefix(dev+" ", "- ") + v.Device6 + " (IPv6)"
	}
	row("Device", "%s", dev)
	row("MTU", "%s", intOrDash(v.MTU))
	row("Ready", "%s", readyText(v.Ready))
	if len(v.Ready) > 0 {
		cp := "connected"
		if !v.ControlPlaneConnected {
			cp = "unreachable (serving from the peers last known; changes wait for the store)"
		}
		row("Store", "%s", cp)
	}
	sync := "never"
	if !v.LastSync.IsZero() {
		sync = fmt.Sprintf("%s ago", now.Sub(v.LastSync).Round(time.Millisecond))
	}
	if v.LastSyncError != "" {
		sync += ", error: " + v.LastSyncError
	} else if !v.LastSync.IsZero() {
		sync += ", ok"
	}
	row("Last sync", "%s", sync)
	counts := map[backend.PeerState]int{}
	for _, p := range v.Peers {
		counts[p.State]++
	}
	row("Peers", "%d (%d programmed, %d refused, %d failed)", len(v.Peers),
		counts[backend.PeerProgrammed], counts[backend.PeerRefused], counts[backend.PeerFailed])
	if n := len(v.Ignored); n > 0 {
		row("Ignored", "%d leases in the store are not peers of this node (listed below)", n)
	}
	if n := len(v.StrandedPods); n > 0 {
		row("Stranded", "%d pods hold addresses outside the subnet, no network until recreated: %s",
			n, strings.Join(v.StrandedPods[:min(n, 5)], ", "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(v.Peers) == 0 && len(v.Ignored) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER SUBNET\tPUBLIC IP\tSTATE\tREASON")
	for _, p := range v.Peers {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", pairOrDash(p.Subnet, p.IPv6Subnet), pairOrDash(p.PublicIP, p.PublicIPv6), p.State, dash(p.Reason))
	}
	for _, ig := range v.Ignored {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", ig.Subnet, orDash(ig.PublicIP), peerIgnored, ig.Reason)
	}
	return tw.Flush()
}

func readyText(r map[string]bool) string {
	if len(r) == 0 {
		return "unknown"
	}
	keys := make([]string, 0, len(r))
	all := true
	for k, ok := range r {
		keys = append(keys, k)
		all = all && ok
	}
	sort.Strings(keys)
	var b strings.Builder
	if all {
		b.WriteString("yes")
	} else {
		b.WriteString("NO")
	}
	b.WriteString(" (")
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		mark := "✓"
		if !r[k] {
			mark = "✗"
		}
		b.WriteString(k + " " + mark)
	}
	b.WriteByte(')')
	return b.String()
}

// orDash formats a netip value, "-" for the zero value.
func orDash[T interface {
	IsValid() bool
	String() string
}](v T) string {
	if !v.IsValid() {
		return "-"
	}
	return v.String()
}

// pairOrDash formats the valid ones of an IPv4 and an IPv6 value, joined
// by a space; "-" when neither is valid.
func pairOrDash[T interface {
	IsValid() bool
	String() string
}](v4, v6 T) string {
	return cmp.Or(lab.AddrsString(v4, v6), "-")
}

func intOrDash(n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

// findDevice looks in this network namespace for the link carrying the
// node's pod traffic of one family: the one holding the subnet's first
// address (<subnet>.0 or <IPv6 subnet>::: vxlan, udp), else the one holding
// the underlay address pub (host-gw routes over the underlay). "" when
// neither is here, e.g. when weftd runs on another host or in another
// namespace, or sn is zero.
func findDevice(sn netip.Prefix, pub netip.Addr) string {
	if !sn.IsValid() {
		return ""
	}
	addrs, err := netlink.AddrList(nil, nl.Family(sn.Addr()))
	if err != nil {
		return ""
	}
	byAddr := map[netip.Addr]int{}
	for _, a := range addrs {
		if ip, ok := nl.Addr(a.IP); ok {
			byAddr[ip] = a.LinkIndex
		}
	}
	for _, want := range []netip.Addr{sn.Masked().Addr(), pub} {
		if idx, ok := byAddr[want]; ok && want.IsValid() {
			if l, err := netlink.LinkByIndex(idx); err == nil {
				return l.Attrs().Name
			}
		}
	}
	return ""
}

// ---- status --cluster ----

// clusterRow is one lease in `weftctl status --cluster`, also its JSON form.
type clusterRow struct {
	Subnet     netip.Prefix `json:"subnet"`
	PublicIP   netip.Addr   `json:"publicIP"`
	Backend    string       `json:"backend"`
	Reserved   bool         `json:"reserved"`
	Expiration time.Time    `json:"expiration,omitzero"`
	Self       bool         `json:"self"`
	// WeftdState is how this node's weftd handled the peer
	// (programmed/refused/failed); empty when weftd was not asked or does
	// not list it.
	WeftdState  string `json:"weftdState,omitempty"`
	WeftdReason string `json:"weftdReason,omitempty"`
	// Probe is the overlay address probed: <subnet>.0 (the vxlan/udp
	// device of the peer) or <subnet>.1 (its bridge, for host-gw).
	Probe     netip.Addr `json:"probe,omitzero"`
	Reachable bool       `json:"reachable"`
	RTT       string     `json:"rtt,omitempty"`
	Error     string     `json:"error,omitempty"`
	// The IPv6 side, when the lease has an IPv6 subnet: the same probe of
	// <IPv6 subnet>:: (::1 for host-gw).
	IPv6Subnet netip.Prefix `json:"ipv6Subnet,omitzero"`
	PublicIPv6 netip.Addr   `json:"publicIPv6,omitzero"`
	Probe6     netip.Addr   `json:"probe6,omitzero"`
	Reachable6 bool         `json:"reachable6,omitempty"`
	RTT6       string       `json:"rtt6,omitempty"`
	Error6     string       `json:"error6,omitempty"`
}

// unreachable reports whether a probed family of the row got no reply.
func (r clusterRow) unreachable() bool {
	return !r.Self && (!r.Reachable || r.Probe6.IsValid() && !r.Reachable6)
}

// peerIgnored is the WEFTD state of a lease weftd does not use as a peer
// (daemon.Status.Ignored): not a backend state, so it is weftctl's.
const peerIgnored backend.PeerState = "ignored"

// clusterProbe says how peers are probed; ping is injectable for tests.
type clusterProbe struct {
	timeout time.Duration
	workers int
	ping    func(ctx context.Context, to netip.Addr, timeout time.Duration) (time.Duration, error)
}

// probeTarget is the overlay address in sn (the lease's subnet of a
// family) of a peer that answers ICMP echo whenever the peer's weftd has
// configured its node: the device address <subnet>.0 (<IPv6 subnet>::) for
// vxlan and udp, the bridge gateway <subnet>.1 (::1) for host-gw (which has
// no device of its own; the bridge exists once a pod ran there). Zero for
// a zero sn.
func probeTarget(l subnet.Lease, sn netip.Prefix) netip.Addr {
	if !sn.IsValid() {
		return netip.Addr{}
	}
	if l.Attrs.BackendType == subnet.BackendHostGW {
		return sn.Masked().Addr().Next()
	}
	return sn.Masked().Addr()
}

func clusterStatus(ctx context.Context, e *env, m subnet.Manager, addr string, timeout time.Duration, p clusterProbe, output string) error {
	lctx, cancel := context.WithTimeout(ctx, timeout)
	leases, _, err := m.ListLeases(lctx)
	cancel()
	if err != nil {
		return fmt.Errorf("list leases: %w", err)
	}
	// weftd is optional here: it tells which lease is ours and its view of
	// each peer, but the probes work without it.
	st, stErr := fetchStatus(ctx, addr, timeout)
	if stErr != nil {
		fmt.Fprintf(e.stderr, "warning: %v\n", stErr)
	}
	peerState := map[netip.Prefix]backend.PeerStatus{}
	for _, ps := range st.Peers {
		peerState[ps.Key()] = ps
	}
	// Leases weftd does not use (another backend, a bad PublicIP): shown as
	// such, and not probed, since this node has no route to them.
	for _, ig := range st.Ignored {
		peerState[ig.Subnet] = backend.PeerStatus{Subnet: ig.Subnet, PublicIP: ig.PublicIP, State: peerIgnored, Reason: ig.Reason}
	}
	rows := make([]clusterRow, len(leases))
	for i, l := range leases {
		r := clusterRow{Subnet: l.Subnet, PublicIP: l.Attrs.PublicIP, Backend: l.Attrs.BackendType, Reserved: l.Reserved(), Expiration: l.Expiration,
			IPv6Subnet: l.IPv6Subnet, PublicIPv6: l.Attrs.PublicIPv6}
		r.Self = (stErr == nil && l.Key() == cmp.Or(st.Subnet, st.IPv6Subnet)) ||
			(stErr != nil && (isLocalAddr(l.Attrs.PublicIP) || isLocalAddr(l.Attrs.PublicIPv6)))
		if ps, ok := peerState[l.Key()]; ok {
			r.WeftdState, r.WeftdReason = string(ps.State), ps.Reason
		}
		if !r.Self && r.WeftdState != string(peerIgnored) {
			r.Probe, r.Probe6 = probeTarget(l, l.Subnet), probeTarget(l, l.IPv6Subnet)
		}
		rows[i] = r
	}
	key := func(r clusterRow) netip.Addr { return cmp.Or(r.Subnet, r.IPv6Subnet).Addr() }
	sort.Slice(rows, func(i, j int) bool { return key(rows[i]).Less(key(rows[j])) })
	probeAll(ctx, rows, p)

	unreachable, ignored := 0, 0
	for _, r := range rows {
		if r.unreachable() {
			unreachable++
		}
		if r.WeftdState == string(peerIgnored) {
			ignored++
		}
	}
	if output == "json" {
		if err := writeJSONOut(e.stdout, rows); err != nil {
			return err
		}
	} else if err := writeClusterTable(e.stdout, rows, time.Now()); err != nil {
		return err
	}
	switch {
	case unreachable > ignored:
		return fmt.Errorf("%d of %d peers unreachable over the overlay: run `weftctl diagnose <pod IP>` for one of them", unreachable, len(rows)-selfCount(rows))
	case unreachable > 0:
		return fmt.Errorf("%d of %d peers unreachable: weftd ignores their leases (the WEFTD column says why); the others answer", unreachable, len(rows)-selfCount(rows))
	}
	return nil
}

func selfCount(rows []clusterRow) int {
	n := 0
	for _, r := range rows {
		if r.Self {
			n++
		}
	}
	return n
}

// probeAll probes every row's Probe and Probe6 address, at most p.workers
// at a time, each bounded by p.timeout (plus a grace for process start).
func probeAll(ctx context.Context, rows []clusterRow, p clusterProbe) {
	var g errgroup.Group
	g.SetLimit(p.workers)
	probe := func(to netip.Addr, reachable *bool, rtt, errText *string) {
		if !to.IsValid() {
			return
		}
		g.Go(func() error { // each goroutine owns one family of one row
			pctx, cancel := context.WithTimeout(ctx, p.timeout+2*time.Second)
			defer cancel()
			d, err := p.ping(pctx, to, p.timeout)
			if err != nil {
				*errText = err.Error()
				return nil
			}
			*reachable, *rtt = true, d.String()
			return nil
		})
	}
	for i := range rows {
		r := &rows[i]
		probe(r.Probe, &r.Reachable, &r.RTT, &r.Error)
		probe(r.Probe6, &r.Reachable6, &r.RTT6, &r.Error6)
	}
	_ = g.Wait() // the probes return no error; failures are in the rows
}

// writeClusterTable renders the rows; with IPv6 in any lease, the probe
// columns hold each family's result ("yes no": IPv4 answered, IPv6 not).
func writeClusterTable(w io.Writer, rows []clusterRow, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SUBNET\tPUBLIC IP\tBACKEND\tWEFTD\tPROBE\tREACHABLE\tRTT\tEXPIRES IN")
	yesNo := func(probe netip.Addr, ok bool) string {
		switch {
		case !probe.IsValid():
			return ""
		case ok:
			return "yes"
		}
		return "no"
	}
	for _, r := range rows {
		reach, probe := "no", pairOrDash(r.Probe, r.Probe6)
		switch {
		case r.Self:
			reach = "this node"
		case r.Probe6.IsValid():
			reach = strings.TrimSpace(yesNo(r.Probe, r.Reachable) + " " + yesNo(r.Probe6, r.Reachable6))
		case r.Reachable:
			reach = "yes"
		}
		rtt := dash(strings.TrimSpace(r.RTT + " " + r.RTT6))
		weftd := dash(r.WeftdState)
		if r.WeftdReason != "" {
			weftd += " (" + r.WeftdReason + ")"
		}
		expires := "never (reserved)"
		if !r.Reserved {
			expires = r.Expiration.Sub(now).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", pairOrDash(r.Subnet, r.IPv6Subnet), pairOrDash(r.PublicIP, r.PublicIPv6),
			dash(r.Backend), weftd, probe, reach, rtt, expires)
	}
	return tw.Flush()
}

// isLocalAddr reports whether a is an address of this network namespace.
func isLocalAddr(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	return slices.ContainsFunc(addrs, func(x net.Addr) bool {
		n, ok := x.(*net.IPNet)
		if !ok {
			return false
		}
		ip, ok := nl.Addr(n.IP)
		return ok && ip == a
	})
}

// ping -q prints "rtt min/avg/max/mdev = 0.051/0.051/0.051/0.000 ms".
var pingSummary = regexp.MustCompile(`= ([0-9.]+)/`)

// pingOnce sends one ICMP echo with ping(8) and returns the round trip.
// ping handles raw or unprivileged ICMP sockets as the host allows.
func pingOnce(ctx context.Context, to netip.Addr, timeout time.Duration) (time.Duration, error) {
	secs := max(1, int((timeout+time.Second-1)/time.Second))
	out, err := exec.CommandContext(ctx, "ping", "-n", "-q", "-c", "1", "-W", strconv.Itoa(secs), to.String()).CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			return 0, fmt.Errorf("no reply within %s", timeout)
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 1 {
			return 0, fmt.Errorf("no reply within %s", timeout)
		}
		return 0, fmt.Errorf("ping %s: %v: %s", to, err, strings.TrimSpace(string(out)))
	}
	if m := pingSummary.FindSubmatch(out); m != nil {
		return parseMillis(string(m[1])), nil
	}
	return 0, nil
}

func parseMillis(s string) time.Duration {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0
	}
	return time.Duration(f * float64(time.Millisecond)).Round(time.Microsecond)
}
