package cniplugin

import (
	"fmt"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// settleTimeout bounds how long ADD waits for the pod's IPv6 addresses.
const settleTimeout = 5 * time.Second

// settleIPv6 waits until no IPv6 address on the pod's interface ifName is
// tentative. With DAD off (configurePod) an address still starts tentative
// until the kernel sees the link's carrier, which comes when the node end
// of the veth is up, and is cleared by a kernel work item: on a busy node
// that can lag ADD's return, and a tentative address cannot be a source, so
// the pod's first IPv6 packets would fail. ADD returns once the addresses
// are usable, as the CNI bridge plugin's does. Runs in the pod's namespace.
func settleIPv6(ifName string, timeout time.Duration) error {
	link, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("look up %s: %w", ifName, err)
	}
	deadline := time.Now().Add(timeout)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_V6)
		if err != nil {
			return fmt.Errorf("list IPv6 addresses of %s: %w", ifName, err)
		}
		var tentative []string
		for _, a := range addrs {
			if a.Flags&unix.IFA_F_DADFAILED != 0 {
				return fmt.Errorf("%s: IPv6 address %s failed duplicate address detection", ifName, a.IPNet)
			}
			if a.Flags&unix.IFA_F_TENTATIVE != 0 {
				tentative = append(tentative, a.IPNet.String())
			}
		}
		if len(tentative) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: IPv6 addresses %s still tentative after %s (is the node end of the veth up?)", ifName, strings.Join(tentative, ", "), timeout)
		}
		time.Sleep(wait)
	}
}
