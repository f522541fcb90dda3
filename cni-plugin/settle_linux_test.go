package cniplugin

import (
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weftnet/weft/internal/nstest"
)

// TestSettleIPv6: settleIPv6 waits while an address on the interface is
// tentative, names it when its bound passes, and returns once the kernel has
// cleared the flag. With DAD off (configurePod) the pod's link-local address
// is still tentative for the moment between the carrier coming up (the node
// end of the veth set up) and a kernel work item running, which on a busy
// node can outlast ADD; here DAD is left on for the address so that it stays
// tentative long enough (one DAD probe, retrans_time 1 s) to be seen.
func TestSettleIPv6(t *testing.T) {
	n := nstest.New(t, "wsettle")
	n.MustRun(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "nodeend")
	n.MustRun(t, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=1", "net.ipv6.conf.eth0.dad_transmits=1")
	n.MustRun(t, "ip", "link", "set", "nodeend", "up")
	n.MustRun(t, "ip", "link", "set", "eth0", "up")
	n.MustRun(t, "ip", "addr", "add", "fd99:1::5/64", "dev", "eth0")

	settle := func(d time.Duration) (err error) {
		if e := n.Do(func(ns.NetNS) error { err = settleIPv6("eth0", d); return nil }); e != nil {
			t.Fatal(e)
		}
		return err
	}
	err := settle(100 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "fd99:1::5/64") || !strings.Contains(err.Error(), "still tentative") {
		t.Fatalf("settle during DAD: %v, want an error naming the tentative address", err)
	}
	if err := settle(settleTimeout); err != nil {
		t.Fatal(err)
	}
	if out := n.MustRun(t, "ip", "-6", "addr", "show", "dev", "eth0"); strings.Contains(out, "tentative") {
		t.Fatalf("settled, yet: %s", out)
	}
}
