package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"time"

	"github.com/weftnet/weft/backend/udp"
	"github.com/weftnet/weft/backend/vxlan"
	"github.com/weftnet/weft/daemon"
	"github.com/weftnet/weft/internal/diagnose"
	"github.com/weftnet/weft/subnet"
)

// errProblems is returned when a diagnosis found problems (exit 1), after
// the report is printed.
var errProblems = errors.New("problems found")

// runDiagnose: `diagnose POD_IP` explains what this node needs to reach
// POD_IP and whether the kernel has it. It reads the kernel of the network
// namespace weftctl runs in, which must be the node's (where weftd runs).
func runDiagnose(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("diagnose", flag.ContinueOnError)
	sf := addStoreFlags(fs)
	addr := fs.String("weftd-addr", daemon.DefaultHealthzAddr, "weftd's HTTP address (its --healthz-addr)")
	output := fs.String("o", "text", "output format: text or json")
	subnetFile := fs.String("subnet-file", subnet.DefaultFilePath, "weftd's subnet file, read for this node's subnet when weftd does not answer")
	bridge := fs.String("cni-bridge", daemon.DefaultCNIBridge, "the CNI bridge local pods are attached to (weftd's --cni-bridge)")
	var ip netip.Addr
	parse := func(rest []string) (err error) {
		if *output != "text" && *output != "json" {
			return fmt.Errorf("%w: -o %q: use text or json", errUsage, *output)
		}
		if len(rest) != 1 {
			return fmt.Errorf("%w: give one POD_IP", errUsage)
		}
		if ip, err = netip.ParseAddr(rest[0]); err != nil {
			return fmt.Errorf("%w: %q is not an IP address", errUsage, rest[0])
		}
		return nil
	}
	return withStore(ctx, e, fs, sf, args, parse, func(ctx context.Context, m subnet.Manager) error {
		q, err := buildQuery(ctx, e, m, ip, *addr, *subnetFile, *bridge, sf.timeout)
		if err != nil {
			return err
		}
		r := diagnose.Diagnose(diagnose.NewNetlink(), q)
		if *output == "json" {
			err = writeJSONOut(e.stdout, r)
		} else {
			err = r.WriteText(e.stdout)
		}
		if err != nil {
			return err
		}
		if n := r.Problems(); n > 0 {
			return fmt.Errorf("%w: %d on this node for %s (each ✗ above says what to do)", errProblems, n, ip)
		}
		return nil
	})
}

// buildQuery gathers what the diagnosis needs: the network config and
// leases from etcd, and this node's subnet and peer states from weftd (or
// its subnet file when weftd does not answer).
func buildQuery(ctx context.Context, e *env, m subnet.Manager, ip netip.Addr, addr, subnetFile, bridge string, timeout time.Duration) (diagnose.Query, error) {
	q := diagnose.Query{IP: ip, Now: time.Now(), Node: diagnose.Node{Bridge: bridge, UDPDevice: udp.DeviceName}}
	cfg, err := m.GetNetworkConfig(ctx)
	switch {
	case errors.Is(err, subnet.ErrNoConfig):
		fmt.Fprintln(e.stderr, "warning: no network config in etcd: set one with `weftctl config set FILE`")
	case err != nil:
		return q, fmt.Errorf("read network config: %w", err)
	default:
		q.Config = cfg
		q.Node.Backend = cfg.BackendType
		if cfg.BackendType == subnet.BackendVXLAN {
			opts, err := vxlan.ParseOptions(cfg.Backend)
			if err != nil {
				return q, err
			}
			q.Node.VXLANDevice = vxlan.DeviceName(opts.VNI)
			q.Node.VXLANDevice6 = vxlan.DeviceName6(opts.VNI)
			q.Node.DirectRouting = opts.DirectRouting
		}
	}
	if q.Leases, _, err = m.ListLeases(ctx); err != nil {
		return q, fmt.Errorf("list leases: %w", err)
	}
	st, err := fetchStatus(ctx, addr, timeout)
	if err != nil {
		q.Node.PeersErr = err.Error()
		if f, ferr := subnet.ReadFile(subnetFile); ferr == nil {
			q.Node.Subnet = f.Subnet.Masked()
			if f.IPv6Subnet.IsValid() {
				q.Node.IPv6Subnet = f.IPv6Subnet.Masked()
			}
		} else {
			q.Node.PeersErr += fmt.Sprintf("; subnet file: %v", ferr)
		}
		return q, nil
	}
	q.Node.Subnet, q.Node.IPv6Subnet = st.Subnet, st.IPv6Subnet
	if st.Backend != "" {
		q.Node.Backend = st.Backend
	}
	q.Node.Peers = make(map[netip.Prefix]diagnose.PeerState, len(st.Peers))
	for _, p := range st.Peers {
		q.Node.Peers[p.Key()] = diagnose.PeerState{State: string(p.State), Reason: p.Reason}
	}
	return q, nil
}
