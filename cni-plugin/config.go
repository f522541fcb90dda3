package cniplugin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weftnet/weft/internal/nl"
	"github.com/weftnet/weft/subnet"
)

// Defaults of the plugin's options. The daemon renders its conflist with
// these names; the plugin falls back to them when an option is absent.
const (
	// PluginType is the "type" of the plugin in a network config, and the
	// name of its binary in the CNI bin dir.
	PluginType = "weft"
	// DefaultSubnetFile is where weftd writes the node's subnet file.
	DefaultSubnetFile = subnet.DefaultFilePath
	// DefaultDataDir is where the IPAM store lives; allocations of network
	// N are in DefaultDataDir/N.
	DefaultDataDir = "/var/lib/weft/ipam"
	// DefaultBridge is the node bridge pods are attached to.
	DefaultBridge = "weft0"
)

// VersionInfo declares the CNI spec versions the plugin supports; it
// renders its result in whichever of them the config asks for.
func VersionInfo() version.PluginInfo {
	return version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
}

// NetConf is the plugin's network configuration: one entry of a conflist's
// "plugins" (or a whole .conf file). Zero values mean "use the default":
// see the Default* constants and DefaultGateway.
type NetConf struct {
	CNIVersion string `json:"cniVersion,omitempty"`
	Name       string `json:"name,omitempty"`
	Type       string `json:"type,omitempty"`

	// SubnetFile is the subnet file weftd writes (Flannel's format).
	SubnetFile string `json:"subnetFile,omitempty"`
	// DataDir holds the IPAM store: one file per address under
	// DataDir/<network name>/.
	DataDir string `json:"dataDir,omitempty"`
	// Bridge is the node bridge; it gets the gateway address <subnet>.1.
	Bridge string `json:"bridge,omitempty"`
	// MTU of the bridge and both veth ends; 0 takes FLANNEL_MTU from the
	// subnet file.
	MTU int `json:"mtu,omitempty"`
	// HairpinMode lets a pod reach itself through a service address by
	// reflecting frames back out of the bridge port they came in on.
	HairpinMode bool `json:"hairpinMode,omitempty"`
	// IsDefaultGateway gives pods a default route via the gateway (nil
	// means true). When false pods get a route to the cluster network
	// (FLANNEL_NETWORK) via the gateway instead.
	IsDefaultGateway *bool `json:"isDefaultGateway,omitempty"`
	// IPMasq makes the plugin install a per-pod masquerade rule for traffic
	// leaving the cluster network. Leave it off when weftd masquerades
	// (its --ip-masq), which is the normal setup.
	IPMasq bool `json:"ipMasq,omitempty"`
	// Routes are extra routes in the pod; a route without "gw" goes via the
	// gateway.
	Routes []types.Route `json:"routes,omitempty"`
	// DNS is passed through to the result, for runtimes that use it.
	DNS types.DNS `json:"dns,omitzero"`
	// BigTCP, when set, is the GSO/GRO size (per family, bytes) of the
	// bridge and both veth ends: above 64 KiB it lets pods send BIG TCP
	// packets. weftd writes what the node's egress devices take (its
	// --big-tcp); absent or zero leaves the kernel's 64 KiB default. A
	// kernel that refuses the size gets a warning and the default.
	BigTCP nl.GSO `json:"bigTCP,omitzero"`

	// Set by the runtime, not by the operator.
	RawPrevResult map[string]any `json:"prevResult,omitempty"`
	// ValidAttachments is GC's list of attachments still in use, under the
	// spec's key. AttachmentsAlias is the same list under the key an early
	// draft of the spec used, which libcni still sends beside it (CNI
	// #1101); GCKeep reads both.
	ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments,omitempty"`
	AttachmentsAlias []types.GCAttachment `json:"cni.dev/attachments,omitempty"`
}

// GCKeep returns the attachments a GC must keep: the union of the lists
// under the spec's key and its alias. An empty result means the runtime
// named none, and GC must then release nothing (see cmdGC).
func (c *NetConf) GCKeep() []types.GCAttachment {
	var keep []types.GCAttachment
	for _, a := range slices.Concat(c.ValidAttachments, c.AttachmentsAlias) {
		if !slices.Contains(keep, a) {
			keep = append(keep, a)
		}
	}
	return keep
}

// DefaultGateway reports whether pods get a default route via the gateway.
func (c *NetConf) DefaultGateway() bool {
	return c.IsDefaultGateway == nil || *c.IsDefaultGateway
}

// ParseConfig decodes the network configuration the runtime passes on stdin,
// fills in defaults and validates it. Errors are *types.Error with the CNI
// code that fits: 6 (decoding failure) for malformed JSON, 7 (invalid
// network config) for values that make no sense.
func ParseConfig(stdin []byte) (*NetConf, error) {
	conf := &NetConf{}
	dec := json.NewDecoder(bytes.NewReader(stdin))
	if err := dec.Decode(conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode network config: %v", err), "")
	}
	if conf.SubnetFile == "" {
		conf.SubnetFile = DefaultSubnetFile
	}
	if conf.DataDir == "" {
		conf.DataDir = DefaultDataDir
	}
	if conf.Bridge == "" {
		conf.Bridge = DefaultBridge
	}
	if err := conf.validate(); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "invalid network config: "+err.Error(), "")
	}
	return conf, nil
}

func (c *NetConf) validate() error {
	if c.Name == "" {
		return fmt.Errorf("missing network name")
	}
	// The name is a directory of the IPAM store.
	if c.Name == "." || c.Name == ".." || strings.ContainsAny(c.Name, "/\\\x00") {
		return fmt.Errorf("network name %q cannot be a directory name", c.Name)
	}
	if !filepath.IsAbs(c.SubnetFile) {
		return fmt.Errorf("subnetFile %q must be an absolute path", c.SubnetFile)
	}
	if !filepath.IsAbs(c.DataDir) {
		return fmt.Errorf("dataDir %q must be an absolute path", c.DataDir)
	}
	if err := validIfName(c.Bridge); err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
		return fmt.Errorf("mtu %d is outside 68..65535", c.MTU)
	}
	for i, r := range c.Routes {
		dst, ok := nl.Prefix(&r.Dst)
		if !ok {
			return fmt.Errorf("routes[%d]: dst %q is not an IPv4 or IPv6 CIDR", i, r.Dst.String())
		}
		if r.GW != nil {
			gw, ok := nl.Addr(r.GW)
			if !ok || gw.Is4() != dst.Addr().Is4() {
				return fmt.Errorf("routes[%d]: gw %s is not of the family of dst %s", i, r.GW, dst)
			}
		}
	}
	return nil
}

// validIfName applies the kernel's rules for interface names.
func validIfName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty interface name")
	case len(name) > 15:
		return fmt.Errorf("interface name %q is longer than 15 bytes", name)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is not allowed", name)
	case strings.ContainsAny(name, "/: \t\n\x00"):
		return fmt.Errorf("interface name %q contains '/', ':' or whitespace", name)
	}
	return nil
}
