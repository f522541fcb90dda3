package cniplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/nstest"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/subnet"
)

var allVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// env is one "node": a network namespace the plugin runs in, a subnet file
// and an IPAM store in a temp dir, and a libcni runtime with its own cache.
type env struct {
	t          *testing.T
	node       *nstest.NS
	dir        string
	subnetFile string
	dataDir    string
	netName    string
	bridge     string
	subnet     netip.Prefix // with the gateway address, as in the file; zero for IPv6-only
	subnet6    netip.Prefix // likewise, IPv6; zero unless dual-stack or IPv6-only
	cni        *libcni.CNIConfig
}

func newEnv(t *testing.T, subnetWithGW string) *env {
	t.Helper()
	return newEnvDual(t, subnetWithGW, "")
}

// newEnvDual is newEnv for a node with an IPv4 subnet, an IPv6 subnet, or
// both ("" for none of a family).
func newEnvDual(t *testing.T, subnetWithGW, subnet6WithGW string) *env {
	t.Helper()
	nstest.RequireRoot(t)
	if testBinDir == "" {
		t.Fatal("binaries were not built")
	}
	e := &env{
		t:       t,
		node:    nstest.New(t, "wcn"),
		dir:     t.TempDir(),
		netName: nstest.UniqueName("wt"),
		bridge:  "weft0",
	}
	if subnetWithGW != "" {
		e.subnet = netip.MustParsePrefix(subnetWithGW)
	}
	if subnet6WithGW != "" {
		e.subnet6 = netip.MustParsePrefix(subnet6WithGW)
	}
	e.subnetFile = filepath.Join(e.dir, "subnet.env")
	e.dataDir = filepath.Join(e.dir, "ipam")
	e.writeSubnetFile(e.subnet)
	e.cni = libcni.NewCNIConfigWithCacheDir([]string{testBinDir}, filepath.Join(e.dir, "cache"), pluginExec())
	return e
}

// pluginExec is libcni's default exec, given explicitly: libcni creates it
// lazily without a lock, which races when one CNIConfig serves concurrent
// calls (as a runtime's does).
func pluginExec() invoke.Exec {
	return &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
}

// writeSubnetFile writes the subnet file with sn as the IPv4 subnet (zero:
// none) and e.subnet6 as the IPv6 one.
func (e *env) writeSubnetFile(sn netip.Prefix) {
	e.t.Helper()
	fi := subnet.FileInfo{Subnet: sn, MTU: 1450, IPMasq: true}
	if sn.IsValid() {
		fi.Network = netip.MustParsePrefix("10.244.0.0/16")
	}
	if e.subnet6.IsValid() {
		fi.IPv6Network, fi.IPv6Subnet = netip.MustParsePrefix("fd10::/56"), e.subnet6
	}
	if err := subnet.WriteFile(e.subnetFile, fi); err != nil {
		e.t.Fatal(err)
	}
}

// pluginConf is the weft entry of a conflist; extra overrides options.
func (e *env) pluginConf(extra map[string]any) map[string]any {
	c := map[string]any{
		"type":       "weft",
		"subnetFile": e.subnetFile,
		"dataDir":    e.dataDir,
		"bridge":     e.bridge,
	}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

func (e *env) confList(version string, plugins ...map[string]any) *libcni.NetworkConfigList {
	e.t.Helper()
	if len(plugins) == 0 {
		plugins = []map[string]any{e.pluginConf(nil)}
	}
	data, err := json.Marshal(map[string]any{"cniVersion": version, "name": e.netName, "plugins": plugins})
	if err != nil {
		e.t.Fatal(err)
	}
	list, err := libcni.NetworkConfFromBytes(data)
	if err != nil {
		e.t.Fatalf("parse conflist %s: %v", data, err)
	}
	return list
}

// inNode runs f on a thread in the node namespace: plugin processes started
// there (by libcni) inherit it.
func (e *env) inNode(f func() error) error {
	return e.node.Do(func(ns.NetNS) error { return f() })
}

func rt(pod *nstest.NS, id string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, NetNS: pod.Path(), IfName: "eth0"}
}

func (e *env) add(list *libcni.NetworkConfigList, r *libcni.RuntimeConf) (*current.Result, error) {
	var res types.Result
	err := e.inNode(func() (err error) {
		res, err = e.cni.AddNetworkList(context.Background(), list, r)
		return err
	})
	if err != nil {
		return nil, err
	}
	if v := res.Version(); v != list.CNIVersion {
		return nil, fmt.Errorf("result version %s, want %s", v, list.CNIVersion)
	}
	return current.NewResultFromResult(res)
}

func (e *env) mustAdd(list *libcni.NetworkConfigList, r *libcni.RuntimeConf) *current.Result {
	e.t.Helper()
	res, err := e.add(list, r)
	if err != nil {
		e.t.Fatalf("ADD %s: %v", r.ContainerID, err)
	}
	return res
}

func (e *env) del(list *libcni.NetworkConfigList, r *libcni.RuntimeConf) error {
	return e.inNode(func() error { return e.cni.DelNetworkList(context.Background(), list, r) })
}

func (e *env) check(list *libcni.NetworkConfigList, r *libcni.RuntimeConf) error {
	return e.inNode(func() error { return e.cni.CheckNetworkList(context.Background(), list, r) })
}

