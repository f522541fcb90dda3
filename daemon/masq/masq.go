package masq

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
)

// Rules is the desired masquerade and forwarding state of one node.
type Rules struct {
	// Network is the whole IPv4 pod network (e.g. 10.244.0.0/16); zero,
	// with Subnet, for an IPv6-only network.
	Network netip.Prefix
	// Subnet is this node's IPv4 subnet inside Network (e.g. 10.244.3.0/24).
	Subnet netip.Prefix
	// IPv6Network and IPv6Subnet are the IPv6 pair; both or neither.
	IPv6Network netip.Prefix
	IPv6Subnet  netip.Prefix
	// Masquerade installs the NAT rules (--ip-masq). Without it only the
	// forwarding rules are installed and weft's NAT chain is removed.
	Masquerade bool
	// DisableRandomFully turns off fully random source-port allocation for
	// masqueraded connections. The zero value (random-fully on) is what
	// avoids the conntrack SNAT port races behind dropped SYNs.
	DisableRandomFully bool
	// TunnelPorts are the UDP ports the overlay uses on every node (vxlan
	// 8472, udp 8285): forwarded traffic from the pod network to them is
	// dropped and counted, so a pod cannot have a crafted tunnel packet
	// leave with this node's address.
	TunnelPorts []uint16
}

// Manager installs weft's masquerade and forwarding rules.
//
// Calls act on the network namespace of the calling thread (see Options.NetNS
// for the nftables implementation); implementations are safe for concurrent
// use.
type Manager interface {
	// Ensure makes weft's table/chains hold exactly the rules for r. It is
	// idempotent: calling it again, from a new Manager after a restart too,
	// adds nothing. A changed r replaces the old rules in one atomic step;
	// old rules are never left beside new ones. Rules outside weft's own
	// table/chains are never touched (iptables: except the one jump rule per
	// hooked chain).
	Ensure(ctx context.Context, r Rules) error
	// Remove deletes everything weft installed (nftables: the whole table,
	// including the peer filter). Nothing installed is success.
	Remove(ctx context.Context) error
	// Verify reports whether what Ensure(r) installs, and the peer filter
	// this Manager installed if any, is still in place as far as a cheap
	// look tells (weft's table or chains, the jumps to them, the number of
	// rules): false after a firewall reload or an operator's flush. It
	// changes nothing.
	Verify(ctx context.Context, r Rules) (bool, error)
}

// PeerFilter accepts VXLAN datagrams only from current peers, carrying
// inner packets only from what each peer may send.
type PeerFilter interface {
	// EnsurePeerFilter makes UDP to port accepted only from the given peer
	// addresses and dropped from anyone else; where the kernel allows, a
	// datagram from a peer is accepted only when it carries a packet of
	// the datagram's family (IPv4 in IPv4, IPv6 in IPv6) whose source is
	// in that peer's Sources. peers is the complete
	// set (not a delta); it replaces the previous set atomically. The
	// caller keeps ownership of the slice.
	EnsurePeerFilter(ctx context.Context, port uint16, peers []FilterPeer) error
	// RemovePeerFilter removes the filter; nothing installed is success.
	RemovePeerFilter(ctx context.Context) error
}

// PeerFilterUpdater is a PeerFilter that also takes a change of peers, so
// a batch of events costs its own size, not the peer count's, in the
// daemon and in the kernel.
type PeerFilterUpdater interface {
	PeerFilter
	// UpdatePeerFilter changes the filter EnsurePeerFilter last installed
	// on port: each address of changed gets exactly that peer's Sources (a
	// new address is added), each address of removed goes. It returns an
	// error wrapping ErrPeerFilterUnknown when it does not know that
	// filter as installed (none, another port, a table changed behind its
	// back) or when a full EnsurePeerFilter is the cheaper change: the
	// caller then passes the whole set to EnsurePeerFilter. The caller
	// keeps ownership of the slices.
	UpdatePeerFilter(ctx context.Context, port uint16, changed []FilterPeer, removed []netip.Addr) error
}

// ErrPeerFilterUnknown is wrapped by UpdatePeerFilter's refusals that a
// full EnsurePeerFilter resolves.
var ErrPeerFilterUnknown = errors.New("the installed peer filter is unknown; pass the whole set")

// FilterPeer is one peer of the PeerFilter.
type FilterPeer struct {
	// Addr is the peer's underlay address (its PublicIP or PublicIPv6).
	Addr netip.Addr
	// Sources are the prefixes the source of an inner packet from this
	// peer must be in: its pod subnet of Addr's family, and Addr itself
	// (replies from its host network to our pods keep it as source).
	// Prefixes of the other family are ignored: they cannot match.
	Sources []netip.Prefix
}

// ErrInvalidRules is wrapped by errors about a Rules value that cannot be
// installed.
var ErrInvalidRules = errors.New("invalid masquerade rules")

// KubeProxyMark is the packet mark kube-proxy sets on traffic it will
// masquerade itself (KUBE-MARK-MASQ); weft leaves such packets alone so they
// are not NATed twice.
const KubeProxyMark = 0x4000

// Validate checks r: each pair (Network and Subnet IPv4, IPv6Network and
// IPv6Subnet IPv6) either both unset or both set with the subnet inside the
// network, and at least one pair set.
func (r Rules) Validate() error {
	for _, p := range r.TunnelPorts {
		if p == 0 {
			return fmt.Errorf("%w: tunnel port 0", ErrInvalidRules)
		}
	}
	if !r.has4() && !r.has6() {
		return fmt.Errorf("%w: neither an IPv4 nor an IPv6 network", ErrInvalidRules)
	}
	if r.has4() {
		if err := checkPair(r.Network, r.Subnet, false); err != nil {
			return err
		}
	}
	if r.has6() {
		return checkPair(r.IPv6Network, r.IPv6Subnet, true)
	}
	return nil
}

// networks names the pod networks of r, for messages.
func (r Rules) networks() string {
	switch {
	case r.has4() && r.has6():
		return r.Network.String() + " and " + r.IPv6Network.String()
	case r.has6():
		return r.IPv6Network.String()
	}
	return r.Network.String()
}

func (r Rules) has4() bool { return r.Network.IsValid() || r.Subnet.IsValid() }
func (r Rules) has6() bool { return r.IPv6Network.IsValid() || r.IPv6Subnet.IsValid() }

func checkPair(network, subnet netip.Prefix, v6 bool) error {
	fam := "IPv4"
	if v6 {
		fam = "IPv6"
	}
	if !network.IsValid() || !subnet.IsValid() {
		return fmt.Errorf("%w: %s network %q and subnet %q must both be set", ErrInvalidRules, fam, network, subnet)
	}
	if network.Addr().Is6() != v6 || subnet.Addr().Is6() != v6 || network.Addr().Is4In6() || subnet.Addr().Is4In6() {
		return fmt.Errorf("%w: network %s and subnet %s must be %s", ErrInvalidRules, network, subnet, fam)
	}
	if network.Bits() == 0 {
		return fmt.Errorf("%w: network %s covers every address; nothing would ever be masqueraded", ErrInvalidRules, network)
	}
	if subnet.Bits() < network.Bits() || !network.Contains(subnet.Addr()) {
		return fmt.Errorf("%w: subnet %s is not inside network %s", ErrInvalidRules, subnet, network)
	}
	return nil
}
