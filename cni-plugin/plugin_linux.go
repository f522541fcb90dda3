package cniplugin

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weftnet/weft/internal/nl"
	"github.com/weftnet/weft/internal/version"
	"github.com/weftnet/weft/ipam"
)

// Plugin implements the CNI verbs. It holds no state between calls: each
// plugin process serves one verb, and everything that must outlive it is in
// the kernel or in the IPAM store.
type Plugin struct {
	log *slog.Logger
}

// New returns a Plugin that logs to log. The runtime captures the plugin's
// stderr; stdout carries only the result or error JSON.
func New(log *slog.Logger) *Plugin {
	return &Plugin{log: log}
}

// Funcs returns the verb handlers for skel.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{
		Add:    p.cmdAdd,
		Del:    p.cmdDel,
		Check:  p.cmdCheck,
		Status: p.cmdStatus,
		GC:     p.cmdGC,
	}
}

// Run serves the verb in CNI_COMMAND, reading the config from stdin and
// writing the result to stdout. A non-nil error must be printed (Print) to
// stdout and the process must exit non-zero.
func (p *Plugin) Run() *types.Error {
	return skel.PluginMainFuncsWithError(p.Funcs(), VersionInfo(), "CNI plugin "+version.String("weft"))
}

// HostVethName is the name of the node end of the veth pair of a pod
// interface: "weft" and 11 hex digits of a hash of the container ID and
// interface name. It is derived, not recorded, so DEL and GC find the veth
// of an attachment even when the pod's namespace is gone or an ADD was
// killed half way.
func HostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "\x00" + ifName))
	return "weft" + hex.EncodeToString(sum[:])[:11]
}