func (e *env) status(list *libcni.NetworkConfigList) error {
	return e.inNode(func() error { return e.cni.GetStatusNetworkList(context.Background(), list) })
}

// gcPlugin runs only the plugin's GC: a runtime with an empty cache has no
// attachments of its own to DEL first.
func (e *env) gcPlugin(list *libcni.NetworkConfigList, valid ...types.GCAttachment) error {
	c := libcni.NewCNIConfigWithCacheDir([]string{testBinDir}, e.t.TempDir(), pluginExec())
	return e.inNode(func() error {
		return c.GCNetworkList(context.Background(), list, &libcni.GCArgs{ValidAttachments: valid})
	})
}

func (e *env) allocs() []ipam.Allocation {
	e.t.Helper()
	s, err := ipam.Open(e.dataDir, e.netName)
	if err != nil {
		e.t.Fatal(err)
	}
	defer s.Close()
	a, err := s.List()
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

// bridgePorts names the node's links enslaved to the bridge, read over
// netlink with a dump retried when interrupted: `ip link show master` says
// "Dump was interrupted" (on stderr, an extra line) and may list a link
// twice or not at all while 200 veths settle.
func (e *env) bridgePorts() []string {
	e.t.Helper()
	links := e.nodeLinks()
	i := slices.IndexFunc(links, func(l netlink.Link) bool { return l.Attrs().Name == e.bridge })
	if i < 0 {
		e.t.Fatalf("no bridge %s in the node", e.bridge)
	}
	br := links[i].Attrs().Index
	return linkNames(links, func(l netlink.Link) bool { return l.Attrs().MasterIndex == br })
}

// nodeVeths lists the weft veths in the node namespace.
func (e *env) nodeVeths() []string {
	e.t.Helper()
	return linkNames(e.nodeLinks(), func(l netlink.Link) bool {
		_, ok := l.(*netlink.Veth)
		return ok && strings.HasPrefix(l.Attrs().Name, "weft")
	})
}

// nodeLinks lists the links of the node namespace.
func (e *env) nodeLinks() []netlink.Link {
	e.t.Helper()
	var links []netlink.Link
	if err := e.inNode(func() error {
		var err error
		links, err = netlinksafe.LinkList()
		return err
	}); err != nil {
		e.t.Fatal(err)
	}
	return links
}

// linkNames returns the sorted names of the links keep accepts.
func linkNames(links []netlink.Link, keep func(netlink.Link) bool) []string {
	var names []string
	for _, l := range links {
		if keep(l) {
			names = append(names, l.Attrs().Name)
		}
	}
	slices.Sort(names)
	return names
}

func cniCode(err error) uint {
	var cerr *types.Error
	if errors.As(err, &cerr) {
		return cerr.Code
	}
	return 0
}

// podAddrRoutes reads eth0's IPv4 addresses and routes in pod.
func podState(t *testing.T, pod *nstest.NS) (addrs, routes string) {
	t.Helper()
	return pod.MustRun(t, "ip", "-4", "-o", "addr", "show", "dev", "eth0"), pod.MustRun(t, "ip", "-4", "route", "show")
}

// TestVerbsAllVersions drives every verb through libcni for every declared
// version and checks the kernel and the store after each.
func TestVerbsAllVersions(t *testing.T) {
	e := newEnv(t, "10.244.3.1/24")
	for _, v := range allVersions {
		t.Run(v, func(t *testing.T) {
			list := e.confList(v)
			pod := nstest.New(t, "wcp")
			id := "ctr-" + strings.ReplaceAll(v, ".", "")
			r := rt(pod, id)

			res := e.mustAdd(list, r)
			if len(res.IPs) != 1 || len(res.Interfaces) != 3 {
				t.Fatalf("result %+v", res)
			}
			ipc := res.IPs[0]
			addr, _ := netip.AddrFromSlice(ipc.Address.IP.To4())
			if !e.subnet.Masked().Contains(addr) || addr == e.subnet.Addr() || ipc.Gateway.String() != "10.244.3.1" {
				t.Errorf("address %s gateway %s, want one in %s via 10.244.3.1", ipc.Address.String(), ipc.Gateway, e.subnet)
			}
			if ipc.Interface == nil || res.Interfaces[*ipc.Interface].Name != "eth0" || res.Interfaces[*ipc.Interface].Sandbox != pod.Path() {
				t.Errorf("IP not tied to the sandbox interface: %+v", res.Interfaces)
			}
			hostName := HostVethName(id, "eth0")
			if res.Interfaces[0].Name != "weft0" || res.Interfaces[1].Name != hostName || res.Interfaces[2].Mac == "" {
				t.Errorf("interfaces %+v", res.Interfaces)
			}
			if len(res.Routes) != 1 || res.Routes[0].Dst.String() != "0.0.0.0/0" || res.Routes[0].GW.String() != "10.244.3.1" {
				t.Errorf("routes %v", res.Routes)
			}
			addrs, routes := podState(t, pod)
			if !strings.Contains(addrs, ipc.Address.String()) || !strings.Contains(routes, "default via 10.244.3.1 dev eth0") {
				t.Errorf("pod has %q / %q", addrs, routes)
			}
			if !strings.Contains(pod.MustRun(t, "ip", "-o", "link", "show", "eth0"), "mtu 1450") {
				t.Error("pod MTU is not the subnet file's 1450")
			}
			if link := e.node.MustRun(t, "ip", "-o", "link", "show", hostName); !strings.Contains(link, "master weft0") || !strings.Contains(link, "mtu 1450") {
				t.Errorf("node veth: %s", link)
			}
			if br := e.node.MustRun(t, "ip", "-4", "-o", "addr", "show", "dev", "weft0"); !strings.Contains(br, "10.244.3.1/24") {
				t.Errorf("bridge: %s", br)
			}
			pod.MustRun(t, "ping", "-c1", "-W2", "10.244.3.1")

			// A second ADD for the same attachment returns the same address.
			again := e.mustAdd(list, r)
			if again.IPs[0].Address.String() != ipc.Address.String() {
				t.Errorf("second ADD gave %s, first %s", again.IPs[0].Address.String(), ipc.Address.String())
			}
			if n := len(e.allocs()); n != 1 {
				t.Errorf("store has %d allocations after two ADDs, want 1", n)
			}

			err := e.check(list, r)
			if checkable := v >= "0.4.0"; checkable && err != nil {
				t.Errorf("CHECK: %v", err)
			} else if !checkable && err == nil {
				t.Errorf("CHECK accepted for version %s", v)
			}
			if err := e.status(list); err != nil {
				t.Errorf("STATUS: %v", err)
			}
			if v == "1.1.0" {
				// GC keeps what the runtime says is valid.
				if err := e.gcPlugin(list, types.GCAttachment{ContainerID: id, IfName: "eth0"}); err != nil {
					t.Fatalf("GC: %v", err)
				}
				if n := len(e.allocs()); n != 1 || len(e.nodeVeths()) != 1 {
					t.Errorf("GC removed a valid attachment: %d allocations, veths %v", n, e.nodeVeths())
				}
			}
			info, err := e.cni.GetVersionInfo(context.Background(), "weft")
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(info.SupportedVersions(), allVersions) {
				t.Errorf("VERSION says %v", info.SupportedVersions())
			}

			if err := e.del(list, r); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if a := e.allocs(); len(a) != 0 {
				t.Errorf("store after DEL: %v", a)
			}
			if v := e.nodeVeths(); len(v) != 0 {
				t.Errorf("veths after DEL: %v", v)
			}
			if _, err := pod.Run("ip", "link", "show", "eth0"); err == nil {
				t.Error("pod eth0 survived DEL")
			}
			// DEL is idempotent, also once the namespace is gone.
			if err := e.del(list, r); err != nil {
				t.Errorf("second DEL: %v", err)
			}
			gone := &libcni.RuntimeConf{ContainerID: id, NetNS: "/run/netns/does-not-exist", IfName: "eth0"}
			if err := e.del(list, gone); err != nil {
				t.Errorf("DEL with a missing netns: %v", err)
			}
		})
	}
}

func TestCheckDetectsDrift(t *testing.T) {
	e := newEnv(t, "10.244.4.1/24")
	list := e.confList("1.1.0")
	pod := nstest.New(t, "wcp")
	r := rt(pod, "drift")
	res := e.mustAdd(list, r)
	t.Cleanup(func() { _ = e.del(list, r) })

	pod.MustRun(t, "ip", "route", "del", "default")
	if err := e.check(list, r); cniCode(err) != types.ErrInternal || !strings.Contains(err.Error(), "route 0.0.0.0/0") {
		t.Errorf("CHECK with the default route gone: %v", err)
	}
	pod.MustRun(t, "ip", "route", "add", "default", "via", "10.244.4.1")
	if err := e.check(list, r); err != nil {
		t.Fatalf("CHECK after repair: %v", err)
	}
	pod.MustRun(t, "ip", "addr", "del", res.IPs[0].Address.String(), "dev", "eth0")
	if err := e.check(list, r); cniCode(err) != types.ErrInternal || !strings.Contains(err.Error(), "lacks address") {
		t.Errorf("CHECK with the address gone: %v", err)
	}
	pod.MustRun(t, "ip", "link", "del", "eth0")
	if err := e.check(list, r); cniCode(err) != types.ErrUnknownContainer {
		t.Errorf("CHECK with the veth gone: %v (code %d), want code 3", err, cniCode(err))
	}
}

func TestNotReadyWithoutSubnetFile(t *testing.T) {
	e := newEnv(t, "10.244.5.1/24")
	if err := os.Remove(e.subnetFile); err != nil {
		t.Fatal(err)
	}
	list := e.confList("1.1.0")
	err := e.status(list)
	if cniCode(err) != types.ErrPluginNotAvailable || !strings.Contains(err.Error(), "weftd is not ready") {
		t.Errorf("STATUS = %v, want code 50 saying weftd is not ready", err)
	}
	pod := nstest.New(t, "wcp")
	_, err = e.add(list, rt(pod, "early"))
	if cniCode(err) != types.ErrTryAgainLater || !strings.Contains(err.Error(), "subnet file "+e.subnetFile+" not found") {
		t.Errorf("ADD = %v, want code 11 naming the file", err)
	}
	if v := e.nodeVeths(); len(v) != 0 {
		t.Errorf("veths left: %v", v)
	}
	if out := pod.MustRun(t, "ip", "-o", "link"); strings.Contains(out, "eth0") {
		t.Errorf("pod got an interface: %s", out)
	}
	// Once weftd writes the file, the same runtime succeeds.
	e.writeSubnetFile(e.subnet)
	if err := e.status(list); err != nil {
		t.Errorf("STATUS after the file appeared: %v", err)
	}
	r := rt(pod, "early")
	e.mustAdd(list, r)
	if err := e.del(list, r); err != nil {
		t.Fatal(err)
	}
}

func TestGCReleasesStale(t *testing.T) {
	e := newEnv(t, "10.244.6.1/24")
	list := e.confList("1.1.0")
	var rts []*libcni.RuntimeConf
	for i := range 3 {
		r := rt(nstest.New(t, "wcp"), fmt.Sprint("gc", i))
		e.mustAdd(list, r)
		rts = append(rts, r)
	}
	keep := types.GCAttachment{ContainerID: "gc1", IfName: "eth0"}
	if err := e.gcPlugin(list, keep); err != nil {
		t.Fatal(err)
	}
	a := e.allocs()
	if len(a) != 1 || a[0].ContainerID != "gc1" {
		t.Errorf("store after GC: %v", a)
	}
	if v := e.nodeVeths(); !slices.Equal(v, []string{HostVethName("gc1", "eth0")}) {
		t.Errorf("veths after GC: %v", v)
	}
	if err := e.check(list, rts[1]); err != nil {
		t.Errorf("the kept pod fails CHECK: %v", err)
	}
	for _, r := range rts {
		if err := e.del(list, r); err != nil {
			t.Errorf("DEL after GC: %v", err)
		}
	}
}

// TestGCValidAttachmentKeys runs the plugin's GC with each form of the
// valid list a runtime may send: the spec's key, its alias, both, and none.
// A GC that names no attachment releases nothing; the steps run in order
// on the same pods, each starting from what the one before left.
func TestGCValidAttachmentKeys(t *testing.T) {
	e := newEnv(t, "10.244.11.1/24")
	list := e.confList("1.1.0")
	ids := []string{"ka", "kb", "kc"}
	var rts []*libcni.RuntimeConf
	for _, id := range ids {
		r := rt(nstest.New(t, "wcp"), id)
		e.mustAdd(list, r)
		rts = append(rts, r)
	}
	t.Cleanup(func() {
		for _, r := range rts {
			_ = e.del(list, r)
		}
	})
	gcEnv := []string{"CNI_COMMAND=GC", "CNI_PATH=" + testBinDir}
	att := func(ids ...string) string {
		out := make([]string, 0, len(ids))
		for _, id := range ids {
			out = append(out, fmt.Sprintf(`{"containerID":%q,"ifname":"eth0"}`, id))
		}
		return "[" + strings.Join(out, ",") + "]"
	}
	steps := []struct {
		name  string
		extra string // JSON members after the base config
		want  []string
	}{
		{name: "no key", want: ids},
		{name: "null", extra: `,"cni.dev/valid-attachments":null,"cni.dev/attachments":null`, want: ids},
		{name: "empty lists", extra: `,"cni.dev/valid-attachments":[],"cni.dev/attachments":[]`, want: ids},
		{name: "alias only", extra: `,"cni.dev/attachments":` + att("ka", "kb"), want: []string{"ka", "kb"}},
		{name: "both keys, union kept", extra: `,"cni.dev/valid-attachments":` + att("ka") + `,"cni.dev/attachments":` + att("kb"), want: []string{"ka", "kb"}},
		{name: "spec key only", extra: `,"cni.dev/valid-attachments":` + att("ka"), want: []string{"ka"}},
	}
	for _, st := range steps {
		stdin := fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"type":"weft","subnetFile":%q,"dataDir":%q%s}`,
			e.netName, e.subnetFile, e.dataDir, st.extra)
		if out, err := e.runPlugin(gcEnv, stdin); err != nil {
			t.Fatalf("%s: GC: %v: %s", st.name, err, out)
		}
		var got []string
		for _, a := range e.allocs() {
			got = append(got, a.ContainerID)
		}
		slices.Sort(got)
		var veths []string
		for _, id := range st.want {
			veths = append(veths, HostVethName(id, "eth0"))
		}
		slices.Sort(veths)
		if !slices.Equal(got, st.want) || !slices.Equal(e.nodeVeths(), veths) {
			t.Errorf("%s: after GC the store holds %v and the node veths %v, want %v", st.name, got, e.nodeVeths(), st.want)
		}
	}
}

// TestDelLeavesForeignInterface: ADD refuses a pod whose CNI_IFNAME is
// taken by an interface weft did not create; the runtime's DEL that follows
// must not delete that interface.
func TestDelLeavesForeignInterface(t *testing.T) {
	e := newEnv(t, "10.244.12.1/24")
	list := e.confList("1.1.0")
	pod := nstest.New(t, "wcp")
	pod.MustRun(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
	r := rt(pod, "foreign")
	if _, err := e.add(list, r); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("ADD over a foreign eth0: %v, want an error saying it exists", err)
	}
	if err := e.del(list, r); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if out, err := pod.Run("ip", "-o", "link", "show", "eth0"); err != nil || !strings.Contains(out, "eth0@other0") {
		t.Errorf("DEL deleted the pod's own eth0 (weft did not create it): %v %s", err, out)
	}
	if a, v := e.allocs(), e.nodeVeths(); len(a) != 0 || len(v) != 0 {
		t.Errorf("after the refused ADD and DEL: allocations %v, veths %v", a, v)
	}
}

// TestAddRefusesNodeNamespace: CNI_NETNS naming the namespace the plugin
// runs in (the test's node namespace stands for the host's) is refused
// before anything is allocated or created, whatever path names it.
func TestAddRefusesNodeNamespace(t *testing.T) {
	e := newEnv(t, "10.244.13.1/24")
	stdin := fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"type":"weft","subnetFile":%q,"dataDir":%q}`,
		e.netName, e.subnetFile, e.dataDir)
	e.node.MustRun(t, "ip", "link", "add", "wup", "type", "veth", "peer", "name", "wup1")
	e.node.MustRun(t, "ip", "addr", "add", "192.0.2.2/24", "dev", "wup")
	e.node.MustRun(t, "ip", "link", "set", "wup", "up")
	e.node.MustRun(t, "ip", "route", "add", "default", "via", "192.0.2.1")
	snapshot := func() string {
		return e.node.MustRun(t, "ip", "-o", "link") + e.node.MustRun(t, "ip", "-o", "addr") + e.node.MustRun(t, "ip", "route")
	}
	before := snapshot()
	for _, path := range []string{e.node.Path(), "/proc/self/ns/net"} {
		t.Run(path, func(t *testing.T) {
			env := []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=hostns", "CNI_NETNS=" + path, "CNI_IFNAME=eth0", "CNI_PATH=" + testBinDir}
			out, err := e.runPlugin(env, stdin)
			var cerr types.Error
			if err == nil || json.Unmarshal([]byte(out), &cerr) != nil || cerr.Code != types.ErrInvalidNetNS || !strings.Contains(cerr.Msg, "node's own network namespace") {
				t.Errorf("ADD into the node's namespace: err %v, stdout %q; want code 8 naming the node's namespace", err, out)
			}
			if after := snapshot(); after != before {
				t.Errorf("the node's links, addresses or routes changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if _, err := os.Stat(filepath.Join(e.dataDir, e.netName)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the IPAM store was touched: %v", err)
			}
		})
	}
}

