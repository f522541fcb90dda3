// Package nl is weft's one place for "make the kernel look like this"
// netlink helpers shared by the backends (and anyone else in weft that
// programs links, addresses, routes, neighbours or FDB entries).
//
// Every helper is idempotent: creating what already exists, and deleting
// what is already gone, are successes. Helpers compare before they write, so
// state that is already right is never rewritten (a restart of weftd does not
// flap anything).
//
// # Namespaces
//
// A Handle issues its requests through a *netlink.Handle. New(nil) (or the
// zero Handle) uses netlink's per-request sockets, which are opened in the
// network namespace of the calling OS thread: call it from inside ns.Do to
// work in another namespace. New(h) with a handle from netlink.NewHandleAt
// works in that handle's namespace from any thread. The ethtool helpers
// (SetTxChecksum, TxChecksum) always act in the calling thread's namespace.
//
// # Route ownership
//
// Every route weft installs carries the route protocol RouteProtocol (87,
// 0x57, 'W'). Full passes list and delete only routes with that protocol, so
// weft never removes a route it did not create, even on a shared underlay
// device such as the host-gw backend's eth0. `ip route show proto 87` lists
// weft's routes.
package nl