func (p *Plugin) cmdAdd(args *skel.CmdArgs) (err error) {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	nd, err := readNode(conf.SubnetFile)
	if err != nil {
		return err
	}
	mtu := conf.MTU
	if mtu == 0 {
		mtu = nd.mtu
	}
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("open netns %s: %v", args.Netns, err), "")
	}
	defer netns.Close()
	hostNS, err := ns.GetCurrentNS()
	if err != nil {
		return fmt.Errorf("open node netns: %w", err)
	}
	defer hostNS.Close()
	// Before anything is allocated or created: in the node's own namespace
	// the pod's default route would replace the node's.
	same, err := sameNetNS(netns, hostNS)
	if err != nil {
		return err
	}
	if same {
		return types.NewError(types.ErrInvalidNetNS,
			fmt.Sprintf("CNI_NETNS %s is the node's own network namespace; a pod needs a namespace of its own", args.Netns), "")
	}

	store, err := ipam.Open(conf.DataDir, conf.Name)
	if err != nil {
		return err
	}
	defer store.Close()

	att := ipam.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}
	log := p.log.With("container", args.ContainerID, "ifname", args.IfName, "network", conf.Name)

	// Undo, newest first, whatever this call did if a later step fails.
	var undo []func() error
	defer func() {
		if err == nil {
			return
		}
		for i := len(undo) - 1; i >= 0; i-- {
			if uerr := undo[i](); uerr != nil {
				log.Warn("undo after failed ADD", "err", uerr)
			}
		}
	}()

	fams := nd.families()
	subnets := make([]netip.Prefix, len(fams))
	for i, f := range fams {
		subnets[i] = f.subnet
	}
	got, err := store.AllocateEach(subnets, att)
	if errors.Is(err, ipam.ErrExhausted) {
		return types.NewError(types.ErrTryAgainLater, err.Error(), "")
	}
	if err != nil {
		return err
	}
	addrs := make([]netip.Addr, len(got))
	for i, a := range got {
		addrs[i] = a.IP
		if a.Created {
			undo = append(undo, func() error { return store.ReleaseIP(a.IP, att) })
		}
	}
	log = log.With("ips", addrs)

	routes, err := podRoutes(conf, nd)
	if err != nil {
		return err
	}
	br, err := ensureBridge(conf.Bridge, nd, mtu)
	if err != nil {
		return err
	}

	pod := make([]netip.Prefix, len(fams))
	for i, f := range fams {
		pod[i] = netip.PrefixFrom(addrs[i], f.subnet.Bits())
	}
	hostName := HostVethName(args.ContainerID, args.IfName)
	hostVeth, contVeth, vethCreated, err := setupVeth(netns, hostNS, args.IfName, hostName, mtu, conf.BigTCP)
	if errors.Is(err, errGSORefused) {
		log.Warn("BIG TCP: the kernel refused the pod veth's GSO/GRO sizes; it keeps the default", "sizes", conf.BigTCP)
		err = nil
	}
	if err != nil {
		return err
	}
	if vethCreated {
		undo = append(undo, func() error { return nl.New(nil).DeleteLink(hostName) })
	}

	if err := netns.Do(func(ns.NetNS) error {
		return configurePod(args.IfName, pod, routes)
	}); err != nil {
		return fmt.Errorf("configure %s in %s: %w", args.IfName, args.Netns, err)
	}
	if err := attachHostVeth(hostVeth, br, mtu, conf.HairpinMode, conf.BigTCP); errors.Is(err, errGSORefused) {
		log.Warn("BIG TCP: the kernel refused the GSO/GRO sizes of the bridge or the node's veth; they keep the default", "sizes", conf.BigTCP)
	} else if err != nil {
		return err
	}
	if slices.ContainsFunc(pod, func(p netip.Prefix) bool { return p.Addr().Is6() }) {
		if err := netns.Do(func(ns.NetNS) error { return settleIPv6(args.IfName, settleTimeout) }); err != nil {
			return err
		}
	}
	if conf.IPMasq {
		ipns := masqNets(fams, addrs)
		if err := ip.SetupIPMasqForNetworks(nil, ipns, conf.Name, args.IfName, args.ContainerID); err != nil {
			return fmt.Errorf("set up masquerade for %v: %w", addrs, err)
		}
		undo = append(undo, func() error {
			return ip.TeardownIPMasqForNetworks(ipns, conf.Name, args.IfName, args.ContainerID)
		})
	}

	contIdx := 2
	result := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: br.Attrs().Name, Mac: br.Attrs().HardwareAddr.String()},
			{Name: hostVeth.Attrs().Name, Mac: hostVeth.Attrs().HardwareAddr.String()},
			{Name: contVeth.Attrs().Name, Mac: contVeth.Attrs().HardwareAddr.String(), Sandbox: args.Netns},
		},
		IPs:    make([]*current.IPConfig, len(fams)),
		Routes: routes,
		DNS:    conf.DNS,
	}
	for i, f := range fams {
		result.IPs[i] = &current.IPConfig{Interface: &contIdx, Address: *nl.IPNet(pod[i]), Gateway: nl.IP(f.gateway)}
	}
	if err := types.PrintResult(result, conf.CNIVersion); err != nil {
		return types.NewError(types.ErrIOFailure, fmt.Sprintf("write result: %v", err), "")
	}
	log.Debug("pod attached", "created", vethCreated)
	return nil
}

// masqNets are the per-pod masquerade rules' networks: each pod address
// with its cluster network's length (the subnet's when the file names no
// network).
func masqNets(fams []family, addrs []netip.Addr) []*net.IPNet {
	out := make([]*net.IPNet, len(fams))
	for i, f := range fams {
		n := f.network
		if !n.IsValid() {
			n = f.subnet
		}
		out[i] = nl.IPNet(netip.PrefixFrom(addrs[i], n.Bits()))
	}
	return out
}

// podRoutes are the routes a pod gets: per family it has, a default route
// via that family's gateway (or, without isDefaultGateway, a route to the
// family's cluster network via it), then the configured routes, whose
// gateway defaults to the node gateway of the route's family.
func podRoutes(conf *NetConf, nd node) ([]*types.Route, error) {
	var routes []*types.Route
	for _, f := range nd.families() {
		gw := nl.IP(f.gateway)
		if conf.DefaultGateway() {
			any := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			if f.gateway.Is6() {
				any = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			}
			routes = append(routes, &types.Route{Dst: *nl.IPNet(any), GW: gw})
		} else if f.network.IsValid() {
			routes = append(routes, &types.Route{Dst: *nl.IPNet(f.network), GW: gw})
		}
	}
	for _, r := range conf.Routes {
		r := r.Copy()
		if r.GW == nil {
			dst, ok := nl.Addr(r.Dst.IP)
			f := nd.of(dst)
			if !ok || !f.ok() {
				return nil, types.NewError(types.ErrInvalidNetworkConfig,
					fmt.Sprintf("route %s has no gateway and the node has no subnet of its family to take the gateway from; give \"gw\" or remove the route", r.Dst.String()), "")
			}
			r.GW = nl.IP(f.gateway)
		}
		routes = append(routes, r)
	}
	return routes, nil
}