func TestOptions(t *testing.T) {
	e := newEnv(t, "10.244.7.1/24")
	e.bridge = "wbr7"
	list := e.confList("1.0.0", e.pluginConf(map[string]any{
		"mtu": 1400, "hairpinMode": true, "isDefaultGateway": false, "ipMasq": true,
		"routes": []map[string]any{{"dst": "192.168.0.0/16"}, {"dst": "172.16.0.0/12", "gw": "10.244.7.9"}},
	}))
	pod := nstest.New(t, "wcp")
	r := rt(pod, "opts")
	res := e.mustAdd(list, r)
	_, routes := podState(t, pod)
	for _, want := range []string{"10.244.0.0/16 via 10.244.7.1", "192.168.0.0/16 via 10.244.7.1", "172.16.0.0/12 via 10.244.7.9"} {
		if !strings.Contains(routes, want) {
			t.Errorf("pod routes lack %q:\n%s", want, routes)
		}
	}
	if strings.Contains(routes, "default") {
		t.Errorf("isDefaultGateway=false but pod has a default route:\n%s", routes)
	}
	if len(res.Routes) != 3 {
		t.Errorf("result routes %v", res.Routes)
	}
	hostName := HostVethName("opts", "eth0")
	for _, l := range []struct {
		n    *nstest.NS
		name string
	}{{pod, "eth0"}, {e.node, hostName}, {e.node, "wbr7"}} {
		if out := l.n.MustRun(t, "ip", "-o", "link", "show", l.name); !strings.Contains(out, "mtu 1400") {
			t.Errorf("%s: %s", l.name, out)
		}
	}
	if out := e.node.MustRun(t, "ip", "-d", "link", "show", hostName); !strings.Contains(out, "hairpin on") {
		t.Errorf("hairpin not on: %s", out)
	}
	podIP := res.IPs[0].Address.IP.String()
	if out := e.node.MustRun(t, "iptables-save", "-t", "nat"); !strings.Contains(out, "-s "+podIP+"/32") {
		t.Errorf("no masquerade rule for %s in the node:\n%s", podIP, out)
	}
	if err := e.check(list, r); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := e.del(list, r); err != nil {
		t.Fatal(err)
	}
	if out := e.node.MustRun(t, "iptables-save", "-t", "nat"); strings.Contains(out, podIP) {
		t.Errorf("masquerade rule survived DEL:\n%s", out)
	}
}

