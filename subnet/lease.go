package subnet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
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
	// CreateRevision is the store revision at which the key was created:
	// renewals and rewrites keep it, a key deleted and created again gets a
	// new one. Of two leases, the one with the lower CreateRevision is the
	// older (e.g. it keeps a VtepMAC both claim). Zero when unknown.
	CreateRevision int64
	// LeaseID is the store's TTL handle (an etcd lease ID); 0 for a
	// reservation.
	LeaseID int64
}

// Key is the subnet that names l among a node's peers: Subnet, or
// IPv6Subnet for an IPv6-only lease. Two leases of one store never share a
// key (a dual-stack lease's IPv4 subnet is its own), and keys of the two
// families never collide, so maps of peers are keyed by it.
func (l Lease) Key() netip.Prefix {
	if l.Subnet.IsValid() {
		return l.Subnet
	}
	return l.IPv6Subnet
}

// Reserved reports whether l is a reservation: a key with no TTL that is
// never expired or reassigned.
func (l Lease) Reserved() bool { return l.LeaseID == 0 }

// leaseJSON is Flannel's lease value layout; field order and omitempty
// match Flannel's LeaseAttrs so the bytes are the same. PublicIPv6 has no
// omitempty there: a node without IPv6 writes "PublicIPv6":null.
type leaseJSON struct {
	PublicIP      string
	PublicIPv6    *string
	BackendType   string          `json:",omitempty"`
	BackendData   json.RawMessage `json:",omitempty"`
	BackendV6Data json.RawMessage `json:",omitempty"`
}

// noPublicIP is what Flannel writes as PublicIP for a node with only an IPv6
// underlay (its IP4 type marshals the zero address).
const noPublicIP = "0.0.0.0"

// MarshalJSON renders a in Flannel's lease format, byte for byte what
// Flannel v0.28.9 writes for the same attributes. A zero PublicIP is written
// as "0.0.0.0" (Flannel's IPv6-only form), a zero PublicIPv6 as null; the
// backend fields are omitted when unset.
func (a LeaseAttrs) MarshalJSON() ([]byte, error) {
	v := leaseJSON{
		PublicIP:      noPublicIP,
		BackendType:   a.BackendType,
		BackendData:   nullToNil(a.BackendData),
		BackendV6Data: nullToNil(a.BackendV6Data),
	}
	if a.PublicIP.IsValid() {
		if !a.PublicIP.Is4() {
			return nil, fmt.Errorf("lease PublicIP %s is not IPv4", a.PublicIP)
		}
		v.PublicIP = a.PublicIP.String()
	}
	if a.PublicIPv6.IsValid() {
		if !a.PublicIPv6.Is6() || a.PublicIPv6.Is4In6() {
			return nil, fmt.Errorf("lease PublicIPv6 %s is not IPv6", a.PublicIPv6)
		}
		s := a.PublicIPv6.String()
		v.PublicIPv6 = &s
	}
	if !a.PublicIP.IsValid() && !a.PublicIPv6.IsValid() {
		return nil, errors.New("lease has no PublicIP")
	}
	return json.Marshal(v)
}

// UnmarshalJSON parses Flannel's lease format. PublicIP must be an IPv4
// address; "0.0.0.0" is accepted only together with a PublicIPv6 (an
// IPv6-only node) and leaves PublicIP zero. JSON null for PublicIPv6,
// BackendData or BackendV6Data means unset.
func (a *LeaseAttrs) UnmarshalJSON(data []byte) error {
	var v struct {
		PublicIP      *string
		PublicIPv6    *string
		BackendType   *string
		BackendData   json.RawMessage
		BackendV6Data json.RawMessage
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return fmt.Errorf("lease value: %w", err)
	}
	var out LeaseAttrs
	if v.PublicIPv6 != nil && *v.PublicIPv6 != "" {
		ip, err := netip.ParseAddr(*v.PublicIPv6)
		if err != nil || !ip.Is6() || ip.Is4In6() || ip.Zone() != "" {
			return fmt.Errorf("lease value: PublicIPv6 %q is not an IPv6 address", *v.PublicIPv6)
		}
		out.PublicIPv6 = ip
	}
	if v.PublicIP == nil {
		return errors.New("lease value: PublicIP is missing")
	}
	ip, err := netip.ParseAddr(*v.PublicIP)
	if err == nil && ip.Is4In6() {
		ip = ip.Unmap() // Flannel's IP4 takes "::ffff:a.b.c.d" as a.b.c.d
	}
	if err != nil || !ip.Is4() {
		return fmt.Errorf("lease value: PublicIP %q is not an IPv4 address", *v.PublicIP)
	}
	if ip.IsUnspecified() {
		if !out.PublicIPv6.IsValid() {
			return errors.New("lease value: PublicIP is 0.0.0.0 and there is no PublicIPv6")
		}
	} else {
		out.PublicIP = ip
	}
	if v.BackendType != nil {
		out.BackendType = *v.BackendType
	}
	out.BackendData = nullToNil(v.BackendData)
	out.BackendV6Data = nullToNil(v.BackendV6Data)
	*a = out
	return nil
}

func nullToNil(m json.RawMessage) json.RawMessage {
	if len(m) == 0 || string(m) == "null" {
		return nil
	}
	return bytes.Clone(m)
}
