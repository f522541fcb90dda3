package diagnose

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/weftnet/weft/subnet"
)

// ErrNotFound is returned by a Kernel when a link or route does not exist.
var ErrNotFound = errors.New("not found")

// Kernel reads the state Diagnose checks, all from one network namespace.
// Lookups of things that do not exist return ErrNotFound (wrapped or not),
// not an empty value.
type Kernel interface {
	// Link returns the link named name.
	Link(name string) (Link, error)
	// Routes returns the main-table IPv4 routes whose destination is
	// exactly dst (none is not an error).
	Routes(dst netip.Prefix) ([]Route, error)
	// RouteGet returns the route the kernel would use to send to dst.
	RouteGet(dst netip.Addr) (Route, error)
	// Neigh returns the neighbour entry for ip on the link with index
	// linkIndex; ok is false when there is none.
	Neigh(linkIndex int, ip netip.Addr) (n Neigh, ok bool, err error)
	// FDB returns the destinations of the forwarding entries for mac on the
	// link with index linkIndex.
	FDB(linkIndex int, mac net.HardwareAddr) ([]netip.Addr, error)
	// Forwarding reports whether forwarding is on for IPv4, or for IPv6
	// when v6.
	Forwarding(v6 bool) (bool, error)
}

// Link is a network device as the kernel reports it.
type Link struct {
	Name  string
	Index int
	Type  string // netlink type: "vxlan", "bridge", "tuntap", ...
	Up    bool
	MTU   int
	Addrs []netip.Prefix // IPv4 and IPv6 addresses with their prefix length
}

// Route is a kernel route.
type Route struct {
	Dst       netip.Prefix
	Gw        netip.Addr // zero for a device route
	Dev       string
	LinkIndex int
	OnLink    bool
	Protocol  int
}

func (r Route) String() string {
	var b strings.Builder
	if r.Dst.IsValid() {
		b.WriteString(r.Dst.String())
	}
	if r.Gw.IsValid() {
		fmt.Fprintf(&b, " via %s", r.Gw)
	}
	if r.Dev != "" {
		fmt.Fprintf(&b, " dev %s", r.Dev)
	}
	if r.OnLink {
		b.WriteString(" onlink")
	}
	return strings.TrimSpace(b.String())
}

// Neigh is a neighbour (ARP) entry.
type Neigh struct {
	IP    netip.Addr
	MAC   net.HardwareAddr
	State string // "permanent", "reachable", "stale", "failed", "incomplete", ...
}

// Usable reports whether the entry resolves the address.
func (n Neigh) Usable() bool {
	return len(n.MAC) != 0 && n.State != "failed" && n.State != "incomplete"
}

// Node is what Diagnose knows about the node it runs on.
type Node struct {
	// Subnet is this node's lease; zero when unknown (weftd down and no
	// subnet file), in which case every IP is checked as a peer's.
	Subnet netip.Prefix
	// IPv6Subnet is this node's IPv6 subnet in a network with IPv6; zero
	// otherwise or when unknown.
	IPv6Subnet netip.Prefix
	// Backend is this node's backend type ("vxlan", "host-gw", "udp").
	Backend string
	// VXLANDevice is the vxlan device name (weft.<VNI>).
	VXLANDevice string
	// VXLANDevice6 is the IPv6 vxlan device name (weft-v6.<VNI>).
	VXLANDevice6 string
	// DirectRouting is the vxlan option: a same-L2 peer may have a plain
	// route via its PublicIP instead of the vxlan entries.
	DirectRouting bool
	// UDPDevice is the udp backend's TUN device.
	UDPDevice string
	// Bridge is the CNI bridge local pods are attached to.
	Bridge string
	// Peers is weftd's view of its peers by lease key (Subnet, or
	// IPv6Subnet of an IPv6-only lease, from GET /status); nil when weftd
	// could not be asked.
	Peers map[netip.Prefix]PeerState
	// PeersErr says why Peers is nil, e.g. "weftd not reachable at ...".
	PeersErr string
}

// PeerState is one peer in weftd's status.
type PeerState struct {
	State  string // programmed, refused, failed
	Reason string
}

