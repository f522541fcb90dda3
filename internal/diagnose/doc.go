// Package diagnose answers "why can this node not reach pod IP X?": it finds
// the lease that owns X, works out which kernel entries this node must hold
// for it (a bridge route and the pod's neighbour entry when X is local; per
// backend the route, neighbour and FDB entries for a peer's subnet), checks
// each against the kernel, and returns a checklist in which every failed
// item says what to do.
//
// The decision logic (Diagnose) reads the kernel only through the Kernel
// interface, so it is tested with the in-memory diagnosetest.Kernel. Netlink
// returns the real reader; it acts in the network namespace of the calling
// thread (call it inside ns.Do to inspect another namespace).
//
// The package knows weft's kernel layout (see the backend design notes) but
// not its naming: device and bridge names come in Node, filled by the caller
// from the network config, so this package imports no backend.
package diagnose
