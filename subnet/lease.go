package subnet

import (
	"encoding/json"
	"net/netip"
	"time"
)

// LeaseAttrs is the JSON value of a lease key, in Flannel's format:
//
//	{"PublicIP":"198.18.0.11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"..."}}
type LeaseAttrs struct {
	PublicIP      netip.Addr
	PublicIPv6    netip.Addr // zero when the node has no IPv6 underlay
	BackendType   string
	BackendData   json.RawMessage // backend specific; nil for host-gw and udp
	BackendV6Data json.RawMessage
}

// Lease is one node's hold on a subnet.
type Lease struct {
	Subnet     netip.Prefix
	IPv6Subnet netip.Prefix // zero unless the network is dual-stack
	Attrs      LeaseAttrs
	// Expiration is when the lease runs out unless renewed; zero for a
	// reservation.
	Expiration time.Time
	// Revision is the store's modification revision of the key when this
	// Lease was read or written. RenewLease compares against it.
	Revision int64
	// LeaseID is the store's TTL handle (an etcd lease ID); 0 for a
	// reservation.
	LeaseID int64
}

// Reserved reports whether l is a reservation: a key with no TTL that is
// never expired or reassigned.
func (l Lease) Reserved() bool { return l.LeaseID == 0 }
