package daemon

import (
	"net/netip"
	"slices"

	"github.com/weftnet/weft/backend"
)

// IgnoredLease is a lease in the store this node does not use as a peer,
// with backend.CheckPeer's reason: a lease of another backend (a Flannel
// node on ipip, ipsec, extension or a cloud backend weft does not have, or
// one of weft's own backends this network does not run), an unusable
// PublicIP, a subnet outside the network. /status lists them (at most
// maxIgnored) and `weftctl status --cluster` shows them.
type IgnoredLease struct {
	Subnet      netip.Prefix `json:"subnet"`
	PublicIP    netip.Addr   `json:"publicIP,omitzero"`
	BackendType string       `json:"backendType"`
	Reason      string       `json:"reason"`
}

// publishIgnored puts the generation's ignored leases into the status, as
// the reconcile loop sees them after a batch. The slice is replaced, never
// changed, so readers of a Status snapshot share it safely.
func (g *generation) publishIgnored() {
	g.d.mu.Lock()
	shown := len(g.d.status.Ignored)
	g.d.mu.Unlock()
	if len(g.ignored) == 0 && shown == 0 {
		return
	}
	out := make([]IgnoredLease, 0, len(g.ignored))
	for sn, why := range g.ignored {
		l := g.others[sn]
		out = append(out, IgnoredLease{Subnet: sn, PublicIP: l.Attrs.PublicIP, BackendType: l.Attrs.BackendType, Reason: why})
	}
	slices.SortFunc(out, func(a, b IgnoredLease) int { return backend.ComparePrefix(a.Subnet, b.Subnet) })
	g.d.mu.Lock()
	g.d.status.Ignored = out
	g.d.mu.Unlock()
}
