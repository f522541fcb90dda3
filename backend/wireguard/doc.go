// Package wireguard is weft's encrypting backend, compatible with Flannel's
// wireguard backend (same options and defaults, same BackendData, same
// device address and routes), so weft and Flannel wireguard nodes are peers.
//
// # Design note: what is programmed, and why
//
// Node level (Prepare, Configure):
//
//   - one WireGuard device weft-wg (Flannel: flannel-wg), listening on UDP
//     ListenPort (51820), with the node's private key. Either the kernel's
//     (a "wireguard" link) or the embedded wireguard-go on a persistent TUN
//     device of the same name; Implementation (auto by default) chooses, and
//     the choice is logged. Both are configured through one path, wgctrl,
//     which speaks genetlink to the kernel device and the UAPI protocol to
//     the embedded one (its socket /var/run/wireguard/weft-wg.sock, where
//     wg(8) finds it too). Only the creation of the link differs.
//   - the private key is generated on the first start into
//     <state-dir>/wireguard.key (0600, atomically) and reused on every start,
//     so the public key in the lease stays the same. It never appears in a
//     log line, an error, /status or /metrics. RotateKey (weftctl wireguard
//     rotate-key) replaces it; Run sees the new key and the daemon prepares a
//     new backend and republishes the lease.
//   - MTU = underlay MTU − 80 (Flannel's overhead, room for an IPv6 outer
//     header); the MTU option is, as in Flannel, the underlay MTU.
//   - address <subnet>.0/32 on the device: the source address of
//     node-originated traffic into the tunnel, inside this node's subnet, so
//     peers' AllowedIPs accept it.
//   - route "Network dev weft-wg" (proto weft): all pod traffic for other
//     nodes enters the device. A subnet with no usable peer (a lease refused
//     below) is dropped there, never sent unencrypted by another route; the
//     node's own subnet is on the CNI bridge, a more specific route.
//
// Per peer (subnet S, PublicIP P, BackendData {"PublicKey":K,"Port":N}):
//
//	wireguard peer  K  endpoint P:N  allowed-ips S  [preshared-key PSK]
//	                   [persistent-keepalive PersistentKeepaliveInterval]
//	route           S dev weft-wg scope link  (proto weft)
//
// AllowedIPs are WireGuard's cryptokey routing: a packet for S is encrypted
// to K only, and a packet decrypted from K is accepted only if its source is
// in S. A node whose key is in no lease cannot complete a handshake, so only
// configured peers' traffic is accepted. The per-peer route duplicates the
// network route for what the device routes anyway; it makes each peer's
// state visible with `ip route` and repaired like the other backends'.
//
// Changes are written per peer, and only the attributes that differ: a
// peer added, removed or moved to a new endpoint does not touch other peers,
// whose sessions continue (no ReplacePeers, no device restart). Every pass
// reads the device and diffs it, so a peer removed, added or altered by hand
// (wg set), a changed key or port, a deleted device, a deleted route or a
// removed UAPI socket is repaired by the next full pass. Peers' endpoints
// are the lease's: a roamed endpoint is set back.
//
// A lease is refused, with its reason in /status, when it is not a usable
// peer at all (the generic checks), or its BackendData has no PublicKey, a
// malformed one, the all-zero key, this node's own key, or a key another
// peer (the lower subnet) already has. Port 0 means ListenPort, as Flannel
// reads leases of its versions that wrote none.
//
// Restarts: the kernel device runs without weftd, so its sessions survive
// a weftd restart. The embedded device stops with weftd; its TUN device,
// address and routes stay, so pod traffic for peers is dropped (not leaked)
// until weftd is back, re-attaches to the TUN, sets the same key and peers
// and handshakes again on the next packet.
//
// IPv6 (layout): the devices are laid out per Mode as Flannel lays them
// out. Mode separate (the default) gives each family its own device over
// the underlay of that family: weft-wg (ListenPort) for IPv4 to peers'
// PublicIP, weft-wg-v6 (ListenPortV6) for IPv6 to peers' PublicIPv6, whose
// attributes it reads from BackendV6Data; an IPv6-only network has
// weft-wg-v6 only. Modes auto, ipv4 and ipv6 put every family on weft-wg,
// AllowedIPs both subnets, reaching the peer over the IPv4 underlay, the
// IPv6 one, or per peer the likelier to work (auto: autoVia). Each device
// gets, per family it carries, the own subnet's first address, the pod
// network's route and per-peer routes, exactly as above; every device has
// the one key, and the lease publishes BackendData for IPv4 and
// BackendV6Data for IPv6 with the port of the device carrying it. A peer
// lacking a family is refused for that family only (its status says which).
package wireguard
