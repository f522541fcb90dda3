package cniplugin

import (
	"fmt"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weftnet/weft/internal/nl"
	"github.com/weftnet/weft/internal/nstest"
)

// gsoOf reads the GSO/GRO sizes of link name in namespace n.
func gsoOf(t *testing.T, n *nstest.NS, name string) (gso, gro nl.GSO, tsoMax uint32) {
	t.Helper()
	if err := n.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(name)
		if err != nil {
			return err
		}
		a := l.Attrs()
		gso, gro, tsoMax = nl.GSO{IPv6: a.GSOMaxSize, IPv4: a.GSOIPv4MaxSize}, nl.GSO{IPv6: a.GROMaxSize, IPv4: a.GROIPv4MaxSize}, a.TSOMaxSize
		return nil
	}); err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	return gso, gro, tsoMax
}

// TestBigTCP: with "bigTCP" in the config the bridge and both veth ends
// carry the sizes (where the kernel has BIG TCP: the probe is the kernel
// reporting tso_max_size and gso_ipv4_max_size on a veth); without it, or
// with sizes the kernel refuses, they keep the default and ADD succeeds.
func TestBigTCP(t *testing.T) {
	legacy := nl.GSO{IPv6: nl.LegacyGSOMaxSize, IPv4: nl.LegacyGSOMaxSize}
	for i, tc := range []struct {
		name string
		conf map[string]any
		want nl.GSO // on a kernel with BIG TCP
	}{
		{"off", nil, legacy},
		{"on", map[string]any{"bigTCP": map[string]any{"ipv6": nl.BigTCPSize, "ipv4": nl.BigTCPSize}}, nl.GSO{IPv6: nl.BigTCPSize, IPv4: nl.BigTCPSize}},
		{"ipv4 only", map[string]any{"bigTCP": map[string]any{"ipv4": 131072}}, nl.GSO{IPv6: nl.LegacyGSOMaxSize, IPv4: 131072}},
		// Above any veth's tso_max_size: the kernel refuses, the pod
		// keeps the default.
		{"refused", map[string]any{"bigTCP": map[string]any{"ipv6": 1 << 24, "ipv4": 1 << 24}}, legacy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, fmt.Sprintf("10.244.%d.1/24", 40+i))
			list := e.confList("1.1.0", e.pluginConf(tc.conf))
			pod := nstest.New(t, "wcb")
			e.mustAdd(list, rt(pod, "big"))
			gso, _, tsoMax := gsoOf(t, pod, "eth0")
			want := tc.want
			if tsoMax <= nl.LegacyGSOMaxSize || gso.IPv4 == 0 {
				t.Logf("kernel without BIG TCP (tso_max_size %d, gso_ipv4_max_size %d): expecting the defaults", tsoMax, gso.IPv4)
				want = nl.GSO{IPv6: nl.LegacyGSOMaxSize, IPv4: gso.IPv4}
			}
			for _, l := range []struct {
				n    *nstest.NS
				name string
			}{{pod, "eth0"}, {e.node, HostVethName("big", "eth0")}, {e.node, e.bridge}} {
				gso, gro, _ := gsoOf(t, l.n, l.name)
				if gso != want || gro != want {
					t.Errorf("%s: gso %+v gro %+v, want %+v for both", l.name, gso, gro, want)
				}
			}
			if err := e.del(list, rt(pod, "big")); err != nil {
				t.Fatal(err)
			}
		})
	}
}
