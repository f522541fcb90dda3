package masq

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/nstest"
)

// TestOperatorDropStillApplies: an operator's FORWARD rule that drops some
// pod traffic (here: pods to one outside host, as one blocks pods from
// 169.254.169.254), added before weftd starts, still drops it with weft's
// forwarding rules installed. The iptables jump is appended after it; the
// nftables chain is a base chain of its own, and a drop in any base chain
// wins. Without the operator's rule weft's rules forward the pod's traffic:
// through ip(6)tables' FORWARD policy of DROP, and on nftables the pod
// network's accept rule of the family counts it. In each family.
func TestOperatorDropStillApplies(t *testing.T) {
	for _, f := range fwdFamilies {
		for _, b := range backends {
			t.Run(b.name+"/"+f.name, func(t *testing.T) {
				t.Parallel()
				node, pod, _, outAddr := f.plug(t, "wf", 45)
				drop := []string{"FORWARD", "-s", f.network, "-d", outAddr + f.hostLen, "-j", "DROP"}
				if b.name == "iptables" {
					// A FORWARD policy of DROP, as Docker sets it, so weft's
					// accept rules are what lets pod traffic through at all.
					node.MustRun(t, f.iptables, "-P", "FORWARD", "DROP")
				}
				node.MustRun(t, f.iptables, append([]string{"-A"}, drop...)...)

				if err := b.do(t, node, func(m Manager) error { return m.Ensure(t.Context(), f.rules()) }); err != nil {
					t.Fatalf("Ensure: %v", err)
				}
				if pingWithin(pod, outAddr, 2*time.Second) {
					t.Errorf("the operator's DROP for pods to %s no longer applies:\n%s", outAddr, node.MustRun(t, f.iptSave, "-t", "filter"))
				}
				node.MustRun(t, f.iptables, append([]string{"-D"}, drop...)...)
				// (nftables: a DROP policy of ip(6)tables' FORWARD would
				// still win, see masquerade.md; here it accepts.)
				before := forwardAccepts(t, b, f, node)
				if !pingWithin(pod, outAddr, 5*time.Second) {
					t.Error("without the operator's DROP, weft's rules do not accept the pod's traffic")
				}
				if after := forwardAccepts(t, b, f, node); after <= before {
					t.Errorf("weft's forward accept from the pod network counted %d packets before the ping, %d after", before, after)
				}
			})
		}
	}
}

// forwardAccepts is the packet counter of weft's forward accept rule for
// traffic from the family's pod network.
func forwardAccepts(t *testing.T, b backend, f fwdFamily, n *nstest.NS) int {
	t.Helper()
	var out string
	var re *regexp.Regexp
	if b.name == "iptables" {
		out = n.MustRun(t, f.iptSave, "-c", "-t", "filter")
		re = regexp.MustCompile(`\[(\d+):\d+\] -A WEFT-FWD -s ` + regexp.QuoteMeta(f.network) + ` -m comment --comment weft-forward -j ACCEPT`)
	} else {
		out = n.MustRun(t, "nft", "list", "table", "inet", DefaultTable)
		re = regexp.MustCompile(`saddr ` + regexp.QuoteMeta(f.network) + ` counter packets (\d+) bytes \d+ accept comment "weft-forward"`)
	}
	m := re.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no forward accept rule for %s with a counter:\n%s", f.network, out)
	}
	v, _ := strconv.Atoi(m[1])
	return v
}

// TestLegacyForwardJumpMoved: weftd before the appended jump inserted it
// at position 1; the first Ensure moves it behind the rules already there.
func TestLegacyForwardJumpMoved(t *testing.T) {
	var ipt backend
	for _, b := range backends {
		if b.name == "iptables" {
			ipt = b
		}
	}
	n := nstest.New(t, "wfl")
	n.MustRun(t, "iptables", "-N", iptForward)
	n.MustRun(t, "iptables", "-A", "FORWARD", "-d", "169.254.169.254", "-j", "DROP")
	n.MustRun(t, "iptables", "-I", "FORWARD", "1", "-m", "comment", "--comment", commentForward, "-j", iptForward)
	for range 2 { // and a second Ensure changes nothing
		if err := ipt.do(t, n, func(m Manager) error { return m.Ensure(t.Context(), rulesFor("10.244.0.0/16", "10.244.3.0/24")) }); err != nil {
			t.Fatal(err)
		}
	}
	var fwd []string
	for l := range strings.Lines(n.MustRun(t, "iptables-save", "-t", "filter")) {
		if strings.HasPrefix(l, "-A FORWARD ") {
			fwd = append(fwd, strings.TrimSpace(l))
		}
	}
	want := []string{"-A FORWARD -d 169.254.169.254/32 -j DROP", "-A FORWARD -m comment --comment weft-forward-jump -j WEFT-FWD"}
	if strings.Join(fwd, "\n") != strings.Join(want, "\n") {
		t.Errorf("FORWARD:\n%s\nwant:\n%s", strings.Join(fwd, "\n"), strings.Join(want, "\n"))
	}
}

