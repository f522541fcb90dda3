package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/internal/diagnose"
	"github.com/weftnet/weft/subnet"
	etcdstore "github.com/weftnet/weft/subnet/etcd"
	"github.com/weftnet/weft/subnet/etcd/etcdtest"
)

// TestDiagnoseCommand runs `weftctl diagnose` against a real etcd and a
// fake weftd. The kernel it reads is the test's own namespace, which holds
// no weft state, so every kernel check of a peer fails; what is tested here
// is the glue: owner lookup, weftd's peer state, the subnet-file fallback,
// output formats and exit codes. internal/diagnose tests the kernel checks.
func TestDiagnoseCommand(t *testing.T) {
	etcd := etcdtest.Start(t)
	ep := etcd.Endpoints[0]
	ctx := context.Background()
	m := etcdstore.New(etcd.NewClient(t), etcdstore.Options{})
	if err := m.SetNetworkConfig(ctx, []byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":4}}`)); err != nil {
		t.Fatal(err)
	}
	cfg, err := m.GetNetworkConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	acquire := func(ip string) subnet.Lease {
		l, err := m.AcquireLease(ctx, subnet.AcquireRequest{Config: cfg, TTL: time.Hour, Attrs: subnet.LeaseAttrs{
			PublicIP: netip.MustParseAddr(ip), BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":4,"VtepMAC":"0e:00:00:00:01:02"}`)}})
		if err != nil {
			t.Fatal(err)
		}
		return *l
	}
	own, peer := acquire("198.18.103.10"), acquire("198.18.103.11")
	peerPod := peer.Subnet.Addr().Next().Next().String()

	st := sampleStatus()
	st.Subnet = own.Subnet
	st.Peers = []backend.PeerStatus{{Subnet: peer.Subnet, PublicIP: peer.Attrs.PublicIP, State: backend.PeerFailed, Reason: "replace route: file exists"}}
	addr := fakeWeftd(t, st)

	code, stdout, stderr := weftctl(t, ep, "", "diagnose", "--weftd-addr", addr, peerPod)
	t.Log("\n" + stdout + stderr)
	for _, want := range []string{
		peerPod + ": a pod of node 198.18.103.11 (subnet " + peer.Subnet.String() + ", backend vxlan)",
		"✓ a lease owns " + peerPod,
		"✗ weftd programmed peer " + peer.Subnet.String() + "  [failed: replace route: file exists]",
		"vxlan device weft.4 exists", // the device name comes from the config's VNI
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if code != 1 || !strings.Contains(stderr, "problems found") {
		t.Errorf("exit %d, stderr %q; want 1 and problems found", code, stderr)
	}

	code, stdout, _ = weftctl(t, ep, "", "diagnose", "--weftd-addr", addr, "-o", "json", peerPod)
	var r diagnose.Report
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || code != 1 {
		t.Fatalf("-o json: exit %d, %v: %s", code, err, stdout)
	}
	if r.Owner == nil || r.Owner.Subnet != peer.Subnet || r.Local || r.Backend != "vxlan" {
		t.Errorf("json report = %+v", r)
	}

	// weftd down: this node's subnet comes from the subnet file.
	file := filepath.Join(t.TempDir(), "subnet.env")
	if err := subnet.WriteFile(file, subnet.FileInfo{Network: cfg.Network, Subnet: netip.PrefixFrom(own.Subnet.Addr().Next(), own.Subnet.Bits()), MTU: 1450}); err != nil {
		t.Fatal(err)
	}
	ownPod := own.Subnet.Addr().Next().Next().String()
	_, stdout, _ = weftctl(t, ep, "", "diagnose", "--weftd-addr", closedAddr(t), "--subnet-file", file, "-o", "json", ownPod)
	r = diagnose.Report{}
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || !r.Local {
		t.Errorf("own pod with weftd down: local=%v err=%v\n%s", r.Local, err, stdout)
	}

	code, stdout, _ = weftctl(t, ep, "", "diagnose", "--weftd-addr", addr, "10.96.0.10")
	if code != 1 || !strings.Contains(stdout, "✗ in the pod network 10.244.0.0/16") {
		t.Errorf("service IP: exit %d\n%s", code, stdout)
	}
	code, stdout, _ = weftctl(t, ep, "", "diagnose", "--weftd-addr", addr, "10.244.200.1")
	if code != 1 || !strings.Contains(stdout, "✗ a lease owns 10.244.200.1") {
		t.Errorf("unleased IP: exit %d\n%s", code, stdout)
	}
	for _, args := range [][]string{{"diagnose"}, {"diagnose", "pod-a"}, {"diagnose", "-o", "xml", peerPod}} {
		if code, _, stderr := weftctl(t, ep, "", args...); code != 2 {
			t.Errorf("%q: exit %d (%s), want 2", args, code, stderr)
		}
	}
}
