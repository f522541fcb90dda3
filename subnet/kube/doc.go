// Package kube implements subnet.Manager on the Kubernetes API, the way
// Flannel's --kube-subnet-mgr does, so a weft node and a Flannel node in one
// cluster are peers:
//
//   - A node's subnet is its Node object's spec.podCIDRs (one IPv4 and/or one
//     IPv6 CIDR), assigned by kube-controller-manager (--allocate-node-cidrs).
//     The store never chooses a subnet: AcquireLease waits until the Node has
//     one. The lease lasts as long as the Node with that podCIDR exists, so it
//     has no TTL (Lease.Reserved is true) and RenewLease only checks it.
//   - The lease value is published as annotations on the Node, under a prefix
//     (Flannel's flannel.alpha.coreos.com by default):
//     <prefix>/kube-subnet-manager "true", backend-type, backend-data,
//     public-ip (and backend-v6-data, public-ipv6 for IPv6). An operator's
//     public-ip-overwrite (public-ipv6-overwrite) annotation replaces the
//     address the node would publish. Annotations are written through the
//     nodes/status subresource, as Flannel does, so the ClusterRole needs
//     nodes get/list/watch and nodes/status patch only.
//   - Peers come from one informer (list, then watch) on Node objects. A Node
//     whose annotations are corrupt is refused with a reason, logged once per
//     node and reason; the others are unaffected.
//   - The network config is a file (Flannel's --net-config-path, a mounted
//     ConfigMap), read and validated with subnet.ParseConfig on every
//     GetNetworkConfig.
//
// What the etcd store has and the API does not (reservations,
// SetNetworkConfig, ReleaseLease) fails with an error wrapping
// errors.ErrUnsupported that says what to do instead.
//
// It is the only weft package that imports client-go. Subpackage kubetest
// runs a real kube-apiserver and kube-controller-manager for tests.
package kube
