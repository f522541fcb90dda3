package daemon

import (
	"context"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/alloc"
)

// fakeBlackholes records the routes asked for, per family.
type fakeBlackholes struct {
	mu    sync.Mutex
	calls int
	set   map[int][]netip.Prefix
}

func (f *fakeBlackholes) EnsureUnreachable(fam int, dsts []netip.Prefix) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.set == nil {
		f.set = map[int][]netip.Prefix{}
	}
	f.calls++
	changed := !slices.Equal(f.set[fam], dsts)
	f.set[fam] = slices.Clone(dsts)
	return changed, nil
}

func (f *fakeBlackholes) get(fam int) ([]netip.Prefix, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.set[fam]), f.calls
}

func startWithBlackholes(t *testing.T, config string, on bool) (*node, *fakeBlackholes, func(string)) {
	t.Helper()
	m := newStore(t, config)
	fb := &fakeBlackholes{}
	dir := t.TempDir()
	// A dual-stack node: the configs enable IPv6.
	u := backend.Underlay{Link: "eth0", Index: 2, MTU: 1500, PublicIP: netip.MustParseAddr("198.18.0.1"), PublicIPv6: netip.MustParseAddr("2001:db8::1")}
	d, err := New(Config{
		SubnetFile: filepath.Join(dir, "subnet.env"), CNIConfDir: filepath.Join(dir, "net.d"), HealthzAddr: "off",
		CNIIPAMDir: filepath.Join(dir, "ipam"), ConfigPollInterval: 10 * time.Millisecond, ResyncInterval: 100 * time.Millisecond,
		BlackholeRoute: on,
	}, Deps{Manager: m, Backends: map[string]backend.Constructor{alloc.Type: alloc.New}, Underlay: &u, Blackholes: fb})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{d: d, dir: dir, ip: u.PublicIP, stop: cancel, done: make(chan error, 1)}
	go func() { n.done <- d.Run(ctx) }()
	t.Cleanup(func() { n.shutdown(t) })
	return n, fb, func(c string) {
		t.Helper()
		if err := m.SetNetworkConfig(context.Background(), []byte(c)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBlackholeFollowsTheNetwork: with --ip-blackhole-route the whole pod
// network (each family) has an unreachable route, moved with the network
// and re-asserted by full passes; without it weft's are removed.
func TestBlackholeFollowsTheNetwork(t *testing.T) {
	n, fb, set := startWithBlackholes(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"alloc"}}`, true)
	waitFor(t, "ready", n.ready)
	is := func(fam int, want ...string) func() bool {
		return func() bool {
			got, _ := fb.get(fam)
			var w []netip.Prefix
			for _, s := range want {
				w = append(w, netip.MustParsePrefix(s))
			}
			return slices.Equal(got, w)
		}
	}
	waitFor(t, "the IPv4 network unreachable", is(unix.AF_INET, "10.244.0.0/16"))
	waitFor(t, "the IPv6 network unreachable", is(unix.AF_INET6, "fd10::/56"))
	_, calls := fb.get(unix.AF_INET)
	waitFor(t, "full passes re-assert it", func() bool { _, c := fb.get(unix.AF_INET); return c >= calls+4 })
	set(`{"Network":"10.50.0.0/16","Backend":{"Type":"alloc"}}`)
	waitFor(t, "moved with the network", is(unix.AF_INET, "10.50.0.0/16"))
	waitFor(t, "IPv6 gone with it", is(unix.AF_INET6))

	off, fbOff, _ := startWithBlackholes(t, allocConfig, false)
	waitFor(t, "ready", off.ready)
	waitFor(t, "weft's removed when off", func() bool {
		got, calls := fbOff.get(unix.AF_INET)
		return calls > 0 && len(got) == 0
	})
}
