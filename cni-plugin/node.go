package cniplugin

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/subnet"
)

// family is one address family of the node's pod network.
type family struct {
	// subnet is the node's pod subnet of the family, masked
	// (10.244.3.0/24, fd10:0:0:3::/64); zero when the node has none.
	subnet netip.Prefix
	// gateway is the bridge address, subnet's first address (10.244.3.1,
	// fd10:0:0:3::1).
	gateway netip.Addr
	// network is the cluster network of the family (10.244.0.0/16); it may
	// be invalid when the file does not name it.
	network netip.Prefix
}

// ok reports whether the node has a subnet of this family.
func (f family) ok() bool { return f.subnet.IsValid() }

// gatewayPrefix is the bridge address with the subnet's length (10.244.3.1/24).
func (f family) gatewayPrefix() netip.Prefix {
	return netip.PrefixFrom(f.gateway, f.subnet.Bits())
}

// node is what the plugin needs from the subnet file: the IPv4 and IPv6
// families (either may be absent, not both) and the pod MTU.
type node struct {
	v4, v6 family
	mtu    int
}

// families returns the families the node has, IPv4 first: the order of a
// dual-stack pod's addresses in the result, as other plugins give them.
func (n node) families() []family {
	var out []family
	for _, f := range []family{n.v4, n.v6} {
		if f.ok() {
			out = append(out, f)
		}
	}
	return out
}

// of returns the family of a.
func (n node) of(a netip.Addr) family {
	if a.Unmap().Is4() {
		return n.v4
	}
	return n.v6
}

// readNode reads the subnet file. A missing file means weftd has not
// started or not yet got a lease; a truncated or malformed one, that the node
// is not in a usable state until weftd rewrites it. Both are CNI code 11
// (try again later), which tells the runtime to retry rather than fail the
// pod for good; the message says which it is.
func readNode(path string) (node, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return node{}, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("weftd is not ready: subnet file %s not found (weftd writes it once it holds the node's subnet lease)", path), "")
	}
	if err != nil {
		return node{}, types.NewError(types.ErrIOFailure, fmt.Sprintf("read subnet file: %v", err), "")
	}
	n, err := parseNode(data)
	if err != nil {
		return node{}, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("subnet file %s: %v (weftd rewrites it; check that weftd is healthy)", path, err), "")
	}
	return n, nil
}

// parseNode parses a subnet file's content into what the plugin uses: the
// IPv4 family from FLANNEL_SUBNET and FLANNEL_NETWORK, the IPv6 family from
// FLANNEL_IPV6_SUBNET and FLANNEL_IPV6_NETWORK. A dual-stack node gives
// pods one address of each.
func parseNode(data []byte) (node, error) {
	f, err := subnet.ParseFile(data)
	if err != nil {
		return node{}, err
	}
	n := node{mtu: f.MTU}
	if n.v4, err = parseFamily("FLANNEL_SUBNET", f.Subnet, "FLANNEL_NETWORK", f.Network); err != nil {
		return node{}, err
	}
	if n.v6, err = parseFamily("FLANNEL_IPV6_SUBNET", f.IPv6Subnet, "FLANNEL_IPV6_NETWORK", f.IPv6Network); err != nil {
		return node{}, err
	}
	if !n.v4.ok() && !n.v6.ok() {
		return node{}, errors.New("no FLANNEL_SUBNET or FLANNEL_IPV6_SUBNET: the file is incomplete")
	}
	return n, nil
}

func parseFamily(subnetKey string, sn netip.Prefix, networkKey string, network netip.Prefix) (family, error) {
	if !sn.IsValid() {
		return family{}, nil
	}
	if _, _, err := ipam.Usable(sn); err != nil {
		return family{}, fmt.Errorf("%s=%s: %w", subnetKey, sn, err)
	}
	fa := family{subnet: sn.Masked(), gateway: ipam.Gateway(sn)}
	if network.IsValid() {
		fa.network = network.Masked()
		if !fa.network.Contains(fa.subnet.Addr()) || fa.network.Bits() > fa.subnet.Bits() {
			return family{}, fmt.Errorf("%s=%s is not inside %s=%s", subnetKey, sn, networkKey, network)
		}
	}
	return fa, nil
}
