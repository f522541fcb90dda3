package subnet

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// Sentinel errors. Match them with errors.Is.
var (
	// ErrNoConfig means <prefix>/config does not exist yet.
	ErrNoConfig = errors.New("network config not found")
	// ErrNoFreeSubnet means every subnet between SubnetMin and SubnetMax is
	// leased or reserved.
	ErrNoFreeSubnet = errors.New("no free subnet")
	// ErrLeaseLost means the lease key is gone or now belongs to someone else:
	// it must be acquired again, never written over.
	ErrLeaseLost = errors.New("lease lost")
	// ErrSubnetTaken means a reservation or release named a subnet that
	// someone else holds.
	ErrSubnetTaken = errors.New("subnet taken")
	// ErrUnreachable means the store's server did not answer. A Manager
	// wraps it only in errors of an outage it reports itself (once, and its
	// end once), so a caller may retry without saying so again.
	ErrUnreachable = errors.New("lease store unreachable")
)

// DefaultLeaseTTL is Flannel's lease lifetime.
const DefaultLeaseTTL = 24 * time.Hour

// AcquireRequest says what a node wants when it asks for a lease.
type AcquireRequest struct {
	// Config is the network config in force; subnets are carved from it.
	Config *Config
	// Attrs are published in the lease value (PublicIP, backend data).
	Attrs LeaseAttrs
	// TTL of the lease; DefaultLeaseTTL when zero.
	TTL time.Duration
	// Previous is the subnet recorded in this node's previous subnet file,
	// if any. It is reused only when it is free or already held with this
	// node's PublicIP; otherwise it is ignored.
	Previous netip.Prefix
	// PreviousIPv6 is the IPv6 subnet of the previous subnet file, if any
	// (dual-stack and IPv6-only networks). See PreviousSubnets.
	PreviousIPv6 netip.Prefix
}

// Manager is a store of subnet leases (etcd in production, memory in tests).
// Implementations are safe for concurrent use.
type Manager interface {
	// GetNetworkConfig reads and validates the network config. It returns an
	// error wrapping ErrNoConfig when the key is absent, and a *ConfigError
	// (wrapped) when the stored JSON is invalid. Callers take a config read
	// as the store answering, so it fails while the store is unreachable,
	// also in a store that keeps the config elsewhere (a file).
	GetNetworkConfig(ctx context.Context) (*Config, error)

	// SetNetworkConfig validates and stores raw as the network config.
	SetNetworkConfig(ctx context.Context, raw []byte) error

	// AcquireLease returns a lease for this node. In order, it renews a lease
	// that already carries req.Attrs.PublicIP, takes req.Previous if free, or
	// creates a new one on a free subnet. Creation is a single transaction
	// that succeeds only if the key does not exist, so two callers never get
	// the same subnet. Reservations (keys with no TTL) are never taken, except
	// one whose PublicIP is this node's: it is returned still a reservation
	// (no TTL), its value updated with req.Attrs so peers learn the node's
	// backend data. A lease of this node that no longer fits req.Config is
	// deleted, not reused.
	// Exhaustion returns an error wrapping ErrNoFreeSubnet.
	AcquireLease(ctx context.Context, req AcquireRequest) (*Lease, error)

	// RenewLease extends l by ttl. It is a compare-and-swap on the key's
	// revision (l.Revision): if the key is gone or was rewritten by anyone
	// else it returns an error wrapping ErrLeaseLost and changes nothing. On
	// success it updates l (Revision, Expiration, LeaseID) in place.
	RenewLease(ctx context.Context, l *Lease, ttl time.Duration) error

	// ListLeases returns every lease and reservation under the prefix, and
	// the store revision the list was read at.
	ListLeases(ctx context.Context) ([]Lease, int64, error)

	// WatchLeases sends lease changes to out until ctx is done, then returns
	// ctx.Err(). The first batch is a snapshot of all leases; after a
	// compaction, a lost connection or any other gap it re-lists and sends a
	// snapshot again, so a receiver that replaces its state on every snapshot
	// never misses a change. It blocks while out is full. A batch sent is
	// the receiver's, its slices too: it may write over them.
	WatchLeases(ctx context.Context, out chan<- LeaseBatch) error

	// ReleaseLease deletes the lease or reservation for sn. Releasing a
	// subnet that has no key is not an error.
	ReleaseLease(ctx context.Context, sn netip.Prefix) error

	// ReserveSubnet stores a lease with no TTL for sn and publicIP: it is
	// never expired and never handed to another node. It fails with
	// ErrSubnetTaken if another node holds sn.
	ReserveSubnet(ctx context.Context, sn netip.Prefix, publicIP netip.Addr) error
}

// EventType tells whether a lease appeared (or changed) or went away.
type EventType int

const (
	// EventAdded is a new or changed lease.
	EventAdded EventType = iota
	// EventRemoved is a lease that was deleted or expired.
	EventRemoved
)

func (t EventType) String() string {
	if t == EventRemoved {
		return "removed"
	}
	return "added"
}

// Event is one lease change. For EventRemoved only Lease.Subnet (and
// IPv6Subnet) are meaningful.
type Event struct {
	Type  EventType
	Lease Lease
}

// LeaseBatch is one delivery of WatchLeases.
type LeaseBatch struct {
	// Snapshot, when true, means Leases is the complete current set and
	// replaces whatever the receiver knew; Events is empty.
	Snapshot bool
	Leases   []Lease
	// Events, when Snapshot is false, are changes in revision order.
	Events []Event
	// Revision is the store revision this batch brings the receiver to.
	Revision int64
}
