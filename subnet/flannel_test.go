package subnet

// Flannel's semantics, row by row: each subtest feeds the input Flannel
// v0.28.9 takes and checks weft does what Flannel's code does (not only its
// documentation). Documentation/flannel-compatibility.md lists every row and
// names its subtest; TestFlannelSemanticsTable in Documentation keeps the two
// in step.

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestFlannelConfig: the network config as Flannel's ParseConfig and
// CheckNetworkConfig (pkg/subnet/config.go) treat it.
func TestFlannelConfig(t *testing.T) {
	tests := []struct {
		name, json string
		// errKey is the key a refusal names; "" for an accepted config.
		errKey string
		// want checks an accepted config.
		want func(*Config) string
	}{
		{name: "SubnetMax default is the last subnet", json: `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`,
			want: wantRange(24, "10.244.1.0", "10.244.255.0")},
		{name: "SubnetMin default is the second subnet", json: `{"Network":"10.20.0.0/22","SubnetLen":26,"Backend":{"Type":"vxlan"}}`,
			want: wantRange(26, "10.20.0.64", "10.20.3.192")},
		{name: "SubnetLen default 24 down to a /22", json: `{"Network":"10.0.0.0/22","Backend":{"Type":"vxlan"}}`,
			want: wantRange(24, "10.0.1.0", "10.0.3.0")},
		{name: "SubnetLen default network+2 from /23 to /28", json: `{"Network":"10.0.0.0/26","Backend":{"Type":"vxlan"}}`,
			want: wantRange(28, "10.0.0.16", "10.0.0.48")},
		{name: "network smaller than /28 refused", json: `{"Network":"10.0.0.0/29"}`, errKey: "Network"},
		{name: "SubnetLen above 30 refused", json: `{"Network":"10.0.0.0/16","SubnetLen":31}`, errKey: "SubnetLen"},
		{name: "SubnetLen under network+2 refused", json: `{"Network":"10.0.0.0/16","SubnetLen":17}`, errKey: "SubnetLen"},
		{name: "SubnetLen 0 is the default", json: `{"Network":"10.0.0.0/16","SubnetLen":0,"Backend":{"Type":"vxlan"}}`,
			want: wantRange(24, "10.0.1.0", "10.0.255.0")},
		{name: "SubnetMin 0.0.0.0 is unset", json: `{"Network":"10.0.0.0/16","SubnetMin":"0.0.0.0","Backend":{"Type":"vxlan"}}`,
			want: wantRange(24, "10.0.1.0", "10.0.255.0")},
		{name: "SubnetMax 0.0.0.0 is unset", json: `{"Network":"10.0.0.0/16","SubnetMax":"0.0.0.0","Backend":{"Type":"vxlan"}}`,
			want: wantRange(24, "10.0.1.0", "10.0.255.0")},
		{name: "SubnetMin outside the network refused", json: `{"Network":"10.0.0.0/16","SubnetMin":"10.1.0.0"}`, errKey: "SubnetMin"},
		{name: "SubnetMax off the SubnetLen boundary refused", json: `{"Network":"10.0.0.0/16","SubnetMax":"10.0.9.1"}`, errKey: "SubnetMax"},
		{name: "SubnetMax below SubnetMin refused", json: `{"Network":"10.0.0.0/16","SubnetMin":"10.0.9.0","SubnetMax":"10.0.3.0"}`, errKey: "SubnetMax"},
		{name: "host bits of Network dropped", json: `{"Network":"10.244.7.9/16","Backend":{"Type":"vxlan"}}`,
			want: func(c *Config) string { return eq("Network", c.Network.String(), "10.244.0.0/16") }},
		{name: "empty string refused", json: `{"Network":"10.0.0.0/16","IPv6Network":""}`, errKey: "IPv6Network"},
		{name: "keys match case-insensitively", json: `{"network":"10.5.0.0/16","subnetlen":25,"backend":{"type":"host-gw"}}`,
			want: func(c *Config) string {
				return eq("SubnetLen", c.SubnetLen, 25) + eq("BackendType", c.BackendType, BackendHostGW)
			}},
		{name: "unknown keys ignored", json: `{"Network":"10.0.0.0/16","EnableNFTables":true,"Backend":{"Type":"vxlan","Foo":1}}`,
			want: func(c *Config) string { return eq("BackendType", c.BackendType, BackendVXLAN) }},
		{name: "no Backend runs udp", json: `{"Network":"10.0.0.0/16"}`,
			want: func(c *Config) string { return eq("BackendType", c.BackendType, BackendUDP) }},
		{name: "Backend without Type refused", json: `{"Network":"10.0.0.0/16","Backend":{"VNI":4}}`, errKey: "Backend.Type"},
		{name: "Backend with empty Type refused", json: `{"Network":"10.0.0.0/16","Backend":{"Type":""}}`, errKey: "Backend.Type"},
		{name: "Backend null refused", json: `{"Network":"10.0.0.0/16","Backend":null}`, errKey: "Backend"},
		{name: "Backend.Type case-insensitive", json: `{"Network":"10.0.0.0/16","Backend":{"Type":"Host-GW"}}`,
			want: func(c *Config) string { return eq("BackendType", c.BackendType, BackendHostGW) }},
		{name: "Backend a Flannel backend weft lacks refused", json: `{"Network":"10.0.0.0/16","Backend":{"Type":"ipip"}}`, errKey: "Backend.Type"},
		{name: "EnableIPv4 defaults to true", json: `{"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`, errKey: "Network"},
		{name: "IPv6-only with EnableIPv4 false", json: `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`,
			want: func(c *Config) string {
				return eq("EnableIPv4", c.EnableIPv4, false) + eq("IPv6SubnetLen", c.IPv6SubnetLen, 64) +
					eq("IPv6SubnetMin", c.IPv6SubnetMin.String(), "fc00:0:0:1::") + eq("IPv6SubnetMax", c.IPv6SubnetMax.String(), "fc00:0:0:ffff::")
			}},
		{name: "IPv6SubnetLen default network+2 past a /62", json: `{"Network":"10.0.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/120","Backend":{"Type":"vxlan"}}`,
			want: func(c *Config) string {
				return eq("IPv6SubnetLen", c.IPv6SubnetLen, 122) + eq("IPv6SubnetMax", c.IPv6SubnetMax.String(), "fc00::c0")
			}},
		{name: "IPv6SubnetMin :: is unset", json: `{"Network":"10.0.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMin":"::","Backend":{"Type":"vxlan"}}`,
			want: func(c *Config) string { return eq("IPv6SubnetMin", c.IPv6SubnetMin.String(), "fc00:0:0:1::") }},
		{name: "IPv6Network smaller than /124 refused", json: `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/125"}`, errKey: "IPv6Network"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.json))
			if tt.errKey != "" {
				var ce *ConfigError
				if !errors.As(err, &ce) || ce.Key != tt.errKey {
					t.Fatalf("ParseConfig(%s) = %v, want a refusal naming %s", tt.json, err, tt.errKey)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseConfig(%s): %v", tt.json, err)
			}
			if msg := tt.want(c); msg != "" {
				t.Errorf("ParseConfig(%s):%s", tt.json, msg)
			}
		})
	}
}

