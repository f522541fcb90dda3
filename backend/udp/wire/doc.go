// Package wire holds the pure, allocation-free packet code of the udp
// backend: IPv4 and IPv6 header validation, checksums, TTL (hop limit)
// handling, ICMP and ICMPv6 error
// construction, the virtio-net header the TUN device prepends when
// IFF_VNET_HDR is on, splitting of TSO super-packets into MTU-sized segments
// and coalescing of consecutive TCP segments into one super-packet (GRO).
//
// Nothing here trusts a length from the wire: every function checks each
// offset before it slices and reports a Reason instead of panicking. The
// functions never allocate, so they can run per packet.
package wire
