package cniplugin

import (
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weftnet/weft/ipam"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		code    uint // 0: success
		msg     string
		checkFn func(t *testing.T, c *NetConf)
	}{
		{
			name: "conflist entry weftd installs",
			in: `{"cniVersion":"1.1.0","name":"weft","type":"weft","subnetFile":"/run/weft/subnet.env",
			      "dataDir":"/var/lib/weft/ipam","bridge":"weft0"}`,
			checkFn: func(t *testing.T, c *NetConf) {
				if c.SubnetFile != "/run/weft/subnet.env" || c.DataDir != "/var/lib/weft/ipam" || c.Bridge != "weft0" ||
					!c.DefaultGateway() || c.MTU != 0 || c.HairpinMode || c.IPMasq {
					t.Errorf("parsed %+v", c)
				}
			},
		},
		{
			name: "defaults",
			in:   `{"cniVersion":"1.0.0","name":"n","type":"weft"}`,
			checkFn: func(t *testing.T, c *NetConf) {
				if c.SubnetFile != DefaultSubnetFile || c.DataDir != DefaultDataDir || c.Bridge != DefaultBridge || !c.DefaultGateway() {
					t.Errorf("defaults not applied: %+v", c)
				}
			},
		},
		{
			name: "every option",
			in: `{"cniVersion":"1.1.0","name":"n","type":"weft","subnetFile":"/s","dataDir":"/d","bridge":"br9","mtu":1400,
			      "hairpinMode":true,"isDefaultGateway":false,"ipMasq":true,
			      "routes":[{"dst":"192.168.0.0/16"},{"dst":"172.16.0.0/12","gw":"10.0.0.9"}]}`,
			checkFn: func(t *testing.T, c *NetConf) {
				if c.SubnetFile != "/s" || c.DataDir != "/d" || c.Bridge != "br9" || c.MTU != 1400 || !c.HairpinMode ||
					c.DefaultGateway() || !c.IPMasq || len(c.Routes) != 2 || c.Routes[1].GW.String() != "10.0.0.9" {
					t.Errorf("parsed %+v", c)
				}
			},
		},
		{name: "not json", in: `{"name":`, code: types.ErrDecodingFailure, msg: "decode network config"},
		{name: "wrong type", in: `{"name":"n","mtu":"big"}`, code: types.ErrDecodingFailure, msg: "mtu"},
		{name: "no name", in: `{"cniVersion":"1.1.0"}`, code: types.ErrInvalidNetworkConfig, msg: "missing network name"},
		{name: "name with slash", in: `{"name":"a/b"}`, code: types.ErrInvalidNetworkConfig, msg: "directory name"},
		{name: "relative subnet file", in: `{"name":"n","subnetFile":"subnet.env"}`, code: types.ErrInvalidNetworkConfig, msg: "absolute"},
		{name: "relative data dir", in: `{"name":"n","dataDir":"ipam"}`, code: types.ErrInvalidNetworkConfig, msg: "absolute"},
		{name: "long bridge", in: `{"name":"n","bridge":"abcdefghijklmnop"}`, code: types.ErrInvalidNetworkConfig, msg: "longer than 15"},
		{name: "bridge with slash", in: `{"name":"n","bridge":"a/b"}`, code: types.ErrInvalidNetworkConfig, msg: "bridge"},
		{name: "mtu too small", in: `{"name":"n","mtu":20}`, code: types.ErrInvalidNetworkConfig, msg: "mtu 20"},
		{name: "mtu too big", in: `{"name":"n","mtu":70000}`, code: types.ErrInvalidNetworkConfig, msg: "mtu 70000"},
		{name: "route bad cidr", in: `{"name":"n","routes":[{"dst":"10.0.0.0/40"}]}`, code: types.ErrDecodingFailure, msg: "decode"},
		{name: "route gw of the other family", in: `{"name":"n","routes":[{"dst":"fd00::/8","gw":"10.0.0.1"}]}`, code: types.ErrInvalidNetworkConfig, msg: "routes[0]: gw 10.0.0.1 is not of the family"},
		{name: "route no dst", in: `{"name":"n","routes":[{"gw":"10.0.0.1"}]}`, code: types.ErrInvalidNetworkConfig, msg: "routes[0]"},
		{name: "route ipv6 gw", in: `{"name":"n","routes":[{"dst":"10.0.0.0/8","gw":"fd00::1"}]}`, code: types.ErrInvalidNetworkConfig, msg: "gw"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.in))
			if tt.code == 0 {
				if err != nil {
					t.Fatal(err)
				}
				tt.checkFn(t, c)
				return
			}
			var cerr *types.Error
			if !errors.As(err, &cerr) {
				t.Fatalf("err = %v, want a CNI error with code %d", err, tt.code)
			}
			if cerr.Code != tt.code || !strings.Contains(cerr.Msg, tt.msg) {
				t.Errorf("err = code %d %q, want code %d containing %q", cerr.Code, cerr.Msg, tt.code, tt.msg)
			}
		})
	}
}

