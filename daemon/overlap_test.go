package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/alloc"
	"github.com/weftnet/weft/subnet"
)

// startOnUnderlay runs a daemon on 198.18.0.1 whose underlay also has
// 10.0.1.0/24 directly connected; its logs go to the returned buffer.
func startOnUnderlay(t *testing.T, m subnet.Manager) (*node, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	dir := t.TempDir()
	u := backend.Underlay{Link: "eth0", Index: 2, MTU: 1500, PublicIP: netip.MustParseAddr("198.18.0.1")}
	connected := func(backend.Underlay) ([]netip.Prefix, error) {
		return []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("10.0.1.0/24")}, nil
	}
	d, err := New(Config{
		SubnetFile: filepath.Join(dir, "subnet.env"), CNIConfDir: filepath.Join(dir, "net.d"), HealthzAddr: "off",
		CNIIPAMDir: filepath.Join(dir, "ipam"), ConfigPollInterval: 10 * time.Millisecond,
	}, Deps{Manager: m, Backends: map[string]backend.Constructor{alloc.Type: alloc.New}, Underlay: &u, Connected: connected,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{d: d, dir: dir, ip: u.PublicIP, stop: cancel, done: make(chan error, 1)}
	go func() { n.done <- d.Run(ctx) }()
	t.Cleanup(func() { n.shutdown(t) })
	return n, logs
}

// TestRefusesNetworkOverlappingTheUnderlay: a pod network that contains the
// node's PublicIP or overlaps a subnet connected to its underlay is refused
// with a clear message, once, and the node keeps its last good state.
func TestRefusesNetworkOverlappingTheUnderlay(t *testing.T) {
	m := newStore(t, allocConfig)
	n, logs := startOnUnderlay(t, m)
	waitFor(t, "ready", n.ready)
	before := n.subnetFile(t)
	const refused = "cannot use the network config"
	const says = "10.0.0.0/8 overlaps 10.0.1.0/24, directly connected to eth0"
	if err := m.SetNetworkConfig(context.Background(), []byte(`{"Network":"10.0.0.0/8","Backend":{"Type":"alloc"}}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the refusal", func() bool { return logs.count(refused) == 1 && logs.count(says) == 1 })
	// The refused config is read again with backoff (0.5 s, 1 s, ...).
	reads := m.Calls("GetNetworkConfig")
	waitFor(t, "more polls", func() bool { return m.Calls("GetNetworkConfig") >= reads+2 })
	if got := logs.count(says); got != 1 {
		t.Errorf("%q logged %d times over several polls, want once", says, got)
	}
	if !n.ready() || n.subnetFile(t) != before {
		t.Errorf("the refused config changed the node: ready %v, subnet file %+v (was %+v)", n.ready(), n.subnetFile(t), before)
	}
	if err := m.SetNetworkConfig(context.Background(), []byte(`{"Network":"10.50.0.0/16","Backend":{"Type":"alloc"}}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the good config taken", func() bool {
		f, err := subnet.ReadFile(filepath.Join(n.dir, "subnet.env"))
		return err == nil && f.Network.String() == "10.50.0.0/16" && n.ready()
	})
}

// TestDoesNotStartOnAnOverlappingNetwork: a node that has never run does
// not take a lease in a pod network overlapping its underlay.
func TestDoesNotStartOnAnOverlappingNetwork(t *testing.T) {
	m := newStore(t, `{"Network":"198.18.0.0/16","Backend":{"Type":"alloc"}}`)
	n, logs := startOnUnderlay(t, m)
	const says = "198.18.0.0/16 contains this node's PublicIP 198.18.0.1"
	waitFor(t, "the refusal", func() bool { return logs.count(says) == 1 })
	reads := m.Calls("GetNetworkConfig")
	waitFor(t, "more polls", func() bool { return m.Calls("GetNetworkConfig") >= reads+2 })
	if n.ready() || m.Calls("AcquireLease") != 0 || strings.Count(logs.String(), says) != 1 {
		t.Errorf("ready %v, %d lease acquisitions, logs:\n%s", n.ready(), m.Calls("AcquireLease"), logs.String())
	}
}

// TestCheckUnderlayFamilies: each family's pod network is checked against
// the underlay address and the connected prefixes of its family, and a
// network clear of both is accepted.
func TestCheckUnderlayFamilies(t *testing.T) {
	u := backend.Underlay{Link: "eth0", Index: 2, MTU: 1500,
		PublicIP: netip.MustParseAddr("198.18.0.1"), PublicIPv6: netip.MustParseAddr("2001:db8:0:1::1")}
	connected := func(backend.Underlay) ([]netip.Prefix, error) {
		return []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("2001:db8:0:1::/64"), netip.MustParsePrefix("fd00:7::/64")}, nil
	}
	d := &Daemon{deps: Deps{Connected: connected}, log: slog.New(slog.DiscardHandler)}
	for _, tc := range []struct {
		name, config, says string // says "": accepted
	}{
		{"dual stack clear of the underlay", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd10::/56"}`, ""},
		{"IPv6-only clear of the underlay", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd10::/56"}`, ""},
		{"IPv6 network holds PublicIPv6", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8::/48"}`,
			"2001:db8::/48 contains this node's PublicIPv6 2001:db8:0:1::1"},
		{"IPv6 network over a connected IPv6 prefix", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/16"}`,
			"fd00::/16 overlaps fd00:7::/64, directly connected to eth0"},
		{"IPv4 network of a dual stack over the underlay", `{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"fd10::/56"}`,
			"198.18.0.0/16 contains this node's PublicIP 198.18.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := subnet.ParseConfig([]byte(tc.config))
			if err != nil {
				t.Fatal(err)
			}
			err = d.checkUnderlay(cfg, u)
			switch {
			case tc.says == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.says != "" && (!errors.Is(err, errUnderlayOverlap) || !strings.Contains(err.Error(), tc.says)):
				t.Errorf("err = %v, want errUnderlayOverlap saying %q", err, tc.says)
			}
		})
	}
}
