// Package vxlan is weft's VXLAN backend, wire compatible with Flannel's
// vxlan backend (same device settings, same BackendData, same per-peer
// kernel entries), so weft and Flannel nodes reach each other's pods.
//
// # Design note: what is programmed, and why
//
// Node level (Prepare, Configure):
//
//   - one VXLAN device weft.<VNI>: VNI, UDP port (8472), local = this node's
//     PublicIP, dev = the underlay link, learning off, optional GBP. Its MAC
//     is the VtepMAC published in the lease. The MAC is derived from
//     (PublicIP, VNI) as a locally administered unicast address, so it is the
//     same after a restart or a reboot: peers' entries for this node never go
//     stale (a known Flannel failure, when udev or a re-created device picked
//     a new random MAC).
//   - MTU = underlay MTU − 50 (IPv4 underlay) or − 70 (IPv6 underlay) unless
//     configured.
//   - address <subnet>.0/32 on the device: the inner source address when the
//     node itself talks to remote pods, and the next hop peers route to.
//
// Per peer (subnet S, PublicIP P, VtepMAC M):
//
//	route      S via S.0 dev weft.<VNI> onlink   (proto weft)
//	neighbour  S.0 lladdr M nud permanent        (dev weft.<VNI>)
//	fdb        M dst P self permanent            (dev weft.<VNI>)
//
// The route makes the kernel send S's packets into the device with next hop
// S.0 ("onlink" because no local address covers S.0); the permanent
// neighbour resolves S.0 to M without ARP (the device has no L2 peers to
// ask); the FDB entry tells the VXLAN driver which underlay IP owns M. With
// all three static, nothing depends on learning, miss notifications or a
// userspace ARP responder.
//
// With DirectRouting, a peer whose PublicIP is inside a subnet directly
// connected to the underlay link gets the plain host-gw route
// `S via P dev <underlay>` instead, and no neighbour or FDB entry: same-L2
// traffic skips encapsulation.
//
// Every route is marked with nl.RouteProtocol, and the device is weft's, so
// a full pass (Sync) deletes exactly what weft created and no peer needs —
// including entries left by a previous run for peers that vanished while
// weftd was down.
//
// Only IPv4 pod subnets are programmed (Lease.Subnet); the underlay may be
// IPv4 or IPv6, but a peer's PublicIP must be of the same family as ours.
package vxlan
