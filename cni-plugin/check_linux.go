package cniplugin

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/nl"
	"github.com/weftnet/weft/ipam"
)

// CHECK error codes. The spec has no code for "the attachment differs from
// prevResult", so:
//   - the netns cannot be opened: 8 (ErrInvalidNetNS);
//   - the attachment does not exist (no allocation, no interface, no veth):
//     3 (ErrUnknownContainer);
//   - it exists but differs (address, MAC, route, bridge): 999 (ErrInternal)
//     with a message naming what differs.
func checkMissing(format string, a ...any) error {
	return types.NewError(types.ErrUnknownContainer, "check: "+fmt.Sprintf(format, a...), "")
}

func checkMismatch(format string, a ...any) error {
	return types.NewError(types.ErrInternal, "check: "+fmt.Sprintf(format, a...), "")
}

// prevResult decodes the prevResult the runtime passes to CHECK.
func prevResult(stdin []byte) (*current.Result, error) {
	var pc types.PluginConf
	if err := json.Unmarshal(stdin, &pc); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode network config: %v", err), "")
	}
	if pc.RawPrevResult == nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "check: the config has no prevResult", "")
	}
	if err := version.ParsePrevResult(&pc); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("check: %v", err), "")
	}
	res, err := current.NewResultFromResult(pc.PrevResult)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("check: convert prevResult: %v", err), "")
	}
	return res, nil
}

func (p *Plugin) cmdCheck(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	prev, err := prevResult(args.StdinData)
	if err != nil {
		return err
	}
	nd, err := readNode(conf.SubnetFile)
	if err != nil {
		return err
	}

	// Which interface of prevResult is ours, and which addresses it has.
	contIdx := slices.IndexFunc(prev.Interfaces, func(i *current.Interface) bool {
		return i.Name == args.IfName && i.Sandbox != ""
	})
	if contIdx < 0 {
		return checkMismatch("prevResult has no interface %s with a sandbox", args.IfName)
	}
	// Every family the node has must be there, each inside the node's
	// subnet of its family.
	var want []netip.Prefix
	for _, c := range prev.IPs {
		if c.Interface == nil || *c.Interface != contIdx {
			continue
		}
		pfx, ok := nl.Prefix(&c.Address)
		if !ok {
			return checkMismatch("prevResult address %s is not an IP prefix", c.Address.String())
		}
		f := nd.of(pfx.Addr())
		if !f.ok() {
			return checkMismatch("address %s is of a family the node no longer has a subnet of (the network changed; recreate the pod)", pfx)
		}
		if pfx.Masked() != f.subnet {
			return checkMismatch("address %s is outside the node subnet %s (the node's subnet changed; recreate the pod)", pfx, f.subnet)
		}
		want = append(want, pfx)
	}
	for _, f := range nd.families() {
		if !slices.ContainsFunc(want, func(p netip.Prefix) bool { return p.Addr().Is4() == f.subnet.Addr().Is4() }) {
			return checkMismatch("prevResult has no %s address on %s, and the node has the subnet %s (the network changed; recreate the pod)", familyName(f.subnet.Addr()), args.IfName, f.subnet)
		}
	}

	// The store must still hold the addresses for this attachment.
	store, err := ipam.Open(conf.DataDir, conf.Name)
	if err != nil {
		return err
	}
	defer store.Close()
	held, err := store.Find(ipam.Attachment{ContainerID: args.ContainerID, IfName: args.IfName})
	if err != nil {
		return err
	}
	for _, w := range want {
		if !slices.Contains(held, w.Addr()) {
			return checkMissing("address %s is not allocated to %s/%s in %s", w.Addr(), args.ContainerID, args.IfName, store.Dir())
		}
	}

	// Node side: the veth exists and is a port of the bridge.
	hostName := HostVethName(args.ContainerID, args.IfName)
	host, err := netlinksafe.LinkByName(hostName)
	if nl.IsNotFound(err) {
		return checkMissing("node veth %s of %s/%s does not exist", hostName, args.ContainerID, args.IfName)
	}
	if err != nil {
		return err
	}
	br, err := netlinksafe.LinkByName(conf.Bridge)
	if err != nil {
		return checkMismatch("bridge %s: %v", conf.Bridge, err)
	}
	if host.Attrs().MasterIndex != br.Attrs().Index {
		return checkMismatch("node veth %s is not a port of bridge %s", hostName, conf.Bridge)
	}

	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("check: open netns %s: %v", args.Netns, err), "")
	}
	defer netns.Close()
	wantMAC := prev.Interfaces[contIdx].Mac
	return netns.Do(func(ns.NetNS) error {
		return checkPod(args.IfName, wantMAC, host.Attrs().Index, want, prev.Routes)
	})
}

// checkPod verifies the pod interface in the pod's namespace.
func checkPod(ifName, wantMAC string, hostIdx int, want []netip.Prefix, routes []*types.Route) error {
	link, err := netlinksafe.LinkByName(ifName)
	if nl.IsNotFound(err) {
		return checkMissing("interface %s does not exist in the pod", ifName)
	}
	if err != nil {
		return err
	}
	if _, ok := link.(*netlink.Veth); !ok || link.Attrs().ParentIndex != hostIdx {
		return checkMismatch("interface %s is not the peer of weft's node veth", ifName)
	}
	if wantMAC != "" {
		if m, err := net.ParseMAC(wantMAC); err != nil || m.String() != link.Attrs().HardwareAddr.String() {
			return checkMismatch("interface %s has MAC %s, prevResult says %s", ifName, link.Attrs().HardwareAddr, wantMAC)
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		return checkMismatch("interface %s is down", ifName)
	}
	have, err := nl.New(nil).Addrs(link, unix.AF_UNSPEC)
	if err != nil {
		return err
	}
	for _, w := range want {
		if !slices.Contains(have, w) {
			return checkMismatch("interface %s lacks address %s (has %v)", ifName, w, have)
		}
	}
	kernel, err := netlinksafe.RouteList(link, unix.AF_UNSPEC)
	if err != nil {
		return fmt.Errorf("list routes of %s: %w", ifName, err)
	}
	for _, r := range routes {
		if !hasRoute(kernel, r) {
			return checkMismatch("route %s via %s is missing in the pod", r.Dst.String(), r.GW)
		}
	}
	return nil
}

func hasRoute(kernel []netlink.Route, r *types.Route) bool {
	wantDst, ok := nl.Prefix(&r.Dst)
	if !ok {
		return false
	}
	wantDst = wantDst.Masked()
	for _, k := range kernel {
		dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if k.Family == unix.AF_INET6 {
			dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		if k.Dst != nil {
			p, ok := nl.Prefix(k.Dst)
			if !ok {
				continue
			}
			dst = p.Masked()
		}
		if dst != wantDst {
			continue
		}
		if r.GW == nil || r.GW.Equal(k.Gw) {
			return true
		}
	}
	return false
}

func familyName(a netip.Addr) string {
	if a.Unmap().Is4() {
		return "IPv4"
	}
	return "IPv6"
}
