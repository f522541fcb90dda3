package docs

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/weftnet/weft/backend/vxlan"
	"github.com/weftnet/weft/backend/wireguard"
	"github.com/weftnet/weft/lab"
	"github.com/weftnet/weft/subnet"
)

// jsonBlock is one ```json block: a // comment line, then the config.
var jsonBlock = regexp.MustCompile("(?s)```json\n// ([^\n]*)\n([^\n]*)\n```")

// TestConfigurationIPv6Examples keeps configuration.md's IPv6 examples
// true: each parses and validates as weftd and `weftctl config set` parse
// it, has the families and node subnet lengths its comment names, is
// byte for byte what the lab writes where the comment says so, and names
// the devices (and ports) the backend creates for it.
func TestConfigurationIPv6Examples(t *testing.T) {
	raw, err := os.ReadFile("configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(raw), "<!-- ipv6-examples -->")
	body, _, ok2 := strings.Cut(rest, "<!-- /ipv6-examples -->")
	if !ok || !ok2 {
		t.Fatal("configuration.md has no <!-- ipv6-examples --> ... <!-- /ipv6-examples --> section")
	}
	blocks := jsonBlock.FindAllStringSubmatch(body, -1)
	if len(blocks) < 3 {
		t.Fatalf("configuration.md's IPv6 section has %d examples, want the dual-stack, IPv6-only and wireguard ones", len(blocks))
	}
	for _, b := range blocks {
		comment, js := b[1], b[2]
		cfg, err := subnet.ParseConfig([]byte(js))
		if err != nil {
			t.Errorf("%s: %v", js, err)
			continue
		}
		if !cfg.EnableIPv6 || !cfg.IPv6Network.IsValid() {
			t.Errorf("%s: not an IPv6 network: %+v", js, cfg)
		}
		// The families and subnet lengths the comment names.
		says := func(what string, want bool) {
			if got := strings.Contains(comment, what); got != want {
				t.Errorf("%q: says %q %v, want %v (parsed: IPv4 %v %s/%d, IPv6 %s/%d, %s)", comment, what, got, want,
					cfg.EnableIPv4, cfg.Network, cfg.SubnetLen, cfg.IPv6Network, cfg.IPv6SubnetLen, cfg.BackendType)
			}
		}
		says("IPv6-only", !cfg.EnableIPv4)
		says("Dual stack", cfg.EnableIPv4)
		lens := fmt.Sprintf("/%d node subnets", cfg.IPv6SubnetLen)
		if cfg.EnableIPv4 {
			lens = fmt.Sprintf("/%d and /%d node subnets", cfg.SubnetLen, cfg.IPv6SubnetLen)
		}
		says(lens, true)
		if strings.Contains(comment, "weftctl lab up") {
			network := ""
			if cfg.EnableIPv4 {
				network = cfg.Network.String()
			}
			if want := lab.NetworkConfigIPv6(network, cfg.IPv6Network.String(), cfg.BackendType); js != want {
				t.Errorf("%q: the lab writes %s", js, want)
			}
		}
		// The devices the backend makes for the network.
		var devs []string
		switch cfg.BackendType {
		case subnet.BackendVXLAN:
			o, err := vxlan.ParseOptions(cfg.Backend)
			if err != nil {
				t.Fatal(err)
			}
			devs = append(devs, vxlan.DeviceName6(o.VNI))
			if cfg.EnableIPv4 {
				devs = append(devs, vxlan.DeviceName(o.VNI))
			}
		case subnet.BackendWireGuard:
			o, err := wireguard.ParseOptions(cfg.Backend)
			if err != nil {
				t.Fatal(err)
			}
			if o.Mode != wireguard.ModeSeparate {
				t.Fatalf("%s: the example is of Mode separate", js)
			}
			devs = append(devs, fmt.Sprintf("%s (%d)", wireguard.DeviceNameV6, o.ListenPortV6))
			if cfg.EnableIPv4 {
				devs = append(devs, fmt.Sprintf("%s (%d)", wireguard.DeviceName, o.ListenPort))
			}
		}
		for _, d := range devs {
			says(d, true)
		}
	}
}
