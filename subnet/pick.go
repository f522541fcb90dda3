package subnet

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
)

// Lease store implementations share the choice of a subnet: which keys
// occupy which subnets, which candidate to take next, and the error that
// says what to change when none is left.

// exhaustiveLimit is the candidate count up to which PickFree lists every
// free subnet and draws uniformly; larger networks are probed at random.
const exhaustiveLimit = 1 << 16

// PickFree chooses a free candidate subnet of c at random: one that neither
// a lease in leases (by its IPv4 or its IPv6 subnet) nor skip (when not nil)
// claims. Choosing at random, rather than the lowest free one, makes nodes
// racing for a subnet rarely collide. When nothing is free it returns an
// error wrapping ErrNoFreeSubnet that says what to change.
func (c *Config) PickFree(leases []Lease, skip func(sn, sn6 netip.Prefix) bool) (sn, sn6 netip.Prefix, err error) {
	used4 := make(map[netip.Prefix]bool, len(leases))
	used6 := make(map[netip.Prefix]bool)
	// odd are leases of another length than the config hands out (left by
	// an earlier config): like Flannel, never hand out a subnet that
	// overlaps one, or two nodes would route the same addresses.
	var odd4, odd6 []netip.Prefix
	for _, l := range leases {
		if l.Subnet.IsValid() {
			used4[l.Subnet] = true
			if l.Subnet.Bits() != c.SubnetLen {
				odd4 = append(odd4, l.Subnet)
			}
		}
		if l.IPv6Subnet.IsValid() {
			used6[l.IPv6Subnet] = true
			if l.IPv6Subnet.Bits() != c.IPv6SubnetLen {
				odd6 = append(odd6, l.IPv6Subnet)
			}
		}
	}
	overlaps := func(p netip.Prefix, odd []netip.Prefix) bool {
		for _, o := range odd {
			if p.Overlaps(o) {
				return true
			}
		}
		return false
	}
	taken := func(i int) bool {
		a, b := c.Subnet(i)
		if a.IsValid() && (used4[a] || overlaps(a, odd4)) || b.IsValid() && (used6[b] || overlaps(b, odd6)) {
			return true
		}
		return skip != nil && skip(a, b)
	}
	n := c.Subnets()
	if n <= exhaustiveLimit {
		var free []int
		for i := range n {
			if !taken(i) {
				free = append(free, i)
			}
		}
		if len(free) > 0 {
			sn, sn6 = c.Subnet(free[rand.IntN(len(free))])
			return sn, sn6, nil
		}
		return netip.Prefix{}, netip.Prefix{}, c.noFreeError()
	}
	for range 256 {
		if i := rand.IntN(n); !taken(i) {
			sn, sn6 = c.Subnet(i)
			return sn, sn6, nil
		}
	}
	start := rand.IntN(n)
	for k := range n {
		if i := (start + k) % n; !taken(i) {
			sn, sn6 = c.Subnet(i)
			return sn, sn6, nil
		}
	}
	return netip.Prefix{}, netip.Prefix{}, c.noFreeError()
}

func (c *Config) noFreeError() error {
	if c.EnableIPv4 {
		return fmt.Errorf("%w: network %s has no free /%d between SubnetMin %s and SubnetMax %s (%d subnets, all leased or reserved): widen Network, shrink SubnetLen, or release leases of nodes that are gone (weftctl lease release)",
			ErrNoFreeSubnet, c.Network, c.SubnetLen, c.SubnetMin, c.SubnetMax, c.Subnets())
	}
	return fmt.Errorf("%w: network %s has no free /%d between IPv6SubnetMin %s and IPv6SubnetMax %s (%d subnets, all leased or reserved): widen IPv6Network, shrink IPv6SubnetLen, or release leases of nodes that are gone (weftctl lease release)",
		ErrNoFreeSubnet, c.IPv6Network, c.IPv6SubnetLen, c.IPv6SubnetMin, c.IPv6SubnetMax, c.Subnets())
}

// PreviousSubnets returns the subnets req.Previous (and req.PreviousIPv6)
// name as a candidate of req.Config, ok false when there is none or it does
// not fit the config. In a dual-stack network a missing half is derived
// from the other by Flannel's pairing (the i-th IPv4 subnet with the i-th
// IPv6 subnet).
func (req AcquireRequest) PreviousSubnets() (sn, sn6 netip.Prefix, ok bool) {
	c := req.Config
	if c == nil {
		return netip.Prefix{}, netip.Prefix{}, false
	}
	p4, p6 := req.Previous, req.PreviousIPv6
	if p4.IsValid() && p4.Addr().Is6() && !p6.IsValid() {
		p4, p6 = netip.Prefix{}, p4
	}
	if c.EnableIPv4 {
		if !p4.IsValid() {
			return netip.Prefix{}, netip.Prefix{}, false
		}
		i, ok := c.Index(p4, netip.Prefix{})
		if !ok {
			return netip.Prefix{}, netip.Prefix{}, false
		}
		sn, sn6 = c.Subnet(i)
		if c.EnableIPv6 && p6.IsValid() {
			sn6 = p6
		}
	} else {
		if !p6.IsValid() {
			return netip.Prefix{}, netip.Prefix{}, false
		}
		sn6 = p6
	}
	return sn, sn6, c.Contains(sn, sn6)
}

// SameNode reports whether a and b name the same node: the same PublicIP,
// or for IPv6-only nodes the same PublicIPv6.
func SameNode(a, b LeaseAttrs) bool {
	if a.PublicIP.IsValid() || b.PublicIP.IsValid() {
		return a.PublicIP == b.PublicIP
	}
	return a.PublicIPv6.IsValid() && a.PublicIPv6 == b.PublicIPv6
}

// ValidateAcquire checks what every AcquireLease implementation needs from
// req: a config and a public address of an enabled family.
func ValidateAcquire(req AcquireRequest) error {
	if req.Config == nil {
		return errors.New("acquire lease: no network config")
	}
	if req.Config.EnableIPv4 && !req.Attrs.PublicIP.Is4() {
		return errors.New("acquire lease: the network has IPv4 enabled but the node has no IPv4 PublicIP")
	}
	if req.Config.EnableIPv6 && !req.Attrs.PublicIPv6.IsValid() && !req.Config.EnableIPv4 {
		return errors.New("acquire lease: the network is IPv6-only but the node has no PublicIPv6")
	}
	return nil
}
