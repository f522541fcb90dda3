package cniplugin

import (
	"bufio"
	"bytes"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weftnet/weft/internal/nstest"
	"github.com/weftnet/weft/ipam"
)

// TestCnitool drives the plugin through cnitool, as an operator would,
// for every declared version.
func TestCnitool(t *testing.T) {
	e := newEnv(t, "10.244.11.1/24")
	confDir := t.TempDir()
	for _, v := range allVersions {
		t.Run(v, func(t *testing.T) {
			data, err := json.Marshal(map[string]any{"cniVersion": v, "name": e.netName, "plugins": []any{e.pluginConf(nil)}})
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(confDir, "10-weft.conflist"), data, 0o644); err != nil {
				t.Fatal(err)
			}
			pod := nstest.New(t, "wcp")
			cnitool := func(verb string) (string, error) {
				var out bytes.Buffer
				err := e.inNode(func() error {
					cmd := exec.Command(filepath.Join(testBinDir, "cnitool"), verb, e.netName, pod.Path())
					cmd.Env = append(os.Environ(), "CNI_PATH="+testBinDir, "NETCONFPATH="+confDir)
					cmd.Stdout, cmd.Stderr = &out, &out
					return cmd.Run()
				})
				return out.String(), err
			}
			// cnitool names the container after the netns path.
			sum := sha512.Sum512([]byte(pod.Path()))
			id := fmt.Sprintf("cnitool-%x", sum[:10])

			out, err := cnitool("add")
			if err != nil {
				t.Fatalf("cnitool add: %v\n%s", err, out)
			}
			var res struct {
				CNIVersion string `json:"cniVersion"`
				IPs        []struct {
					Address string `json:"address"`
				} `json:"ips"`
			}
			if err := json.Unmarshal([]byte(out), &res); err != nil || res.CNIVersion != v || len(res.IPs) != 1 {
				t.Fatalf("cnitool add printed %q (%v)", out, err)
			}
			if addrs, _ := podState(t, pod); !strings.Contains(addrs, res.IPs[0].Address) {
				t.Errorf("pod lacks %s: %s", res.IPs[0].Address, addrs)
			}
			if v >= "0.4.0" {
				if out, err := cnitool("check"); err != nil {
					t.Errorf("cnitool check: %v\n%s", err, out)
				}
			}
			if out, err := cnitool("status"); err != nil {
				t.Errorf("cnitool status: %v\n%s", err, out)
			}
			if out, err := cnitool("del"); err != nil {
				t.Fatalf("cnitool del: %v\n%s", err, out)
			}
			if len(e.allocs()) != 0 || len(e.nodeVeths()) != 0 {
				t.Fatalf("after cnitool del: store %v, veths %v", e.allocs(), e.nodeVeths())
			}
			// gc with no valid attachments removes everything.
			if out, err := cnitool("add"); err != nil {
				t.Fatalf("cnitool add: %v\n%s", err, out)
			}
			if out, err := cnitool("gc"); err != nil {
				t.Fatalf("cnitool gc: %v\n%s", err, out)
			}
			if len(e.allocs()) != 0 || slices.Contains(e.nodeVeths(), HostVethName(id, "eth0")) {
				t.Errorf("after cnitool gc: store %v, veths %v", e.allocs(), e.nodeVeths())
			}
			if out, err := cnitool("del"); err != nil { // and drops cnitool's cache entry
				t.Errorf("cnitool del after gc: %v\n%s", err, out)
			}
		})
	}
}

// natRules returns the node's iptables NAT rules and nftables ruleset.
func natRules(t *testing.T, n *nstest.NS) string {
	t.Helper()
	return n.MustRun(t, "iptables-save", "-t", "nat") + n.MustRun(t, "nft", "list", "ruleset")
}

