package masq

import (
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weftnet/weft/internal/nstest"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// backend drives one implementation inside a test namespace. Every call
// builds a new Manager, as a restarted weftd would.
type backend struct {
	name string
	// do runs fn with a fresh Manager programming n.
	do func(t *testing.T, n *nstest.NS, fn func(Manager) error) error
	// dump returns weft's rules in n, one normalised line each (counters
	// stripped), sorted; empty when nothing is installed.
	dump func(t *testing.T, n *nstest.NS) []string
	// perTable: the backend is atomic per iptables table, not across them.
	perTable bool
}

var counterRE = regexp.MustCompile(`counter packets \d+ bytes \d+ `)

var backends = []backend{
	{
		name: "nftables",
		do: func(t *testing.T, n *nstest.NS, fn func(Manager) error) error {
			// No namespace switch: the Manager's netlink sockets are
			// opened in n through its fd.
			m, err := NewNFTables(testLogger(t), Options{NetNS: n})
			if err != nil {
				return err
			}
			return fn(m)
		},
		dump: func(t *testing.T, n *nstest.NS) []string {
			tables := n.MustRun(t, "nft", "list", "tables")
			if !strings.Contains(tables, "table inet "+DefaultTable+"\n") {
				return nil
			}
			out := n.MustRun(t, "nft", "list", "table", "inet", DefaultTable)
			var lines []string
			for l := range strings.Lines(out) {
				l = strings.TrimSpace(counterRE.ReplaceAllString(l, ""))
				if strings.Contains(l, "comment \"weft-") {
					lines = append(lines, l)
				}
			}
			slices.Sort(lines)
			return lines
		},
	},
	{
		name:     "iptables",
		perTable: true,
		do: func(t *testing.T, n *nstest.NS, fn func(Manager) error) error {
			// iptables is run as a child process, which inherits the
			// namespace of the locked thread inside Do.
			return n.Do(func(ns.NetNS) error {
				m, err := NewIPTables(testLogger(t))
				if err != nil {
					return err
				}
				return fn(m)
			})
		},
		dump: func(t *testing.T, n *nstest.NS) []string {
			var lines []string
			for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
				fam := "4 "
				if cmd == "ip6tables-save" {
					fam = "6 "
				}
				for l := range strings.Lines(n.MustRun(t, cmd)) {
					if strings.Contains(l, "WEFT") {
						lines = append(lines, fam+strings.TrimSpace(l))
					}
				}
			}
			slices.Sort(lines)
			return lines
		},
	},
}

func rulesFor(network, subnet string) Rules {
	return Rules{Network: mustParse(network), Subnet: mustParse(subnet), Masquerade: true}
}

// expected lines per backend for rulesFor("10.244.0.0/16", "10.244.3.0/24").
var want10244 = map[string][]string{
	"nftables": {
		`ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random comment "weft-masq"`,
		`ip saddr != 10.244.0.0/16 ip daddr 10.244.3.0/24 return comment "weft-masq"`,
		`ip saddr 10.244.0.0/16 accept comment "weft-forward"`,
		`ip daddr 10.244.0.0/16 accept comment "weft-forward"`,
		`ip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 return comment "weft-masq"`,
		`ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random comment "weft-masq"`,
		`meta mark & 0x00004000 == 0x00004000 return comment "weft-masq"`,
	},
	"iptables": {
		`4 -A FORWARD -m comment --comment weft-forward-jump -j WEFT-FWD`,
		`4 -A POSTROUTING -m comment --comment weft-masq -j WEFT-POSTRTG`,
		`4 -A WEFT-FWD -d 10.244.0.0/16 -m comment --comment weft-forward -j ACCEPT`,
		`4 -A WEFT-FWD -s 10.244.0.0/16 -m comment --comment weft-forward -j ACCEPT`,
		`4 -A WEFT-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment weft-masq -j MASQUERADE --random-fully`,
		`4 -A WEFT-POSTRTG ! -s 10.244.0.0/16 -d 10.244.3.0/24 -m comment --comment weft-masq -j RETURN`,
		`4 -A WEFT-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment weft-masq -j RETURN`,
		`4 -A WEFT-POSTRTG -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment weft-masq -j RETURN`,
		`4 -A WEFT-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment weft-masq -j MASQUERADE --random-fully`,
		`4 :WEFT-FWD - [0:0]`,
		`4 :WEFT-POSTRTG - [0:0]`,
	},
}