func TestSubnetChange(t *testing.T) {
	e := newEnv(t, "10.244.8.1/24")
	list := e.confList("1.1.0")
	ra := rt(nstest.New(t, "wcp"), "before")
	e.mustAdd(list, ra)
	e.writeSubnetFile(netip.MustParsePrefix("10.244.9.1/24"))
	rb := rt(nstest.New(t, "wcp"), "after")
	res := e.mustAdd(list, rb)
	if got := res.IPs[0].Address.String(); !strings.HasPrefix(got, "10.244.9.") {
		t.Errorf("ADD after the subnet changed got %s, want one in 10.244.9.0/24", got)
	}
	if br := e.node.MustRun(t, "ip", "-4", "-o", "addr", "show", "dev", "weft0"); !strings.Contains(br, "10.244.9.1/24") || strings.Contains(br, "10.244.8.1") {
		t.Errorf("bridge after subnet change: %s", br)
	}
	for _, r := range []*libcni.RuntimeConf{ra, rb} {
		if err := e.del(list, r); err != nil {
			t.Fatal(err)
		}
	}
	if a := e.allocs(); len(a) != 0 {
		t.Errorf("store: %v", a)
	}
}

// runPlugin runs the weft binary directly in the node namespace with env
// and stdin, returning stdout; the runtime sees exactly this.
func (e *env) runPlugin(env []string, stdin string) (stdout string, err error) {
	var out bytes.Buffer
	err = e.inNode(func() error {
		cmd := exec.Command(filepath.Join(testBinDir, "weft"))
		cmd.Env = env
		cmd.Stdin = strings.NewReader(stdin)
		cmd.Stdout = &out
		return cmd.Run()
	})
	return out.String(), err
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, "10.244.10.1/29") // .2-.6: five pods
	pod := nstest.New(t, "wcp")
	good := func(extra string) string {
		return fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"type":"weft","subnetFile":%q,"dataDir":%q%s}`,
			e.netName, e.subnetFile, e.dataDir, extra)
	}
	addEnv := func(id string) []string {
		return []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=" + id, "CNI_NETNS=" + pod.Path(), "CNI_IFNAME=eth0", "CNI_PATH=" + testBinDir}
	}
	writeFile := func(name, content string) string {
		p := filepath.Join(e.dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	truncated := writeFile("truncated.env", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1")
	badCIDR := writeFile("badcidr.env", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.300.1/24\nFLANNEL_MTU=1450\n")
	// A link that is not a bridge makes ADD fail after it allocated; an
	// unreachable route gateway makes it fail after it created the veth.
	// Both must undo their steps.
	e.node.MustRun(t, "ip", "link", "add", "wdum", "type", "veth", "peer", "name", "wdum1")
	tests := []struct {
		name  string
		env   []string
		stdin string
		code  uint
		msg   string
	}{
		{name: "malformed json", env: addEnv("bad1"), stdin: `{"cniVersion":"1.1.0","name":`, code: types.ErrDecodingFailure, msg: "unmarshal"},
		{name: "missing env", env: []string{"CNI_COMMAND=ADD", "CNI_PATH=/x"}, stdin: good(""), code: types.ErrInvalidEnvironmentVariables, msg: "CNI_CONTAINERID"},
		{name: "unknown command", env: []string{"CNI_COMMAND=FROB", "CNI_PATH=/x"}, stdin: good(""), code: types.ErrInvalidEnvironmentVariables, msg: "FROB"},
		{name: "unknown version", env: addEnv("bad2"), stdin: strings.Replace(good(""), "1.1.0", "9.9.9", 1), code: types.ErrIncompatibleCNIVersion, msg: "incompatible"},
		{name: "bad option", env: addEnv("bad3"), stdin: good(`,"mtu":5`), code: types.ErrInvalidNetworkConfig, msg: "mtu 5"},
		{name: "truncated subnet file", env: addEnv("bad4"), stdin: good(`,"subnetFile":"` + truncated + `"`), code: types.ErrTryAgainLater, msg: truncated},
		{name: "malformed cidr", env: addEnv("bad5"), stdin: good(`,"subnetFile":"` + badCIDR + `"`), code: types.ErrTryAgainLater, msg: "FLANNEL_SUBNET"},
		{name: "missing netns", env: []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=bad6", "CNI_NETNS=/run/netns/nope", "CNI_IFNAME=eth0", "CNI_PATH=/x"}, stdin: good(""), code: types.ErrInvalidNetNS, msg: "/run/netns/nope"},
		{name: "bad ifname", env: []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=bad7", "CNI_NETNS=" + pod.Path(), "CNI_IFNAME=a/b", "CNI_PATH=/x"}, stdin: good(""), code: types.ErrInvalidEnvironmentVariables, msg: "interface name"},
		{name: "bridge name taken", env: addEnv("bad8"), stdin: good(`,"bridge":"wdum"`), code: types.ErrInvalidNetworkConfig, msg: "not a bridge"},
		{name: "route of a family the node lacks", env: addEnv("bad10"), stdin: good(`,"routes":[{"dst":"fd99::/16"}]`), code: types.ErrInvalidNetworkConfig, msg: "no subnet of its family"},
		{name: "route unreachable", env: addEnv("bad9"), stdin: good(`,"routes":[{"dst":"192.168.0.0/16","gw":"172.31.0.1"}]`), code: types.ErrInternal, msg: "add route 192.168.0.0/16 via 172.31.0.1"},
		{name: "check before 0.4.0", env: []string{"CNI_COMMAND=CHECK", "CNI_CONTAINERID=x", "CNI_NETNS=" + pod.Path(), "CNI_IFNAME=eth0", "CNI_PATH=/x"}, stdin: strings.Replace(good(""), "1.1.0", "0.3.1", 1), code: types.ErrIncompatibleCNIVersion, msg: "CHECK"},
		{name: "check without prevResult", env: []string{"CNI_COMMAND=CHECK", "CNI_CONTAINERID=x", "CNI_NETNS=" + pod.Path(), "CNI_IFNAME=eth0", "CNI_PATH=/x"}, stdin: good(""), code: types.ErrInvalidNetworkConfig, msg: "prevResult"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := e.runPlugin(tt.env, tt.stdin)
			if err == nil {
				t.Fatalf("plugin succeeded: %s", out)
			}
			var cerr types.Error
			if jerr := json.Unmarshal([]byte(out), &cerr); jerr != nil {
				t.Fatalf("stdout is not CNI error JSON (%v): %q", jerr, out)
			}
			if cerr.Code != tt.code || !strings.Contains(cerr.Msg+" "+cerr.Details, tt.msg) {
				t.Errorf("got code %d %q %q, want code %d mentioning %q", cerr.Code, cerr.Msg, cerr.Details, tt.code, tt.msg)
			}
		})
	}
	if a := e.allocs(); len(a) != 0 {
		t.Errorf("failed ADDs left allocations: %v", a)
	}
	if v := e.nodeVeths(); len(v) != 0 {
		t.Errorf("failed ADDs left veths: %v", v)
	}
	if out := pod.MustRun(t, "ip", "-o", "link"); strings.Contains(out, "eth0") {
		t.Errorf("failed ADDs left the pod an interface: %s", out)
	}

	// Exhaustion: five pods fill the /29, the sixth ADD fails cleanly.
	list := e.confList("1.1.0")
	var rts []*libcni.RuntimeConf
	for i := range 5 {
		r := rt(nstest.New(t, "wcp"), fmt.Sprint("full", i))
		e.mustAdd(list, r)
		rts = append(rts, r)
	}
	out, err := e.runPlugin(addEnv("sixth"), good(""))
	var cerr types.Error
	if err == nil || json.Unmarshal([]byte(out), &cerr) != nil || cerr.Code != types.ErrTryAgainLater || !strings.Contains(cerr.Msg, "no free address") {
		t.Errorf("sixth ADD: err %v, stdout %q; want code 11 'no free address'", err, out)
	}
	if a := e.allocs(); len(a) != 5 {
		t.Errorf("store holds %d allocations after exhaustion, want 5", len(a))
	}
	if v := e.nodeVeths(); len(v) != 5 || slices.Contains(v, HostVethName("sixth", "eth0")) {
		t.Errorf("veths after exhaustion: %v", v)
	}
	if out := pod.MustRun(t, "ip", "-o", "link"); strings.Contains(out, "eth0") {
		t.Errorf("the refused pod got an interface: %s", out)
	}
	for _, r := range rts {
		if err := e.del(list, r); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDualStackAndIPv6Only attaches dual-stack and IPv6-only pods: one
// address per family on eth0 (IPv4 first), a default route per family via
// that family's gateway, the bridge holding both gateways, IPv6 usable at
// once (DAD off on the pod's interface, so nothing is tentative, and no
// false duplicate from the hairpin port), CHECK verifying both families, and
// DEL releasing both.
func TestDualStackAndIPv6Only(t *testing.T) {
	for _, tc := range []struct {
		name, v4, v6 string
	}{
		{"dual-stack", "10.244.21.1/24", "fd10:0:0:21::1/64"},
		{"ipv6-only", "", "fd10:0:0:22::1/64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnvDual(t, tc.v4, tc.v6)
			// An extra IPv6 route without a gateway goes via the IPv6
			// gateway.
			list := e.confList("1.1.0", e.pluginConf(map[string]any{"hairpinMode": true,
				"routes": []map[string]string{{"dst": "fd99::/16"}}}))
			pod := nstest.New(t, "wcp")
			r := rt(pod, "ds-"+tc.name)
			res := e.mustAdd(list, r)
			t.Cleanup(func() { _ = e.del(list, r) })

			var want []string // "address gateway" per family, in result order
			var wantRoutes []string
			if tc.v4 != "" {
				want = append(want, "10.244.21. 10.244.21.1")
				wantRoutes = append(wantRoutes, "0.0.0.0/0 10.244.21.1")
			}
			gw6 := netip.MustParsePrefix(tc.v6).Addr().String()
			want = append(want, netip.MustParsePrefix(tc.v6).Masked().Addr().String()[:len(gw6)-1]+" "+gw6)
			wantRoutes = append(wantRoutes, "::/0 "+gw6, "fd99::/16 "+gw6)
			if len(res.IPs) != len(want) {
				t.Fatalf("result has %d IPs, want %d: %+v", len(res.IPs), len(want), res.IPs)
			}
			var podAddrs []string
			for i, ipc := range res.IPs {
				prefix, gw, _ := strings.Cut(want[i], " ")
				if !strings.HasPrefix(ipc.Address.IP.String(), prefix) || ipc.Gateway.String() != gw || *ipc.Interface != 2 {
					t.Errorf("IP %d = %s via %s (interface %d), want one in %s* via %s", i, ipc.Address.String(), ipc.Gateway, *ipc.Interface, prefix, gw)
				}
				podAddrs = append(podAddrs, ipc.Address.String())
			}
			var routes []string
			for _, rr := range res.Routes {
				routes = append(routes, rr.Dst.String()+" "+rr.GW.String())
			}
			if !slices.Equal(routes, wantRoutes) {
				t.Errorf("routes %v, want %v", routes, wantRoutes)
			}

			// The pod: addresses, routes, DAD off, nothing tentative.
			addrs := pod.MustRun(t, "ip", "-o", "addr", "show", "dev", "eth0")
			for _, a := range podAddrs {
				if !strings.Contains(addrs, a) {
					t.Errorf("pod eth0 lacks %s: %s", a, addrs)
				}
			}
			if strings.Contains(addrs, "tentative") || strings.Contains(addrs, "dadfailed") {
				t.Errorf("pod address not usable at once (DAD ran): %s", addrs)
			}
			if v := strings.TrimSpace(pod.MustRun(t, "sysctl", "-n", "net.ipv6.conf.eth0.accept_dad")); v != "0" {
				t.Errorf("accept_dad on the pod's eth0 = %s, want 0", v)
			}
			if r6 := pod.MustRun(t, "ip", "-6", "route", "show"); !strings.Contains(r6, "default via "+gw6+" dev eth0") || !strings.Contains(r6, "fd99::/16 via "+gw6+" dev eth0") {
				t.Errorf("pod IPv6 routes: %q", r6)
			}
			if r4 := pod.MustRun(t, "ip", "-4", "route", "show"); (tc.v4 != "") != strings.Contains(r4, "default via 10.244.21.1") {
				t.Errorf("pod IPv4 routes: %q", r4)
			}
			// The bridge holds each family's gateway, usable at once.
			br := e.node.MustRun(t, "ip", "-o", "addr", "show", "dev", "weft0", "scope", "global")
			if !strings.Contains(br, tc.v6) || (tc.v4 != "") != strings.Contains(br, "10.244.21.1/24") || strings.Contains(br, "tentative") {
				t.Errorf("bridge addresses: %s", br)
			}
			pod.MustRun(t, "ping", "-6", "-c1", "-W2", gw6)
			if tc.v4 != "" {
				pod.MustRun(t, "ping", "-c1", "-W2", "10.244.21.1")
			}

			// Repeated ADD: the same addresses, one allocation per family.
			again := e.mustAdd(list, r)
			for i := range res.IPs {
				if again.IPs[i].Address.String() != res.IPs[i].Address.String() {
					t.Errorf("second ADD gave %s, first %s", again.IPs[i].Address.String(), res.IPs[i].Address.String())
				}
			}
			if n := len(e.allocs()); n != len(want) {
				t.Errorf("store has %d allocations, want %d", n, len(want))
			}

			// CHECK passes, and sees drift in the IPv6 family.
			if err := e.check(list, r); err != nil {
				t.Fatalf("CHECK: %v", err)
			}
			pod.MustRun(t, "ip", "-6", "route", "del", "default")
			if err := e.check(list, r); cniCode(err) != types.ErrInternal || !strings.Contains(err.Error(), "route ::/0") {
				t.Errorf("CHECK with the IPv6 default route gone: %v", err)
			}
			pod.MustRun(t, "ip", "-6", "route", "add", "default", "via", gw6)
			v6addr := podAddrs[len(podAddrs)-1]
			pod.MustRun(t, "ip", "addr", "del", v6addr, "dev", "eth0")
			if err := e.check(list, r); cniCode(err) != types.ErrInternal || !strings.Contains(err.Error(), "lacks address "+v6addr) {
				t.Errorf("CHECK with the IPv6 address gone: %v", err)
			}
			pod.MustRun(t, "ip", "addr", "add", v6addr, "dev", "eth0", "nodad")
			if err := e.check(list, r); err != nil {
				t.Fatalf("CHECK after repair: %v", err)
			}

			if err := e.del(list, r); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if a := e.allocs(); len(a) != 0 {
				t.Errorf("store after DEL: %v", a)
			}
		})
	}
}

// TestNetworkBecomesDualStack: a node whose network gains IPv6 gives new pods
// both families and its bridge both gateways; CHECK tells a pod made before
// that it lacks the IPv6 family the node now has.
func TestNetworkBecomesDualStack(t *testing.T) {
	e := newEnv(t, "10.244.23.1/24")
	list := e.confList("1.1.0")
	old := rt(nstest.New(t, "wcp"), "v4-era")
	e.mustAdd(list, old)
	t.Cleanup(func() { _ = e.del(list, old) })
	e.subnet6 = netip.MustParsePrefix("fd10:0:0:23::1/64")
	e.writeSubnetFile(e.subnet)
	nw := rt(nstest.New(t, "wcp"), "dual-era")
	res := e.mustAdd(list, nw)
	t.Cleanup(func() { _ = e.del(list, nw) })
	if len(res.IPs) != 2 {
		t.Fatalf("ADD after the network became dual-stack: %+v", res.IPs)
	}
	if br := e.node.MustRun(t, "ip", "-o", "addr", "show", "dev", "weft0"); !strings.Contains(br, "10.244.23.1/24") || !strings.Contains(br, "fd10:0:0:23::1/64") {
		t.Errorf("bridge: %s", br)
	}
	if err := e.check(list, old); cniCode(err) != types.ErrInternal || !strings.Contains(err.Error(), "no IPv6 address") {
		t.Errorf("CHECK of the IPv4-era pod: %v, want one saying it has no IPv6 address", err)
	}
	// Back to IPv4 only: the IPv6 gateway leaves the bridge.
	e.subnet6 = netip.Prefix{}
	e.writeSubnetFile(e.subnet)
	third := rt(nstest.New(t, "wcp"), "v4-again")
	e.mustAdd(list, third)
	t.Cleanup(func() { _ = e.del(list, third) })
	if br := e.node.MustRun(t, "ip", "-o", "addr", "show", "dev", "weft0", "scope", "global"); strings.Contains(br, "fd10:") {
		t.Errorf("bridge kept the IPv6 gateway: %s", br)
	}
}
