// Package ipam allocates pod addresses from the node's subnet and records
// them on disk so that concurrent CNI plugin processes, and plugin processes
// started after a reboot, agree on who owns which address.
//
// # Store layout
//
// The layout is host-local's, so operators' habits carry over:
//
//	<dataDir>/<network>/             directory, mode 0700
//	<dataDir>/<network>/lock         flock(2) target serialising every process
//	<dataDir>/<network>/10.244.3.7   one file per allocated address (IPv4 or
//	                                 IPv6, e.g. fd10:0:0:3::7), mode 0600,
//	                                 content "containerID\r\nifname" as
//	                                 host-local writes it (its DEL and GC
//	                                 match it whole); "containerID\nifname"
//	                                 of older weft is read too
//	<dataDir>/<network>/last_reserved_ip, last_reserved_ip6
//	                                 the last IPv4 (IPv6) address handed out, so
//	                                 allocation goes round-robin in each family
//	                                 instead of reusing a just freed address at
//	                                 once
//
// An allocation file is written to a temp file, fsynced and then hard-linked
// to its final name: link(2) fails when the name exists, so a reservation is
// both exclusive and never visible half-written. A process killed mid-write
// leaves only a temp file, which the next holder of the lock deletes.
//
// Every operation takes the lock for its whole read-modify-write, so two
// plugin processes (or two goroutines with their own or a shared Store) never
// hand out the same address. A dual-stack pod's two addresses are reserved in
// one such step (AllocateEach): both or neither.
package ipam
