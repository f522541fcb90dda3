package backend

import (
	"cmp"
	"fmt"
	"net/netip"

	"github.com/weftnet/weft/subnet"
)

// This file is the one place that decides whether a lease is a usable peer.
// The daemon filters the watch with it and every backend runs it again on
// what it is given, so a backend used on its own (tests, tools) refuses the
// same leases. Checks that only one backend can make (vxlan's BackendData,
// host-gw's directly connected underlay) run after it, in that backend.
//
// The rules are written once, over a family's view of the lease (its subnet,
// its underlay address, the network and this node's values of that family),
// so IPv6 is the same rules applied to the IPv6 half of the lease, not a copy.
// A family's pod traffic normally crosses the underlay address of the same
// family (Flannel's way: the IPv6 subnet is reached at PublicIPv6); a backend
// that carries it over the other family's underlay (udp's IPv6 pods in IPv4
// datagrams) says so in PeerNode, and the underlay rules then apply to that
// address.

// Family is an address family of the pod network.
type Family int

const (
	// IPv4 is the lease's Subnet carried over its PublicIP.
	IPv4 Family = 4
	// IPv6 is the lease's IPv6Subnet carried over its PublicIPv6.
	IPv6 Family = 6
)

func (f Family) String() string { return fmt.Sprintf("IPv%d", int(f)) }

// PeerNode is the node-side input of CheckPeer: what a lease is judged
// against.
type PeerNode struct {
	// Config is the network config in force. With none, no lease is usable.
	Config *subnet.Config
	// Own is this node's lease; zero before the node holds one.
	Own subnet.Lease
	// PublicIP and PublicIPv6 are this node's underlay addresses; zero when
	// the node has none of that family.
	PublicIP, PublicIPv6 netip.Addr
	// BackendType is the backend a peer must run; Config.BackendType when
	// empty.
	BackendType string
	// Connected are the underlay's directly connected prefixes (either
	// family) when the caller knows them; an underlay address that is one's
	// broadcast address (IPv4) or subnet-router anycast address (IPv6) is
	// refused. Nil skips that check.
	Connected []netip.Prefix
	// IPv6Carrier is the underlay family that carries IPv6 pod traffic:
	// IPv6 (the default, zero) reaches a peer's IPv6 subnet at its
	// PublicIPv6; IPv4 reaches it at its PublicIP (the udp backend).
	IPv6Carrier Family
}

// FamilyVerdict is the verdict on a lease for one address family.
type FamilyVerdict struct {
	// Enabled reports whether the network uses the family.
	Enabled bool
	// Usable reports whether the lease can be programmed as a peer in the
	// family: its subnet routed to its underlay address of that family.
	Usable bool
	// Reason says what is wrong when Enabled and not Usable; empty
	// otherwise.
	Reason string
}

// PeerVerdict is CheckPeer's answer.
type PeerVerdict struct {
	// Own is set for this node's own lease (same key): never a peer, and
	// nothing to report.
	Own bool
	// V4 and V6 are the verdicts per family.
	V4, V6 FamilyVerdict
}

// Family returns the verdict for f.
func (v PeerVerdict) Family(f Family) FamilyVerdict {
	if f == IPv6 {
		return v.V6
	}
	return v.V4
}

// Outcomes turns the verdict into the outcome of each family for
// NewPeerStatus: a usable family is programmed, any other refused with its
// reason (this node's own lease: both, "subnet is this node's own"). A
// backend with checks of its own makes its outcomes from Family instead.
func (v PeerVerdict) Outcomes() (v4, v6 FamilyOutcome) {
	if v.Own {
		o := Outcome(PeerRefused, "subnet is this node's own")
		return o, o
	}
	out := func(f Family, fv FamilyVerdict) FamilyOutcome {
		if fv.Usable {
			return Outcome(PeerProgrammed, "")
		}
		return Outcome(PeerRefused, cmp.Or(fv.Reason, "the network does not use "+f.String()))
	}
	return out(IPv4, v.V4), out(IPv6, v.V6)
}

// Usable reports whether the lease is a peer in at least one family.
func (v PeerVerdict) Usable() bool { return !v.Own && (v.V4.Usable || v.V6.Usable) }

// Reason says why the lease is no peer at all: empty when it is usable in
// some family or is this node's own. With both families enabled it names
// each family's reason, once when they are the same.
func (v PeerVerdict) Reason() string {
	if v.Usable() || v.Own {
		return ""
	}
	switch {
	case v.V4.Enabled && v.V6.Enabled && v.V4.Reason != v.V6.Reason:
		return "IPv4: " + v.V4.Reason + "; IPv6: " + v.V6.Reason
	case v.V4.Enabled:
		return v.V4.Reason
	case v.V6.Enabled:
		return v.V6.Reason
	}
	return "the network enables no address family"
}

