package diagnose

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// WriteText writes r as a checklist: a summary line, one line per check
// with ✓, ✗ or !, what was found when it is not what should be, and "fix:"
// for what to do.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	var sn netip.Prefix
	var node netip.Addr
	if o := r.Owner; o != nil {
		sn, node = o.Subnet, o.PublicIP
		if r.IP.Is6() {
			sn = o.IPv6Subnet
		}
		if !node.IsValid() {
			node = o.PublicIPv6 // an IPv6-only network
		}
	}
	switch {
	case r.Owner == nil:
		fmt.Fprintf(&b, "%s: no node owns this address\n", r.IP)
	case r.Local:
		fmt.Fprintf(&b, "%s: a pod of THIS node (subnet %s); it hangs off the local bridge\n", r.IP, sn)
	default:
		fmt.Fprintf(&b, "%s: a pod of node %s (subnet %s, backend %s)\n", r.IP, node, sn, dash(r.Owner.Backend))
	}
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "  %s %s", c.Result.Symbol(), c.What)
		if c.Found != "" {
			fmt.Fprintf(&b, "  [%s]", c.Found)
		}
		b.WriteByte('\n')
		if c.Result != OK && c.Fix != "" {
			fmt.Fprintf(&b, "      fix: %s\n", c.Fix)
		}
	}
	switch n := r.Problems(); {
	case n == 1:
		b.WriteString("1 problem found.\n")
	case n > 1:
		fmt.Fprintf(&b, "%d problems found.\n", n)
	default:
		b.WriteString("No problem found on this node. If packets still do not arrive, look between the nodes: firewall (UDP 8472 vxlan, 8285 udp), MTU, checksum offload; run `weftctl diagnose` on the other node too. See Documentation/troubleshooting.md.\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