// The daemon renders NetConf to JSON; the plugin must read back the same.
func TestNetConfRoundTrip(t *testing.T) {
	f := false
	in := NetConf{CNIVersion: "1.1.0", Name: "weft", Type: PluginType, SubnetFile: DefaultSubnetFile,
		DataDir: DefaultDataDir, Bridge: DefaultBridge, MTU: 1400, IsDefaultGateway: &f}
	data, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "dns") || strings.Contains(string(data), "prevResult") {
		t.Errorf("empty runtime fields rendered: %s", data)
	}
	out, err := ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	if out.MTU != 1400 || out.DefaultGateway() || out.Bridge != DefaultBridge || out.Type != PluginType {
		t.Errorf("round trip: %s -> %+v", data, out)
	}
}

// GC's valid list arrives under the spec's key, its alias, or both (libcni
// sends both); GCKeep is their union, empty only when neither names one.
func TestGCKeep(t *testing.T) {
	a := `{"containerID":"a","ifname":"eth0"}`
	b := `{"containerID":"b","ifname":"eth0"}`
	tests := []struct {
		name, members string
		want          []string
	}{
		{name: "no key"},
		{name: "null", members: `,"cni.dev/valid-attachments":null,"cni.dev/attachments":null`},
		{name: "empty", members: `,"cni.dev/valid-attachments":[]`},
		{name: "spec key", members: `,"cni.dev/valid-attachments":[` + a + `]`, want: []string{"a"}},
		{name: "alias", members: `,"cni.dev/attachments":[` + b + `]`, want: []string{"b"}},
		{name: "both, same list", members: `,"cni.dev/valid-attachments":[` + a + `,` + b + `],"cni.dev/attachments":[` + a + `,` + b + `]`, want: []string{"a", "b"}},
		{name: "both, different lists", members: `,"cni.dev/valid-attachments":[` + a + `],"cni.dev/attachments":[` + b + `]`, want: []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"weft"` + tt.members + `}`))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, k := range c.GCKeep() {
				if k.IfName != "eth0" {
					t.Errorf("attachment %+v", k)
				}
				got = append(got, k.ContainerID)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("GCKeep = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseNode(t *testing.T) {
	tests := []struct {
		name string
		in   string
		// v4 and v6 are "subnet gateway network" ("" for an absent
		// family, "-" for an absent network).
		v4, v6  string
		mtu     int
		wantErr string
	}{
		{name: "flannel file", in: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
			v4: "10.244.3.0/24 10.244.3.1 10.244.0.0/16", mtu: 1450},
		{name: "no network", in: "FLANNEL_SUBNET=10.1.2.1/24\nFLANNEL_MTU=1500\n",
			v4: "10.1.2.0/24 10.1.2.1 -", mtu: 1500},
		{name: "dual stack", in: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_NETWORK=fd10::/56\nFLANNEL_IPV6_SUBNET=fd10:0:0:3::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n",
			v4: "10.244.3.0/24 10.244.3.1 10.244.0.0/16", v6: "fd10:0:0:3::/64 fd10:0:0:3::1 fd10::/56", mtu: 1430},
		{name: "ipv6 only", in: "FLANNEL_IPV6_NETWORK=fd10::/56\nFLANNEL_IPV6_SUBNET=fd10:0:0:3::1/64\nFLANNEL_MTU=1430\n",
			v6: "fd10:0:0:3::/64 fd10:0:0:3::1 fd10::/56", mtu: 1430},
		{name: "ipv6 only, no network", in: "FLANNEL_IPV6_SUBNET=fd00::/64\nFLANNEL_MTU=1450\n",
			v6: "fd00::/64 fd00::1 -", mtu: 1450},
		{name: "truncated", in: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUB", wantErr: "KEY=VALUE"},
		{name: "truncated after subnet", in: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n", wantErr: "FLANNEL_MTU"},
		{name: "no subnet", in: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_MTU=1450\n", wantErr: "FLANNEL_SUBNET"},
		{name: "malformed cidr", in: "FLANNEL_SUBNET=10.244.3.1/33\nFLANNEL_MTU=1450\n", wantErr: "FLANNEL_SUBNET"},
		{name: "subnet too small", in: "FLANNEL_SUBNET=10.244.3.1/31\nFLANNEL_MTU=1450\n", wantErr: "smaller than a /30"},
		{name: "ipv6 subnet too small", in: "FLANNEL_IPV6_SUBNET=fd00::1/127\nFLANNEL_MTU=1450\n", wantErr: "smaller than a /126"},
		{name: "subnet outside network", in: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.9.3.1/24\nFLANNEL_MTU=1450\n", wantErr: "not inside"},
		{name: "ipv6 subnet outside network", in: "FLANNEL_SUBNET=10.9.3.1/24\nFLANNEL_IPV6_NETWORK=fd10::/56\nFLANNEL_IPV6_SUBNET=fd11::1/64\nFLANNEL_MTU=1450\n", wantErr: "FLANNEL_IPV6_SUBNET=fd11::1/64 is not inside"},
	}
	show := func(f family) string {
		if !f.ok() {
			return ""
		}
		network := "-"
		if f.network.IsValid() {
			network = f.network.String()
		}
		return f.subnet.String() + " " + f.gateway.String() + " " + network
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := parseNode([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if show(n.v4) != tt.v4 || show(n.v6) != tt.v6 || n.mtu != tt.mtu {
				t.Errorf("parseNode = v4 %q v6 %q mtu %d, want %q %q %d", show(n.v4), show(n.v6), n.mtu, tt.v4, tt.v6, tt.mtu)
			}
		})
	}
}

func TestHostVethName(t *testing.T) {
	a := HostVethName("c1", "eth0")
	if len(a) > 15 || !strings.HasPrefix(a, "weft") {
		t.Fatalf("HostVethName = %q: not a valid weft interface name", a)
	}
	if a != HostVethName("c1", "eth0") {
		t.Error("HostVethName is not deterministic")
	}
	for _, other := range []string{HostVethName("c1", "eth1"), HostVethName("c2", "eth0"), HostVethName("c1e", "th0")} {
		if other == a {
			t.Errorf("distinct attachments share veth name %s", a)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"weft","type":"weft","subnetFile":"/run/weft/subnet.env","dataDir":"/var/lib/weft/ipam","bridge":"weft0"}`))
	f.Add([]byte(`{"name":"n","mtu":1400,"isDefaultGateway":false,"routes":[{"dst":"10.0.0.0/8","gw":"10.1.0.1"}]}`))
	f.Add([]byte(`{"name":"n","prevResult":{"cniVersion":"1.0.0","ips":[]},"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`))
	f.Add([]byte(`{"name":"n","cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}]}`))
	f.Add([]byte(`{"name":`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			var cerr *types.Error
			if !errors.As(err, &cerr) || (cerr.Code != types.ErrDecodingFailure && cerr.Code != types.ErrInvalidNetworkConfig) {
				t.Fatalf("error is not a CNI decode/config error: %#v", err)
			}
			return
		}
		// Whatever is accepted is usable: valid names and paths.
		if c.Name == "" || validIfName(c.Bridge) != nil || c.SubnetFile == "" || c.DataDir == "" {
			t.Fatalf("accepted unusable config %+v", c)
		}
		if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
			t.Fatalf("accepted mtu %d", c.MTU)
		}
		if _, err := ipam.Open(t.TempDir(), c.Name); err != nil {
			t.Fatalf("accepted network name %q the store cannot use: %v", c.Name, err)
		}
	})
}

