package daemon

import (
	"cmp"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/internal/nstest"
)

// TestFindUnderlay: weftd picks its underlay interface, local address and
// PublicIP with flanneld's rules (--iface in order, names or addresses;
// then --iface-regex on addresses, then names; then --iface-can-reach; an
// interface without an address does not match), in a namespace with three
// interfaces: a0 (198.18.61.1/24 and 198.18.62.1/24, the default route),
// b0 (198.18.63.5/24, the route to 198.18.70.0/24) and c0 (no address).
func TestFindUnderlay(t *testing.T) {
	n := nstest.New(t, "wuly")
	for _, c := range [][]string{
		{"ip", "link", "add", "a0", "type", "veth", "peer", "name", "a1"},
		{"ip", "link", "add", "b0", "type", "veth", "peer", "name", "b1"},
		{"ip", "link", "add", "c0", "type", "veth", "peer", "name", "c1"},
		{"ip", "addr", "add", "198.18.61.1/24", "dev", "a0"},
		{"ip", "addr", "add", "198.18.62.1/24", "dev", "a0"},
		{"ip", "addr", "add", "198.18.63.5/24", "dev", "b0"},
	} {
		n.MustRun(t, c[0], c[1:]...)
	}
	for _, l := range []string{"a0", "a1", "b0", "b1", "c0", "c1"} {
		n.MustRun(t, "ip", "link", "set", l, "up")
	}
	n.MustRun(t, "ip", "route", "add", "default", "via", "198.18.61.254", "dev", "a0")
	n.MustRun(t, "ip", "route", "add", "198.18.70.0/24", "via", "198.18.63.254", "dev", "b0")

	addr := netip.MustParseAddr
	nat := addr("203.0.113.9")
	tests := []struct {
		name        string
		c           UnderlayChoice
		link        string
		local, pub  netip.Addr
		errContains []string
	}{
		{name: "nothing: the default route's", link: "a0", local: addr("198.18.61.1"), pub: addr("198.18.61.1")},
		{name: "public IP of an interface", c: UnderlayChoice{PublicIP: addr("198.18.63.5")}, link: "b0", local: addr("198.18.63.5"), pub: addr("198.18.63.5")},
		{name: "public IP behind a NAT: the default route's", c: UnderlayChoice{PublicIP: nat}, link: "a0", local: addr("198.18.61.1"), pub: nat},
		{name: "iface in order, the first that exists", c: UnderlayChoice{Iface: []string{"eth9", "b0", "a0"}}, link: "b0", local: addr("198.18.63.5"), pub: addr("198.18.63.5")},
		{name: "iface by its second address", c: UnderlayChoice{Iface: []string{"198.18.62.1"}}, link: "a0", local: addr("198.18.62.1"), pub: addr("198.18.62.1")},
		{name: "iface without IPv4 skipped", c: UnderlayChoice{Iface: []string{"c0", "b0"}}, link: "b0", local: addr("198.18.63.5"), pub: addr("198.18.63.5")},
		{name: "iface and a NAT public IP", c: UnderlayChoice{Iface: []string{"b0"}, PublicIP: nat}, link: "b0", local: addr("198.18.63.5"), pub: nat},
		{name: "iface before regex", c: UnderlayChoice{Iface: []string{"a0"}, IfaceRegex: []*regexp.Regexp{regexp.MustCompile("^b")}}, link: "a0", local: addr("198.18.61.1"), pub: addr("198.18.61.1")},
		{name: "regex on an address", c: UnderlayChoice{IfaceRegex: []*regexp.Regexp{regexp.MustCompile(`^198\.18\.62\.`)}}, link: "a0", local: addr("198.18.62.1"), pub: addr("198.18.62.1")},
		{name: "regex on a name", c: UnderlayChoice{IfaceRegex: []*regexp.Regexp{regexp.MustCompile("^b0$")}}, link: "b0", local: addr("198.18.63.5"), pub: addr("198.18.63.5")},
		{name: "regexes in order", c: UnderlayChoice{IfaceRegex: []*regexp.Regexp{regexp.MustCompile("^zz"), regexp.MustCompile(`^198\.18\.63\.`)}}, link: "b0", local: addr("198.18.63.5"), pub: addr("198.18.63.5")},
		{name: "regex matching only an interface without IPv4", c: UnderlayChoice{IfaceRegex: []*regexp.Regexp{regexp.MustCompile("^c0$")}, IfaceCanReach: addr("198.18.70.9")}, link: "b0", local: addr("198.18.63.5"), pub: addr("198.18.63.5")},
		{name: "can-reach after the others", c: UnderlayChoice{Iface: []string{"nope"}, IfaceRegex: []*regexp.Regexp{regexp.MustCompile("^zz")}, IfaceCanReach: addr("198.18.70.9")}, link: "b0", local: addr("198.18.63.5"), pub: addr("198.18.63.5")},
		{name: "can-reach by the default route", c: UnderlayChoice{IfaceCanReach: addr("192.0.2.1")}, link: "a0", local: addr("198.18.61.1"), pub: addr("198.18.61.1")},
		{name: "nothing matches", c: UnderlayChoice{Iface: []string{"eth9", "c0", "192.0.2.77"}, IfaceRegex: []*regexp.Regexp{regexp.MustCompile("^wlan")}},
			errContains: []string{"--iface eth9 (no such interface", "--iface c0 (c0 has no IPv4 or IPv6 address)", "--iface 192.0.2.77 (no interface has address 192.0.2.77)", "--iface-regex ^wlan (matches no interface", "give an --iface"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			var got struct {
				link       string
				local, pub netip.Addr
			}
			if derr := n.Do(func(ns.NetNS) error {
				u, e := findUnderlay(tt.c)
				err = e
				got.link, got.local, got.pub = u.Link, u.LocalIP, u.PublicIP
				return nil
			}); derr != nil {
				t.Fatal(derr)
			}
			if tt.errContains != nil {
				for _, want := range tt.errContains {
					if err == nil || !strings.Contains(err.Error(), want) {
						t.Errorf("error %v lacks %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.link != tt.link || got.local != tt.local || got.pub != tt.pub {
				t.Errorf("got %s local %s public %s, want %s local %s public %s", got.link, got.local, got.pub, tt.link, tt.local, tt.pub)
			}
		})
	}
}

// TestFindUnderlayIPv6 detects the node's underlay addresses of both families
// in a namespace: the first usable global one of each, a deprecated IPv6
// address skipped, an IPv6-only node found through its IPv6 default route,
// and addresses of the wrong family refused with the flag to use.
func TestFindUnderlayIPv6(t *testing.T) {
	a := func(s string) netip.Addr {
		if s == "" {
			return netip.Addr{}
		}
		return netip.MustParseAddr(s)
	}
	for _, tc := range []struct {
		name         string
		addrs        string // eth0's addresses
		setup        [][]string
		iface, regex string
		pub, pub6    string
		local6       string // want LocalIPv6 when not want6
		want4, want6 string
		err          string
	}{
		{name: "dual stack", addrs: "198.18.9.1/24 2001:db8:9::1/64", iface: "eth0", want4: "198.18.9.1", want6: "2001:db8:9::1"},
		{name: "deprecated IPv6 skipped", addrs: "198.18.9.1/24", iface: "eth0",
			setup: [][]string{{"ip", "addr", "add", "2001:db8:9::5/64", "dev", "eth0", "nodad", "preferred_lft", "0"},
				{"ip", "addr", "add", "2001:db8:9::6/64", "dev", "eth0", "nodad"}},
			want4: "198.18.9.1", want6: "2001:db8:9::6"},
		{name: "IPv4 only", addrs: "198.18.9.1/24", iface: "eth0", want4: "198.18.9.1"},
		{name: "IPv6 only, by the IPv6 default route", addrs: "2001:db8:9::1/64",
			setup: [][]string{{"ip", "-6", "route", "add", "default", "via", "2001:db8:9::99", "dev", "eth0"}}, want6: "2001:db8:9::1"},
		{name: "given addresses win (a NAT: local ones kept)", addrs: "198.18.9.1/24 2001:db8:9::1/64", pub: "198.18.9.7", pub6: "2001:db8:9::7", iface: "eth0", local6: "2001:db8:9::1",
			want4: "198.18.9.7", want6: "2001:db8:9::7"},
		{name: "link found by --public-ipv6", addrs: "2001:db8:9::1/64", pub6: "2001:db8:9::1", want6: "2001:db8:9::1"},
		{name: "IPv6 as --public-ip", addrs: "2001:db8:9::1/64", pub: "2001:db8:9::1", err: "give an IPv6 one with --public-ipv6"},
		{name: "IPv4 as --public-ipv6", addrs: "198.18.9.1/24", pub6: "198.18.9.1", err: "give an IPv4 one with --public-ip"},
		{name: "no address", iface: "eth0", err: "--iface eth0 (eth0 has no IPv4 or IPv6 address)"},
		{name: "regex on an IPv6 address", addrs: "198.18.9.1/24 2001:db8:9::1/64", regex: `^2001:db8:9:`, want4: "198.18.9.1", want6: "2001:db8:9::1"},
		{name: "IPv6 behind a NAT", addrs: "2001:db8:9::1/64", iface: "eth0", pub6: "2001:db8:77::1", want6: "2001:db8:77::1", local6: "2001:db8:9::1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := nstest.New(t, "wul")
			peer := nstest.New(t, "wulp")
			nstest.Link(t, n, "eth0", tc.addrs, peer, "eth0", "")
			for _, c := range tc.setup {
				n.MustRun(t, c[0], c[1:]...)
			}
			var u backend.Underlay
			var err error
			if derr := n.Do(func(ns.NetNS) error {
				c := UnderlayChoice{PublicIP: a(tc.pub), PublicIPv6: a(tc.pub6)}
				if tc.iface != "" {
					c.Iface = []string{tc.iface}
				}
				if tc.regex != "" {
					c.IfaceRegex = []*regexp.Regexp{regexp.MustCompile(tc.regex)}
				}
				u, err = findUnderlay(c)
				return nil
			}); derr != nil {
				t.Fatal(derr)
			}
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			local6 := cmp.Or(tc.local6, tc.want6)
			if u.Link != "eth0" || u.PublicIP != a(tc.want4) || u.PublicIPv6 != a(tc.want6) || u.Local6() != a(local6) || u.MTU != 1500 {
				t.Errorf("underlay %+v, want eth0 with %q and %q (local %q)", u, tc.want4, tc.want6, local6)
			}
		})
	}
}
