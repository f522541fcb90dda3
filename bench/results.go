package main

import "time"

// Results is everything one run measured; bench/results.json is this
// struct, and Documentation/performance.md is rendered from it.
type Results struct {
	Date        time.Time `json:"date"`
	Command     string    `json:"command"`
	Quick       bool      `json:"quick"`
	Commit      string    `json:"commit"`
	Machine     Machine   `json:"machine"`
	DurationSec float64   `json:"durationSec"`

	DataPlane *DataPlane `json:"dataPlane,omitempty"`
	CNI       *CNI       `json:"cni,omitempty"`
	Control   *Control   `json:"controlPlane,omitempty"`
	Kube      *KubeScale `json:"kubernetesMode,omitempty"`
	IPv6      *IPv6Bench `json:"ipv6,omitempty"`
	Profiles  []Profile  `json:"profiles,omitempty"`
	Targets   []Target   `json:"targets"`
	// Errors are areas or steps that failed; the rest of the run still
	// reports.
	Errors []string `json:"errors,omitempty"`
}

// Machine describes where the figures were taken.
type Machine struct {
	Hostname  string `json:"hostname"`
	CPUs      int    `json:"nproc"`
	CPUModel  string `json:"cpuModel"`
	Kernel    string `json:"kernel"`
	MemoryMB  int    `json:"memoryMB"`
	GoVersion string `json:"goVersion"`
	Iperf3    string `json:"iperf3"`
	// LoadStart and LoadEnd are /proc/loadavg at the start and the end:
	// other work on the machine shows up here.
	LoadStart string `json:"loadavgStart"`
	LoadEnd   string `json:"loadavgEnd"`
	// Costs are measured at the start, before any lab exists.
	Costs *CallCosts `json:"callCosts,omitempty"`
}

// DataPlane holds one entry per backend, each measured on its own 2-node
// lab next to that lab's underlay.
type DataPlane struct {
	DurationSec int           `json:"iperfSeconds"`
	Repetitions int           `json:"repetitions"`
	UDPRate     string        `json:"udpOfferedLoad"`
	PingCount   int           `json:"pingCount"`
	Backends    []*BackendRun `json:"backends"`
}

