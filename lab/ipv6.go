package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/weftnet/weft/subnet"
)

// The lab's IPv6 (Options.IPv6, Options.IPv6Only). The underlay of a lab
// that enables IPv6 gets a ULA /64 beside (or, IPv6-only, instead of) its
// 198.19.<octet>.0/24: fd00:198:19:<octet>::/64, host K at ::K (in hex, as
// every IPv6 address is written), on the switch bridge of the lab's own
// namespaces only. The pod network's IPv6 half is DefaultIPv6Network.

// DefaultIPv6Network is the IPv6 pod network of a lab that enables IPv6 and
// names none: 256 /64 node subnets (Flannel's IPv6SubnetLen default).
const DefaultIPv6Network = "fd00:10:244::/56"

// underlayPrefix6 is the lab's IPv6 underlay for octet.
func underlayPrefix6(octet int) netip.Prefix {
	return netip.PrefixFrom(hostAddr6(octet, 0), 64)
}

// hostAddr6 is host's address on the IPv6 underlay of the lab of octet.
func hostAddr6(octet, host int) netip.Addr {
	return netip.AddrFrom16([16]byte{0xfd, 0x00, 0x01, 0x98, 0x00, 0x19, 0x00, byte(octet), 14: byte(host >> 8), 15: byte(host)})
}

// hasIPv4 reports whether the lab's network (and underlay) has IPv4: every
// lab but an IPv6-only one.
func (s *State) hasIPv4() bool { return !s.IPv6Only }

// hasIPv6 reports whether the lab's network (and underlay) has IPv6.
func (s *State) hasIPv6() bool { return s.IPv6 || s.IPv6Only }

// Families names the address families of the lab's pod network: "IPv4",
// "IPv4+IPv6" (dual stack) or "IPv6".
func (s *State) Families() string {
	switch {
	case s.IPv6Only:
		return "IPv6"
	case s.IPv6:
		return "IPv4+IPv6"
	}
	return "IPv4"
}

// underlayAddrs are the underlay addresses (with their prefix length) of
// the lab's host number host, one per family the lab has.
func (s *State) underlayAddrs(host int) (v4, v6 netip.Addr) {
	if s.hasIPv4() {
		v4 = hostAddr(s.Octet, host)
	}
	if s.hasIPv6() {
		v6 = hostAddr6(s.Octet, host)
	}
	return v4, v6
}

// NetworkConfigIPv6 is the config the lab writes for a network with IPv6:
// dual stack, or IPv6-only when network is empty (EnableIPv4 false).
func NetworkConfigIPv6(network, ipv6Network, backend string) string {
	if network == "" {
		return fmt.Sprintf(`{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": %q, "Backend": {"Type": %q}}`, ipv6Network, backend)
	}
	return fmt.Sprintf(`{"Network": %q, "EnableIPv6": true, "IPv6Network": %q, "Backend": {"Type": %q}}`, network, ipv6Network, backend)
}

// networkConfig is the config JSON the lab writes: Config, or the one its
// network, families and backend make.
func (s *State) networkConfig() string {
	switch {
	case s.Config != "":
		return s.Config
	case s.IPv6Only:
		return NetworkConfigIPv6("", s.IPv6Network, s.Backend)
	case s.IPv6:
		return NetworkConfigIPv6(s.Network, s.IPv6Network, s.Backend)
	}
	return NetworkConfig(s.Network, s.Backend)
}

// checkIPv6Options checks the IPv6 options of o and fills their defaults.
func checkIPv6Options(o *Options) error {
	if !o.IPv6 && !o.IPv6Only {
		if o.IPv6Network != "" {
			return fmt.Errorf("--ipv6-network %s needs --ipv6 or --ipv6-only", o.IPv6Network)
		}
		return nil
	}
	if o.IPv6 && o.IPv6Only {
		return errors.New("--ipv6 (dual stack) and --ipv6-only exclude each other: give one")
	}
	switch {
	case len(o.FlannelNodes) > 0 && o.IPv6Only:
		return errors.New("--ipv6-only does not combine with Flannel nodes yet: use --ipv6 (dual stack) for a mixed cluster")
	case o.EtcdMembers > 1 && o.IPv6Only:
		return errors.New("--ipv6-only runs a single etcd: a multi-member etcd is on the IPv4 underlay")
	}
	if o.IPv6Network == "" {
		o.IPv6Network = DefaultIPv6Network
	}
	p, err := netip.ParsePrefix(o.IPv6Network)
	if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() {
		return fmt.Errorf("--ipv6-network %q: want an IPv6 prefix such as %s", o.IPv6Network, DefaultIPv6Network)
	}
	return nil
}

// underlayString names the lab's underlay prefixes.
func (s *State) underlayString() string {
	switch {
	case s.IPv6Only:
		return s.UnderlayV6.String()
	case s.IPv6:
		return s.Underlay.String() + " " + s.UnderlayV6.String()
	}
	return s.Underlay.String()
}

// underlayString names the node's underlay addresses.
func (n *Node) underlayString() string { return AddrsString(n.Underlay, n.UnderlayV6) }

// subnetsString names the node's subnets ("-" for none).
func (n *Node) subnetsString() string {
	s := AddrsString(n.Subnet, n.IPv6Subnet)
	if s == "" {
		return "-"
	}
	return s
}

// AddrsString joins the valid ones of a and b (an IPv4 and an IPv6 value)
// with a space; "" when neither is valid.
func AddrsString[T interface {
	IsValid() bool
	String() string
}](a, b T) string {
	switch {
	case a.IsValid() && b.IsValid():
		return a.String() + " " + b.String()
	case a.IsValid():
		return a.String()
	case b.IsValid():
		return b.String()
	}
	return ""
}

// setSubnets records the node's subnets from its subnet file: Subnet is the
// lease's key (the IPv4 subnet, or the IPv6 one of an IPv6-only network, as
// subnet.Lease.Key), IPv6Subnet the IPv6 subnet when the network has one.
func (n *Node) setSubnets(fi subnet.FileInfo) {
	n.Subnet, n.IPv6Subnet = fi.Subnet.Masked(), fi.IPv6Subnet.Masked()
	if !fi.Subnet.IsValid() {
		n.Subnet = n.IPv6Subnet
	}
	if !fi.IPv6Subnet.IsValid() {
		n.IPv6Subnet = netip.Prefix{}
	}
}

// plugNode joins node n's namespace to the switch with its underlay
// addresses and turns on forwarding for the families the lab has.
func (l *Lab) plugNode(ctx context.Context, n *Node) error {
	if err := l.plug(ctx, n.NS, n.Name, n.Underlay, n.UnderlayV6); err != nil {
		return err
	}
	sysctls := []string{"net.ipv4.ip_forward=1"}
	if l.hasIPv6() {
		sysctls = append(sysctls, "net.ipv6.conf.all.forwarding=1")
	}
	for _, s := range sysctls {
		if _, err := nsRun(ctx, n.NS, "sysctl", "-qw", s); err != nil {
			return err
		}
	}
	return nil
}
