package wireguard

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/internal/nstest"
	"github.com/weftnet/weft/subnet"
)

var network6 = netip.MustParsePrefix("fd00:10:244::/48")

// nodes6 builds n nodes on a dual-stack underlay, each with a pod holding
// 10.244.<i+1>.2 (when v4) and fd00:10:244:<i+1>::2; no backend yet.
func nodes6(t *testing.T, n, base int, v4 bool) []*node {
	t.Helper()
	nss, addrs, addrs6 := nstest.DualUnderlay(t, n, base)
	cfg := &subnet.Config{EnableIPv4: v4, EnableIPv6: true, IPv6Network: network6, IPv6SubnetLen: 64, BackendType: "wireguard"}
	if v4 {
		cfg.Network, cfg.SubnetLen = network, 24
	}
	out := make([]*node, n)
	for i := range out {
		nd := &node{ns: nss[i], pod: nstest.New(t, "wgpod"), ip6: netip.MustParseAddr(addrs6[i]),
			dir: t.TempDir(), dev: nstest.UniqueName("wg"), cfg: cfg}
		sn6 := netip.MustParsePrefix(fmt.Sprintf("fd00:10:244:%x::/64", i+1))
		nd.lease = subnet.Lease{IPv6Subnet: sn6, Attrs: subnet.LeaseAttrs{BackendType: "wireguard"}}
		gw6, pod6 := fmt.Sprintf("fd00:10:244:%x::1", i+1), fmt.Sprintf("fd00:10:244:%x::2", i+1)
		gws, pods := gw6+"/64", pod6+"/64"
		if v4 {
			nd.ip = netip.MustParseAddr(addrs[i])
			nd.lease.Subnet = netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", i+1))
			gws += fmt.Sprintf(" 10.244.%d.1/24", i+1)
			pods += fmt.Sprintf(" 10.244.%d.2/24", i+1)
		}
		nstest.Link(t, nd.ns, "vpod", gws, nd.pod, "eth0", pods)
		nd.pod.MustRun(t, "ip", "-6", "route", "add", "default", "via", gw6)
		if v4 {
			nd.pod.MustRun(t, "ip", "route", "add", "default", "via", fmt.Sprintf("10.244.%d.1", i+1))
		}
		var err error
		if nd.log, err = os.Create(filepath.Join(t.TempDir(), "log")); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("node %d (%s) log:\n%s", i+1, nd.ip6, nd.logs(t))
			}
		})
		out[i] = nd
	}
	return out
}

func (n *node) podIP6() string { return n.lease.IPv6Subnet.Addr().Next().Next().String() }

