// Package udp is the udp backend: a userspace tunnel that carries pod
// packets as the payload of UDP datagrams between nodes, in Flannel's udp
// wire format (the UDP payload is the raw inner IPv4 packet; port 8285), so
// weft and Flannel udp nodes exchange pod traffic. Flannel's udp is IPv4
// only; weft adds IPv6 pods: in a dual-stack network the payload may also be
// a raw inner IPv6 packet, in the same IPv4 datagrams to the peer's
// PublicIP, and in an IPv6-only network (EnableIPv4 false) the tunnel runs
// over the IPv6 underlay, in IPv6 datagrams to the peer's PublicIPv6 (see
// underlayFamily). A Flannel udp lease has no PublicIPv6, so it is never an
// IPv6-only network's peer (its status says why).
//
// Design note. In the kernel it programs, once per node:
//
//   - a persistent, multi-queue TUN device "weft-udp" (IFF_MULTI_QUEUE, and
//     IFF_VNET_HDR + TUNSETOFFLOAD for TSO when available), MTU = underlay
//     MTU − 28 (Overhead; − 48, Overhead6, over an IPv6 underlay), address
//     <subnet>.0/32 when the network has IPv4;
//   - the route "Network dev weft-udp src <subnet>.0": every pod packet for
//     another node goes into the TUN (the node's own subnet is on the CNI
//     bridge, a more specific route, so local traffic stays in the kernel);
//   - with IPv6, <IPv6 subnet>::/128 and "IPv6Network dev weft-udp src
//     <IPv6 subnet>::" likewise.
//
// Nothing per peer lives in the kernel: peers are a longest-prefix table
// (destination subnet → peer PublicIP:Port or [PublicIPv6]:Port) held in
// userspace as an immutable value swapped atomically on Sync/Apply, so the
// packet path never takes a lock. The device is persistent so a restart
// keeps its route: packets are dropped while no process is attached rather
// than leaking out of the default route.
//
// The packet path runs one goroutine per queue, serving both directions: TUN
// queue i → UDP socket i and UDP socket i → TUN queue i. It blocks in
// poll(2) on the queue, the socket and a stop eventfd; the descriptors are
// kept out of the Go poller so a packet wakes only that thread (see
// io_linux.go). The sockets (of the underlay family, bound to the local
// address) share the port with SO_REUSEPORT. Reads and writes are batched
// (recvmmsg, sendmmsg); TSO super-packets from the TUN are split in
// userspace (headers only: payloads are gathered from the read buffer) and
// sent with UDP GSO (UDP_SEGMENT) in one call; UDP GRO (UDP_GRO) on receive
// returns runs of datagrams that are coalesced back into TCP super-packets
// for the TUN. Each offload is probed at start and falls back cleanly.
// Buffers are preallocated per queue; steady state allocates nothing per
// packet.
//
// Safety: a datagram whose source address is not a current peer's underlay
// address (PublicIP, or PublicIPv6 over IPv6) and tunnel port, whose inner
// source is outside that peer's subnet of its family, whose inner
// destination is outside this node's subnet, or that is not a well-formed IP
// packet of a family the network uses is dropped and counted (Stats).
// Forwarding decrements the inner TTL and answers TTL expiry and
// destinations with no peer with ICMP errors, rate limited, as a router
// does.
package udp