// CheckPeer decides whether l is a usable peer of the node n, per family.
// The rules, in the order they are checked:
//
//   - l is not this node's own lease (Own);
//   - l runs the network's backend type; a lease with no backend type is a
//     valid udp peer (Flannel's udp backend writes none);
//   - per enabled family: the subnet is present, a network address of the
//     family, inside the family's pod network, of exactly the network's
//     subnet length (so peers' subnets never overlap one another), and does
//     not overlap this node's subnet;
//   - this node has an underlay address of the family carrying it
//     (PublicIP for IPv4; PublicIPv6 for IPv6, or PublicIP when
//     IPv6Carrier is IPv4);
//   - the lease's underlay address of that family (PublicIP, PublicIPv6) is
//     a usable unicast address: not unspecified, loopback, multicast,
//     broadcast (limited, or directed on a connected underlay subnet), the
//     subnet-router anycast address of a connected IPv6 underlay subnet,
//     link-local, IPv4-mapped, inside the pod network of its family, or this
//     node's own.
//
// CheckPeer is pure and safe for concurrent use.
func CheckPeer(n PeerNode, l subnet.Lease) PeerVerdict {
	var v PeerVerdict
	if (n.Own.Subnet.IsValid() || n.Own.IPv6Subnet.IsValid()) &&
		l.Subnet == n.Own.Subnet && l.IPv6Subnet == n.Own.IPv6Subnet {
		v.Own = true
		return v
	}
	if n.Config == nil {
		v.V4 = FamilyVerdict{Enabled: true, Reason: "no network config to check it against"}
		return v
	}
	common := backendReason(n, l)
	for _, f := range []Family{IPv4, IPv6} {
		fv := checkFamily(n, l, familyOf(n, l, f), common)
		if f == IPv4 {
			v.V4 = fv
		} else {
			v.V6 = fv
		}
	}
	return v
}

// backendReason checks what concerns the whole lease.
func backendReason(n PeerNode, l subnet.Lease) string {
	want := n.BackendType
	if want == "" {
		want = n.Config.BackendType
	}
	switch got := l.Attrs.BackendType; {
	case got == want:
		return ""
	case got == "" && want == subnet.BackendUDP:
		// Flannel's udp lease: {"PublicIP":"…","PublicIPv6":null}.
		return ""
	case got == "":
		return fmt.Sprintf("lease names no backend (Flannel's udp leases do not), this network uses %q", want)
	default:
		return fmt.Sprintf("backend %q, this network uses %q", got, want)
	}
}

// family is one family's view of the node and the lease: the pod side
// (subnets of family f) and the underlay side (addresses of family uf, the
// one carrying f).
type family struct {
	f         Family
	enabled   bool
	network   netip.Prefix
	subnetLen int
	own       netip.Prefix
	subnet    netip.Prefix
	// The underlay side.
	uf        Family
	ipKey     string       // the lease field the address comes from
	ulNetwork netip.Prefix // the pod network of family uf: no underlay address is in it
	ownIP     netip.Addr
	publicIP  netip.Addr
}

func familyOf(n PeerNode, l subnet.Lease, f Family) family {
	c := n.Config
	fa := family{f: f, uf: f, enabled: c.EnableIPv4, network: c.Network, subnetLen: c.SubnetLen,
		own: n.Own.Subnet, subnet: l.Subnet}
	if f == IPv6 {
		fa.enabled, fa.network, fa.subnetLen, fa.own, fa.subnet = c.EnableIPv6, c.IPv6Network, c.IPv6SubnetLen, n.Own.IPv6Subnet, l.IPv6Subnet
		if n.IPv6Carrier == IPv4 {
			fa.uf = IPv4
		}
	}
	fa.ipKey, fa.ownIP, fa.publicIP, fa.ulNetwork = "PublicIP", n.PublicIP, l.Attrs.PublicIP, c.Network
	if fa.uf == IPv6 {
		fa.ipKey, fa.ownIP, fa.publicIP, fa.ulNetwork = "PublicIPv6", n.PublicIPv6, l.Attrs.PublicIPv6, c.IPv6Network
	}
	if !(fa.uf == IPv4 && c.EnableIPv4 || fa.uf == IPv6 && c.EnableIPv6) {
		fa.ulNetwork = netip.Prefix{} // a network the config does not use
	}
	return fa
}

