// Package lab builds a multi-node weft cluster on one machine out of network
// namespaces, and drives it: connectivity matrix, node add/remove, weftd
// restarts. It is what `weftctl lab` and the e2e tests stand on.
//
// Topology of a lab named NAME (every name below is derived from NAME, so two
// labs with different names never clash):
//
//	NAME-sw        switch namespace: bridge br0, one veth port per node (n1, n2, …) and "etcd"
//	NAME-etcd      `weftctl etcd` listening on 198.19.X.2:2379 (eth0 → switch)
//	NAME-nK        node K: eth0 198.19.X.(10+K)/24 → switch, ip_forward=1, one weftd
//	NAME-nK-pJ     pod J of node K, attached by the real `weft` CNI plugin via libcni
//
// The underlay is 198.19.X.0/24 inside 198.19.0.0/16 (the second half of the
// benchmarking range 198.18.0.0/15; unit tests use 198.18.x.0/24). X is
// derived from a hash of NAME and probed against the other labs on the
// machine. Nothing is ever added to the root network namespace: the bridge
// lives in the switch namespace and is never attached to a real interface.
//
// The lab drives the built binaries (weftd, weft, weftctl, portmap) as real
// processes. Its state (names, PIDs, paths) is a JSON file in a state
// directory, written before each thing is created, so another shell (or a
// later `lab down` after a crash) can find and remove everything.
package lab
