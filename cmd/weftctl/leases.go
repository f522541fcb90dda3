package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/weftnet/weft/subnet"
)

// leaseView is one row of `weftctl leases`, also its JSON form.
type leaseView struct {
	Subnet      netip.Prefix    `json:"subnet"`
	IPv6Subnet  netip.Prefix    `json:"ipv6Subnet,omitzero"`
	PublicIP    netip.Addr      `json:"publicIP"`
	Backend     string          `json:"backend"`
	VtepMAC     string          `json:"vtepMAC,omitempty"`
	Reserved    bool            `json:"reserved"`
	Expiration  time.Time       `json:"expiration,omitzero"`
	BackendData json.RawMessage `json:"backendData,omitempty"`
	// BackendV6Data is the IPv6 half's (Flannel's BackendV6Data: the
	// VtepMAC of the IPv6 VXLAN device, the IPv6 wireguard device's key).
	BackendV6Data json.RawMessage `json:"backendV6Data,omitempty"`
}

func runLeases(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("leases", flag.ContinueOnError)
	sf := addStoreFlags(fs)
	output := fs.String("o", "table", "output format: table or json")
	return withStore(ctx, e, fs, sf, args, noArgs, func(ctx context.Context, m subnet.Manager) error {
		leases, _, err := m.ListLeases(ctx)
		if err != nil {
			return err
		}
		rows := make([]leaseView, 0, len(leases))
		for _, l := range leases {
			v := leaseView{Subnet: l.Subnet, IPv6Subnet: l.IPv6Subnet, PublicIP: l.Attrs.PublicIP, Backend: l.Attrs.BackendType,
				Reserved: l.Reserved(), Expiration: l.Expiration, BackendData: l.Attrs.BackendData, BackendV6Data: l.Attrs.BackendV6Data}
			var vx struct{ VtepMAC string }
			if json.Unmarshal(l.Attrs.BackendData, &vx) == nil {
				v.VtepMAC = vx.VtepMAC
			}
			rows = append(rows, v)
		}
		sort.Slice(rows, func(i, j int) bool { return rows[i].Subnet.Addr().Less(rows[j].Subnet.Addr()) })
		switch *output {
		case "json":
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(rows)
		case "table":
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "SUBNET\tPUBLIC IP\tBACKEND\tVTEP MAC\tEXPIRES IN")
			for _, r := range rows {
				expires := "never (reserved)"
				if !r.Reserved {
					expires = time.Until(r.Expiration).Round(time.Second).String()
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.Subnet, r.PublicIP, dash(r.Backend), dash(r.VtepMAC), expires)
			}
			return w.Flush()
		}
		return fmt.Errorf("%w: -o %q: use table or json", errUsage, *output)
	})
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// runLease: `lease release SUBNET`.
func runLease(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || args[0] != "release" {
		return fmt.Errorf("%w: say release SUBNET", errUsage)
	}
	fs := flag.NewFlagSet("lease release", flag.ContinueOnError)
	sf := addStoreFlags(fs)
	var sn netip.Prefix
	parse := func(rest []string) (err error) {
		if len(rest) != 1 {
			return fmt.Errorf("%w: give one SUBNET, e.g. 10.244.3.0/24", errUsage)
		}
		sn, err = parseSubnet(rest[0])
		return err
	}
	return withStore(ctx, e, fs, sf, args[1:], parse, func(ctx context.Context, m subnet.Manager) error {
		if err := m.ReleaseLease(ctx, sn); err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "released %s\n", sn)
		return nil
	})
}

// runReserve: `reserve SUBNET PUBLICIP`.
func runReserve(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("reserve", flag.ContinueOnError)
	sf := addStoreFlags(fs)
	var sn netip.Prefix
	var ip netip.Addr
	parse := func(rest []string) (err error) {
		if len(rest) != 2 {
			return fmt.Errorf("%w: give SUBNET and PUBLICIP", errUsage)
		}
		if sn, err = parseSubnet(rest[0]); err != nil {
			return err
		}
		if ip, err = netip.ParseAddr(rest[1]); err != nil {
			return fmt.Errorf("public IP %q: %w", rest[1], err)
		}
		return nil
	}
	return withStore(ctx, e, fs, sf, args, parse, func(ctx context.Context, m subnet.Manager) error {
		if err := m.ReserveSubnet(ctx, sn, ip); err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "reserved %s for %s; it never expires (release it with `weftctl lease release %s`)\n", sn, ip, sn)
		return nil
	})
}

// parseSubnet accepts 10.244.3.0/24 and Flannel's key form 10.244.3.0-24.
func parseSubnet(s string) (netip.Prefix, error) {
	if sn, _, err := subnet.ParseKeyName(s); err == nil {
		return sn, nil
	}
	sn, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("subnet %q: want a CIDR such as 10.244.3.0/24", s)
	}
	if sn != sn.Masked() {
		return netip.Prefix{}, fmt.Errorf("subnet %s has host bits set: did you mean %s?", s, sn.Masked())
	}
	return sn, nil
}
