package daemon

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/internal/nl"
	"github.com/weftnet/weft/subnet"
)

// errUnderlayOverlap marks a network config whose pod network overlaps this
// node's underlay: refused like an invalid config, so the node keeps its
// current state and says so once.
var errUnderlayOverlap = errors.New("the pod network overlaps this node's underlay")

// checkUnderlay refuses cfg when a pod network contains this node's
// PublicIP or overlaps a prefix directly connected to its underlay link:
// routes to peer subnets inside it would take the node's own traffic (a
// Network of 10.0.0.0/8 over nodes on 10.0.1.0/24 cut a node off).
func (d *Daemon) checkUnderlay(cfg *subnet.Config, u backend.Underlay) error {
	var nets []netip.Prefix
	if cfg.EnableIPv4 && cfg.Network.IsValid() {
		nets = append(nets, cfg.Network)
	}
	if cfg.EnableIPv6 && cfg.IPv6Network.IsValid() {
		nets = append(nets, cfg.IPv6Network)
	}
	for _, n := range nets {
		for _, ip := range []struct {
			name string
			a    netip.Addr
		}{{"PublicIP", u.PublicIP.Unmap()}, {"PublicIPv6", u.PublicIPv6}} {
			if ip.a.IsValid() && n.Contains(ip.a) {
				return fmt.Errorf("%w: %s contains this node's %s %s; choose a pod network outside the underlay", errUnderlayOverlap, n, ip.name, ip.a)
			}
		}
	}
	connected, err := d.connectedPrefixes(u)
	if err != nil {
		d.log.Debug("cannot list the underlay's connected prefixes; checking the pod network against PublicIP only", "err", err)
	}
	for _, n := range nets {
		for _, p := range connected {
			if n.Overlaps(p) {
				return fmt.Errorf("%w: %s overlaps %s, directly connected to %s: routes to pod subnets in it would take over the node's own traffic; choose a pod network outside the underlay",
					errUnderlayOverlap, n, p, u.Link)
			}
		}
	}
	return nil
}

// connectedPrefixes lists the prefixes directly connected to the underlay
// (both families), from Deps.Connected when set; nil when neither it nor a
// kernel link is known (Deps.Underlay given alone, as in tests).
func (d *Daemon) connectedPrefixes(u backend.Underlay) ([]netip.Prefix, error) {
	if d.deps.Connected != nil {
		return d.deps.Connected(u)
	}
	if d.deps.Underlay != nil {
		return nil, nil
	}
	return kernelConnected(u)
}

// kernelConnected reads the underlay's connected prefixes from the kernel,
// in the calling thread's network namespace.
func kernelConnected(u backend.Underlay) ([]netip.Prefix, error) {
	h := nl.New(nil)
	link, err := h.Netlink().LinkByIndex(u.Index)
	if err != nil {
		return nil, fmt.Errorf("underlay link %s: %w", u.Link, err)
	}
	var out []netip.Prefix
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		ps, err := h.ConnectedPrefixes(link, fam)
		if err != nil {
			return out, err
		}
		for _, p := range ps {
			if !p.Addr().IsLinkLocalUnicast() { // fe80::/64 is on every link
				out = append(out, p)
			}
		}
	}
	return out, nil
}