func wantRange(subLen int, lo, hi string) func(*Config) string {
	return func(c *Config) string {
		return eq("SubnetLen", c.SubnetLen, subLen) + eq("SubnetMin", c.SubnetMin.String(), lo) + eq("SubnetMax", c.SubnetMax.String(), hi)
	}
}

func eq[T comparable](what string, got, want T) string {
	if got == want {
		return ""
	}
	return " " + what + " = " + strings.Trim(strings.TrimSpace(jsonString(got)), `"`) + ", want " + strings.Trim(jsonString(want), `"`) + ";"
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestFlannelLease: lease values as each Flannel backend writes them
// (pkg/lease LeaseAttrs; the backends' AcquireLease calls), parsed, and
// weft's own lease written byte for byte as Flannel writes it.
func TestFlannelLease(t *testing.T) {
	const mac = "0e:5c:71:9a:33:10"
	tests := []struct {
		name, value string
		want        LeaseAttrs
		// roundTrip: weft writes the same bytes for these attributes.
		roundTrip bool
	}{
		{name: "vxlan", value: `{"PublicIP":"198.18.0.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"` + mac + `"}}`,
			want: LeaseAttrs{PublicIP: mustAddr("198.18.0.11"), BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac + `"}`)}, roundTrip: true},
		{name: "host-gw", value: `{"PublicIP":"198.18.0.12","PublicIPv6":null,"BackendType":"host-gw"}`,
			want: LeaseAttrs{PublicIP: mustAddr("198.18.0.12"), BackendType: "host-gw"}, roundTrip: true},
		{name: "udp has no BackendType", value: `{"PublicIP":"198.18.0.13","PublicIPv6":null}`,
			want: LeaseAttrs{PublicIP: mustAddr("198.18.0.13")}, roundTrip: true},
		{name: "alloc has no BackendType", value: `{"PublicIP":"198.18.0.14","PublicIPv6":null}`,
			want: LeaseAttrs{PublicIP: mustAddr("198.18.0.14")}, roundTrip: true},
		{name: "ipip", value: `{"PublicIP":"198.18.0.15","PublicIPv6":null,"BackendType":"ipip"}`,
			want: LeaseAttrs{PublicIP: mustAddr("198.18.0.15"), BackendType: "ipip"}, roundTrip: true},
		{name: "ipsec", value: `{"PublicIP":"198.18.0.22","PublicIPv6":null,"BackendType":"ipsec"}`,
			want: LeaseAttrs{PublicIP: mustAddr("198.18.0.22"), BackendType: "ipsec"}, roundTrip: true},
		{name: "extension with its command's output", value: `{"PublicIP":"198.18.0.23","PublicIPv6":null,"BackendType":"extension","BackendData":"10.9.0.1\n"}`,
			want: LeaseAttrs{PublicIP: mustAddr("198.18.0.23"), BackendType: "extension", BackendData: json.RawMessage(`"10.9.0.1\n"`)}, roundTrip: true},
		{name: "extension without a command", value: `{"PublicIP":"198.18.0.24","PublicIPv6":null,"BackendType":"extension"}`,
			want: LeaseAttrs{PublicIP: mustAddr("198.18.0.24"), BackendType: "extension"}, roundTrip: true},
		{name: "tencentvpc has no BackendType", value: `{"PublicIP":"198.18.0.25","PublicIPv6":null}`,
			want: LeaseAttrs{PublicIP: mustAddr("198.18.0.25")}, roundTrip: true},
		{name: "wireguard", value: `{"PublicIP":"198.18.0.16","PublicIPv6":null,"BackendType":"wireguard","BackendData":{"PublicKey":"k","Port":51820}}`,
			want: LeaseAttrs{PublicIP: mustAddr("198.18.0.16"), BackendType: "wireguard", BackendData: json.RawMessage(`{"PublicKey":"k","Port":51820}`)}, roundTrip: true},
		{name: "vxlan dual stack", value: `{"PublicIP":"198.18.0.17","PublicIPv6":"2001:db8::17","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"` + mac + `"},"BackendV6Data":{"VNI":1,"VtepMAC":"` + mac + `"}}`,
			want: LeaseAttrs{PublicIP: mustAddr("198.18.0.17"), PublicIPv6: mustAddr("2001:db8::17"), BackendType: "vxlan",
				BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac + `"}`), BackendV6Data: json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac + `"}`)}, roundTrip: true},
		{name: "vxlan IPv6 only", value: `{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::18","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"` + mac + `"}}`,
			want: LeaseAttrs{PublicIPv6: mustAddr("2001:db8::18"), BackendType: "vxlan", BackendV6Data: json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac + `"}`)}, roundTrip: true},
		{name: "older Flannel without PublicIPv6", value: `{"PublicIP":"198.18.0.19","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"` + mac + `"}}`,
			want: LeaseAttrs{PublicIP: mustAddr("198.18.0.19"), BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac + `"}`)}},
		{name: "empty BackendType", value: `{"PublicIP":"198.18.0.20","BackendType":"","BackendData":null}`,
			want: LeaseAttrs{PublicIP: mustAddr("198.18.0.20")}},
		{name: "IPv4-mapped PublicIP", value: `{"PublicIP":"::ffff:198.18.0.21","BackendType":"host-gw"}`,
			want: LeaseAttrs{PublicIP: mustAddr("198.18.0.21"), BackendType: "host-gw"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got LeaseAttrs
			if err := json.Unmarshal([]byte(tt.value), &got); err != nil {
				t.Fatalf("Unmarshal(%s): %v", tt.value, err)
			}
			if got.PublicIP != tt.want.PublicIP || got.PublicIPv6 != tt.want.PublicIPv6 || got.BackendType != tt.want.BackendType ||
				string(got.BackendData) != string(tt.want.BackendData) || string(got.BackendV6Data) != string(tt.want.BackendV6Data) {
				t.Fatalf("Unmarshal(%s) = %+v, want %+v", tt.value, got, tt.want)
			}
			if !tt.roundTrip {
				return
			}
			out, err := json.Marshal(tt.want)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tt.value {
				t.Fatalf("weft writes %s\nFlannel writes %s", out, tt.value)
			}
		})
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestFlannelSubnetFile: the subnet file as Flannel's WriteSubnetFile
// (pkg/subnet/subnet.go) writes it, and as its readers (flanneld's previous
// subnet, the flannel CNI plugin) read it.
func TestFlannelSubnetFile(t *testing.T) {
	tests := []struct {
		name string
		file string
		info FileInfo
	}{
		{name: "IPv4", file: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
			info: FileInfo{Network: pfx("10.244.0.0/16"), Subnet: pfx("10.244.3.1/24"), MTU: 1450, IPMasq: true}},
		{name: "dual stack", file: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:3::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
			info: FileInfo{Network: pfx("10.244.0.0/16"), Subnet: pfx("10.244.3.1/24"), IPv6Network: pfx("fc00::/48"), IPv6Subnet: pfx("fc00:0:0:3::1/64"), MTU: 1450}},
		{name: "IPv6 only", file: "FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:3::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n",
			info: FileInfo{IPv6Network: pfx("fc00::/48"), IPv6Subnet: pfx("fc00:0:0:3::1/64"), MTU: 1430}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(tt.info.Marshal()); got != tt.file {
				t.Errorf("weft writes\n%s\nFlannel writes\n%s", got, tt.file)
			}
			got, err := ParseFile([]byte(tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.info {
				t.Errorf("ParseFile = %+v, want %+v", got, tt.info)
			}
		})
	}
	// flanneld reads its previous subnet with godotenv, which also takes
	// quoted values, `export` and comments.
	t.Run("dotenv forms", func(t *testing.T) {
		got, err := ParseFile([]byte("# written by hand\nexport FLANNEL_NETWORK=\"10.244.0.0/16\"\nFLANNEL_SUBNET='10.244.3.1/24'\nFLANNEL_MTU=1450 # vxlan\nFLANNEL_IPMASQ=true\n"))
		if err != nil {
			t.Fatal(err)
		}
		if want := (FileInfo{Network: pfx("10.244.0.0/16"), Subnet: pfx("10.244.3.1/24"), MTU: 1450, IPMasq: true}); got != want {
			t.Errorf("ParseFile = %+v, want %+v", got, want)
		}
	})
	t.Run("IPv6 key with an IPv4 value refused", func(t *testing.T) {
		if _, err := ParseFile([]byte("FLANNEL_IPV6_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\n")); err == nil || !strings.Contains(err.Error(), "FLANNEL_IPV6_SUBNET") {
			t.Errorf("ParseFile accepted an IPv4 FLANNEL_IPV6_SUBNET (err %v)", err)
		}
	})
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// TestFlannelPick: which subnet a node is given, as Flannel's
// allocateSubnet (pkg/subnet/etcd/local_manager.go) chooses it.
func TestFlannelPick(t *testing.T) {
	t.Run("a lease of another length blocks what it overlaps", func(t *testing.T) {
		// Two candidates /25 are left: 10.9.0.128/25 and 10.9.1.0/25; an
		// old /24 lease covers 10.9.0.0/24, so only 10.9.1.0/25 is free.
		c, err := ParseConfig([]byte(`{"Network":"10.9.0.0/23","SubnetLen":25,"SubnetMax":"10.9.1.0","Backend":{"Type":"vxlan"}}`))
		if err != nil {
			t.Fatal(err)
		}
		old := []Lease{{Subnet: pfx("10.9.0.0/24")}}
		for range 20 {
			sn, _, err := c.PickFree(old, nil)
			if err != nil || sn != pfx("10.9.1.0/25") {
				t.Fatalf("PickFree = %s, %v; want 10.9.1.0/25 (10.9.0.128/25 overlaps the /24 lease)", sn, err)
			}
		}
		if _, _, err := c.PickFree(append(old, Lease{Subnet: pfx("10.9.1.0/25")}), nil); !errors.Is(err, ErrNoFreeSubnet) {
			t.Fatalf("PickFree with everything overlapped = %v, want ErrNoFreeSubnet", err)
		}
	})
	t.Run("the last subnet is handed out", func(t *testing.T) {
		c, err := ParseConfig([]byte(`{"Network":"10.9.0.0/24","SubnetLen":26,"Backend":{"Type":"vxlan"}}`))
		if err != nil {
			t.Fatal(err)
		}
		held := []Lease{{Subnet: pfx("10.9.0.64/26")}, {Subnet: pfx("10.9.0.128/26")}}
		if sn, _, err := c.PickFree(held, nil); err != nil || sn != pfx("10.9.0.192/26") {
			t.Fatalf("PickFree = %s, %v; want the last subnet 10.9.0.192/26", sn, err)
		}
	})
}

// TestFlannelLeaseTTL: Flannel's leases live 24 h (subnetTTL, not
// configurable there); weft's default is the same.
func TestFlannelLeaseTTL(t *testing.T) {
	if DefaultLeaseTTL != 24*time.Hour {
		t.Fatalf("DefaultLeaseTTL = %s, want Flannel's 24h", DefaultLeaseTTL)
	}
}
