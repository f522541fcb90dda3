// Package masq programs the node's masquerade and forwarding rules for the
// pod network, and (nftables only) the VXLAN peer filter.
//
// Two implementations share one rule model (rules.go), so both install the
// same semantics:
//
//   - NFTables (the default) keeps everything in weft's own table, "inet
//     weft", with its own base chains: "postrouting" (nat, srcnat priority),
//     "forward" (filter priority) and, when the peer filter is on, "input".
//     It never reads or writes any other table. Every change is one netlink
//     batch (flush our chains, add the rules), which the kernel applies as a
//     single transaction: there is never a moment with no rules or with the
//     old and new rules side by side.
//   - IPTables (--masq-backend=iptables) keeps its rules in its own chains,
//     WEFT-POSTRTG (nat) and WEFT-FWD (filter), jumped to from the first
//     position of POSTROUTING and from the end of FORWARD (so an operator's
//     earlier drops still apply, as with Flannel). Chain contents are
//     replaced with one `iptables-restore --noflush` per table, which is
//     atomic per table.
//
// The rule set is Flannel's (so a mixed Flannel/weft cluster behaves the
// same), for Network N, this node's Subnet S and the multicast range M:
//
//	mark & 0x4000 == 0x4000  return      kube-proxy masquerades these itself
//	src N,  dst N            return      pod to pod: never NAT
//	src !N, dst S            return      outside to our pods: keep the client address
//	src N,  dst !M           masquerade  pod to outside (random-fully)
//	src !N, dst N            masquerade  host/outside to remote pods
//
// and forwarding: drop src N to the tunnel ports (Rules.TunnelPorts),
// accept src N, accept dst N.
//
// Namespaces: every call programs the network namespace of the calling
// thread at the time of the call, unless Options.NetNS pins the nftables
// implementation to another one. Callers that switch namespaces must lock
// the OS thread (CNI's ns.Do does).
//
// Concurrency: both implementations are safe for concurrent use; calls on
// one value are serialised. Two values programming the same namespace at the
// same time are not coordinated (the last batch wins, still never a mix).
package masq