// TestVerify: Verify sees weft's rules in place after Ensure, and missing
// after each way an operator or a firewall reload takes them away; Ensure
// brings them back.
func TestVerify(t *testing.T) {
	r := rulesFor("10.244.0.0/16", "10.244.3.0/24")
	r.TunnelPorts = []uint16{8472}
	flushes := map[string][][]string{
		"nftables": {
			{"nft", "flush", "ruleset"},
			{"nft", "flush", "chain", "inet", DefaultTable, nftForward},
			{"nft", "delete", "chain", "inet", DefaultTable, nftPostrouting},
		},
		"iptables": {
			{"iptables", "-F", "FORWARD"},
			{"iptables", "-t", "nat", "-F", iptPostrouting},
			{"iptables", "-D", iptForward, "1"},
		},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			n := nstest.New(t, "wfv")
			verify := func() bool {
				t.Helper()
				var ok bool
				if err := b.do(t, n, func(m Manager) error {
					var err error
					ok, err = m.Verify(t.Context(), r)
					return err
				}); err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return ok
			}
			if verify() {
				t.Fatal("Verify before Ensure says the rules are in place")
			}
			for _, flush := range flushes[b.name] {
				if err := b.do(t, n, func(m Manager) error { return m.Ensure(t.Context(), r) }); err != nil {
					t.Fatal(err)
				}
				if !verify() {
					t.Fatalf("Verify after Ensure says the rules are missing")
				}
				n.MustRun(t, flush[0], flush[1:]...)
				if verify() {
					t.Errorf("Verify after %v says the rules are in place", flush)
				}
			}
		})
	}
	t.Run("nftables peer filter", func(t *testing.T) {
		t.Parallel()
		n := nstest.New(t, "wfv")
		m, err := NewNFTables(testLogger(t), Options{NetNS: n})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Ensure(t.Context(), r); err != nil {
			t.Fatal(err)
		}
		if err := m.EnsurePeerFilter(t.Context(), 8472, []FilterPeer{self("198.18.0.2")}); err != nil {
			t.Fatal(err)
		}
		if ok, err := m.Verify(t.Context(), r); err != nil || !ok {
			t.Fatalf("Verify with the filter in place: %v %v", ok, err)
		}
		n.MustRun(t, "nft", "flush", "chain", "inet", DefaultTable, nftInput)
		if ok, err := m.Verify(t.Context(), r); err != nil || ok {
			t.Errorf("Verify with the peer filter flushed: %v %v", ok, err)
		}
	})
}

// TestDisableRandomFully: Rules.DisableRandomFully (weftd's
// --ip-masq-fully-random-disable) masquerades without random source ports,
// and turning it back on restores them, in both backends.
func TestDisableRandomFully(t *testing.T) {
	random := regexp.MustCompile(`fully-random|random-fully`)
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			n := nstest.New(t, "wrf")
			r := rulesFor("10.244.0.0/16", "10.244.3.0/24")
			for _, disable := range []bool{true, false} {
				r.DisableRandomFully = disable
				if err := b.do(t, n, func(m Manager) error { return m.Ensure(t.Context(), r) }); err != nil {
					t.Fatalf("Ensure (DisableRandomFully %v): %v", disable, err)
				}
				var masqLines, randomLines int
				for _, l := range b.dump(t, n) {
					if strings.Contains(strings.ToLower(l), "masquerade") {
						masqLines++
						if random.MatchString(l) {
							randomLines++
						}
					}
				}
				if masqLines == 0 {
					t.Fatalf("DisableRandomFully %v: no masquerade rules", disable)
				}
				if want := map[bool]int{true: 0, false: masqLines}[disable]; randomLines != want {
					t.Errorf("DisableRandomFully %v: %d of %d masquerade rules fully random, want %d:\n%s",
						disable, randomLines, masqLines, want, strings.Join(b.dump(t, n), "\n"))
				}
			}
		})
	}
}
