package daemon

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/weftnet/weft/subnet"
)

// CNIConfFile is the conflist weftd installs in the CNI conf dir. The "10-"
// prefix sorts it before most other networks, as runtimes take the first.
const CNIConfFile = "10-weft.conflist"

// CNINetworkName is the network name in the conflist; the CNI plugin keeps
// its address store under <ipam dir>/<CNINetworkName>.
const CNINetworkName = "weft"

// CNIConfList renders the conflist: the weft plugin, then portmap for
// hostPort support.
func CNIConfList(subnetFile, ipamDir, bridge string) []byte {
	conf := map[string]any{
		"cniVersion": "1.1.0",
		"name":       CNINetworkName,
		"plugins": []any{
			map[string]any{"type": "weft", "subnetFile": subnetFile, "dataDir": ipamDir, "bridge": bridge},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true},
		},
	}
	out, _ := json.MarshalIndent(conf, "", "  ") // maps of strings and bools always marshal
	return append(out, '\n')
}

// installCNIConf writes the conflist atomically, and only when its content
// differs, so runtimes watching the directory see no spurious change.
func (d *Daemon) installCNIConf() error {
	path := filepath.Join(d.cfg.CNIConfDir, CNIConfFile)
	want := CNIConfList(d.cfg.SubnetFile, d.cfg.CNIIPAMDir, d.cfg.CNIBridge)
	if have, err := os.ReadFile(path); err == nil && bytes.Equal(have, want) {
		return nil
	}
	if err := subnet.WriteFileAtomic(path, want, 0o644); err != nil {
		return fmt.Errorf("install CNI config: %w", err)
	}
	d.log.Info("installed CNI config", "path", path)
	return nil
}
