// Package backend defines the contract between weftd and a data-plane
// backend (vxlan, host-gw, udp, wireguard): prepare the node, then keep the kernel
// matching the set of peer leases. Concrete backends live in sub-packages
// and never import each other, etcd or the daemon; the daemon picks one from
// an explicit map of constructors.
package backend
