package vxlan

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/internal/nl/nltest"
	"github.com/weftnet/weft/subnet"
)

// baseFlannel is this file's underlay base octet (of vxlan's 20-29).
const baseFlannel = 24

// TestVXLANReplacesFlannelDevice: a node moving from Flannel still has
// flannel.1 (VNI 1, port 8472), which the kernel would not let weft.1 exist
// beside. weftd deletes it (with its routes) and makes weft.1; a device of
// any other name holding the VNI and port is refused with its name.
func TestVXLANReplacesFlannelDevice(t *testing.T) {
	nd := &node{Node: nltest.Nodes(t, 1, baseFlannel)[0], cfg: `{"Type":"vxlan"}`}
	local := nd.PublicIP.String()
	nd.run(t, "ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "dstport", "8472", "local", local, "dev", "eth0", "nolearning")
	nd.run(t, "ip", "link", "set", "flannel.1", "up")
	nd.run(t, "ip", "route", "add", "10.244.77.0/24", "via", "10.244.77.0", "dev", "flannel.1", "onlink")
	nd.start(t)
	if out := nd.run(t, "ip", "-o", "link", "show"); strings.Contains(out, "flannel.1") || !strings.Contains(out, "weft.1") {
		t.Fatalf("links after start:\n%s\nwant weft.1 and no flannel.1", out)
	}

	nd.run(t, "ip", "link", "del", "weft.1")
	nd.run(t, "ip", "link", "add", "other.1", "type", "vxlan", "id", "1", "dstport", "8472", "local", local, "dev", "eth0", "nolearning")
	err := nd.NS.Do(func(ns.NetNS) error {
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		b, err := New(backend.Options{
			Logger:   testLogger(t),
			Underlay: backend.Underlay{Link: "eth0", Index: eth0.Attrs().Index, PublicIP: nd.PublicIP},
			Config:   &subnet.Config{EnableIPv4: true, Network: nltest.Network(), SubnetLen: 24, BackendType: "vxlan", Backend: json.RawMessage(nd.cfg)},
		})
		if err != nil {
			return err
		}
		_, err = b.Prepare(context.Background())
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "other.1") {
		t.Fatalf("Prepare beside other.1 (VNI 1, port 8472) = %v, want an error naming other.1", err)
	}
	if out := nd.run(t, "ip", "-o", "link", "show", "other.1"); !strings.Contains(out, "other.1") {
		t.Fatalf("other.1 was touched: %s", out)
	}
}
