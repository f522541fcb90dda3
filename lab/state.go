package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/weftnet/weft/subnet"
)

// ErrNoLab is returned by Load when no lab of that name exists.
var ErrNoLab = errors.New("no such lab")

// ErrExists is returned by Up when a lab of that name already exists.
var ErrExists = errors.New("lab already exists")

const stateFile = "state.json"

// State is everything a lab made, as recorded in <StateRoot>/<Name>/state.json.
// Each thing is recorded before it is created, so a crashed `up` leaves a
// state that `down` can clean.
type State struct {
	Name     string       `json:"name"`
	Dir      string       `json:"dir"`
	BinDir   string       `json:"binDir"`
	Backend  string       `json:"backend"`
	Network  string       `json:"network"`
	Octet    int          `json:"octet"`
	Underlay netip.Prefix `json:"underlay"`
	Created  time.Time    `json:"created"`
	// Namespaces lists every namespace the lab made (or was about to make),
	// in creation order.
	Namespaces []string `json:"namespaces"`
	Etcd       Etcd     `json:"etcd"`
	// Kube is the Kubernetes control plane of a lab in Kubernetes mode
	// (Options.Kube); nil otherwise.
	Kube  *Kube   `json:"kube,omitempty"`
	Nodes []*Node `json:"nodes"`
	// NextNode is the index the next added node gets; indexes are never
	// reused, so a removed node's name does not come back.
	NextNode int `json:"nextNode"`
	// PodAdds counts the pods attached so far; it makes each container ID
	// unique in the lab, as a runtime's sandbox IDs are, even when a
	// deleted pod's name is given again.
	PodAdds     int `json:"podAdds,omitempty"`
	PodsPerNode int `json:"podsPerNode"`
	// IPMasq is passed to every weftd as --ip-masq.
	IPMasq bool `json:"ipMasq"`
	// WeftdArgs are extra flags for every weftd (Options.WeftdArgs).
	WeftdArgs []string `json:"weftdArgs,omitempty"`
	// Config is the network config JSON the lab wrote (Options.Config).
	Config string `json:"config,omitempty"`
	// FlannelBinDir holds flanneld, flannel, bridge and host-local, for
	// Flannel nodes (Options.FlannelBinDir).
	FlannelBinDir string `json:"flannelBinDir,omitempty"`
	// FlanneldArgs are extra flags for every flanneld.
	FlanneldArgs []string `json:"flanneldArgs,omitempty"`
	// IPv6 and IPv6Only are Options.IPv6 (dual stack) and Options.IPv6Only;
	// IPv6Network is the IPv6 pod network of either, UnderlayV6 the IPv6
	// underlay prefix.
	IPv6        bool         `json:"ipv6,omitempty"`
	IPv6Only    bool         `json:"ipv6Only,omitempty"`
	IPv6Network string       `json:"ipv6Network,omitempty"`
	UnderlayV6  netip.Prefix `json:"underlayV6,omitzero"`
	// Ready is set once `up` finished.
	Ready bool `json:"ready"`
}

// Etcd is the lab's etcd.
type Etcd struct {
	NS       string     `json:"ns"`
	Addr     netip.Addr `json:"addr"`
	Endpoint string     `json:"endpoint"`
	DataDir  string     `json:"dataDir"`
	Log      string     `json:"log"`
	Proc     *Proc      `json:"proc,omitempty"`
	// Members are the members of a multi-member etcd (Options.EtcdMembers
	// > 1), all in namespace NS; Endpoint then lists every client URL and
	// Proc is the first member's.
	Members []*EtcdMember `json:"members,omitempty"`
}

// Kube is a lab's Kubernetes control plane: kube-apiserver and
// kube-controller-manager in the etcd namespace, on the lab's etcd.
type Kube struct {
	Dir string `json:"dir"` // certificates, tokens, logs
	URL string `json:"url"`
	// NetConfig is the network config file every weftd reads.
	NetConfig string `json:"netConfig"`
	// WeftKubeconfig holds the token of weftd's ServiceAccount.
	WeftKubeconfig    string `json:"weftKubeconfig"`
	APIServer         *Proc  `json:"apiServer,omitempty"`
	ControllerManager *Proc  `json:"controllerManager,omitempty"`
}

