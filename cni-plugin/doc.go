// Package cniplugin is the weft CNI plugin (binary `weft`, network config
// type "weft"): one process per CNI verb that attaches a pod to the node
// bridge with a veth pair and an address from the node's subnet, all in
// process (no delegation to bridge or host-local binaries).
//
// ADD reads the node's subnet file (written by weftd), allocates an address
// in the ipam store, ensures the bridge with the gateway address, creates
// the veth pair (node end "weft<hash>" in the bridge, pod end CNI_IFNAME in
// CNI_NETNS) and sets MTU, address and routes. DEL, CHECK, STATUS, GC and
// VERSION follow CNI 1.1; Documentation/cni.md has the options, codes and
// store layout.
//
// The plugin is called in the node's network namespace. Everything it
// creates there is named after the attachment (HostVethName) or recorded in
// the store, so DEL and GC can remove it even after an ADD was killed half
// way or the pod's namespace is gone.
package cniplugin