// TestIPv6: the IPv6 half of a dual-stack network, and an IPv6-only one,
// in each Mode that lays the devices out differently, as Flannel does:
// separate puts IPv6 on weft-wg-v6 (ListenPortV6, peers at
// [PublicIPv6]:ListenPortV6, AllowedIPs their IPv6 subnet) beside an IPv4
// weft-wg that is the IPv4-only backend's; ipv4 and ipv6 put both families
// on weft-wg (AllowedIPs both subnets) reached over that underlay. The lease
// carries Flannel's BackendData/BackendV6Data and PublicIPv6; pods reach
// each other in every family, and the node reaches a peer's pod from its
// own subnet's address; routes are per family on the device carrying it.
func TestIPv6(t *testing.T) {
	nstest.RequireRoot(t)
	type devWant struct {
		suffix string // of the device name
		port   int
		fams   []backend.Family
		via    backend.Family // the underlay family of peers' endpoints
	}
	v4, v6 := backend.IPv4, backend.IPv6
	for _, tc := range []struct {
		name string
		v4   bool
		mode Mode
		devs []devWant
	}{
		{"dual separate", true, ModeSeparate, []devWant{{"", 51820, []backend.Family{v4}, v4}, {"-v6", 51821, []backend.Family{v6}, v6}}},
		{"dual ipv4", true, ModeIPv4, []devWant{{"", 51820, []backend.Family{v4, v6}, v4}}},
		{"dual ipv6", true, ModeIPv6, []devWant{{"", 51820, []backend.Family{v4, v6}, v6}}},
		// 198.18.0.0/15 is not RFC 1918: auto reaches the peer over IPv4.
		{"dual auto", true, ModeAuto, []devWant{{"", 51820, []backend.Family{v4, v6}, v4}}},
		{"ipv6-only separate", false, ModeSeparate, []devWant{{"-v6", 51821, []backend.Family{v6}, v6}}},
		{"ipv6-only auto", false, ModeAuto, []devWant{{"", 51820, []backend.Family{v6}, v6}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nds := nodes6(t, 2, baseIPv6, tc.v4)
			a, b := nds[0], nds[1]
			opts := `,"Implementation":"userspace","Mode":"` + string(tc.mode) + `"`
			a.prepare(t, opts)
			b.prepare(t, opts)
			a.configure(t, b)
			b.configure(t, a)

			// The lease: Flannel's attributes, each family's with the port
			// of the device carrying it.
			for _, want := range tc.devs {
				data := fmt.Sprintf(`{"PublicKey":"%s","Port":%d}`, a.b.PublicKey(), want.port)
				if slices.Contains(want.fams, v4) && string(a.lease.Attrs.BackendData) != data {
					t.Errorf("BackendData %s, want %s", a.lease.Attrs.BackendData, data)
				}
				if slices.Contains(want.fams, v6) && string(a.lease.Attrs.BackendV6Data) != data {
					t.Errorf("BackendV6Data %s, want %s", a.lease.Attrs.BackendV6Data, data)
				}
			}
			if !tc.v4 && (a.lease.Attrs.BackendData != nil || a.lease.Attrs.PublicIP.IsValid()) {
				t.Errorf("IPv6-only lease has IPv4 attributes: %+v", a.lease.Attrs)
			}
			if a.lease.Attrs.PublicIPv6 != a.ip6 {
				t.Errorf("PublicIPv6 %v, want %v", a.lease.Attrs.PublicIPv6, a.ip6)
			}

			if len(a.b.devs) != len(tc.devs) {
				t.Fatalf("%d devices, want %d", len(a.b.devs), len(tc.devs))
			}
			for i, want := range tc.devs {
				name := a.dev + want.suffix
				if got := a.b.devs[i].name; got != name {
					t.Fatalf("device %d is %s, want %s", i, got, name)
				}
				d, err := a.b.wg.Device(name)
				if err != nil {
					t.Fatal(err)
				}
				if d.ListenPort != want.port || len(d.Peers) != 1 {
					t.Fatalf("%s: port %d, %d peers; want %d, 1", name, d.ListenPort, len(d.Peers), want.port)
				}
				p := d.Peers[0]
				ep := netip.AddrPortFrom(b.ip, uint16(want.port))
				if want.via == v6 {
					ep = netip.AddrPortFrom(b.ip6, uint16(want.port))
				}
				var allowed []string
				for _, n := range p.AllowedIPs {
					allowed = append(allowed, n.String())
				}
				var wantAllowed []string
				for _, f := range want.fams {
					wantAllowed = append(wantAllowed, ownSubnetOf(b.lease, f).String())
				}
				slices.Sort(allowed)
				slices.Sort(wantAllowed)
				if p.PublicKey != b.b.PublicKey() || p.Endpoint == nil || unmapped(p.Endpoint.AddrPort()) != ep || !slices.Equal(allowed, wantAllowed) {
					t.Errorf("%s: peer %s endpoint %v allowed %v; want %s %v %v", name, p.PublicKey, p.Endpoint, allowed, b.b.PublicKey(), ep, wantAllowed)
				}
				for _, f := range want.fams {
					if got := routeTo(t, a, ownSubnetOf(b.lease, f).String()); !strings.Contains(got, "dev "+name) {
						t.Errorf("route to b's %s subnet: %q, want dev %s", f, got, name)
					}
					if got := routeTo(t, a, a.b.network(f).String()); !strings.Contains(got, "dev "+name) {
						t.Errorf("route to the %s pod network: %q, want dev %s", f, got, name)
					}
					own := ownSubnetOf(a.lease, f).Addr()
					if out := a.ns.MustRun(t, "ip", "addr", "show", "dev", name); !strings.Contains(out, netip.PrefixFrom(own, own.BitLen()).String()) {
						t.Errorf("%s has no address %s:\n%s", name, own, out)
					}
				}
			}
			for _, st := range a.b.Peers() {
				if st.State != backend.PeerProgrammed || st.IPv6Subnet != b.lease.IPv6Subnet {
					t.Errorf("peer status %+v", st)
				}
			}

			ping(t, a.pod, b.podIP6())
			ping(t, b.pod, a.podIP6())
			ping(t, a.ns, b.podIP6()) // node-originated: source <subnet>::
			if tc.v4 {
				ping(t, a.pod, b.podIP())
				ping(t, b.pod, a.podIP())
			}

			// A peer without an IPv6 subnet is refused for IPv6 with the
			// reason; on a separate IPv4 device it is still programmed.
			if tc.v4 && tc.mode == ModeSeparate {
				half := b.lease
				half.IPv6Subnet = netip.Prefix{}
				a.sync(t, half)
				st := a.b.Peers()
				if len(st) != 1 || st[0].State != backend.PeerRefused || !strings.Contains(st[0].Reason, "IPv6: lease has no IPv6 subnet") {
					t.Errorf("peer without an IPv6 subnet: %+v", st)
				}
				if p, ok := a.peer(t, b); !ok || len(p.AllowedIPs) != 1 {
					t.Errorf("the IPv4 device lost the peer: %+v %v", p, ok)
				}
				d6, err := a.b.wg.Device(a.dev + "-v6")
				if err != nil || len(d6.Peers) != 0 {
					t.Errorf("the IPv6 device keeps the peer: %+v %v", d6, err)
				}
				if got := routeTo(t, a, b.lease.IPv6Subnet.String()); got != "" {
					t.Errorf("route to b's IPv6 subnet stays: %q", got)
				}
				ping(t, a.pod, b.podIP())
			}
		})
	}
}