// Node is one node: a namespace with its weftd, or with flanneld (Flannel).
type Node struct {
	Name  string `json:"name"` // n1
	Index int    `json:"index"`
	NS    string `json:"ns"`
	// Underlay and UnderlayV6 are the node's underlay addresses; Underlay
	// is zero in an IPv6-only lab, UnderlayV6 in a lab without IPv6.
	Underlay   netip.Addr `json:"underlay"`
	UnderlayV6 netip.Addr `json:"underlayV6,omitzero"`
	Dir        string     `json:"dir"`
	SubnetFile string     `json:"subnetFile"`
	CNIConfDir string     `json:"cniConfDir"`
	IPAMDir    string     `json:"ipamDir"`
	CNICache   string     `json:"cniCache"`
	StateDir   string     `json:"stateDir,omitempty"` // weftd's --state-dir
	Log        string     `json:"log"`
	// Subnet is the key of the node's lease: its IPv4 subnet, or its IPv6
	// subnet in an IPv6-only lab. IPv6Subnet is its IPv6 subnet, when the
	// network has IPv6.
	Subnet     netip.Prefix `json:"subnet,omitzero"`
	IPv6Subnet netip.Prefix `json:"ipv6Subnet,omitzero"`
	Weftd      *Proc        `json:"weftd,omitempty"`
	Pods       []*Pod       `json:"pods"`
	// Args are extra weftd flags, after the lab's own (a later flag wins).
	Args []string `json:"args,omitempty"`

	// Flannel is set while the node runs the real Flannel (flanneld and the
	// flannel CNI plugin) instead of weft.
	Flannel  bool  `json:"flannel,omitempty"`
	Flanneld *Proc `json:"flanneld,omitempty"`
	// FlannelLog, FlannelCNIDir (the flannel plugin's dataDir) and
	// HostLocalDir (host-local's dataDir) are set once the node ran
	// Flannel; all are inside Dir.
	FlannelLog    string `json:"flannelLog,omitempty"`
	FlannelCNIDir string `json:"flannelCNIDir,omitempty"`
	HostLocalDir  string `json:"hostLocalDir,omitempty"`
	// FlanneldArgs are extra flanneld flags of this node.
	FlanneldArgs []string `json:"flanneldArgs,omitempty"`
}

// Pod is a namespace attached to its node through the CNI plugin.
type Pod struct {
	Name        string     `json:"name"` // n1-p1
	NS          string     `json:"ns"`
	ContainerID string     `json:"containerID"`
	IP          netip.Addr `json:"ip,omitzero"`   // IPv4; zero in an IPv6-only lab
	IPv6        netip.Addr `json:"ipv6,omitzero"` // zero in a lab without IPv6
}

// Addr is the pod's address of the lab's first family: IP, or IPv6 in an
// IPv6-only lab.
func (p *Pod) Addr() netip.Addr {
	if p.IP.IsValid() {
		return p.IP
	}
	return p.IPv6
}

// ConfList is where weftd installs the node's CNI config.
func (n *Node) ConfList() string { return filepath.Join(n.CNIConfDir, "10-weft.conflist") }

// ReadSubnet reads the node's subnet from the subnet file weftd wrote: the
// key of its lease (see Node.Subnet).
func (n *Node) ReadSubnet() (netip.Prefix, error) {
	fi, err := subnet.ReadFile(n.SubnetFile)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("node %s: %w", n.Name, err)
	}
	var probe Node
	probe.setSubnets(fi)
	return probe.Subnet, nil
}

// Node returns the node with the given short name (n1), or nil.
func (s *State) Node(name string) *Node {
	for _, n := range s.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Pods returns every pod of every node, in order.
func (s *State) Pods() []*Pod {
	var ps []*Pod
	for _, n := range s.Nodes {
		ps = append(ps, n.Pods...)
	}
	return ps
}

// Resolve maps a target given on the command line (sw, etcd, n1, n1-p1, or
// a full namespace name) to a namespace of the lab.
func (s *State) Resolve(target string) (string, error) {
	switch target {
	case "sw", "switch", switchNS(s.Name):
		return switchNS(s.Name), nil
	case "etcd", etcdNS(s.Name):
		return etcdNS(s.Name), nil
	}
	for _, n := range s.Nodes {
		if target == n.Name || target == n.NS {
			return n.NS, nil
		}
		for _, p := range n.Pods {
			if target == p.Name || target == p.NS {
				return p.NS, nil
			}
		}
	}
	return "", fmt.Errorf("lab %s has no node or pod %q (try sw, etcd, n1, n1-p1)", s.Name, target)
}

// save writes the state atomically.
func (s *State) save() error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode lab state: %w", err)
	}
	if err := subnet.WriteFileAtomic(filepath.Join(s.Dir, stateFile), append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("save lab state: %w", err)
	}
	return nil
}

// addNamespace records ns (once) and saves, before the namespace is made.
func (s *State) addNamespace(ns string) error {
	for _, n := range s.Namespaces {
		if n == ns {
			return nil
		}
	}
	s.Namespaces = append(s.Namespaces, ns)
	return s.save()
}

func (s *State) dropNamespace(ns string) {
	out := s.Namespaces[:0]
	for _, n := range s.Namespaces {
		if n != ns {
			out = append(out, n)
		}
	}
	s.Namespaces = out
}

// loadState reads the state of lab name under root.
func loadState(root, name string) (*State, error) {
	data, err := os.ReadFile(filepath.Join(root, name, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w %q under %s (start one with `weftctl lab up --name %s`)", ErrNoLab, name, root, name)
	}
	if err != nil {
		return nil, fmt.Errorf("read lab state: %w", err)
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("lab %s: parse %s: %w", name, stateFile, err)
	}
	return &s, nil
}

// List returns the names of the labs under root.
func List(root string) ([]string, error) {
	ents, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list labs: %w", err)
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() {
			if _, err := os.Stat(filepath.Join(root, e.Name(), stateFile)); err == nil {
				names = append(names, e.Name())
			}
		}
	}
	sort.Strings(names)
	return names, nil
}
