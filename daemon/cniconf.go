package daemon

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/weftnet/weft/internal/nl"
	"github.com/weftnet/weft/subnet"
)

// CNIConfFile is the conflist weftd installs in the CNI conf dir. The "10-"
// prefix sorts it before most other networks, as runtimes take the first.
const CNIConfFile = "10-weft.conflist"

// CNINetworkName is the default network name in the conflist; the CNI
// plugin keeps its address store under <ipam dir>/<network name>.
const CNINetworkName = "weft"

// CNIConf is what the installed conflist says.
type CNIConf struct {
	SubnetFile string
	// IPAMDir and Network place the address store at IPAMDir/Network. A node
	// moving from Flannel points them at host-local's store
	// (/var/lib/cni/networks and "cbr0"), whose layout the plugin shares,
	// so new pods never take an address a Flannel pod holds.
	IPAMDir string
	Network string
	Bridge  string
	// BigTCP is the GSO/GRO size of the bridge and the pod veths (the
	// plugin's "bigTCP"); zero leaves the kernel default and the key out.
	BigTCP nl.GSO
}

// CNIConfList renders the conflist: the weft plugin (hairpin on, as
// kube-flannel's conflist has it), then portmap for hostPort support.
func CNIConfList(c CNIConf) []byte {
	weft := map[string]any{"type": "weft", "subnetFile": c.SubnetFile, "dataDir": c.IPAMDir, "bridge": c.Bridge, "hairpinMode": true}
	if !c.BigTCP.Zero() {
		weft["bigTCP"] = c.BigTCP
	}
	conf := map[string]any{
		"cniVersion": "1.1.0",
		"name":       c.Network,
		"plugins": []any{
			weft,
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true},
		},
	}
	out, _ := json.MarshalIndent(conf, "", "  ") // maps of strings, bools and integers always marshal
	return append(out, '\n')
}

// installCNIConf writes the conflist atomically, and only when its content
// differs, so runtimes watching the directory see no spurious change.
func (d *Daemon) installCNIConf(bigTCP nl.GSO) error {
	path := filepath.Join(d.cfg.CNIConfDir, CNIConfFile)
	c := d.cfg.cniConf()
	c.BigTCP = bigTCP
	want := CNIConfList(c)
	if have, err := os.ReadFile(path); err == nil && bytes.Equal(have, want) {
		return nil
	}
	if err := subnet.WriteFileAtomic(path, want, 0o644); err != nil {
		return fmt.Errorf("install CNI config: %w", err)
	}
	d.log.Info("installed CNI config", "path", path)
	return nil
}

func (c Config) cniConf() CNIConf {
	return CNIConf{SubnetFile: c.SubnetFile, IPAMDir: c.CNIIPAMDir, Network: c.CNINetwork, Bridge: c.CNIBridge}
}
