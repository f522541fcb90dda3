// Package daemon is weftd: it wires the network config, a backend, the
// node's subnet lease, the peer watch and reconciliation, the subnet file,
// the CNI config, masquerade and the health/metrics endpoints together.
//
// It is the only package that joins concrete types: the lease store and the
// backend constructors are handed in (Deps), so tests run the whole daemon on
// an in-memory lease store and the no-op alloc backend.
//
// The daemon runs in generations. A generation holds one network config: it
// builds the backend, takes the lease, programs the node and keeps peers
// reconciled. When the stored config changes in a way that matters (network,
// subnet length, backend), the generation ends and a new one starts with the
// new config; an invalid new config is logged and ignored, so the node keeps
// its last good state.
package daemon
