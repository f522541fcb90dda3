package daemon

import (
	"cmp"
	"context"
	"maps"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/daemon/masq"
	"github.com/weftnet/weft/subnet"
)

// peerFilterState is what the peer filter was last set to.
type peerFilterState struct {
	installed bool // EnsurePeerFilter succeeded with peers below
	removed   bool // RemovePeerFilter succeeded (the backend has it off)
	peers     []masq.FilterPeer
}

// updatePeerFilter keeps the firewall filter of a PeerFiltered backend (vxlan)
// in step with the peer set. With grow it only adds: it runs so before the
// backend programs a change, so a new peer's packets are let in by the time
// routes point at it, and once more without grow after it, so removing a
// gone peer's entries (the slower change) does not delay its routes' going.
// Backends that do not filter leave the firewall alone.
func (g *generation) updatePeerFilter(ctx context.Context, grow bool) {
	f, ok := g.be.(backend.PeerFiltered)
	if !ok {
		return
	}
	pf, ok := g.masq.(masq.PeerFilter)
	if !ok {
		if !g.filter.removed {
			g.filter.removed = true // say it once
			g.d.log.Warn("the VXLAN peer filter needs the nftables firewall API (--masq-backend=nftables, or auto without EnableNFTables false); VXLAN is accepted from anyone")
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
	peers := filterPeers(g.peers)
	if grow && g.filter.installed {
		peers = unionFilterPeers(peers, g.filter.peers)
	}
	if g.filter.installed && slices.EqualFunc(peers, g.filter.peers, sameFilterPeer) {
		return
	}
	if err := pf.EnsurePeerFilter(ctx, port, peers); err != nil {
		g.d.metrics.reconcileErrors.WithLabelValues("peer-filter").Inc()
		g.d.log.Warn("cannot update the VXLAN peer filter; retrying on the next pass", "err", err)
		return
	}
	g.filter = peerFilterState{installed: true, peers: peers}
}

// filterPeers is the peer set as the filter takes it, sorted: per underlay
// address (PublicIP, and PublicIPv6 for the IPv6 device's traffic) the inner
// sources its VXLAN traffic may carry, which are its pod subnet of that
// family and its own address (its host answering our pods keeps that
// source). A family the lease lacks adds nothing.
func filterPeers(peers map[netip.Prefix]subnet.Lease) []masq.FilterPeer {
	by := map[netip.Addr][]netip.Prefix{}
	add := func(a netip.Addr, sn netip.Prefix) {
		if !a.IsValid() || a.IsUnspecified() || !sn.IsValid() {
			return
		}
		if _, ok := by[a]; !ok {
			by[a] = []netip.Prefix{netip.PrefixFrom(a, a.BitLen())}
		}
		by[a] = append(by[a], sn.Masked())
	}
	for _, l := range peers {
		add(l.Attrs.PublicIP.Unmap(), l.Subnet)
		add(l.Attrs.PublicIPv6, l.IPv6Subnet)
	}
	out := make([]masq.FilterPeer, 0, len(by))
	for _, a := range slices.SortedFunc(maps.Keys(by), netip.Addr.Compare) {
		src := by[a]
		slices.SortFunc(src, func(x, y netip.Prefix) int {
			return cmp.Or(x.Addr().Compare(y.Addr()), cmp.Compare(x.Bits(), y.Bits()))
		})
		out = append(out, masq.FilterPeer{Addr: a, Sources: slices.Compact(src)})
	}
	return out
}

func sameFilterPeer(a, b masq.FilterPeer) bool {
	return a.Addr == b.Addr && slices.Equal(a.Sources, b.Sources)
}

// unionFilterPeers merges two sorted filter peer lists (filterPeers's
// order): every address of either, with the sources of both.
func unionFilterPeers(a, b []masq.FilterPeer) []masq.FilterPeer {
	out := make([]masq.FilterPeer, 0, max(len(a), len(b)))
	for len(a) > 0 || len(b) > 0 {
		switch {
		case len(b) == 0 || (len(a) > 0 && a[0].Addr.Less(b[0].Addr)):
			out, a = append(out, a[0]), a[1:]
		case len(a) == 0 || b[0].Addr.Less(a[0].Addr):
			out, b = append(out, b[0]), b[1:]
		default:
			src := slices.SortedFunc(slices.Values(append(slices.Clone(a[0].Sources), b[0].Sources...)), backend.ComparePrefix)
			out = append(out, masq.FilterPeer{Addr: a[0].Addr, Sources: slices.Compact(src)})
			a, b = a[1:], b[1:]
		}
	}
	return out
}
