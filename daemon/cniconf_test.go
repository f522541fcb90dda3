package daemon

import (
	"encoding/json"
	"testing"
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