// Query is one diagnosis request.
type Query struct {
	IP     netip.Addr
	Config *subnet.Config // the network config; nil if it could not be read
	Leases []subnet.Lease // every lease in the store
	Node   Node
	Now    time.Time // for lease expiry; zero means do not show it
}

// Result of one check.
type Result string

// Check results. Warn is a doubt, not a fault: the entry is optional or
// cannot be checked from here.
const (
	OK   Result = "ok"
	Fail Result = "fail"
	Warn Result = "warn"
)

// Symbol is how a result is shown in a checklist.
func (r Result) Symbol() string {
	switch r {
	case OK:
		return "✓"
	case Fail:
		return "✗"
	}
	return "!"
}

// Check is one line of the checklist.
type Check struct {
	What   string `json:"what"`   // what should be true, e.g. "route 10.244.2.0/24 via 10.244.2.0 dev weft.1 onlink"
	Result Result `json:"result"` // ok, fail, warn
	Found  string `json:"found,omitempty"`
	Fix    string `json:"fix,omitempty"` // what to do when not ok
}

// Report is a diagnosis.
type Report struct {
	IP netip.Addr `json:"ip"`
	// Owner is the lease whose subnet holds IP; nil when none does.
	Owner   *OwnerInfo `json:"owner,omitempty"`
	Local   bool       `json:"local"` // IP is in this node's own subnet
	Backend string     `json:"backend,omitempty"`
	Checks  []Check    `json:"checks"`
}

// OwnerInfo names the node that owns the IP.
type OwnerInfo struct {
	Subnet     netip.Prefix `json:"subnet"`
	PublicIP   netip.Addr   `json:"publicIP"`
	IPv6Subnet netip.Prefix `json:"ipv6Subnet,omitzero"`
	PublicIPv6 netip.Addr   `json:"publicIPv6,omitzero"`
	Backend    string       `json:"backend"`
	Reserved   bool         `json:"reserved,omitempty"`
}

// Problems counts the failed checks.
func (r *Report) Problems() int {
	n := 0
	for _, c := range r.Checks {
		if c.Result == Fail {
			n++
		}
	}
	return n
}

func (r *Report) add(c Check) { r.Checks = append(r.Checks, c) }

func (r *Report) ok(what, found string) { r.add(Check{What: what, Result: OK, Found: found}) }

func (r *Report) fail(what, found, fix string) {
	r.add(Check{What: what, Result: Fail, Found: found, Fix: fix})
}

func (r *Report) warn(what, found, fix string) {
	r.add(Check{What: what, Result: Warn, Found: found, Fix: fix})
}

// Fix texts shared by several checks.
const (
	fixResync  = "weftd re-adds it on its next full pass (every --resync-interval, 30s by default); if it stays missing, see this peer in `weftctl status` and weftd's log (`journalctl -u weftd`)"
	fixNoWeftd = "is weftd running? (`systemctl status weftd`, `weftctl status`)"
)

// family is the view of the query in the family of the IP diagnosed: the
// pod network, this node's and the owner's subnet and underlay address, and
// the vxlan device and BackendData of that family.
type family struct {
	v6       bool
	name     string // "IPv4", "IPv6"
	network  netip.Prefix
	own      netip.Prefix // this node's subnet of the family
	vxlanDev string
	// The owner's side, once found.
	subnet netip.Prefix
	pub    netip.Addr
	data   json.RawMessage
	key    netip.Prefix // the owner's lease key (weftd's peers map)
}

func familyOf(q Query) family {
	f := family{name: "IPv4", own: q.Node.Subnet, vxlanDev: q.Node.VXLANDevice}
	if q.Config != nil {
		f.network = q.Config.Network
	}
	if q.IP.Is6() {
		f = family{v6: true, name: "IPv6", own: q.Node.IPv6Subnet, vxlanDev: q.Node.VXLANDevice6}
		if q.Config != nil {
			f.network = q.Config.IPv6Network
		}
	}
	return f
}

