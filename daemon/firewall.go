package daemon

import (
	"context"
	"fmt"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/daemon/masq"
	"github.com/weftnet/weft/subnet"
)

// masqKind is the firewall API for cfg: --masq-backend when it names one,
// else what the network config's EnableNFTables says (Flannel's switch:
// false is iptables), else nftables.
func (d *Daemon) masqKind(cfg *subnet.Config) string {
	switch {
	case d.cfg.MasqBackend != MasqAuto:
		return d.cfg.MasqBackend
	case cfg.EnableNFTables != nil && !*cfg.EnableNFTables:
		return MasqIPTables
	default:
		return MasqNFTables
	}
}

// masqFor returns the firewall Manager for a generation of cfg (nil: none).
// With Deps.Masq that one always; with Deps.NewMasq one per kind, made when
// first needed. When the kind changes (EnableNFTables flipped), or at the
// first generation, the rules of the other kind are removed, so a node never
// keeps both. A kind that cannot be made is an error when weft has rules to
// install (--ip-masq, --forward-rules): running without them would silently
// break pod traffic. Called from the generation goroutine, before it starts
// the reconcile loop.
func (d *Daemon) masqFor(ctx context.Context, cfg *subnet.Config) (masq.Manager, error) {
	if d.deps.Masq != nil || d.deps.NewMasq == nil {
		return d.deps.Masq, nil
	}
	kind := d.masqKind(cfg)
	m, err := d.masqManager(kind)
	if err != nil {
		if d.cfg.IPMasq || d.cfg.ForwardRules {
			return nil, fmt.Errorf("firewall API %s (for --ip-masq/--forward-rules): %w; choose the other with --masq-backend", kind, err)
		}
		m = nil
	}
	if kind != d.masqInUse {
		other := MasqIPTables
		if kind == MasqIPTables {
			other = MasqNFTables
		}
		if d.masqInUse != "" {
			d.log.Info("firewall API changed with the network config; moving weft's rules", "from", d.masqInUse, "to", kind)
		}
		// The other API may well be missing (no iptables binaries): then
		// it holds no rules of weft's either.
		if o, err := d.masqManager(other); err != nil {
			d.log.Debug("firewall API not in use is unavailable", "api", other, "err", err)
		} else if err := o.Remove(ctx); err != nil {
			d.log.Warn("cannot remove weft's rules of the firewall API not in use", "api", other, "err", err)
		}
		d.masqInUse = kind
	}
	return m, nil
}

// masqManager makes (once) and returns the Manager of kind, or the error
// making it gave (kept too, so it is tried once).
func (d *Daemon) masqManager(kind string) (masq.Manager, error) {
	if d.masqs == nil {
		d.masqs = map[string]masqMade{}
	}
	if m, ok := d.masqs[kind]; ok {
		return m.m, m.err
	}
	m, err := d.deps.NewMasq(kind)
	d.masqs[kind] = masqMade{m, err}
	return m, err
}

// masqMade is what Deps.NewMasq gave for one kind.
type masqMade struct {
	m   masq.Manager
	err error
}

// masqRules is what weft's firewall holds for own in this generation.
func (g *generation) masqRules(own subnet.Lease) masq.Rules {
	d := g.d
	rules := masq.Rules{Masquerade: d.cfg.IPMasq, DisableRandomFully: d.cfg.MasqFullyRandomDisable}
	if g.cfg.EnableIPv4 && own.Subnet.IsValid() {
		rules.Network, rules.Subnet = g.cfg.Network, own.Subnet
	}
	if t, ok := g.be.(backend.Tunneled); ok {
		rules.TunnelPorts = []uint16{t.TunnelPort()}
	}
	if g.cfg.EnableIPv6 && own.IPv6Subnet.IsValid() {
		rules.IPv6Network, rules.IPv6Subnet = g.cfg.IPv6Network, own.IPv6Subnet
	}
	return rules
}

// checkFirewall restores weft's firewall rules when Verify finds them gone
// (an operator's flush, a firewalld reload): Ensure again, and the peer
// filter on the next update. Runs on the reconcile goroutine, every
// Config.FirewallResync.
func (g *generation) checkFirewall(ctx context.Context) {
	if g.masq == nil || !g.rulesSet {
		return
	}
	ok, err := g.masq.Verify(ctx, g.rules)
	if err != nil {
		g.d.metrics.reconcileErrors.WithLabelValues("firewall").Inc()
		if err.Error() != g.firewallErr {
			g.d.log.Warn("cannot check weft's firewall rules; retrying", "err", err)
		}
		g.firewallErr = err.Error()
		return
	}
	g.firewallErr = ""
	if ok {
		return
	}
	g.d.log.Warn("weft's firewall rules were removed or changed outside weft; restoring them")
	if err := g.masq.Ensure(ctx, g.rules); err != nil {
		g.d.metrics.reconcileErrors.WithLabelValues("firewall").Inc()
		g.d.log.Warn("cannot restore weft's firewall rules; retrying", "err", err)
		return
	}
	g.d.metrics.firewallRestores.Inc()
	g.filter = peerFilterState{}
	if g.synced { // the peer set is known: put the peer filter back now
		g.updatePeerFilter(ctx, false)
	}
}
