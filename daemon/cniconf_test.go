package daemon

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/nl"
)

// TestCNIConfList: hairpin is on (kube-flannel's conflist turns it on, so a
// pod reaches itself through a service address), and the network name and
// IPAM dir are what weftd was given, so a node moving from Flannel can share
// host-local's store.
func TestCNIConfList(t *testing.T) {
	raw := CNIConfList(CNIConf{SubnetFile: "/run/flannel/subnet.env", IPAMDir: "/var/lib/cni/networks", Network: "cbr0", Bridge: "cni0"})
	var conf struct {
		Name    string `json:"name"`
		Plugins []struct {
			Type        string `json:"type"`
			SubnetFile  string `json:"subnetFile"`
			DataDir     string `json:"dataDir"`
			Bridge      string `json:"bridge"`
			HairpinMode bool   `json:"hairpinMode"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(raw, &conf); err != nil {
		t.Fatal(err)
	}
	if conf.Name != "cbr0" || len(conf.Plugins) != 2 {
		t.Fatalf("conflist = %s", raw)
	}
	p := conf.Plugins[0]
	if p.Type != "weft" || !p.HairpinMode || p.Bridge != "cni0" || p.DataDir != "/var/lib/cni/networks" || p.SubnetFile != "/run/flannel/subnet.env" {
		t.Errorf("weft plugin entry = %+v", p)
	}
	if conf.Plugins[1].Type != "portmap" {
		t.Errorf("second plugin = %q, want portmap", conf.Plugins[1].Type)
	}
}

// TestCNIConfListBigTCP: the BIG TCP sizes go to the plugin as "bigTCP"
// (the plugin decodes the same nl.GSO), and with BIG TCP off the key is
// absent, so the plugin keeps the kernel default.
func TestCNIConfListBigTCP(t *testing.T) {
	c := CNIConf{SubnetFile: "/run/weft/subnet.env", IPAMDir: "/var/lib/weft/ipam", Network: "weft", Bridge: "weft0"}
	if raw := CNIConfList(c); strings.Contains(string(raw), "bigTCP") {
		t.Errorf("BIG TCP off, conflist has bigTCP: %s", raw)
	}
	c.BigTCP = nl.GSO{IPv6: nl.BigTCPSize, IPv4: 131072}
	raw := CNIConfList(c)
	var conf struct {
		Plugins []struct {
			BigTCP nl.GSO `json:"bigTCP"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(raw, &conf); err != nil {
		t.Fatal(err)
	}
	if len(conf.Plugins) != 2 || conf.Plugins[0].BigTCP != c.BigTCP {
		t.Errorf("conflist = %s, want bigTCP %+v", raw, c.BigTCP)
	}
}

func TestCNINetworkNameChecked(t *testing.T) {
	for _, bad := range []string{"..", "a/b"} {
		if _, err := (Config{CNINetwork: bad}).withDefaults(); err == nil {
			t.Errorf("CNI network name %q accepted", bad)
		}
	}
	c, err := Config{}.withDefaults()
	if err != nil || c.CNINetwork != CNINetworkName {
		t.Fatalf("default CNI network = %q, %v", c.CNINetwork, err)
	}
}
