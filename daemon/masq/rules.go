package masq

import "net/netip"

// The rule model both implementations render: one list, so nftables and
// iptables cannot drift apart.

type verdict int

const (
	verdictReturn verdict = iota
	verdictMasquerade
	verdictAccept
	verdictDrop
)

// addrMatch matches a source or destination prefix, or its complement.
type addrMatch struct {
	prefix netip.Prefix // invalid: no match on this field
	not    bool
}

type rule struct {
	v6       bool // family of src/dst; ignored when neither is set
	kubeMark bool // match mark & KubeProxyMark == KubeProxyMark
	src, dst addrMatch
	udpDport uint16 // match UDP to this port; 0: any packet
	verdict  verdict
	comment  string
}

const (
	commentMasq    = "weft-masq"
	commentForward = "weft-forward"
	// commentGuard marks the drop of forwarded pod traffic to the tunnel
	// ports.
	commentGuard = "weft-tunnel-guard"
)

var (
	multicast4 = netip.MustParsePrefix("224.0.0.0/4")
	multicast6 = netip.MustParsePrefix("ff00::/8")
)

// natRules returns the postrouting rules for r, in order. See doc.go.
func natRules(r Rules) []rule {
	rules := []rule{{kubeMark: true, verdict: verdictReturn, comment: commentMasq}}
	if r.Network.IsValid() {
		rules = append(rules, natFamily(r.Network.Masked(), r.Subnet.Masked(), multicast4, false)...)
	}
	if r.IPv6Network.IsValid() {
		rules = append(rules, natFamily(r.IPv6Network.Masked(), r.IPv6Subnet.Masked(), multicast6, true)...)
	}
	return rules
}

func natFamily(n, sn, mc netip.Prefix, v6 bool) []rule {
	in := addrMatch{prefix: n}
	notIn := addrMatch{prefix: n, not: true}
	return []rule{
		// Pod to pod, on this node or another: never NAT.
		{v6: v6, src: in, dst: in, verdict: verdictReturn, comment: commentMasq},
		// From outside the network to our pods (e.g. a NodePort DNATed to a
		// local pod): keep the client's address.
		{v6: v6, src: notIn, dst: addrMatch{prefix: sn}, verdict: verdictReturn, comment: commentMasq},
		// Pod to outside, except multicast.
		{v6: v6, src: in, dst: addrMatch{prefix: mc, not: true}, verdict: verdictMasquerade, comment: commentMasq},
		// Host (or outside) to remote pods: leave with the overlay address
		// so the reply comes back through the overlay.
		{v6: v6, src: notIn, dst: in, verdict: verdictMasquerade, comment: commentMasq},
	}
}

// forwardRules returns the forward rules for r: pod traffic to the tunnel
// ports is dropped, then the pod network is forwarded in both directions.
func forwardRules(r Rules) []rule {
	var rules []rule
	if r.Network.IsValid() {
		rules = forwardFamily(r.Network.Masked(), r.TunnelPorts, false)
	}
	if r.IPv6Network.IsValid() {
		rules = append(rules, forwardFamily(r.IPv6Network.Masked(), r.TunnelPorts, true)...)
	}
	return rules
}

func forwardFamily(n netip.Prefix, tunnelPorts []uint16, v6 bool) []rule {
	var rules []rule
	// A pod's datagram to a node's tunnel port, masqueraded to this node's
	// PublicIP, would look to the peer like tunnel traffic from this node:
	// a packet the pod crafted delivered to a remote pod. Pods never have
	// a reason to talk to the tunnel port.
	for _, p := range tunnelPorts {
		rules = append(rules, rule{v6: v6, src: addrMatch{prefix: n}, udpDport: p, verdict: verdictDrop, comment: commentGuard})
	}
	return append(rules,
		rule{v6: v6, src: addrMatch{prefix: n}, verdict: verdictAccept, comment: commentForward},
		rule{v6: v6, dst: addrMatch{prefix: n}, verdict: verdictAccept, comment: commentForward},
	)
}
