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

// node is what the plugin needs from the subnet file.
type node struct {
	// subnet is the node's pod subnet, masked (10.244.3.0/24).
	subnet netip.Prefix
	// gateway is the bridge address, subnet's first address (10.244.3.1).
	gateway netip.Addr
	// network is the cluster network (10.244.0.0/16); it may be invalid when
	// the file has no FLANNEL_NETWORK.
	network netip.Prefix
	mtu     int
}

// gatewayPrefix is the bridge address with the subnet's length (10.244.3.1/24).
func (n node) gatewayPrefix() netip.Prefix {
	return netip.PrefixFrom(n.gateway, n.subnet.Bits())
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

// parseNode parses a subnet file's content into what the plugin uses.
func parseNode(data []byte) (node, error) {
	f, err := subnet.ParseFile(data)
	if err != nil {
		return node{}, err
	}
	if !f.Subnet.IsValid() {
		return node{}, errors.New("no IPv4 FLANNEL_SUBNET: weft gives pods IPv4 addresses only")
	}
	if _, _, err := ipam.Usable(f.Subnet); err != nil {
		return node{}, fmt.Errorf("FLANNEL_SUBNET=%s: %w", f.Subnet, err)
	}
	n := node{
		subnet:  f.Subnet.Masked(),
		gateway: ipam.Gateway(f.Subnet),
		mtu:     f.MTU,
	}
	if f.Network.IsValid() && f.Network.Addr().Is4() {
		n.network = f.Network.Masked()
		if !n.network.Contains(n.subnet.Addr()) || n.network.Bits() > n.subnet.Bits() {
			return node{}, fmt.Errorf("FLANNEL_SUBNET=%s is not inside FLANNEL_NETWORK=%s", f.Subnet, f.Network)
		}
	}
	return n, nil
}
