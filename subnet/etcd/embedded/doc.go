// Package embedded runs a single-member etcd inside the process
// (go.etcd.io/etcd/server/v3/embed): the one-host default behind
// `weftctl etcd`, the lab's etcd, and the store of integration tests. Its
// logs go to a *slog.Logger at warn level and above.
package embedded