// TestPortmapChain runs weft as the first plugin of the conflist weftd
// installs, followed by the real portmap plugin.
func TestPortmapChain(t *testing.T) {
	e := newEnv(t, "10.244.12.1/24")
	const hostPort = 18453
	list := e.confList("1.1.0", e.pluginConf(nil),
		map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true})
	pod := nstest.New(t, "wcp")
	r := rt(pod, "pm")
	r.CapabilityArgs = map[string]any{"portMappings": []map[string]any{{"hostPort": hostPort, "containerPort": 80, "protocol": "tcp"}}}
	res := e.mustAdd(list, r)
	podIP := res.IPs[0].Address.IP.String()

	rules := natRules(t, e.node)
	if !strings.Contains(rules, fmt.Sprint(hostPort)) || !strings.Contains(rules, podIP) {
		t.Fatalf("no portmap rule for %d -> %s:80 in the node namespace:\n%s", hostPort, podIP, rules)
	}
	// Nothing in the root namespace (read-only look).
	for _, cmd := range [][]string{{"iptables-save", "-t", "nat"}, {"nft", "list", "ruleset"}} {
		out, _ := exec.Command(cmd[0], cmd[1:]...).CombinedOutput()
		if strings.Contains(string(out), fmt.Sprint(hostPort)) {
			t.Errorf("portmap rule leaked into the root namespace (%s)", cmd[0])
		}
	}

	// Traffic to the host port reaches the pod.
	var ln net.Listener
	if err := pod.Do(func(ns.NetNS) (err error) {
		ln, err = net.Listen("tcp4", podIP+":80")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "weft\n")
	}()
	var got string
	if err := e.inNode(func() error {
		c, err := net.DialTimeout("tcp4", fmt.Sprintf("10.244.12.1:%d", hostPort), 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		got, err = bufio.NewReader(c).ReadString('\n')
		return err
	}); err != nil {
		t.Errorf("connect to host port %d: %v", hostPort, err)
	} else if got != "weft\n" {
		t.Errorf("read %q through the port mapping", got)
	}

	if err := e.check(list, r); err != nil {
		t.Errorf("CHECK through the chain: %v", err)
	}
	if err := e.status(list); err != nil {
		t.Errorf("STATUS through the chain: %v", err)
	}
	if err := e.del(list, r); err != nil {
		t.Fatalf("DEL through the chain: %v", err)
	}
	if rules := natRules(t, e.node); strings.Contains(rules, podIP) {
		t.Errorf("portmap rules survived DEL:\n%s", rules)
	}
	if len(e.allocs()) != 0 || len(e.nodeVeths()) != 0 {
		t.Errorf("after DEL: store %v, veths %v", e.allocs(), e.nodeVeths())
	}
}

// TestConcurrentAdds attaches many pods to one node at once, then detaches
// them at once: 200 IPv4 pods, and 100 dual-stack pods (two addresses each
// from one store, no duplicate in either family).
func TestConcurrentAdds(t *testing.T) {
	for _, tc := range []struct {
		name, v4, v6 string
		n            int
	}{
		{"ipv4", "10.244.13.1/24", "", 200},
		{"dual-stack", "10.244.15.1/24", "fd10:0:0:15::1/64", 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testConcurrentAdds(t, newEnvDual(t, tc.v4, tc.v6), tc.n)
		})
	}
}

