package interop

import (
	"encoding/json"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/lab"
	"github.com/weftnet/weft/lab/labtest"
	"github.com/weftnet/weft/subnet"
)

// TestMixedDualStack runs, per backend (vxlan, host-gw) and in parallel, a
// dual-stack cluster of two weft nodes and one real Flannel node (flanneld
// with EnableIPv6/IPv6Network in the config and --public-ipv6; its vxlan
// device flannel-v6.<VNI> beside weft's weft-v6.<VNI>) on one etcd: the
// matrix in both families both ways; every lease in Flannel's dual-stack key
// and JSON (PublicIPv6, BackendV6Data on vxlan), byte for byte what weft
// writes; a Flannel and a weft node join and are reached in both families;
// an expired lease of either kind is dropped, both subnets, by the other.
func TestMixedDualStack(t *testing.T) {
	bins(t)
	runMixedCases(t, mixedDualStackCases, func(t *testing.T, tc mixedCase) {
		o := tc.options("m")
		o.WeftdArgs = []string{"--subnet-lease-ttl=" + weftTTL.String()}
		l := up(t, o)
		requireMatrix(t, l, "dual stack: n1 and n3 weft, n2 Flannel")
		requireWireFormats(t, l)
		requireDualStackLeases(t, l, tc.backend)

		requireJoinBothSides(t, l, "dual stack: ")
		requireExpiryDropped(t, l, tc.backend)
	})
}

// requireDualStackLeases checks that every node's lease sits at its
// dual-stack key and carries what the other kind needs: PublicIPv6, and on
// vxlan BackendV6Data with a VtepMAC; and that every node routes every
// other's IPv6 subnet.
func requireDualStackLeases(t *testing.T, l *lab.Lab, backend string) {
	t.Helper()
	c := labtest.EtcdClient(t, l, clientv3.Config{})
	for _, n := range l.Nodes {
		if !n.IPv6Subnet.IsValid() {
			t.Fatalf("%s (%s) has no IPv6 subnet", n.Name, n.DaemonName())
		}
		resp, err := c.Get(t.Context(), leaseKey(n))
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("%s's lease at %s: %v (%d keys)", n.Name, leaseKey(n), err, len(resp.Kvs))
		}
		var a subnet.LeaseAttrs
		if err := json.Unmarshal(resp.Kvs[0].Value, &a); err != nil {
			t.Fatal(err)
		}
		if a.PublicIPv6 != n.UnderlayV6 {
			t.Errorf("%s (%s): PublicIPv6 %s, want %s", n.Name, n.DaemonName(), a.PublicIPv6, n.UnderlayV6)
		}
		for _, o := range l.Nodes {
			// Each node routes every other's IPv6 subnet (what the expiry
			// check later sees go).
			if o != n && routeTo(t, l, n.Name, o.IPv6Subnet) == "" {
				t.Errorf("%s (%s) has no route to %s's IPv6 subnet %s", n.Name, n.DaemonName(), o.Name, o.IPv6Subnet)
			}
		}
		if backend != "vxlan" {
			continue
		}
		var v6 struct {
			VNI     int
			VtepMAC string
		}
		if err := json.Unmarshal(a.BackendV6Data, &v6); err != nil || v6.VtepMAC == "" || v6.VNI != 1 {
			t.Errorf("%s (%s): BackendV6Data %s (%v), want a VNI 1 and a VtepMAC", n.Name, n.DaemonName(), a.BackendV6Data, err)
		}
	}
}