// owner sets the owner's side of f from l.
func (f *family) owner(l *subnet.Lease) {
	f.subnet, f.pub, f.data, f.key = l.Subnet, l.Attrs.PublicIP, l.Attrs.BackendData, l.Key()
	if f.v6 {
		f.subnet, f.pub, f.data = l.IPv6Subnet, l.Attrs.PublicIPv6, l.Attrs.BackendV6Data
	}
}

// Diagnose checks what this node needs to reach q.IP, an IPv4 or IPv6 pod
// address. It reads the kernel through k and never changes anything.
func Diagnose(k Kernel, q Query) Report {
	r := Report{IP: q.IP}
	if !q.IP.IsValid() || q.IP.Is4In6() || q.IP.Zone() != "" {
		r.fail("a pod address", q.IP.String(), "give the pod's IPv4 or IPv6 address")
		return r
	}
	f := familyOf(q)
	if q.Config != nil {
		enabled := q.Config.EnableIPv4
		if f.v6 {
			enabled = q.Config.EnableIPv6
		}
		if !enabled {
			r.fail("the network has "+f.name, "it does not (EnableIPv4 "+fmt.Sprint(q.Config.EnableIPv4)+", EnableIPv6 "+fmt.Sprint(q.Config.EnableIPv6)+")",
				"pods get no "+f.name+" address in this network: give the pod's address of the other family")
			return r
		}
		if !f.network.Contains(q.IP) {
			r.fail("in the pod network "+f.network.String(), "it is not",
				"pod IPs come from "+f.network.String()+"; a service or host address is not weft's to route (check kube-proxy or the host's routing)")
			return r
		}
		r.ok("in the pod network "+f.network.String(), "")
	}
	var owner *subnet.Lease
	for i := range q.Leases {
		sn := q.Leases[i].Subnet
		if f.v6 {
			sn = q.Leases[i].IPv6Subnet
		}
		if sn.IsValid() && sn.Contains(q.IP) {
			owner = &q.Leases[i]
			break
		}
	}
	if owner == nil {
		r.fail("a lease owns "+q.IP.String(), fmt.Sprintf("no lease among %d covers it", len(q.Leases)),
			"the node that had this subnet lost its lease or is gone, so the pod is stale: list leases with `weftctl leases`; restart the pod so it gets an address of a live node")
		return r
	}
	f.owner(owner)
	r.Owner = &OwnerInfo{Subnet: owner.Subnet, PublicIP: owner.Attrs.PublicIP, IPv6Subnet: owner.IPv6Subnet, PublicIPv6: owner.Attrs.PublicIPv6,
		Backend: owner.Attrs.BackendType, Reserved: owner.Reserved()}
	r.Backend = owner.Attrs.BackendType
	r.ok("a lease owns "+q.IP.String(), ownerText(f, owner, q.Now))

	sysctl := map[bool]string{false: "net.ipv4.ip_forward", true: "net.ipv6.conf.all.forwarding"}[f.v6]
	switch fwd, err := k.Forwarding(f.v6); {
	case err != nil:
		r.warn(f.name+" forwarding on", err.Error(), "")
	case fwd:
		r.ok(f.name+" forwarding on", "")
	default:
		r.fail(f.name+" forwarding on", sysctl+"=0",
			"pods' packets are not forwarded: `sysctl -w "+sysctl+"=1` and persist it in /etc/sysctl.d/")
	}

	switch {
	case !f.own.IsValid():
		r.warn("this node's "+map[bool]string{false: "", true: "IPv6 "}[f.v6]+"subnet is known", q.Node.PeersErr,
			"weftd's status and the subnet file are both unavailable; checking "+q.IP.String()+" as a remote pod")
		remote(k, q, f, owner, &r)
	case f.subnet == f.own:
		r.Local = true
		local(k, q, f, &r)
	default:
		remote(k, q, f, owner, &r)
	}
	return r
}