func (p *Plugin) cmdDel(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	log := p.log.With("container", args.ContainerID, "ifname", args.IfName, "network", conf.Name)
	// Only the node end, by its derived name: deleting one end of a veth
	// deletes the pair, so this removes the pod end too, wherever it is,
	// and works when the pod's namespace is gone. DEL never deletes
	// CNI_IFNAME in the pod by name: that may be an interface this plugin
	// did not create (one that made ADD fail, or another plugin's).
	if err := nl.New(nil).DeleteLink(HostVethName(args.ContainerID, args.IfName)); err != nil {
		return err
	}
	store, err := ipam.Open(conf.DataDir, conf.Name)
	if err != nil {
		return err
	}
	defer store.Close()
	att := ipam.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}
	if conf.IPMasq {
		ips, err := store.Find(att)
		if err != nil {
			return err
		}
		if err := ip.TeardownIPMasqForNetworks(hostNets(ips), conf.Name, args.IfName, args.ContainerID); err != nil {
			return fmt.Errorf("tear down masquerade: %w", err)
		}
	}
	freed, err := store.Release(att)
	if err != nil {
		return err
	}
	log.Debug("pod detached", "released", freed)
	return nil
}

func hostNets(ips []netip.Addr) []*net.IPNet {
	out := make([]*net.IPNet, 0, len(ips))
	for _, a := range ips {
		out = append(out, nl.IPNet(netip.PrefixFrom(a, a.BitLen())))
	}
	return out
}

func (p *Plugin) cmdStatus(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if _, err := readNode(conf.SubnetFile); err != nil {
		var cerr *types.Error
		if errors.As(err, &cerr) {
			return types.NewError(types.ErrPluginNotAvailable, cerr.Msg, cerr.Details)
		}
		return types.NewError(types.ErrPluginNotAvailable, err.Error(), "")
	}
	store, err := ipam.Open(conf.DataDir, conf.Name)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, err.Error(), "")
	}
	return store.Close()
}

func (p *Plugin) cmdGC(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	keep := conf.GCKeep()
	if len(keep) == 0 {
		// A GC that names no attachment (no key, null, or an empty list)
		// would otherwise release every pod on the node, live ones
		// included. A runtime with pods names them; one without has its
		// own attachments DELed by libcni before GC, so releasing nothing
		// here loses at most the orphans, which the next GC that names a
		// pod frees.
		if conf.ValidAttachments == nil && conf.AttachmentsAlias == nil {
			p.log.Warn("GC without cni.dev/valid-attachments; releasing nothing", "network", conf.Name)
		} else {
			p.log.Info("GC names no valid attachments; releasing nothing", "network", conf.Name)
		}
		return nil
	}
	valid := make(map[ipam.Attachment]bool, len(keep))
	for _, a := range keep {
		valid[ipam.Attachment{ContainerID: a.ContainerID, IfName: a.IfName}] = true
	}
	store, err := ipam.Open(conf.DataDir, conf.Name)
	if err != nil {
		return err
	}
	defer store.Close()
	allocs, err := store.List()
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range allocs {
		if valid[a.Attachment] {
			continue
		}
		// Veth first, then the address: a veth never outlives its
		// allocation, so the store is the list of what GC must look at.
		if err := nl.New(nil).DeleteLink(HostVethName(a.ContainerID, a.IfName)); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := store.ReleaseIP(a.IP, a.Attachment); err != nil {
			errs = append(errs, err)
			continue
		}
		p.log.Info("released stale allocation", "ip", a.IP, "container", a.ContainerID, "ifname", a.IfName)
	}
	if conf.IPMasq {
		if err := ip.GCIPMasqForNetwork(conf.Name, keep); err != nil {
			errs = append(errs, fmt.Errorf("gc masquerade: %w", err))
		}
	}
	return errors.Join(errs...)
}
