package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/alloc"
	"github.com/weftnet/weft/daemon/masq"
	"github.com/weftnet/weft/daemon/masq/masqtest"
	"github.com/weftnet/weft/subnet/subnettest"
)

// startFirewalled runs a daemon on the alloc backend posing as vxlan
// (tunnel port, peer filter) with cfg's firewall settings and deps.
func startFirewalled(t *testing.T, m *subnettest.Manager, cfg Config, deps Deps) *node {
	t.Helper()
	dir := t.TempDir()
	u := backend.Underlay{Link: "eth0", Index: 2, MTU: 1500, PublicIP: netip.MustParseAddr("198.18.0.1")}
	cfg.SubnetFile, cfg.CNIConfDir, cfg.CNIIPAMDir = filepath.Join(dir, "subnet.env"), filepath.Join(dir, "net.d"), filepath.Join(dir, "ipam")
	cfg.HealthzAddr, cfg.ConfigPollInterval, cfg.ForwardRules = "off", 10*time.Millisecond, true
	deps.Manager, deps.Underlay = m, &u
	deps.Backends = map[string]backend.Constructor{alloc.Type: func(o backend.Options) (backend.Backend, error) {
		b, err := alloc.New(o)
		return tunneledAlloc{b}, err
	}}
	d, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{d: d, dir: dir, ip: u.PublicIP, stop: cancel, done: make(chan error, 1)}
	go func() { n.done <- d.Run(ctx) }()
	t.Cleanup(func() { n.shutdown(t) })
	return n
}

// TestFirewallRestoredAfterFlush: --iptables-resync finds weft's rules and
// the peer filter gone (a firewall reload, an operator's flush) and puts
// them back, counted.
func TestFirewallRestoredAfterFlush(t *testing.T) {
	m := newStore(t, allocConfig)
	fake := &masqtest.Fake{}
	n := startFirewalled(t, m, Config{IPMasq: true, MasqFullyRandomDisable: true, FirewallResync: 20 * time.Millisecond}, Deps{Masq: fake})
	peer := startNode(t, m, "198.18.0.2", "", nil)
	waitFor(t, "ready", func() bool { return n.ready() && peer.ready() })
	waitFor(t, "the peer filter", func() bool { _, p, on := fake.PeerFilter(); return on && len(p) == 1 })
	r, _ := fake.Rules()
	if !r.DisableRandomFully || !r.Masquerade {
		t.Errorf("rules %+v: want masquerade without random-fully (--ip-masq-fully-random-disable)", r)
	}
	for i := 1; i <= 2; i++ {
		fake.Flush()
		waitFor(t, fmt.Sprintf("restore %d", i), func() bool {
			_, ok := fake.Rules()
			_, p, on := fake.PeerFilter()
			return ok && on && len(p) == 1 && counterValue(t, n.d.metrics.firewallRestores) == float64(i)
		})
	}
	if got, _ := fake.Rules(); !got.DisableRandomFully {
		t.Errorf("restored rules %+v lost the settings", got)
	}
}

// TestFirewallAPIFollowsEnableNFTables: with --masq-backend=auto the
// network config's EnableNFTables picks the firewall API, as in Flannel
// (false: iptables; absent or true: nftables); a change moves weft's rules
// over; an explicit --masq-backend wins.
func TestFirewallAPIFollowsEnableNFTables(t *testing.T) {
	fakes := map[string]*masqtest.Fake{MasqNFTables: {}, MasqIPTables: {}}
	newMasq := func(kind string) (masq.Manager, error) {
		if kind == MasqIPTables {
			return struct{ masq.Manager }{fakes[kind]}, nil // no peer filter, as the real one
		}
		return fakes[kind], nil
	}
	m := newStore(t, `{"Network":"10.244.0.0/16","EnableNFTables":false,"Backend":{"Type":"alloc"}}`)
	n := startFirewalled(t, m, Config{}, Deps{NewMasq: newMasq})
	waitFor(t, "ready", n.ready)
	has := func(kind string) bool { _, ok := fakes[kind].Rules(); return ok }
	if !has(MasqIPTables) || has(MasqNFTables) {
		t.Fatalf("EnableNFTables false: iptables rules %v, nftables rules %v; want iptables only", has(MasqIPTables), has(MasqNFTables))
	}
	if _, removes := fakes[MasqNFTables].Calls(); removes == 0 {
		t.Error("the unused API's leftovers were not removed at start")
	}
	if _, _, on := fakes[MasqIPTables].PeerFilter(); on {
		t.Error("a peer filter through iptables")
	}
	if err := m.SetNetworkConfig(context.Background(), []byte(`{"Network":"10.244.0.0/16","EnableNFTables":true,"Backend":{"Type":"alloc"}}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "rules moved to nftables", func() bool { return has(MasqNFTables) && !has(MasqIPTables) && n.ready() })
	waitFor(t, "the peer filter through nftables", func() bool { _, _, on := fakes[MasqNFTables].PeerFilter(); return on })

	fakes = map[string]*masqtest.Fake{MasqNFTables: {}, MasqIPTables: {}}
	m2 := newStore(t, `{"Network":"10.244.0.0/16","EnableNFTables":false,"Backend":{"Type":"alloc"}}`)
	n2 := startFirewalled(t, m2, Config{MasqBackend: MasqNFTables}, Deps{NewMasq: newMasq})
	waitFor(t, "ready", n2.ready)
	if !has(MasqNFTables) || has(MasqIPTables) {
		t.Errorf("--masq-backend=nftables with EnableNFTables false: nftables %v, iptables %v; want the flag to win", has(MasqNFTables), has(MasqIPTables))
	}
}

// TestFirewallAPIUnavailable: the firewall API a network needs cannot be
// made (no nftables in the kernel, no iptables binaries): with rules to
// install, the daemon stops saying so instead of running without them.
func TestFirewallAPIUnavailable(t *testing.T) {
	newMasq := func(kind string) (masq.Manager, error) {
		if kind == MasqNFTables {
			return nil, fmt.Errorf("nftables: netlink: protocol not supported")
		}
		return &masqtest.Fake{}, nil
	}
	m := newStore(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"alloc"}}`)
	n := startFirewalled(t, m, Config{IPMasq: true}, Deps{NewMasq: newMasq})
	select {
	case err := <-n.done:
		n.stopped = true
		if err == nil || !strings.Contains(err.Error(), "--masq-backend") {
			t.Errorf("daemon exited with %v, want the firewall API's error naming --masq-backend", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("daemon runs without the firewall rules --ip-masq needs")
	}
}
