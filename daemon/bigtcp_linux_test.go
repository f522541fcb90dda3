package daemon

import (
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weftnet/weft/internal/nl"
	"github.com/weftnet/weft/internal/nstest"
)

// TestProbeBigTCP: the sizes weftd hands the CNI plugin are BigTCPSize
// capped at what every egress device takes as it is, and zero (the kernel
// default) when one of them keeps 64 KiB, when a device is missing, or with
// --big-tcp=false. The probe only reads the devices.
func TestProbeBigTCP(t *testing.T) {
	n := nstest.New(t, "wbig")
	for _, c := range [][]string{
		{"ip", "link", "add", "big0", "type", "veth", "peer", "name", "big1"},
		{"ip", "link", "add", "def0", "type", "veth", "peer", "name", "def1"},
		{"ip", "link", "add", "vx0", "type", "vxlan", "id", "7", "dstport", "8472", "nolearning"},
	} {
		n.MustRun(t, c[0], c[1:]...)
	}
	var raised nl.GSO
	if err := n.Do(func(ns.NetNS) error {
		l, err := nl.New(nil).Netlink().LinkByName("big0")
		if err != nil {
			return err
		}
		if err := nl.SetLinkGSO(l, nl.GSO{IPv6: 524280, IPv4: 524280}); err != nil {
			return err
		}
		raised, _ = probeBigTCP(true, []string{"big0"})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if raised.Zero() {
		nstest.CannotRun(t, "the kernel has no BIG TCP (big0 kept the default sizes)")
	}
	// IPv4 only: IPv6 BIG TCP through a forwarding node does not work
	// (see probeBigTCP).
	big := nl.GSO{IPv4: nl.BigTCPSize}
	for _, tc := range []struct {
		name   string
		on     bool
		links  []string
		want   nl.GSO
		reason string
	}{
		{"host-gw over a BIG TCP NIC", true, []string{"big0"}, big, "default size"},
		{"NIC at the default", true, []string{"def0"}, nl.GSO{}, "def0"},
		{"vxlan device caps at 64 KiB", true, []string{"big0", "vx0"}, nl.GSO{}, "vx0"},
		{"off", false, []string{"big0"}, nl.GSO{}, "--big-tcp=false"},
		{"missing device", true, []string{"big0", "nope0"}, nl.GSO{}, "nope0"},
	} {
		var got nl.GSO
		var reason string
		if err := n.Do(func(ns.NetNS) error { got, reason = probeBigTCP(tc.on, tc.links); return nil }); err != nil {
			t.Fatal(err)
		}
		if got != tc.want || !strings.Contains(reason, tc.reason) {
			t.Errorf("%s: %+v (%s), want %+v (%s)", tc.name, got, reason, tc.want, tc.reason)
		}
	}
}