func FuzzParseNode(f *testing.F) {
	f.Add([]byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"))
	f.Add([]byte("FLANNEL_SUBNET=10.244.3.1/30\nFLANNEL_MTU=68\n"))
	f.Add([]byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUB"))
	f.Add([]byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_NETWORK=fd10::/56\nFLANNEL_IPV6_SUBNET=fd10:0:0:3::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n"))
	f.Add([]byte("FLANNEL_IPV6_NETWORK=fd10::/56\nFLANNEL_IPV6_SUBNET=fd10:0:0:3::1/64\nFLANNEL_MTU=1430\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := parseNode(data)
		if err != nil {
			return
		}
		if len(n.families()) == 0 || n.mtu < 68 {
			t.Fatalf("accepted a node with no family or a bad MTU: %+v", n)
		}
		for _, fa := range n.families() {
			first, last, err := ipam.Usable(fa.subnet)
			if err != nil {
				t.Fatalf("accepted subnet %s the allocator cannot use: %v", fa.subnet, err)
			}
			if fa.subnet != fa.subnet.Masked() || !fa.subnet.Contains(fa.gateway) || fa.gateway != fa.subnet.Addr().Next() {
				t.Fatalf("bad subnet/gateway %s %s", fa.subnet, fa.gateway)
			}
			if !fa.subnet.Contains(first) || !fa.subnet.Contains(last) || first == fa.gateway {
				t.Fatalf("usable range %s-%s wrong for %s", first, last, fa.subnet)
			}
			if fa.gatewayPrefix() != netip.PrefixFrom(fa.gateway, fa.subnet.Bits()) {
				t.Fatalf("bad gateway prefix %+v", fa)
			}
			if n.of(fa.gateway) != fa {
				t.Fatalf("family of %s is not %+v", fa.gateway, fa)
			}
		}
		if n.v4.ok() && !n.v4.subnet.Addr().Is4() || n.v6.ok() && !n.v6.subnet.Addr().Is6() {
			t.Fatalf("a family holds a subnet of the other: %+v", n)
		}
	})
}
