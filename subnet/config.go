package subnet

import (
	"encoding/json"
	"net/netip"
)

// Backend type names accepted in Config.Backend.Type.
const (
	BackendVXLAN  = "vxlan"
	BackendHostGW = "host-gw"
	BackendUDP    = "udp"
)

// Config is the network config at <prefix>/config after defaults are
// applied and validated (see ParseConfig).
type Config struct {
	EnableIPv4    bool
	EnableIPv6    bool
	Network       netip.Prefix
	SubnetLen     int
	SubnetMin     netip.Addr
	SubnetMax     netip.Addr
	IPv6Network   netip.Prefix
	IPv6SubnetLen int
	IPv6SubnetMin netip.Addr
	IPv6SubnetMax netip.Addr
	// BackendType is Backend.Type, defaulted to "vxlan".
	BackendType string
	// Backend is the raw "Backend" object; each backend decodes its own
	// options from it.
	Backend json.RawMessage
	// Raw is the JSON the config was parsed from.
	Raw []byte
}
