package daemon

import (
	"net/netip"

	"golang.org/x/sys/unix"
)

// Blackholes keeps weft's unreachable routes (nl.Handle is the kernel's).
type Blackholes interface {
	// EnsureUnreachable makes weft's unreachable routes of family exactly
	// dsts and reports whether it changed anything.
	EnsureUnreachable(family int, dsts []netip.Prefix) (bool, error)
}

// ensureBlackholes keeps an unreachable route for each pod network of the
// generation (--ip-blackhole-route), or none: traffic to a pod subnet no
// peer holds (yet, or any more) is answered "unreachable" here instead of
// leaking out of the default route with a pod address. Peer routes and the
// udp backend's device route are preferred over it (see nl.UnreachableMetric).
// Failures are logged once per distinct error and retried on the next pass.
func (g *generation) ensureBlackholes() {
	b := g.d.deps.Blackholes
	if b == nil {
		return
	}
	var v4, v6 []netip.Prefix
	if g.d.cfg.BlackholeRoute {
		if g.cfg.EnableIPv4 && g.cfg.Network.IsValid() {
			v4 = append(v4, g.cfg.Network)
		}
		if g.cfg.EnableIPv6 && g.cfg.IPv6Network.IsValid() {
			v6 = append(v6, g.cfg.IPv6Network)
		}
	}
	msg := ""
	for _, f := range []struct {
		fam  int
		dsts []netip.Prefix
	}{{unix.AF_INET, v4}, {unix.AF_INET6, v6}} {
		changed, err := b.EnsureUnreachable(f.fam, f.dsts)
		if err != nil {
			msg = err.Error()
			g.d.metrics.reconcileErrors.WithLabelValues("blackhole").Inc()
			continue
		}
		if changed {
			g.d.log.Info("unreachable routes for the pod network set", "routes", f.dsts)
		}
	}
	if msg != "" && msg != g.blackholeErr {
		g.d.log.Warn("cannot set the unreachable route for the pod network; retrying on the next pass", "err", msg)
	}
	g.blackholeErr = msg
}
