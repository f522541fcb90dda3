// Package laststate keeps a node's last known state on disk: the network
// config, the node's own lease and the peer leases it last programmed, with
// their store revision and expiry. weftd writes it while the lease store
// answers, and reads it at start when the store does not, so a node that
// restarts during a control-plane outage gets its pod network back at once
// instead of when the store returns.
//
// The file (<state dir>/last-known-state.json, mode 0600) is
//
//	{"format":1,"sha256":"<hex of the state bytes>","state":{...}}
//
// where state holds the writer's version, the store scope (which network of
// which store it describes), the config as the store returned it, the own
// lease and the peers. The checksum covers the state bytes exactly as
// written, so a file damaged anywhere is refused, not half believed.
//
// Guarantees:
//   - Writes are atomic: a temp file in the same directory, fsync, rename,
//     fsync of the directory. A reader sees the old state or the new one.
//   - Only validated state is written: the daemon offers the peers it
//     accepted and its lease as the store confirmed it; Load checks the
//     structure again (every subnet in the network and of its length, no
//     duplicates, the own lease this node's) before returning anything.
//   - Bounded: at most MaxPeers peers and MaxBytes bytes are written or
//     read; at most KeepBad refused files are kept beside it.
//   - A file that is truncated, corrupt, of a newer format or of another
//     network (scope or node) is refused with an *Error saying what to do;
//     MoveAside renames it out of the way so it is reported once.
//
// The file is a cache, never a source of truth: weftd never writes it back
// into the store, and drops what it says as soon as the store answers.
package laststate
