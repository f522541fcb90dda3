// Package interop proves weft's Flannel drop-in claim against the real
// Flannel (v0.28.9, built by scripts/flannel.sh): mixed clusters of weft and
// Flannel nodes on one etcd and prefix (every backend: the connectivity
// matrix both ways, node to pod, peers appearing, renewing and expiring on
// either side), and a node migrating from Flannel to weft and back with its
// pods kept (lost pings counted). The tests run as root in namespaces built
// by package lab; they fail, not skip, when the Flannel build is missing.
package interop
