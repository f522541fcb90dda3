package subnet

import (
	"errors"
	"math/big"
	"net/netip"
	"strings"
	"testing"
)

func TestParseConfigDefaults(t *testing.T) {
	tests := []struct {
		name, json        string
		subnetLen         int
		min, max          string
		backend           string
		subnets           int
		v6Len             int
		v6Min, v6Max      string
		enableV4, enable6 bool
	}{
		{name: "flannel default /16", json: `{"Network":"10.244.0.0/16"}`,
			subnetLen: 24, min: "10.244.1.0", max: "10.244.255.0", backend: "udp", subnets: 255, enableV4: true},
		{name: "/22 still gets /24", json: `{"Network":"10.0.0.0/22","Backend":{"Type":"host-gw"}}`,
			subnetLen: 24, min: "10.0.1.0", max: "10.0.3.0", backend: "host-gw", subnets: 3, enableV4: true},
		{name: "/23 gets /25", json: `{"Network":"10.0.0.0/23"}`,
			subnetLen: 25, min: "10.0.0.128", max: "10.0.1.128", backend: "udp", subnets: 3, enableV4: true},
		{name: "/28 gets /30", json: `{"Network":"10.0.0.0/28","Backend":{"Type":"udp","Port":8285}}`,
			subnetLen: 30, min: "10.0.0.4", max: "10.0.0.12", backend: "udp", subnets: 3, enableV4: true},
		{name: "explicit range", json: `{"Network":"10.244.0.0/16","SubnetLen":26,"SubnetMin":"10.244.0.64","SubnetMax":"10.244.0.192"}`,
			subnetLen: 26, min: "10.244.0.64", max: "10.244.0.192", backend: "udp", subnets: 3, enableV4: true},
		{name: "host bits dropped like net.ParseCIDR", json: `{"Network":"10.244.7.9/16","Backend":{"Type":"vxlan"}}`,
			subnetLen: 24, min: "10.244.1.0", max: "10.244.255.0", backend: "vxlan", subnets: 255, enableV4: true},
		{name: "lower-case keys as encoding/json", json: `{"network":"10.1.0.0/16","backend":{"type":"host-gw"}}`,
			subnetLen: 24, min: "10.1.1.0", max: "10.1.255.0", backend: "host-gw", subnets: 255, enableV4: true},
		{name: "dual stack", json: `{"Network":"10.1.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`,
			subnetLen: 24, min: "10.1.1.0", max: "10.1.255.0", backend: "vxlan", subnets: 255, enableV4: true, enable6: true,
			v6Len: 64, v6Min: "fc00:0:0:1::", v6Max: "fc00:0:0:ffff::"},
		{name: "ipv6 only", json: `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/120","Backend":{"Type":"vxlan"}}`,
			backend: "vxlan", subnets: 3, enable6: true, v6Len: 122, v6Min: "fc00::40", v6Max: "fc00::c0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.json))
			if err != nil {
				t.Fatal(err)
			}
			if c.EnableIPv4 != tt.enableV4 || c.EnableIPv6 != tt.enable6 {
				t.Errorf("EnableIPv4/6 = %v/%v, want %v/%v", c.EnableIPv4, c.EnableIPv6, tt.enableV4, tt.enable6)
			}
			if tt.enableV4 && (c.SubnetLen != tt.subnetLen || c.SubnetMin.String() != tt.min || c.SubnetMax.String() != tt.max) {
				t.Errorf("got /%d %s..%s, want /%d %s..%s", c.SubnetLen, c.SubnetMin, c.SubnetMax, tt.subnetLen, tt.min, tt.max)
			}
			if tt.enable6 && (c.IPv6SubnetLen != tt.v6Len || c.IPv6SubnetMin.String() != tt.v6Min || c.IPv6SubnetMax.String() != tt.v6Max) {
				t.Errorf("got v6 /%d %s..%s, want /%d %s..%s", c.IPv6SubnetLen, c.IPv6SubnetMin, c.IPv6SubnetMax, tt.v6Len, tt.v6Min, tt.v6Max)
			}
			if c.BackendType != tt.backend {
				t.Errorf("BackendType = %q, want %q", c.BackendType, tt.backend)
			}
			if got := c.Subnets(); got != tt.subnets {
				t.Errorf("Subnets() = %d, want %d", got, tt.subnets)
			}
			checkInvariants(t, c)
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name, json, key, msg string
	}{
		{"SubnetLen 31", `{"Network":"10.244.0.0/16","SubnetLen":31}`, "SubnetLen", "config: SubnetLen 31 leaves no room for pods: use at most 30"},
		{"SubnetLen too short", `{"Network":"10.244.0.0/16","SubnetLen":17}`, "SubnetLen", "use at least 18"},
		{"SubnetLen string", `{"Network":"10.244.0.0/16","SubnetLen":"24"}`, "SubnetLen", "not a whole number"},
		{"network too small", `{"Network":"10.0.0.0/29"}`, "Network", "use at most /28"},
		{"network too small explicit len", `{"Network":"10.0.0.0/29","SubnetLen":30}`, "Network", "use at most /28"},
		{"no network", `{}`, "Network", "is missing"},
		{"null", `null`, "Network", "is missing"},
		{"bad network", `{"Network":"10.0.0.0"}`, "Network", "not a CIDR prefix"},
		{"v6 in Network", `{"Network":"fc00::/48"}`, "Network", "IPv6Network"},
		{"network wrong type", `{"Network":1}`, "Network", "wrong type"},
		{"not an object", `[1]`, "", "not a JSON object"},
		{"trailing", `{"Network":"10.0.0.0/16"} x`, "", "not a JSON object"},
		{"min outside", `{"Network":"10.244.0.0/16","SubnetMin":"10.245.0.0"}`, "SubnetMin", "outside Network"},
		{"min unaligned", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.5"}`, "SubnetMin", "use 10.244.1.0"},
		{"max unaligned", `{"Network":"10.244.0.0/16","SubnetMax":"10.244.1.5"}`, "SubnetMax", "boundary"},
		{"max below min", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.9.0","SubnetMax":"10.244.3.0"}`, "SubnetMax", "below SubnetMin"},
		{"unknown backend", `{"Network":"10.244.0.0/16","Backend":{"Type":"ipip"}}`, "Backend.Type", `"ipip" is not supported: use one of vxlan, host-gw, udp`},
		{"backend type number", `{"Network":"10.244.0.0/16","Backend":{"Type":1}}`, "Backend.Type", "must be a string"},
		{"backend not object", `{"Network":"10.244.0.0/16","Backend":"vxlan"}`, "Backend", "JSON object"},
		{"both disabled", `{"Network":"10.244.0.0/16","EnableIPv4":false}`, "EnableIPv4", "enable at least one"},
		{"v6 without network", `{"Network":"10.244.0.0/16","EnableIPv6":true}`, "IPv6Network", "is missing"},
		{"v6 len", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":127}`, "IPv6SubnetLen", "use at most 126"},
		{"v6 network v4", `{"EnableIPv6":true,"IPv6Network":"10.0.0.0/8"}`, "IPv6Network", "not an IPv6 prefix"},
		{"EnableNFTables string", `{"Network":"10.244.0.0/16","EnableNFTables":"true"}`, "EnableNFTables", "want a JSON boolean"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.json))
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a *ConfigError", err)
			}
			if ce.Key != tt.key {
				t.Errorf("Key = %q, want %q (%v)", ce.Key, tt.key, err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not contain %q", err, tt.msg)
			}
		})
	}
}

func TestConfigSubnetIndex(t *testing.T) {
	c, err := ParseConfig([]byte(`{"Network":"10.1.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1, 100, c.Subnets() - 1} {
		sn, sn6 := c.Subnet(i)
		if j, ok := c.Index(sn, sn6); !ok || j != i {
			t.Errorf("Index(Subnet(%d)) = %d, %v", i, j, ok)
		}
		if !c.Contains(sn, sn6) {
			t.Errorf("Contains(%s, %s) = false", sn, sn6)
		}
	}
	if sn, sn6 := c.Subnet(2); sn.String() != "10.1.3.0/24" || sn6.String() != "fc00:0:0:3::/64" {
		t.Errorf("Subnet(2) = %s %s", sn, sn6)
	}
	if _, ok := c.Index(netip.MustParsePrefix("10.1.255.0/24"), netip.Prefix{}); !ok {
		t.Error("Index(10.1.255.0/24): the last subnet is a candidate, as in Flannel")
	}
	for _, p := range []string{"10.1.0.0/24", "10.1.3.0/25", "10.2.3.0/24"} {
		if _, ok := c.Index(netip.MustParsePrefix(p), netip.Prefix{}); ok {
			t.Errorf("Index(%s) ok, want not a candidate", p)
		}
	}
	if c.Contains(netip.MustParsePrefix("10.1.3.0/24"), netip.Prefix{}) {
		t.Error("dual-stack config Contains a lease without IPv6")
	}
}

func TestKeyName(t *testing.T) {
	tests := []struct{ sn, sn6, key string }{
		{"10.244.3.0/24", "", "10.244.3.0-24"},
		{"10.244.3.0/24", "fc00:0:0:3::/64", "10.244.3.0-24&fc00:0:0:3::-64"},
		{"", "fc00::/64", "0.0.0.0-0&fc00::-64"},
	}
	for _, tt := range tests {
		var sn, sn6 netip.Prefix
		if tt.sn != "" {
			sn = netip.MustParsePrefix(tt.sn)
		}
		if tt.sn6 != "" {
			sn6 = netip.MustParsePrefix(tt.sn6)
		}
		if got := KeyName(sn, sn6); got != tt.key {
			t.Errorf("KeyName(%s, %s) = %q, want %q", sn, sn6, got, tt.key)
		}
		gsn, gsn6, err := ParseKeyName(tt.key)
		if err != nil || gsn != sn || gsn6 != sn6 {
			t.Errorf("ParseKeyName(%q) = %s, %s, %v", tt.key, gsn, gsn6, err)
		}
	}
	for _, bad := range []string{"", "10.244.3.0", "10.244.3.5-24", "10.244.3.0-33", "fc00::-64", "10.0.0.0-8&10.0.0.0-8", "10.0.0.0-8&"} {
		if _, _, err := ParseKeyName(bad); err == nil {
			t.Errorf("ParseKeyName(%q) accepted", bad)
		}
	}
}

// checkInvariants asserts what every accepted config promises.
func checkInvariants(t *testing.T, c *Config) {
	t.Helper()
	if !c.EnableIPv4 && !c.EnableIPv6 {
		t.Fatal("no family enabled")
	}
	switch c.BackendType {
	case BackendVXLAN, BackendHostGW, BackendUDP:
	default:
		t.Fatalf("BackendType %q", c.BackendType)
	}
	check := func(network netip.Prefix, subLen, maxLen int, lo, hi netip.Addr) {
		if !network.IsValid() || network.Masked() != network {
			t.Fatalf("network %s not valid and masked", network)
		}
		if subLen > maxLen || subLen < network.Bits()+2 {
			t.Fatalf("subnet len %d for %s", subLen, network)
		}
		for _, a := range []netip.Addr{lo, hi} {
			if !network.Contains(a) || netip.PrefixFrom(a, subLen).Masked().Addr() != a {
				t.Fatalf("bound %s not an aligned address of %s", a, network)
			}
		}
		if hi.Less(lo) {
			t.Fatalf("max %s < min %s", hi, lo)
		}
	}
	if c.EnableIPv4 {
		check(c.Network, c.SubnetLen, 30, c.SubnetMin, c.SubnetMax)
		if !c.Network.Addr().Is4() {
			t.Fatalf("Network %s not IPv4", c.Network)
		}
	}
	if c.EnableIPv6 {
		check(c.IPv6Network, c.IPv6SubnetLen, 126, c.IPv6SubnetMin, c.IPv6SubnetMax)
		if !c.IPv6Network.Addr().Is6() || c.IPv6Network.Addr().Is4In6() {
			t.Fatalf("IPv6Network %s not IPv6", c.IPv6Network)
		}
	}
	n := c.Subnets()
	if n < 1 {
		t.Fatalf("Subnets() = %d", n)
	}
	for _, i := range []int{0, n / 2, n - 1} {
		sn, sn6 := c.Subnet(i)
		if !c.Contains(sn, sn6) {
			t.Fatalf("Subnet(%d) = %s %s not contained", i, sn, sn6)
		}
		if j, ok := c.Index(sn, sn6); !ok || j != i {
			t.Fatalf("Index(Subnet(%d)) = %d %v", i, j, ok)
		}
		if _, _, err := ParseKeyName(KeyName(sn, sn6)); err != nil {
			t.Fatalf("key of candidate %d: %v", i, err)
		}
	}
	if c.EnableIPv4 {
		last, _ := c.Subnet(n - 1)
		if last.Addr().Compare(c.SubnetMax) > 0 {
			t.Fatalf("last candidate %s beyond SubnetMax %s", last, c.SubnetMax)
		}
		want := new(big.Int).Sub(addrInt(c.SubnetMax), addrInt(c.SubnetMin))
		want.Rsh(want, uint(32-c.SubnetLen))
		if w := min(want.Int64()+1, maxCandidates); !c.EnableIPv6 && w != int64(n) {
			t.Fatalf("Subnets() = %d, want %d", n, w)
		}
	}
}

// TestParseConfigEnableNFTables: Flannel's key, as given or absent.
func TestParseConfigEnableNFTables(t *testing.T) {
	for _, tc := range []struct {
		json string
		want *bool
	}{
		{`{"Network":"10.244.0.0/16"}`, nil},
		{`{"Network":"10.244.0.0/16","EnableNFTables":true}`, ptrBool(true)},
		{`{"Network":"10.244.0.0/16","EnableNFTables":false}`, ptrBool(false)},
		{`{"Network":"10.244.0.0/16","enablenftables":true}`, ptrBool(true)}, // keys match case-insensitively, as in Flannel
	} {
		c, err := ParseConfig([]byte(tc.json))
		if err != nil {
			t.Fatalf("%s: %v", tc.json, err)
		}
		if (c.EnableNFTables == nil) != (tc.want == nil) || c.EnableNFTables != nil && *c.EnableNFTables != *tc.want {
			t.Errorf("%s: EnableNFTables = %v, want %v", tc.json, c.EnableNFTables, tc.want)
		}
	}
}

func ptrBool(b bool) *bool { return &b }

func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"Network":"10.244.0.0/16"}`,
		`{"Network":"10.244.0.0/16","SubnetLen":26,"SubnetMin":"10.244.0.64","SubnetMax":"10.244.0.192","Backend":{"Type":"udp"}}`,
		`{"Network":"10.0.0.0/28","SubnetLen":30}`,
		`{"Network":"10.1.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":80}`,
		`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/100","IPv6SubnetMin":"fc00::1000"}`,
		`{"Network":"0.0.0.0/0","SubnetLen":30}`,
		`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is not a *ConfigError", err)
			}
			return
		}
		checkInvariants(t, c)
	})
}