func TestEnsureRestartChangeRemove(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			n := nstest.New(t, "wmq")
			ctx := t.Context()
			// Someone else's rule, which weft must never touch.
			n.MustRun(t, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.0/24", "-j", "MASQUERADE")
			foreign := n.MustRun(t, "iptables", "-t", "nat", "-S", "POSTROUTING")

			r1 := rulesFor("10.244.0.0/16", "10.244.3.0/24")
			if err := b.do(t, n, func(m Manager) error { return m.Ensure(ctx, r1) }); err != nil {
				t.Fatalf("Ensure: %v", err)
			}
			first := b.dump(t, n)
			want := slices.Clone(want10244[b.name])
			slices.Sort(want)
			if !slices.Equal(first, want) {
				t.Fatalf("rules after Ensure:\n%s\nwant:\n%s", strings.Join(first, "\n"), strings.Join(want, "\n"))
			}

			// Ten restarts: a new Manager each time, same rules, nothing added.
			for i := range 10 {
				if err := b.do(t, n, func(m Manager) error { return m.Ensure(ctx, r1) }); err != nil {
					t.Fatalf("Ensure after restart %d: %v", i, err)
				}
			}
			if got := b.dump(t, n); !slices.Equal(got, first) {
				t.Fatalf("rules after 10 restarts (%d lines, want %d):\n%s", len(got), len(first), strings.Join(got, "\n"))
			}

			// A new network and subnet replace the old rules.
			r2 := rulesFor("10.245.0.0/16", "10.245.7.0/24")
			if err := b.do(t, n, func(m Manager) error { return m.Ensure(ctx, r2) }); err != nil {
				t.Fatalf("Ensure with new network: %v", err)
			}
			got := b.dump(t, n)
			if len(got) != len(first) {
				t.Errorf("after the change: %d rule lines, want %d:\n%s", len(got), len(first), strings.Join(got, "\n"))
			}
			joined := strings.Join(got, "\n")
			if strings.Contains(joined, "10.244.") {
				t.Errorf("old network still in the rules:\n%s", joined)
			}
			if !strings.Contains(joined, "10.245.7.0/24") || !strings.Contains(joined, "10.245.0.0/16") {
				t.Errorf("new network missing from the rules:\n%s", joined)
			}

			// Masquerade off: the NAT rules go, forwarding stays.
			r3 := r2
			r3.Masquerade = false
			if err := b.do(t, n, func(m Manager) error { return m.Ensure(ctx, r3) }); err != nil {
				t.Fatalf("Ensure without masquerade: %v", err)
			}
			got = b.dump(t, n)
			joined = strings.Join(got, "\n")
			if strings.Contains(joined, "weft-masq") || len(got) == 0 {
				t.Errorf("masquerade off: want only forwarding rules, got:\n%s", joined)
			}

			// IPv6 on, then off again.
			r4 := r2
			r4.IPv6Network, r4.IPv6Subnet = mustParse("fd00:10:244::/56"), mustParse("fd00:10:244:3::/64")
			if err := b.do(t, n, func(m Manager) error { return m.Ensure(ctx, r4) }); err != nil {
				t.Fatalf("Ensure with IPv6: %v", err)
			}
			joined = strings.Join(b.dump(t, n), "\n")
			for _, s := range []string{"fd00:10:244::/56", "fd00:10:244:3::/64", "ff00::/8"} {
				if !strings.Contains(joined, s) {
					t.Errorf("IPv6 rules: %s missing:\n%s", s, joined)
				}
			}
			// IPv6 only: the IPv4 rules go, the IPv6 ones stay.
			r5 := Rules{IPv6Network: r4.IPv6Network, IPv6Subnet: r4.IPv6Subnet, Masquerade: true}
			if err := b.do(t, n, func(m Manager) error { return m.Ensure(ctx, r5) }); err != nil {
				t.Fatalf("Ensure IPv6-only: %v", err)
			}
			joined = strings.Join(b.dump(t, n), "\n")
			if strings.Contains(joined, "10.245.") || !strings.Contains(joined, "fd00:10:244::/56") || !strings.Contains(joined, "fd00:10:244:3::/64") {
				t.Errorf("IPv6-only rules:\n%s", joined)
			}
			if err := b.do(t, n, func(m Manager) error { return m.Ensure(ctx, r2) }); err != nil {
				t.Fatalf("Ensure without IPv6: %v", err)
			}
			if got := b.dump(t, n); strings.Contains(strings.Join(got, "\n"), "fd00:") || len(got) != len(first) {
				t.Errorf("IPv6 turned off, rules left:\n%s", strings.Join(got, "\n"))
			}

			// Remove, twice.
			for i := range 2 {
				if err := b.do(t, n, func(m Manager) error { return m.Remove(ctx) }); err != nil {
					t.Fatalf("Remove #%d: %v", i+1, err)
				}
				if got := b.dump(t, n); len(got) != 0 {
					t.Fatalf("after Remove #%d:\n%s", i+1, strings.Join(got, "\n"))
				}
			}
			if got := n.MustRun(t, "iptables", "-t", "nat", "-S", "POSTROUTING"); got != foreign {
				t.Errorf("foreign POSTROUTING rules changed:\n%s\nwas:\n%s", got, foreign)
			}
		})
	}
}