func checkFamily(n PeerNode, l subnet.Lease, fa family, common string) FamilyVerdict {
	if !fa.enabled {
		return FamilyVerdict{}
	}
	why := common
	if why == "" {
		why = fa.subnetReason()
	}
	if why == "" {
		why = fa.addrReason(n.Connected)
	}
	if why != "" && fa.f == IPv6 && l.Attrs.BackendType == "" && common == "" {
		// A lease with no backend type is Flannel's udp backend's, which
		// publishes only PublicIP and routes only IPv4: say so, rather
		// than leave the operator to guess why that node is no IPv6 peer.
		why += " (a Flannel udp node carries IPv4 pods only; run weft on it for IPv6)"
	}
	return FamilyVerdict{Enabled: true, Usable: why == "", Reason: why}
}

// is reports whether a is an address of family f.
func is(f Family, a netip.Addr) bool {
	if f == IPv6 {
		return a.Is6() && !a.Is4In6()
	}
	return a.Is4()
}

func (fa family) subnetReason() string {
	sn := fa.subnet
	switch {
	case !fa.network.IsValid():
		return fmt.Sprintf("the network config has no %s network", fa.f)
	case !sn.IsValid():
		return fmt.Sprintf("lease has no %s subnet", fa.f)
	case !is(fa.f, sn.Addr()) || sn.Addr().Zone() != "":
		return fmt.Sprintf("subnet %s is not an %s prefix", sn, fa.f)
	case sn.Masked() != sn:
		return fmt.Sprintf("subnet %s has host bits set", sn)
	case !fa.network.Contains(sn.Addr()) || sn.Bits() < fa.network.Bits():
		return fmt.Sprintf("subnet %s is outside the network %s", sn, fa.network)
	case sn.Bits() != fa.subnetLen:
		// Leases of the network's own length are equal or disjoint (one
		// key per subnet); a longer one inside a peer's subnet would steal
		// that peer's traffic with a more specific route.
		return fmt.Sprintf("subnet length /%d, this network hands out /%d", sn.Bits(), fa.subnetLen)
	case fa.own.IsValid() && sn.Overlaps(fa.own):
		return fmt.Sprintf("subnet %s overlaps this node's subnet %s", sn, fa.own)
	}
	return ""
}

// limitedBroadcast is 255.255.255.255.
var limitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// thisNetwork is 0.0.0.0/8: "this host on this network", never a peer.
var thisNetwork = netip.MustParsePrefix("0.0.0.0/8")

func (fa family) addrReason(connected []netip.Prefix) string {
	a := fa.publicIP
	if fa.uf == IPv4 {
		a = a.Unmap()
	}
	name := fa.ipKey + " " + a.String()
	switch {
	case !fa.ownIP.IsValid():
		return fmt.Sprintf("this node has no %s to reach %s peers over; give weftd --public-ip%s", fa.ipKey, fa.f, map[Family]string{IPv4: "", IPv6: "v6"}[fa.uf])
	case !a.IsValid():
		return "no " + fa.ipKey
	case !is(fa.uf, a):
		return fmt.Sprintf("%s is not an %s address", name, fa.uf)
	case a.Zone() != "":
		return name + " has a zone"
	case a.IsUnspecified() || fa.uf == IPv4 && thisNetwork.Contains(a):
		return name + " is unspecified"
	case a.IsLoopback():
		return name + " is loopback"
	case a.IsMulticast():
		return name + " is multicast"
	case a == limitedBroadcast:
		return name + " is the broadcast address"
	case a.IsLinkLocalUnicast():
		return name + " is link-local"
	case fa.ulNetwork.IsValid() && fa.ulNetwork.Contains(a):
		return name + " is inside the pod network"
	case a == fa.ownIP:
		return name + " is this node's own"
	}
	for _, p := range connected {
		switch {
		case fa.uf == IPv4 && p.Addr().Is4() && p.Bits() < 31 && a == lastAddr(p):
			return fmt.Sprintf("%s is the broadcast address of the underlay subnet %s", name, p.Masked())
		case fa.uf == IPv6 && p.Addr().Is6() && p.Bits() < 127 && a == p.Masked().Addr():
			// RFC 4291 2.6.1: the all-zeros interface ID is the
			// subnet-router anycast address, every router of the link's.
			return fmt.Sprintf("%s is the subnet-router anycast address of the underlay subnet %s", name, p.Masked())
		}
	}
	return ""
}

// lastAddr is the highest address of the IPv4 prefix p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(b)
}
