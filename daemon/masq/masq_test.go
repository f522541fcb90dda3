package masq

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		name string
		r    Rules
		ok   bool
	}{
		{"ipv4", Rules{Network: p("10.244.0.0/16"), Subnet: p("10.244.3.0/24")}, true},
		{"dual stack", Rules{Network: p("10.244.0.0/16"), Subnet: p("10.244.3.0/24"),
			IPv6Network: p("fd00::/56"), IPv6Subnet: p("fd00:0:0:3::/64")}, true},
		{"ipv6 only", Rules{IPv6Network: p("fd00::/56"), IPv6Subnet: p("fd00:0:0:3::/64"), TunnelPorts: []uint16{8472}}, true},
		{"nothing", Rules{}, false},
		{"ipv6 only, ipv4 half set", Rules{Subnet: p("10.244.3.0/24"), IPv6Network: p("fd00::/56"), IPv6Subnet: p("fd00:0:0:3::/64")}, false},
		{"no network", Rules{Subnet: p("10.244.3.0/24")}, false},
		{"no subnet", Rules{Network: p("10.244.0.0/16")}, false},
		{"subnet outside", Rules{Network: p("10.244.0.0/16"), Subnet: p("10.245.3.0/24")}, false},
		{"subnet wider", Rules{Network: p("10.244.0.0/16"), Subnet: p("10.0.0.0/8")}, false},
		{"ipv6 as network", Rules{Network: p("fd00::/56"), Subnet: p("fd00:0:0:3::/64")}, false},
		{"zero-length network", Rules{Network: p("0.0.0.0/0"), Subnet: p("10.0.0.0/24")}, false},
		{"ipv6 half set", Rules{Network: p("10.244.0.0/16"), Subnet: p("10.244.3.0/24"), IPv6Network: p("fd00::/56")}, false},
		{"ipv4 as ipv6", Rules{Network: p("10.244.0.0/16"), Subnet: p("10.244.3.0/24"),
			IPv6Network: p("10.0.0.0/8"), IPv6Subnet: p("10.1.0.0/16")}, false},
		{"ipv6 subnet outside", Rules{Network: p("10.244.0.0/16"), Subnet: p("10.244.3.0/24"),
			IPv6Network: p("fd00::/56"), IPv6Subnet: p("fd01::/64")}, false},
		{"tunnel port 0", Rules{Network: p("10.244.0.0/16"), Subnet: p("10.244.3.0/24"), TunnelPorts: []uint16{0}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.r.Validate()
			if tt.ok && err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if !tt.ok && !errors.Is(err, ErrInvalidRules) {
				t.Fatalf("Validate = %v, want ErrInvalidRules", err)
			}
		})
	}
}

func TestIPTablesRendering(t *testing.T) {
	r := Rules{
		Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.3.0/24"),
		IPv6Network: netip.MustParsePrefix("fd00::/56"), IPv6Subnet: netip.MustParsePrefix("fd00:0:0:3::/64"),
		Masquerade: true,
	}
	guarded := r
	guarded.TunnelPorts = []uint16{8472, 8285}
	render := func(rules []rule, randomFully bool) []string {
		var out []string
		for _, rl := range rules {
			out = append(out, strings.Join(rl.iptablesArgs(randomFully), " "))
		}
		return out
	}
	tests := []struct {
		name        string
		rules       []rule
		randomFully bool
		want        []string
	}{
		{"nat v4", familyRules(natRules(r), false), true, []string{
			"-m mark --mark 0x4000/0x4000 -m comment --comment weft-masq -j RETURN",
			"-s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment weft-masq -j RETURN",
			"! -s 10.244.0.0/16 -d 10.244.3.0/24 -m comment --comment weft-masq -j RETURN",
			"-s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment weft-masq -j MASQUERADE --random-fully",
			"! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment weft-masq -j MASQUERADE --random-fully",
		}},
		{"nat v6 without random-fully", familyRules(natRules(r), true), false, []string{
			"-m mark --mark 0x4000/0x4000 -m comment --comment weft-masq -j RETURN",
			"-s fd00::/56 -d fd00::/56 -m comment --comment weft-masq -j RETURN",
			"! -s fd00::/56 -d fd00:0:0:3::/64 -m comment --comment weft-masq -j RETURN",
			"-s fd00::/56 ! -d ff00::/8 -m comment --comment weft-masq -j MASQUERADE",
			"! -s fd00::/56 -d fd00::/56 -m comment --comment weft-masq -j MASQUERADE",
		}},
		{"forward v4 with tunnel ports", familyRules(forwardRules(guarded), false), false, []string{
			"-s 10.244.0.0/16 -p udp -m udp --dport 8472 -m comment --comment weft-tunnel-guard -j DROP",
			"-s 10.244.0.0/16 -p udp -m udp --dport 8285 -m comment --comment weft-tunnel-guard -j DROP",
			"-s 10.244.0.0/16 -m comment --comment weft-forward -j ACCEPT",
			"-d 10.244.0.0/16 -m comment --comment weft-forward -j ACCEPT",
		}},
		{"forward v6 with tunnel ports", familyRules(forwardRules(guarded), true), false, []string{
			"-s fd00::/56 -p udp -m udp --dport 8472 -m comment --comment weft-tunnel-guard -j DROP",
			"-s fd00::/56 -p udp -m udp --dport 8285 -m comment --comment weft-tunnel-guard -j DROP",
			"-s fd00::/56 -m comment --comment weft-forward -j ACCEPT",
			"-d fd00::/56 -m comment --comment weft-forward -j ACCEPT",
		}},
		{"forward v4", familyRules(forwardRules(r), false), false, []string{
			"-s 10.244.0.0/16 -m comment --comment weft-forward -j ACCEPT",
			"-d 10.244.0.0/16 -m comment --comment weft-forward -j ACCEPT",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := render(tt.rules, tt.randomFully)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}
