// Package hostgw is weft's host-gw backend, compatible with Flannel's: no
// encapsulation, the underlay routes pod traffic itself.
//
// # Design note: what is programmed, and why
//
// Per peer (subnet S, PublicIP P) one route in the main table:
//
//	S via P dev <underlay>   (proto weft)
//
// The peer node forwards what arrives for S to its local pods, so a packet
// crosses the underlay unchanged: no overhead (pod MTU = underlay MTU), no
// device of weft's own, no BackendData in the lease.
//
// That only works when P is a direct neighbour: the kernel must resolve P by
// ARP on the underlay link. A peer whose PublicIP is not inside a subnet
// directly connected to the underlay link (an address prefix of the link, or
// a scope-link route on it) is refused — never routed through some default
// gateway that would drop or misroute pod traffic. The refusal shows in
// Peers() with a reason naming the peer, and is logged once at Warn each time
// a peer's state changes. Use vxlan (optionally with DirectRouting) when the
// nodes are not all on one L2 segment.
//
// The routes share the underlay device with the host's own routes, so they
// carry nl.RouteProtocol: a full pass (Sync) deletes only weft-protocol
// routes into the pod network that no peer needs — including those left by a
// previous run for peers that vanished while weftd was down — and never
// touches anyone else's route.
//
// IPv6 is the same rule over the IPv6 half of the lease: in a network with
// EnableIPv6, a peer's IPv6Subnet S6 is routed via its PublicIPv6 P6,
//
//	S6 via P6 dev <underlay>   (proto weft, metric 1024: the kernel's for 0)
//
// and P6 must be on an IPv6 subnet directly connected to the underlay (the
// kernel resolves it by neighbour discovery); a peer is programmed when each
// family the network enables is, and its status names the family that is
// not. An IPv6-only network (EnableIPv4 false) has only the IPv6 routes.
package hostgw