func TestEnsureRejectsInvalidRules(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			n := nstest.New(t, "wmq")
			bad := rulesFor("10.244.0.0/16", "10.99.3.0/24")
			err := b.do(t, n, func(m Manager) error { return m.Ensure(t.Context(), bad) })
			if err == nil {
				t.Fatal("Ensure accepted a subnet outside the network")
			}
			if got := b.dump(t, n); len(got) != 0 {
				t.Errorf("rules installed despite the error:\n%s", strings.Join(got, "\n"))
			}
		})
	}
}

// ping reports whether from gets at least one echo reply from addr, trying
// until the deadline (the first packets may wait for neighbour resolution).
func pingWithin(n *nstest.NS, addr string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if _, err := n.Run("ping", "-c", "1", "-W", "1", addr); err == nil {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// TestMasqueradeFunctional proves the semantics on real traffic, in each
// family. A "node" namespace routes between a pod (10.244.3.2,
// fd10:0:0:3::2), an outside host (198.18.40.2, 2001:db8:40::2) that has no
// route back to the pod network, and a peer that hosts another pod
// (10.244.7.2, fd10:0:0:7::2) and drops echo requests not from the pod
// network. So: a pod's ping to the outside is answered only when
// masqueraded; its ping to the other pod only when not masqueraded.
func TestMasqueradeFunctional(t *testing.T) {
	type addrs struct {
		network, podNet, podGW, pod, outNet, nodeOut, out, peerNet, nodePeer, peer, peerPod, peerPodNet string
		rules                                                                                           Rules
		fwd, nftFam, drop, kpDst                                                                        string
	}
	for _, fam := range []addrs{{
		network: "10.244.0.0/16", podNet: "/24", podGW: "10.244.3.1", pod: "10.244.3.2",
		nodeOut: "198.18.40.1/24", out: "198.18.40.2", outNet: "/24", nodePeer: "198.18.41.1/24", peer: "198.18.41.2", peerNet: "/24",
		peerPod: "10.244.7.2", peerPodNet: "10.244.7.0/24",
		rules: rulesFor("10.244.0.0/16", "10.244.3.0/24"), fwd: "net.ipv4.ip_forward=1", nftFam: "ip",
		drop: "ip saddr != 10.244.0.0/16 icmp type echo-request drop", kpDst: "ip daddr 198.18.40.2",
	}, {
		network: "fd10::/48", podNet: "/64", podGW: "fd10:0:0:3::1", pod: "fd10:0:0:3::2",
		nodeOut: "2001:db8:40::1/64", out: "2001:db8:40::2", outNet: "/64", nodePeer: "2001:db8:41::1/64", peer: "2001:db8:41::2", peerNet: "/64",
		peerPod: "fd10:0:0:7::2", peerPodNet: "fd10:0:0:7::/64",
		rules: Rules{IPv6Network: mustParse("fd10::/48"), IPv6Subnet: mustParse("fd10:0:0:3::/64"), Masquerade: true},
		fwd:   "net.ipv6.conf.all.forwarding=1", nftFam: "ip6",
		drop: "ip6 saddr != fd10::/48 icmpv6 type echo-request drop", kpDst: "ip6 daddr 2001:db8:40::2",
	}} {
		for _, b := range backends {
			t.Run(b.name+"/"+fam.nftFam, func(t *testing.T) {
				t.Parallel()
				node := nstest.New(t, "wmn")
				pod := nstest.New(t, "wmp")
				out := nstest.New(t, "wmo")
				peer := nstest.New(t, "wmr")
				nstest.Link(t, node, "pod0", fam.podGW+fam.podNet, pod, "eth0", fam.pod+fam.podNet)
				pod.MustRun(t, "ip", "route", "add", "default", "via", fam.podGW)
				nstest.Link(t, node, "up0", fam.nodeOut, out, "eth0", fam.out+fam.outNet)
				nstest.Link(t, node, "peer0", fam.nodePeer, peer, "eth0", fam.peer+fam.peerNet)
				node.MustRun(t, "ip", "route", "add", fam.peerPodNet, "via", fam.peer)
				node.MustRun(t, "sysctl", "-qw", fam.fwd)
				peer.MustRun(t, "ip", "addr", "add", fam.peerPod+"/"+map[bool]string{false: "32", true: "128"}[fam.nftFam == "ip6"], "dev", "lo")
				peer.MustRun(t, "ip", "route", "add", fam.network, "via", strings.Split(fam.nodePeer, "/")[0])
				peer.MustRun(t, "nft", "add table "+fam.nftFam+" f; add chain "+fam.nftFam+" f in { type filter hook input priority 0; }; "+
					"add rule "+fam.nftFam+" f in "+fam.drop)

				// Baseline without weft's rules.
				if !pingWithin(pod, fam.peerPod, 5*time.Second) {
					t.Fatal("baseline: pod to pod does not work even without NAT")
				}
				if pingWithin(pod, fam.out, 0) {
					t.Fatal("baseline: outside answered an unmasqueraded pod; the test could not detect masquerading")
				}
				if pingWithin(node, fam.peerPod, 0) {
					t.Fatal("baseline: the peer answered a non-pod source; the test could not detect masquerading of pod traffic")
				}

				r := fam.rules
				if err := b.do(t, node, func(m Manager) error { return m.Ensure(t.Context(), r) }); err != nil {
					t.Fatalf("Ensure: %v", err)
				}
				if !pingWithin(pod, fam.out, 5*time.Second) {
					t.Error("pod to outside: no reply, so it was not masqueraded")
				}
				if !pingWithin(pod, fam.peerPod, 5*time.Second) {
					t.Error("pod to pod: no reply, so it was masqueraded (or not forwarded)")
				}

				// kube-proxy's mark: weft must leave the packet alone (here
				// nothing else masquerades it, so the outside cannot answer).
				node.MustRun(t, "nft", "add table "+fam.nftFam+" kp; add chain "+fam.nftFam+" kp pre { type filter hook prerouting priority -150; }; "+
					"add rule "+fam.nftFam+" kp pre "+fam.kpDst+" meta mark set 0x4000")
				if pingWithin(pod, fam.out, 0) {
					t.Error("a packet marked 0x4000 by kube-proxy was masqueraded by weft")
				}
				node.MustRun(t, "nft", "delete table "+fam.nftFam+" kp")

				if err := b.do(t, node, func(m Manager) error { return m.Remove(t.Context()) }); err != nil {
					t.Fatalf("Remove: %v", err)
				}
				if pingWithin(pod, fam.out, 0) {
					t.Error("pod to outside still masqueraded after Remove")
				}
			})
		}
	}
}

func mustParse(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// TestEnsureIsAtomic switches between two configurations while another
// process keeps listing the rules: every listing must be exactly one of the
// two rule sets, never empty, never a mix.
func TestEnsureIsAtomic(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			n := nstest.New(t, "wmq")
			ctx := t.Context()
			r1 := rulesFor("10.244.0.0/16", "10.244.3.0/24")
			r2 := rulesFor("10.245.0.0/16", "10.245.7.0/24")
			var sets [2]string
			for i, r := range []Rules{r1, r2} {
				if err := b.do(t, n, func(m Manager) error { return m.Ensure(ctx, r) }); err != nil {
					t.Fatal(err)
				}
				sets[i] = strings.Join(b.dump(t, n), "\n")
			}
			const switches = 60
			done := make(chan error, 1)
			go func() {
				done <- b.do(t, n, func(m Manager) error {
					for i := range switches {
						if err := m.Ensure(ctx, []Rules{r1, r2}[i%2]); err != nil {
							return err
						}
					}
					return nil
				})
			}()
			// The writer must have finished before the test may end: its
			// thread may be inside the namespace, and nstest's cleanup kills
			// every process found there.
			seen := map[int]int{}
			var mixed string
			for running := true; running; {
				select {
				case err := <-done:
					if err != nil {
						t.Fatalf("Ensure: %v", err)
					}
					running = false
				default:
				}
				got := b.dump(t, n)
				if i := slices.Index(sets[:], strings.Join(got, "\n")); i >= 0 {
					seen[i]++
				} else if !b.perTable || !perTableMatch(got, sets) {
					mixed = strings.Join(got, "\n")
				}
				if mixed != "" && running {
					if err := <-done; err != nil {
						t.Errorf("Ensure: %v", err)
					}
					running = false
				}
			}
			if mixed != "" {
				t.Fatalf("a listing during the switches matched neither rule set:\n%s", mixed)
			}
			t.Logf("listings: %d of the first set, %d of the second", seen[0], seen[1])
		})
	}
}

// perTableMatch reports whether each table's lines (nat: WEFT-POSTRTG and
// its jump; filter: WEFT-FWD and its jump) equal that table's lines in one
// of the sets.
func perTableMatch(got []string, sets [2]string) bool {
	for _, chain := range []string{iptPostrouting, iptForward} {
		pick := func(lines []string) string {
			var out []string
			for _, l := range lines {
				if strings.Contains(l, chain) {
					out = append(out, l)
				}
			}
			return strings.Join(out, "\n")
		}
		g := pick(got)
		if g != pick(strings.Split(sets[0], "\n")) && g != pick(strings.Split(sets[1], "\n")) {
			return false
		}
	}
	return true
}
