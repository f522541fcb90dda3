// Package etcd implements subnet.Manager on etcd v3 (go.etcd.io/etcd/client/v3)
// with Flannel's schema, so weft and Flannel nodes can share a prefix:
//
//	<prefix>/config                   network config JSON (subnet.ParseConfig)
//	<prefix>/subnets/10.244.3.0-24    a node's lease: subnet.LeaseAttrs JSON,
//	                                  bound to an etcd lease (TTL); a key with
//	                                  no etcd lease is a reservation
//
// Every write that could collide is one transaction with a compare:
// creation requires CreateRevision == 0, and renewal rebinds the key to a
// fresh etcd lease only if its ModRevision is still the one the node last
// wrote, so a node can never overwrite a lease another node holds.
//
// It is the only weft package that imports etcd. Subpackages: embedded runs
// an etcd in-process; etcdtest wraps it for tests.
package etcd