func ownerText(f family, l *subnet.Lease, now time.Time) string {
	s := fmt.Sprintf("%s of node %s (%s)", f.subnet, f.pub, dash(l.Attrs.BackendType))
	switch {
	case l.Reserved():
		s += ", reserved"
	case !now.IsZero() && !l.Expiration.IsZero():
		s += ", expires in " + l.Expiration.Sub(now).Round(time.Second).String()
	}
	return s
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// local checks a pod of this node: the bridge, its route and the pod's
// neighbour entry.
func local(k Kernel, q Query, f family, r *Report) {
	sn := f.subnet
	gw := sn.Addr().Next()
	br := q.Node.Bridge
	link, ok := checkLink(k, r, "bridge "+br, br,
		"the CNI plugin creates it with the first pod; no pod started on this node yet, or the runtime does not use weft's conflist (`ls /etc/cni/net.d`)")
	if !ok {
		return
	}
	want := netip.PrefixFrom(gw, sn.Bits())
	if slices.Contains(link.Addrs, want) {
		r.ok(fmt.Sprintf("bridge %s has gateway %s", br, want), "")
	} else {
		r.fail(fmt.Sprintf("bridge %s has gateway %s", br, want), fmt.Sprintf("addresses %v", link.Addrs),
			"the subnet changed under running pods or the bridge was altered: drain the node, delete the bridge (`ip link del "+br+"`) and restart the pods")
	}
	routes, err := k.Routes(sn)
	what := fmt.Sprintf("route %s dev %s", sn, br)
	switch i := slices.IndexFunc(routes, func(rt Route) bool { return rt.Dev == br && !rt.Gw.IsValid() }); {
	case err != nil:
		r.fail(what, err.Error(), "")
	case i >= 0:
		r.ok(what, "")
	default:
		r.fail(what, routesText(routes), "the kernel adds it with the bridge address; re-add "+want.String()+" to "+br+" (`ip addr replace "+want.String()+" dev "+br+"`)")
	}
	if q.IP != gw && q.IP != sn.Addr() {
		what := fmt.Sprintf("neighbour %s on %s (the pod answered %s)", q.IP, br, map[bool]string{false: "ARP", true: "neighbour discovery"}[f.v6])
		switch n, found, err := k.Neigh(link.Index, q.IP); {
		case err != nil:
			r.warn(what, err.Error(), "")
		case !found:
			r.warn(what, "no entry",
				"the pod has not talked to this node recently or does not exist: `ping -c1 "+q.IP.String()+"` from this node, check the pod is running (`crictl pods`) and its address is allocated (/var/lib/weft/ipam/)")
		case !n.Usable():
			r.fail(what, n.State,
				"the pod does not answer: it is gone or its veth is down; check the pod (`crictl pods`), `bridge link show master "+br+"`")
		default:
			r.ok(what, fmt.Sprintf("%s %s", n.MAC, n.State))
		}
	}
	checkRouteGet(k, r, q.IP, br, netip.Addr{})
}

// remote checks what this node needs to send to a peer's pod.
func remote(k Kernel, q Query, f family, owner *subnet.Lease, r *Report) {
	peerBackend := owner.Attrs.BackendType
	if q.Node.Backend != "" && peerBackend != "" && peerBackend != q.Node.Backend {
		r.fail("peer uses this node's backend "+q.Node.Backend, "peer uses "+peerBackend,
			"weftd only programs peers of its own backend type: run every node with the same network config (`weftctl config get`) and restart the odd one")
	}
	what := fmt.Sprintf("weftd programmed peer %s", f.key)
	switch ps, known := q.Node.Peers[f.key]; {
	case q.Node.Peers == nil:
		r.warn(what, q.Node.PeersErr, fixNoWeftd)
	case !known:
		r.fail(what, "weftd does not list the peer",
			"weftd ignores unusable leases (outside the network, overlapping, another backend; counted in weft_peer_leases_ignored_total) or has not seen it yet: check weftd's log for the subnet")
	case ps.State == "programmed":
		r.ok(what, "")
	default:
		fix := fixResync
		if ps.State == "refused" {
			fix = "the backend will not program this peer as configured; fix the cause (host-gw needs every node on one L2 segment: use vxlan otherwise)"
		}
		r.fail(what, ps.State+": "+ps.Reason, fix)
	}
	backendType := q.Node.Backend
	if backendType == "" {
		backendType = peerBackend
	}
	switch backendType {
	case subnet.BackendVXLAN:
		remoteVXLAN(k, q, f, r)
	case subnet.BackendHostGW:
		remoteHostGW(k, q, f, r)
	case subnet.BackendUDP:
		remoteUDP(k, q, f, r)
	default:
		r.warn("backend "+dash(backendType)+" is checked", "no kernel checks for it", "")
	}
}

func remoteVXLAN(k Kernel, q Query, f family, r *Report) {
	sn, pub := f.subnet, f.pub
	vtep := sn.Addr() // the peer's device address, <subnet>.0 (<IPv6 subnet>::)
	dev := f.vxlanDev
	var data struct{ VtepMAC string }
	_ = json.Unmarshal(f.data, &data)
	mac, macErr := net.ParseMAC(data.VtepMAC)

	routes, rErr := k.Routes(sn)
	if q.Node.DirectRouting {
		if i := slices.IndexFunc(routes, func(rt Route) bool { return rt.Gw == pub }); i >= 0 {
			r.ok(fmt.Sprintf("route %s via %s (DirectRouting: peer on the same L2 segment)", sn, pub), routes[i].String())
			checkRouteGet(k, r, q.IP, routes[i].Dev, pub)
			return
		}
	}
	link, ok := checkLink(k, r, "vxlan device "+dev, dev,
		"weftd creates it at start: is weftd running with the vxlan backend? (`systemctl status weftd`, `journalctl -u weftd`)")
	what := fmt.Sprintf("route %s via %s dev %s onlink", sn, vtep, dev)
	switch i := slices.IndexFunc(routes, func(rt Route) bool { return rt.Gw == vtep && rt.Dev == dev && rt.OnLink }); {
	case rErr != nil:
		r.fail(what, rErr.Error(), "")
	case i >= 0:
		r.ok(what, "")
	default:
		r.fail(what, routesText(routes), fixResync)
	}
	if macErr != nil {
		r.fail("peer lease has a VtepMAC", fmt.Sprintf("%s %s", map[bool]string{false: "BackendData", true: "BackendV6Data"}[f.v6], f.data),
			"the peer's weftd (or flanneld) did not publish its VXLAN MAC: restart it; `weftctl leases -o json` shows the lease")
		return
	}
	if !ok {
		return
	}
	what = fmt.Sprintf("neighbour %s lladdr %s permanent on %s", vtep, mac, dev)
	switch n, found, err := k.Neigh(link.Index, vtep); {
	case err != nil:
		r.fail(what, err.Error(), "")
	case !found:
		r.fail(what, "missing", fixResync)
	case n.MAC.String() != mac.String() || !strings.HasPrefix(n.State, "permanent"):
		r.fail(what, fmt.Sprintf("%s %s", n.MAC, n.State),
			"stale entry (the peer's VTEP MAC changed?): "+fixResync)
	default:
		r.ok(what, "")
	}
	what = fmt.Sprintf("fdb %s dst %s on %s", mac, pub, dev)
	switch dsts, err := k.FDB(link.Index, mac); {
	case err != nil:
		r.fail(what, err.Error(), "")
	case slices.Equal(dsts, []netip.Addr{pub}):
		r.ok(what, "")
	case len(dsts) == 0:
		r.fail(what, "missing", fixResync)
	default:
		r.fail(what, fmt.Sprintf("dst %v", dsts), "stale entry (the peer's PublicIP changed?): "+fixResync)
	}
	checkUnderlay(k, r, pub)
	checkRouteGet(k, r, q.IP, dev, vtep)
}

func remoteHostGW(k Kernel, q Query, f family, r *Report) {
	sn, pub := f.subnet, f.pub
	routes, err := k.Routes(sn)
	what := fmt.Sprintf("route %s via %s", sn, pub)
	switch i := slices.IndexFunc(routes, func(rt Route) bool { return rt.Gw == pub }); {
	case err != nil:
		r.fail(what, err.Error(), "")
	case i >= 0:
		r.ok(what, routes[i].String())
	default:
		r.fail(what, routesText(routes), fixResync)
	}
	// The underlay device is the one the host reaches the peer on.
	var dev string
	what = fmt.Sprintf("peer %s is directly connected (host-gw needs one L2 segment)", pub)
	switch rt, err := k.RouteGet(pub); {
	case err != nil:
		r.fail(what, err.Error(), "the host has no route to the peer at all: fix the underlay network")
	case rt.Gw.IsValid():
		r.fail(what, "reached via gateway "+rt.Gw.String(),
			"host-gw cannot cross a router: put the nodes on one L2 segment, or use the vxlan backend (optionally with DirectRouting)")
	default:
		dev = rt.Dev
		r.ok(what, "dev "+rt.Dev)
	}
	checkRouteGet(k, r, q.IP, dev, pub)
}

func remoteUDP(k Kernel, q Query, f family, r *Report) {
	dev := q.Node.UDPDevice
	if _, ok := checkLink(k, r, "udp device "+dev, dev,
		"weftd creates it at start: is weftd running with the udp backend? (`systemctl status weftd`)"); !ok {
		return
	}
	if q.Config == nil {
		r.warn("route to the pod network into "+dev, "network config unknown", "")
		return
	}
	nw := f.network
	routes, err := k.Routes(nw)
	what := fmt.Sprintf("route %s dev %s", nw, dev)
	switch i := slices.IndexFunc(routes, func(rt Route) bool { return rt.Dev == dev }); {
	case err != nil:
		r.fail(what, err.Error(), "")
	case i >= 0:
		r.ok(what, "")
	default:
		r.fail(what, routesText(routes), "weftd adds it when it configures the device: restart weftd")
	}
	checkRouteGet(k, r, q.IP, dev, netip.Addr{})
}

// checkLink checks that the link exists and is up; ok is false when it does
// not exist.
func checkLink(k Kernel, r *Report, what, name, fix string) (Link, bool) {
	if name == "" {
		r.warn(what+" exists", "device name unknown", "")
		return Link{}, false
	}
	l, err := k.Link(name)
	switch {
	case errors.Is(err, ErrNotFound):
		r.fail(what+" exists", "missing", fix)
		return Link{}, false
	case err != nil:
		r.fail(what+" exists", err.Error(), "")
		return Link{}, false
	case !l.Up:
		r.fail(what+" is up", "down", "`ip link set "+name+" up`; weftd sets it up at start, so find out what took it down")
	default:
		r.ok(what+" is up", fmt.Sprintf("mtu %d", l.MTU))
	}
	return l, true
}

// checkUnderlay checks that the host can route to a peer's PublicIP.
func checkUnderlay(k Kernel, r *Report, pub netip.Addr) {
	what := "the host has a route to peer " + pub.String()
	rt, err := k.RouteGet(pub)
	if err != nil {
		r.fail(what, err.Error(), "fix the underlay network: this node cannot reach the peer's PublicIP")
		return
	}
	r.ok(what, rt.String())
}

// checkRouteGet asks the kernel how it would send to ip and compares with
// the device (and gateway, when valid) weft should use.
func checkRouteGet(k Kernel, r *Report, ip netip.Addr, dev string, gw netip.Addr) {
	want := "kernel sends " + ip.String() + " out of " + dash(dev)
	if gw.IsValid() {
		want += " via " + gw.String()
	}
	rt, err := k.RouteGet(ip)
	switch {
	case err != nil:
		r.fail(want, err.Error(), "no route at all: fix the entries above")
	case dev == "":
		r.warn(want, rt.String(), "")
	case rt.Dev != dev || (gw.IsValid() && rt.Gw != gw):
		r.fail(want, "sends "+rt.String(),
			"a more specific or other route wins (policy routing, another CNI, a VPN?): `ip route get "+ip.String()+"`, `ip rule`")
	default:
		r.ok(want, "")
	}
}

func routesText(rs []Route) string {
	if len(rs) == 0 {
		return "missing"
	}
	s := make([]string, len(rs))
	for i, rt := range rs {
		s[i] = rt.String()
	}
	return "have " + strings.Join(s, "; ")
}
