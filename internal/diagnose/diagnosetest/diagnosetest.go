// Package diagnosetest is an in-memory diagnose.Kernel for tests of the
// diagnosis logic and of the commands built on it.
package diagnosetest

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/internal/diagnose"
)

// Kernel is a fake kernel: links, routes, neighbour and FDB entries held in
// maps that tests fill directly. RouteGet does a longest-prefix match over
// Routes. Not safe for concurrent use.
type Kernel struct {
	Links []diagnose.Link
	// RouteList holds every route; Routes and RouteGet read it.
	RouteList []diagnose.Route
	// Neighs maps link index → entries.
	Neighs map[int][]diagnose.Neigh
	// FDBs maps link index → MAC string → destinations.
	FDBs map[int]map[string][]netip.Addr
	// IPForward and IPv6Forward are what Forwarding reports.
	IPForward, IPv6Forward bool
}

var _ diagnose.Kernel = (*Kernel)(nil)

// New returns an empty kernel with forwarding on in both families.
func New() *Kernel {
	return &Kernel{Neighs: map[int][]diagnose.Neigh{}, FDBs: map[int]map[string][]netip.Addr{}, IPForward: true, IPv6Forward: true}
}

// AddLink adds a link that is up, with index len(Links)+1, and returns it.
func (k *Kernel) AddLink(name, typ string, mtu int, addrs ...netip.Prefix) diagnose.Link {
	l := diagnose.Link{Name: name, Index: len(k.Links) + 1, Type: typ, Up: true, MTU: mtu, Addrs: addrs}
	k.Links = append(k.Links, l)
	return l
}

// AddRoute adds a route; Dev must name a link added before.
func (k *Kernel) AddRoute(r diagnose.Route) {
	if l, err := k.Link(r.Dev); err == nil {
		r.LinkIndex = l.Index
	}
	r.Dst = r.Dst.Masked()
	k.RouteList = append(k.RouteList, r)
}

// DeleteRoutes removes every route to dst.
func (k *Kernel) DeleteRoutes(dst netip.Prefix) {
	k.RouteList = slices.DeleteFunc(k.RouteList, func(r diagnose.Route) bool { return r.Dst == dst.Masked() })
}

// AddNeigh adds a neighbour entry on the named link.
func (k *Kernel) AddNeigh(dev string, ip netip.Addr, mac net.HardwareAddr, state string) {
	l, _ := k.Link(dev)
	k.Neighs[l.Index] = append(k.Neighs[l.Index], diagnose.Neigh{IP: ip, MAC: mac, State: state})
}

// AddFDB adds a forwarding entry on the named link.
func (k *Kernel) AddFDB(dev string, mac net.HardwareAddr, dst netip.Addr) {
	l, _ := k.Link(dev)
	if k.FDBs[l.Index] == nil {
		k.FDBs[l.Index] = map[string][]netip.Addr{}
	}
	k.FDBs[l.Index][mac.String()] = append(k.FDBs[l.Index][mac.String()], dst)
}

// Link implements diagnose.Kernel.
func (k *Kernel) Link(name string) (diagnose.Link, error) {
	for _, l := range k.Links {
		if l.Name == name {
			return l, nil
		}
	}
	return diagnose.Link{}, fmt.Errorf("link %s: %w", name, diagnose.ErrNotFound)
}

// Routes implements diagnose.Kernel.
func (k *Kernel) Routes(dst netip.Prefix) ([]diagnose.Route, error) {
	var out []diagnose.Route
	for _, r := range k.RouteList {
		if r.Dst == dst.Masked() {
			out = append(out, r)
		}
	}
	return out, nil
}

// RouteGet implements diagnose.Kernel: the longest matching prefix wins.
// Like the kernel, it reports the destination as a host route.
func (k *Kernel) RouteGet(dst netip.Addr) (diagnose.Route, error) {
	best := -1
	for i, r := range k.RouteList {
		if r.Dst.Contains(dst) && (best < 0 || r.Dst.Bits() > k.RouteList[best].Dst.Bits()) {
			best = i
		}
	}
	if best < 0 {
		return diagnose.Route{}, fmt.Errorf("route to %s: %w", dst, diagnose.ErrNotFound)
	}
	r := k.RouteList[best]
	r.Dst = netip.PrefixFrom(dst, dst.BitLen())
	return r, nil
}

// Neigh implements diagnose.Kernel.
func (k *Kernel) Neigh(linkIndex int, ip netip.Addr) (diagnose.Neigh, bool, error) {
	for _, n := range k.Neighs[linkIndex] {
		if n.IP == ip {
			return n, true, nil
		}
	}
	return diagnose.Neigh{}, false, nil
}

// FDB implements diagnose.Kernel.
func (k *Kernel) FDB(linkIndex int, mac net.HardwareAddr) ([]netip.Addr, error) {
	return slices.Clone(k.FDBs[linkIndex][mac.String()]), nil
}

// Forwarding implements diagnose.Kernel.
func (k *Kernel) Forwarding(v6 bool) (bool, error) {
	if v6 {
		return k.IPv6Forward, nil
	}
	return k.IPForward, nil
}
