package lab

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// NodeStatus is a node as seen now.
type NodeStatus struct {
	Node *Node
	// WeftdAlive is whether the node's daemon runs: weftd, or flanneld on a
	// Flannel node (Node.Flannel).
	WeftdAlive bool
	Ready      bool
}

// Status is the lab as seen now.
type Status struct {
	State     *State
	EtcdAlive bool
	Nodes     []NodeStatus
}

// WriteSummary prints the node table: node, underlay IP, subnet, backend,
// the state of its daemon (weftd, or flanneld on a Flannel node) and the
// node's pods with their IPs.
func (st *Status) WriteSummary(w io.Writer) error {
	s := st.State
	etcd := "running"
	if !st.EtcdAlive {
		etcd = "NOT RUNNING"
	}
	network := s.Network
	switch {
	case s.IPv6Only:
		network = s.IPv6Network
	case s.IPv6:
		network += " " + s.IPv6Network
	}
	fmt.Fprintf(w, "lab %s: underlay %s (switch %s), etcd %s %s, pod network %s\n",
		s.Name, s.underlayString(), switchNS(s.Name), s.Etcd.Endpoint, etcd, network)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tNAMESPACE\tUNDERLAY\tSUBNET\tBACKEND\tDAEMON\tPODS")
	for _, ns := range st.Nodes {
		n := ns.Node
		weftd := n.DaemonName() + " stopped"
		switch {
		case ns.Ready:
			weftd = fmt.Sprintf("%s ready (pid %d)", n.DaemonName(), n.daemon().PID)
		case ns.WeftdAlive:
			weftd = fmt.Sprintf("%s not ready (pid %d)", n.DaemonName(), n.daemon().PID)
		}
		sn := n.subnetsString()
		var pods []string
		for _, p := range n.Pods {
			ip := AddrsString(p.IP, p.IPv6)
			if ip == "" {
				ip = "no IP"
			}
			pods = append(pods, p.Name+"="+ip)
		}
		if len(pods) == 0 {
			pods = []string{"-"}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.NS, n.underlayString(), sn, s.Backend, weftd, strings.Join(pods, " "))
	}
	return tw.Flush()
}