// BackendRun is one backend's lab: weft's pod→pod path, Flannel's pod→pod
// path between two Flannel nodes of the same lab and, as reference, the
// node→node underlay path, all measured interleaved.
type BackendRun struct {
	Name     string      `json:"name"` // vxlan, host-gw, vxlan-directrouting, udp, wireguard, or a variant ("host-gw, BIG TCP off")
	Config   string      `json:"config"`
	Lab      string      `json:"lab"`
	Underlay *PathResult `json:"underlay,omitempty"`
	Pod      *PathResult `json:"pod,omitempty"`
	// Flannel is the same backend run by flanneld and the flannel CNI
	// chain; nil with FlannelNote saying why.
	Flannel     *PathResult `json:"flannel,omitempty"`
	FlannelNote string      `json:"flannelNote,omitempty"`
	// SingleStreamRatio is Pod.TCP1 / Underlay.TCP1 (median over median).
	SingleStreamRatio float64 `json:"singleStreamVsUnderlay"`
	MultiStreamRatio  float64 `json:"fourStreamsVsUnderlay"`
	// VsFlannel is Pod / Flannel, figure by figure.
	VsFlannel *Comparison `json:"vsFlannel,omitempty"`
	// Reference is the backend's reference implementation (ReferenceName:
	// wireguard's is the wireguard-go binary) in weftd's place on two more
	// nodes of the lab; nil with ReferenceNote saying why. VsReference is
	// Pod / Reference.
	Reference     *PathResult `json:"reference,omitempty"`
	ReferenceName string      `json:"referenceName,omitempty"`
	ReferenceNote string      `json:"referenceNote,omitempty"`
	VsReference   *Comparison `json:"vsReference,omitempty"`
	// Variant: a backend with a weft feature turned off (its name says
	// which), measured for the with/without comparison; the targets are
	// not judged on it.
	Variant bool   `json:"variant,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Comparison is weft's figure over Flannel's, figure by figure, from the
// same run (0 where either is missing). Above 1 is better for throughput,
// below 1 is better for latency and CPU.
type Comparison struct {
	TCP1           float64 `json:"tcp1"`
	TCP4           float64 `json:"tcp4"`
	UDPGbps        float64 `json:"udpGbps"`
	PingP50        float64 `json:"pingP50"`
	PingP99        float64 `json:"pingP99"`
	DaemonCPUPerGB float64 `json:"daemonCpuPerGB"`
	KernelCPUPerGB float64 `json:"kernelCpuPerGB"`
}

// PathResult is everything measured between two namespaces.
type PathResult struct {
	From string `json:"from"`
	To   string `json:"to"`
	// TCP1 and TCP4 are iperf3 TCP runs with 1 and 4 streams.
	TCP1 Series      `json:"tcp1"`
	TCP4 Series      `json:"tcp4"`
	UDP  *IperfRun   `json:"udp,omitempty"`
	Ping *PingResult `json:"ping,omitempty"`
	// DaemonCPUPerGB is CPU seconds used by both nodes' daemons (weftd, or
	// flanneld on Flannel's path) per GB moved during the single-stream
	// runs: a userspace backend's cost, about 0 for kernel backends.
	DaemonCPUPerGB float64 `json:"daemonCpuSecPerGB"`
	// KernelCPUPerGB is machine-wide system+irq+softirq seconds per GB over
	// the same runs: the kernel's cost, plus any other load on the machine.
	KernelCPUPerGB float64  `json:"kernelCpuSecPerGB"`
	Errors         []string `json:"errors,omitempty"`
}

// Series is repeated iperf3 runs and their median.
type Series struct {
	Runs       []IperfRun `json:"runs"`
	MedianGbps float64    `json:"medianGbps"`
}

// CNI holds the plugin's latency runs.
type CNI struct {
	Pods     int `json:"pods"`
	Parallel int `json:"parallel"`
	// Rounds is how many times each run alternated weft and Flannel; a
	// run's figures pool its rounds.
	Rounds int `json:"rounds"`
	// ExecFloorMS is the latency of `weft` answering VERSION: the cost of
	// starting the plugin process, below which ADD cannot go.
	ExecFloorMS Dist `json:"execFloorMs"`
	// FlannelExecFloorMS is the same for Flannel's `flannel` plugin.
	FlannelExecFloorMS *Dist     `json:"flannelExecFloorMs,omitempty"`
	Runs               []*CNIRun `json:"runs"`
}

// CNIRun is ADD then DEL of every pod, one conflist, one concurrency.
type CNIRun struct {
	Name        string  `json:"name"`
	Impl        string  `json:"implementation"` // weft or Flannel
	Plugins     string  `json:"plugins"`
	Concurrency int     `json:"concurrency"`
	AddMS       Dist    `json:"addMs"`
	DelMS       Dist    `json:"delMs"`
	AddErrors   int     `json:"addErrors"`
	DelErrors   int     `json:"delErrors"`
	WallSec     float64 `json:"wallSec"`
	// UniqueIPs is how many distinct pod addresses the ADDs returned.
	UniqueIPs  int    `json:"uniqueIPs"`
	FirstError string `json:"firstError,omitempty"`

	addLat, delLat []float64
}

// Control holds the control-plane runs.
type Control struct {
	Acquire *AcquireRun `json:"leaseAcquisition,omitempty"`
	// Peers holds every run, weft's and Flannel's, in the order they ran.
	Peers    []*PeerRun    `json:"peerProgramming,omitempty"`
	Restarts []*RestartRun `json:"restarts,omitempty"`
	// Convergence is weft's; FlannelConvergence Flannel's, sampled in turn.
	Convergence        *Convergence `json:"convergence,omitempty"`
	FlannelConvergence *Convergence `json:"flannelConvergence,omitempty"`
	Errors             []string     `json:"errors,omitempty"`
}

// RestartRun is one daemon restarted with Peers leases in its network and
// its kernel state gone.
type RestartRun struct {
	Peers  int    `json:"peers"`
	Daemon string `json:"daemon"` // weft or Flannel
	// SubnetFileMS is start → the subnet file is written; RoutesMS is
	// start → every peer's route, neighbour and FDB entry is back.
	SubnetFileMS float64 `json:"subnetFileMs"`
	RoutesMS     float64 `json:"routesMs"`
	RSSMB        float64 `json:"rssMB"` // after the restart, peers programmed
	Error        string  `json:"error,omitempty"`
}

// AcquireRun is N simulated nodes acquiring a lease at once.
type AcquireRun struct {
	Nodes      int     `json:"nodes"`
	TotalMS    float64 `json:"totalMs"` // start → every node holds a lease
	PerNodeMS  Dist    `json:"perNodeMs"`
	Errors     int     `json:"errors"`
	Duplicates int     `json:"duplicates"`
	Stored     int     `json:"storedLeases"` // ListLeases after the run
	FirstError string  `json:"firstError,omitempty"`
}

// PeerRun is N fake peer leases written into etcd and programmed by a real
// weftd (vxlan), then deleted.
type PeerRun struct {
	Peers  int    `json:"peers"`
	Daemon string `json:"daemon"` // weft or Flannel
	// WriteMS is first write → last write acknowledged by etcd.
	WriteMS float64 `json:"writeMs"`
	// ProgramMS is last write → the kernel holds every route, neighbour
	// and FDB entry; ProgramFromFirstMS counts from the first write.
	ProgramMS          float64 `json:"programAfterLastWriteMs"`
	ProgramFromFirstMS float64 `json:"programAfterFirstWriteMs"`
	// RemoveMS is the delete (one etcd lease revoke) → all of it gone.
	RemoveMS float64   `json:"removeMs"`
	Before   ProcUsage `json:"weftdBefore"`
	Loaded   ProcUsage `json:"weftdWithPeers"`
	After    ProcUsage `json:"weftdAfterRemoval"`
	// CPUProgramSec and CPURemoveSec are weftd CPU seconds spent
	// programming and removing.
	CPUProgramSec float64 `json:"weftdCpuProgramSec"`
	CPURemoveSec  float64 `json:"weftdCpuRemoveSec"`
	// HeapTop is weftd's heap in use with the peers programmed, by
	// function (heapTopArgs); the scale run only.
	HeapTop []string `json:"weftdHeapTop,omitempty"`
	// GCPercent is the --gc-percent weftd ran with, when the run set one
	// (0: weftd's default): the scale run again at Go's own GOGC.
	GCPercent int    `json:"gcPercent,omitempty"`
	Error     string `json:"error,omitempty"`
}

// Convergence is one lease at a time: write → kernel state on the node.
type Convergence struct {
	Daemon     string `json:"daemon"`
	Samples    int    `json:"samples"`
	AddMS      Dist   `json:"addMs"`
	RemoveMS   Dist   `json:"removeMs"`
	Errors     int    `json:"errors"`
	FirstError string `json:"firstError,omitempty"`
}

// Profile is a perf sample of one slow case, reduced to where time goes.
type Profile struct {
	Area    string `json:"area"`
	Case    string `json:"case"`
	Command string `json:"command"`
	// Comms, when set, are the only commands the shares count.
	Comms   []string `json:"comms,omitempty"`
	Samples string   `json:"samples"`
	ByComm  []Share  `json:"byCommand"`
	BySym   []Share  `json:"bySymbol"`
	Note    string   `json:"note"`
	Error   string   `json:"error,omitempty"`
}

// Share is one line of a perf report: a percentage of the samples.
type Share struct {
	Percent float64 `json:"percent"`
	What    string  `json:"what"`
}

// Target is one goal of the benchmark issue and whether this run met it.
type Target struct {
	Area string `json:"area"`
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	// Met is nil when the figure was not measured in this run.
	Met  *bool  `json:"met"`
	Note string `json:"note,omitempty"`
}
