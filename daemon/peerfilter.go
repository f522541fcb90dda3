package daemon

import (
	"context"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/daemon/masq"
)

// peerFilterState is what the peer filter was last set to.
type peerFilterState struct {
	installed bool // EnsurePeerFilter succeeded with peers below
	removed   bool // RemovePeerFilter succeeded (the backend has it off)
	peers     []netip.Addr
}

// updatePeerFilter keeps the firewall filter of a PeerFiltered backend (vxlan)
// in step with the peer set. It runs before the backend programs a change, so
// a new peer's packets are let in by the time routes point at it. Backends
// that do not filter leave the firewall alone.
func (g *generation) updatePeerFilter(ctx context.Context) {
	f, ok := g.be.(backend.PeerFiltered)
	if !ok {
		return
	}
	pf, ok := g.d.deps.Masq.(masq.PeerFilter)
	if !ok {
		if !g.filter.removed {
			g.filter.removed = true // say it once
			g.d.log.Warn("the VXLAN peer filter needs --masq-backend=nftables; VXLAN is accepted from anyone")
		}
		return
	}
	port, on := f.FilterPort()
	if !on {
		if !g.filter.removed {
			if err := pf.RemovePeerFilter(ctx); err != nil {
				g.d.log.Warn("cannot remove the peer filter; retrying on the next pass", "err", err)
				return
			}
			g.filter = peerFilterState{removed: true}
		}
		return
	}
	peers := make([]netip.Addr, 0, len(g.peers))
	for _, l := range g.peers {
		peers = append(peers, l.Attrs.PublicIP)
	}
	slices.SortFunc(peers, netip.Addr.Compare)
	peers = slices.Compact(peers)
	if g.filter.installed && slices.Equal(peers, g.filter.peers) {
		return
	}
	if err := pf.EnsurePeerFilter(ctx, port, peers); err != nil {
		g.d.metrics.reconcileErrors.WithLabelValues("peer-filter").Inc()
		g.d.log.Warn("cannot update the VXLAN peer filter; retrying on the next pass", "err", err)
		return
	}
	g.filter = peerFilterState{installed: true, peers: peers}
}
