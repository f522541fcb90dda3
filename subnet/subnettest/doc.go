// Package subnettest provides fakes for code that uses package subnet: an
// in-memory subnet.Manager with the full contract (transactions, watch with
// snapshots and batches, TTL expiry, compaction, injected faults) and a
// manual Clock. They are for unit tests that need neither root nor etcd.
package subnettest
