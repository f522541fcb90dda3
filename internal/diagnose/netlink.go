package diagnose

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/nl"
)

// Netlink reads the kernel over netlink in the network namespace of the
// calling thread. It only reads.
type Netlink struct {
	h *nl.Handle
}

var _ Kernel = (*Netlink)(nil)

// NewNetlink returns a reader for the calling thread's network namespace.
func NewNetlink() *Netlink { return &Netlink{h: nl.New(nil)} }

// Link implements Kernel.
func (k *Netlink) Link(name string) (Link, error) {
	l, err := k.h.Netlink().LinkByName(name)
	if err != nil {
		if nl.IsNotFound(err) {
			return Link{}, fmt.Errorf("link %s: %w", name, ErrNotFound)
		}
		return Link{}, fmt.Errorf("link %s: %w", name, err)
	}
	return k.link(l)
}

func (k *Netlink) link(l netlink.Link) (Link, error) {
	a := l.Attrs()
	var addrs []netip.Prefix
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		as, err := k.h.Addrs(l, fam)
		if err != nil {
			return Link{}, err
		}
		addrs = append(addrs, as...)
	}
	return Link{Name: a.Name, Index: a.Index, Type: l.Type(), Up: a.Flags&net.FlagUp != 0, MTU: a.MTU, Addrs: addrs}, nil
}

// Routes implements Kernel.
func (k *Netlink) Routes(dst netip.Prefix) ([]Route, error) {
	dst = dst.Masked()
	nrs, err := k.h.Netlink().RouteListFiltered(nl.Family(dst.Addr()),
		&netlink.Route{Dst: nl.IPNet(dst), Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes to %s: %w", dst, err)
	}
	out := make([]Route, 0, len(nrs))
	for _, nr := range nrs {
		if p, ok := nl.Prefix(nr.Dst); !ok || p.Masked() != dst {
			continue
		}
		out = append(out, k.route(nr))
	}
	return out, nil
}

// RouteGet implements Kernel.
func (k *Netlink) RouteGet(dst netip.Addr) (Route, error) {
	nrs, err := k.h.Netlink().RouteGet(nl.IP(dst))
	if err != nil {
		if errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EHOSTUNREACH) {
			return Route{}, fmt.Errorf("ip route get %s: %w (%w)", dst, ErrNotFound, err)
		}
		return Route{}, fmt.Errorf("ip route get %s: %w", dst, err)
	}
	if len(nrs) == 0 {
		return Route{}, fmt.Errorf("ip route get %s: %w", dst, ErrNotFound)
	}
	return k.route(nrs[0]), nil
}

func (k *Netlink) route(nr netlink.Route) Route {
	rt := Route{LinkIndex: nr.LinkIndex, OnLink: nr.Flags&int(netlink.FLAG_ONLINK) != 0, Protocol: int(nr.Protocol)}
	if p, ok := nl.Prefix(nr.Dst); ok {
		rt.Dst = p.Masked()
	}
	if gw, ok := nl.Addr(nr.Gw); ok && nr.Gw != nil {
		rt.Gw = gw
	}
	if l, err := k.h.Netlink().LinkByIndex(nr.LinkIndex); err == nil {
		rt.Dev = l.Attrs().Name
	}
	return rt
}

// Neigh implements Kernel.
func (k *Netlink) Neigh(linkIndex int, ip netip.Addr) (Neigh, bool, error) {
	ns, err := k.h.Netlink().NeighList(linkIndex, nl.Family(ip))
	if err != nil {
		return Neigh{}, false, fmt.Errorf("list neighbours: %w", err)
	}
	for _, n := range ns {
		if a, ok := nl.Addr(n.IP); ok && a == ip && n.LinkIndex == linkIndex {
			return Neigh{IP: a, MAC: n.HardwareAddr, State: neighState(n.State)}, true, nil
		}
	}
	return Neigh{}, false, nil
}

// neighState names the most significant NUD_* bit as `ip neigh` does.
func neighState(s int) string {
	names := []struct {
		bit  int
		name string
	}{
		{netlink.NUD_PERMANENT, "permanent"}, {netlink.NUD_NOARP, "noarp"}, {netlink.NUD_REACHABLE, "reachable"},
		{netlink.NUD_STALE, "stale"}, {netlink.NUD_DELAY, "delay"}, {netlink.NUD_PROBE, "probe"},
		{netlink.NUD_FAILED, "failed"}, {netlink.NUD_INCOMPLETE, "incomplete"},
	}
	var out []string
	for _, n := range names {
		if s&n.bit != 0 {
			out = append(out, n.name)
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ",")
}

// FDB implements Kernel.
func (k *Netlink) FDB(linkIndex int, mac net.HardwareAddr) ([]netip.Addr, error) {
	byMAC, extra, err := k.h.FDB(linkIndex)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	if e, ok := byMAC[mac.String()]; ok {
		out = append(out, e.Dst)
	}
	for _, e := range extra {
		if e.MAC.String() == mac.String() {
			out = append(out, e.Dst)
		}
	}
	return out, nil
}

// Forwarding implements Kernel. /proc/sys/net is resolved against the
// network namespace of the thread that opens it, so this too reads the
// calling thread's namespace.
func (k *Netlink) Forwarding(v6 bool) (bool, error) {
	path := "/proc/sys/net/ipv4/ip_forward"
	if v6 {
		path = "/proc/sys/net/ipv6/conf/all/forwarding"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	return strings.TrimSpace(string(b)) == "1", nil
}
