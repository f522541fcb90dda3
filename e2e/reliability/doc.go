// Package reliability is weft's fault-injection suite. It holds only tests:
// each one brings up a lab (package lab) in network namespaces, injects one
// fault — etcd stopped or frozen, an etcd leader killed, weftd SIGKILLed
// (also while etcd is frozen), a lease expired, peer churn, a node
// rebooted, CNI plugins killed, hostile config and lease values, TLS and
// auth refusals, injected VXLAN packets — and
// measures what was lost (pings counted with bounded ping runs, kernel
// state compared with etcd, IPAM compared with live pods). The tests need
// root: without it they skip on a developer's machine and fail in CI
// (nstest.CannotRun); every one is bounded in time and tears its lab down
// in t.Cleanup.
//
// Flags (go test ./e2e/reliability -args ...):
//
//	-etcd-down D   how long etcd stays stopped in TestEtcdDown (default 60s)
//	-soak D        how long TestSoak runs (default 2m; `make soak` uses 30m)
//	-results FILE  append one summary line per measured fault to FILE,
//	               between a "# started" and a "# finished" line
//
// `make reliability` keeps a passing run's results in
// Documentation/reliability-results.txt and generates the tables of
// Documentation/reliability.md from them.
package reliability