func testConcurrentAdds(t *testing.T, e *env, n int) {
	list := e.confList("1.1.0")
	families := 1
	if e.subnet.IsValid() && e.subnet6.IsValid() {
		families = 2
	}
	rts := make([]*libcni.RuntimeConf, n)
	for i := range n {
		rts[i] = rt(nstest.New(t, "wcp"), fmt.Sprint("many", i))
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		ips  = map[string]string{}
		errs []error
	)
	start := time.Now()
	for _, r := range rts {
		wg.Go(func() {
			res, err := e.add(list, r)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("ADD %s: %w", r.ContainerID, err))
				return
			}
			if len(res.IPs) != families {
				errs = append(errs, fmt.Errorf("ADD %s: %d addresses, want %d", r.ContainerID, len(res.IPs), families))
			}
			for _, ipc := range res.IPs {
				ip := ipc.Address.IP.String()
				if prev, dup := ips[ip]; dup {
					errs = append(errs, fmt.Errorf("%s given to %s and %s", ip, prev, r.ContainerID))
				}
				ips[ip] = r.ContainerID
			}
		})
	}
	wg.Wait()
	t.Logf("%d concurrent ADDs took %v", n, time.Since(start))
	for _, err := range errs {
		t.Error(err)
	}
	if len(ips) != n*families {
		t.Fatalf("%d distinct addresses for %d pods of %d families", len(ips), n, families)
	}
	if a := e.allocs(); len(a) != n*families {
		t.Errorf("store holds %d allocations, want %d", len(a), n*families)
	}
	if v := e.nodeVeths(); len(v) != n {
		t.Errorf("node has %d veths, want %d", len(v), n)
	}
	if ports := e.bridgePorts(); len(ports) != n || len(slices.Compact(ports)) != n {
		t.Errorf("bridge has %d ports, want %d: %v", len(ports), n, ports)
	}

	start = time.Now()
	for _, r := range rts {
		wg.Go(func() {
			if err := e.del(list, r); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("DEL %s: %w", r.ContainerID, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("%d concurrent DELs took %v", n, time.Since(start))
	for _, err := range errs {
		t.Error(err)
	}
	if a := e.allocs(); len(a) != 0 {
		t.Errorf("store after DELs: %d allocations", len(a))
	}
	if v := e.nodeVeths(); len(v) != 0 {
		t.Errorf("veths after DELs: %v", v)
	}
}

// TestKilledAdds kills plugin processes with SIGKILL at random points of
// ADD and shows that DEL (for some) and GC (for the rest) leave the store
// and the node exactly matching the pods that were attached.
// A dual-stack node gets the same test: both of a pod's addresses go
// together.
func TestKilledAdds(t *testing.T) {
	for _, tc := range []struct{ name, v4, v6 string }{
		{"ipv4", "10.244.14.1/24", ""},
		{"dual-stack", "10.244.16.1/24", "fd10:0:0:16::1/64"},
	} {
		t.Run(tc.name, func(t *testing.T) { testKilledAdds(t, newEnvDual(t, tc.v4, tc.v6)) })
	}
}

func testKilledAdds(t *testing.T, e *env) {
	const n = 40
	var subnets []netip.Prefix
	for _, sn := range []netip.Prefix{e.subnet, e.subnet6} {
		if sn.IsValid() {
			subnets = append(subnets, sn)
		}
	}
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"type":"weft","subnetFile":%q,"dataDir":%q}`, e.netName, e.subnetFile, e.dataDir)
	pods := make([]*nstest.NS, n)
	for i := range pods {
		pods[i] = nstest.New(t, "wcp")
	}
	id := func(i int) string { return fmt.Sprint("kill", i) }

	cmds := make([]*exec.Cmd, n)
	if err := e.inNode(func() error {
		for i := range n {
			cmd := exec.Command(filepath.Join(testBinDir, "weft"))
			cmd.Env = []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=" + id(i), "CNI_NETNS=" + pods[i].Path(), "CNI_IFNAME=eth0", "CNI_PATH=" + testBinDir}
			cmd.Stdin = strings.NewReader(conf)
			if err := cmd.Start(); err != nil {
				return err
			}
			cmds[i] = cmd
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Kill two in three at a random moment within the first 200ms, which
	// spans the allocation, the bridge and the veth steps of an ADD.
	for i, cmd := range cmds {
		if i%3 != 0 {
			time.AfterFunc(time.Duration(rand.IntN(200_000))*time.Microsecond, func() { _ = cmd.Process.Kill() })
		}
	}
	var ok, killed []int
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			killed = append(killed, i)
		} else {
			ok = append(ok, i)
		}
	}
	var leftovers int
	for _, a := range e.allocs() {
		if !slices.ContainsFunc(ok, func(i int) bool { return id(i) == a.ContainerID }) {
			leftovers++
		}
	}
	t.Logf("%d ADDs completed, %d killed; killed ones left %d allocations and %d veths before cleanup",
		len(ok), len(killed), leftovers, len(e.nodeVeths())-len(ok))

	// Whatever the random kills hit, also plant exactly what an ADD killed
	// after its allocation and veth steps leaves: an allocation and a node
	// veth whose peer never reached the pod. One gets a DEL, one only GC.
	planted := []string{"planted-del", "planted-gc"}
	for _, p := range planted {
		s, err := ipam.Open(e.dataDir, e.netName)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.AllocateEach(subnets, ipam.Attachment{ContainerID: p, IfName: "eth0"}); err != nil {
			t.Fatal(err)
		}
		s.Close()
		e.node.MustRun(t, "ip", "link", "add", HostVethName(p, "eth0"), "type", "veth", "peer", "name", "tmp-"+p[8:])
	}

	// Half of the killed get a DEL, as a runtime would after a failed ADD;
	// GC covers the rest.
	list := e.confList("1.1.0")
	if err := e.del(list, &libcni.RuntimeConf{ContainerID: planted[0], IfName: "eth0"}); err != nil {
		t.Fatalf("DEL of planted leftovers: %v", err)
	}
	if slices.Contains(e.nodeVeths(), HostVethName(planted[0], "eth0")) {
		t.Error("DEL left the planted veth")
	}
	for j, i := range killed {
		if j%2 == 0 {
			if err := e.del(list, rt(pods[i], id(i))); err != nil {
				t.Errorf("DEL of killed %s: %v", id(i), err)
			}
		}
	}
	var valid []types.GCAttachment
	wantAllocs := map[ipam.Attachment]bool{}
	var wantVeths []string
	for _, i := range ok {
		valid = append(valid, types.GCAttachment{ContainerID: id(i), IfName: "eth0"})
		wantAllocs[ipam.Attachment{ContainerID: id(i), IfName: "eth0"}] = true
		wantVeths = append(wantVeths, HostVethName(id(i), "eth0"))
	}
	if err := e.gcPlugin(list, valid...); err != nil {
		t.Fatalf("GC: %v", err)
	}
	got := e.allocs()
	if len(got) != len(ok)*len(subnets) {
		t.Errorf("store holds %d allocations, %d pods of %d families are attached", len(got), len(ok), len(subnets))
	}
	for _, a := range got {
		if !wantAllocs[a.Attachment] {
			t.Errorf("store keeps %s for %s, which is not attached", a.IP, a.ContainerID)
		}
	}
	slices.Sort(wantVeths)
	if v := e.nodeVeths(); !slices.Equal(v, wantVeths) {
		t.Errorf("node veths %v, want %v", v, wantVeths)
	}
	for _, i := range killed {
		if out := pods[i].MustRun(t, "ip", "-o", "link"); strings.Contains(out, "eth0") {
			t.Errorf("killed pod %s still has eth0", id(i))
		}
	}
	for _, i := range ok {
		out := pods[i].MustRun(t, "ip", "-o", "addr", "show", "dev", "eth0", "scope", "global")
		for _, sn := range subnets {
			if prefix := sn.Masked().Addr().String(); !strings.Contains(out, prefix[:len(prefix)-1]) {
				t.Errorf("attached pod %s lost its address in %s: %s", id(i), sn, out)
			}
		}
		if err := e.del(list, rt(pods[i], id(i))); err != nil {
			t.Errorf("DEL %s: %v", id(i), err)
		}
	}
	if len(e.allocs()) != 0 || len(e.nodeVeths()) != 0 {
		t.Errorf("after DEL of all: store %v, veths %v", e.allocs(), e.nodeVeths())
	}
}
