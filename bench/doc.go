// Command bench measures weft end to end on this machine and writes the
// figures to Documentation/performance.md and bench/results.json:
//
//   - data plane: on a 2-node lab per backend (vxlan, host-gw,
//     vxlan+DirectRouting, udp, wireguard), pod→pod iperf3 TCP (1 and 4
//     streams), UDP at a fixed offered load, ping latency and CPU per GB,
//     next to node→node over the same lab's underlay as the physical
//     reference, next to two Flannel nodes where Flannel has the backend,
//     and for wireguard next to two nodes whose device the reference
//     wireguard-go binary serves in weftd's place (reference.go);
//   - CNI: ADD/DEL latency of the weft plugin through libcni, sequential and
//     10-way parallel, alone and chained with portmap, in a node namespace
//     the harness makes;
//   - control plane: 200 nodes acquiring leases at once against an embedded
//     etcd, a real weftd programming 1000 and 5000 fake peers, and the
//     latency from one new lease to the kernel state;
//   - profiles: perf samples of the slowest case of each area, and of
//     vxlan pod→pod by weft and by Flannel (the same kernel path).
//
// Run it as root from the repository root after `make build`:
//
//	go run ./bench --bin-dir bin --out Documentation/performance.md --json bench/results.json [--quick]
//
// Everything it creates lives in network namespaces it makes (labs named
// wb-*, namespaces named wbench-*) and is removed on exit, on SIGINT/SIGTERM,
// and, after a crash, at the start of the next run. Every iperf3 and ping is
// bounded in count and time. Figures are measured, never edited.
package main
