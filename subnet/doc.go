// Package subnet holds weft's control-plane vocabulary: the network config
// stored at <prefix>/config, a node's subnet lease, lease events, the Manager
// interface that a lease store implements, and the subnet file the CNI plugin
// reads. It imports no etcd: the etcd implementation lives in subnet/etcd, and
// an in-memory one for tests in subnet/subnettest.
//
// Every JSON format here is Flannel's, so a weft node and a Flannel node can
// share one etcd prefix.
package subnet
