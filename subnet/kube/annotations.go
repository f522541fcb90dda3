package kube

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftnet/weft/subnet"
)

// DefaultAnnotationPrefix is Flannel's annotation prefix: a weft node and a
// Flannel node that use it read each other's annotations.
const DefaultAnnotationPrefix = "flannel.alpha.coreos.com"

// annotations are the names of the Node annotations the store reads and
// writes, under one prefix.
type annotations struct {
	managed           string // "true" on every node whose lease is published
	backendType       string
	backendData       string
	backendV6Data     string
	publicIP          string
	publicIPv6        string
	publicIPOverwrite string // set by an operator: the address to publish instead
	publicIPv6Over    string
	prefix            string // with its trailing "/" or "-"
}

// prefixRE is what a prefix must look like once its separator is added: a
// DNS-style domain, a slash, and optionally the start of a name ending in
// "-" (Flannel's rule, so the same --kube-annotation-prefix works for both).
var prefixRE = regexp.MustCompile(`^(?:[a-z0-9_-]+\.)+[a-z0-9_-]+/(?:[a-z0-9_-]+-)?$`)

// newAnnotations returns the names under prefix. Like Flannel: a prefix with
// no slash gets "/" appended ("example.com" → "example.com/backend-type"),
// one with a slash but no trailing "/" or "-" gets "-" appended
// ("example.com/weft" → "example.com/weft-backend-type").
func newAnnotations(prefix string) (annotations, error) {
	p := prefix
	switch strings.Count(p, "/") {
	case 0:
		p += "/"
	case 1:
	default:
		return annotations{}, fmt.Errorf("annotation prefix %q has more than one slash; use a domain, optionally followed by /name", prefix)
	}
	if !strings.HasSuffix(p, "/") && !strings.HasSuffix(p, "-") {
		p += "-"
	}
	if !prefixRE.MatchString(p) {
		return annotations{}, fmt.Errorf("annotation prefix %q is not a lower-case domain optionally followed by /name (e.g. %s)", prefix, DefaultAnnotationPrefix)
	}
	return annotations{
		managed:           p + "kube-subnet-manager",
		backendType:       p + "backend-type",
		backendData:       p + "backend-data",
		backendV6Data:     p + "backend-v6-data",
		publicIP:          p + "public-ip",
		publicIPv6:        p + "public-ipv6",
		publicIPOverwrite: p + "public-ip-overwrite",
		publicIPv6Over:    p + "public-ipv6-overwrite",
		prefix:            p,
	}, nil
}

// errNotPublished marks a Node that is not (yet) a lease: it has no
// podCIDR, or no node daemon has published its attributes. It is no error
// of the Node's, so it is not reported.
var errNotPublished = errors.New("node has not published a lease")

// podCIDRs returns a Node's IPv4 and IPv6 pod subnets (either may be zero).
func podCIDRs(n *corev1.Node) (sn, sn6 netip.Prefix, err error) {
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	if len(cidrs) > 2 {
		return sn, sn6, fmt.Errorf("spec.podCIDRs has %d entries; at most one IPv4 and one IPv6 are allowed", len(cidrs))
	}
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil || p.Masked() != p || p.Addr().Zone() != "" || p.Addr().Is4In6() {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("spec.podCIDRs entry %q is not a CIDR", c)
		}
		switch {
		case p.Addr().Is4() && !sn.IsValid():
			sn = p
		case p.Addr().Is6() && !sn6.IsValid():
			sn6 = p
		default:
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("spec.podCIDRs %v has two CIDRs of one family", cidrs)
		}
	}
	return sn, sn6, nil
}

// lease turns a Node into the lease it publishes. It returns an error
// wrapping errNotPublished for a Node without a podCIDR or without the
// managed annotation, and another error, saying what is wrong, for a Node
// whose annotations are corrupt.
func (a annotations) lease(n *corev1.Node) (subnet.Lease, error) {
	var l subnet.Lease
	if n.Annotations[a.managed] != "true" {
		return l, fmt.Errorf("%w: no %s=true annotation", errNotPublished, a.managed)
	}
	sn, sn6, err := podCIDRs(n)
	if err != nil {
		return l, err
	}
	if !sn.IsValid() && !sn6.IsValid() {
		return l, fmt.Errorf("%w: no podCIDR assigned", errNotPublished)
	}
	l.Subnet, l.IPv6Subnet = sn, sn6
	// Flannel's udp backend names no type: flanneld --kube-subnet-mgr
	// writes the annotation empty, as its etcd lease leaves BackendType
	// out. Empty is a udp peer (backend.CheckPeer); only a missing
	// annotation is refused.
	bt, ok := n.Annotations[a.backendType]
	if !ok {
		return l, fmt.Errorf("annotation %s is missing", a.backendType)
	}
	l.Attrs.BackendType = bt
	if v, ok := n.Annotations[a.publicIP]; ok {
		ip, err := netip.ParseAddr(v)
		if err != nil || !ip.Is4() {
			return l, fmt.Errorf("annotation %s %q is not an IPv4 address", a.publicIP, v)
		}
		// 0.0.0.0 is what an IPv6-only node publishes, as in the etcd
		// lease format: no IPv4 address.
		if !ip.IsUnspecified() {
			l.Attrs.PublicIP = ip
		}
	}
	if v, ok := n.Annotations[a.publicIPv6]; ok {
		ip, err := netip.ParseAddr(v)
		if err != nil || !ip.Is6() || ip.Is4In6() || ip.Zone() != "" {
			return l, fmt.Errorf("annotation %s %q is not an IPv6 address", a.publicIPv6, v)
		}
		l.Attrs.PublicIPv6 = ip
	}
	if !l.Attrs.PublicIP.IsValid() && !l.Attrs.PublicIPv6.IsValid() {
		return l, fmt.Errorf("annotation %s is missing", a.publicIP)
	}
	if sn.IsValid() && !l.Attrs.PublicIP.IsValid() && !sn6.IsValid() {
		return l, fmt.Errorf("the node has an IPv4 podCIDR but annotation %s is missing", a.publicIP)
	}
	if l.Attrs.BackendData, err = jsonAnnotation(n, a.backendData); err != nil {
		return l, err
	}
	// IPv6 backend data means something only beside an IPv6 address, and
	// publish writes it only then: read it only then too.
	if l.Attrs.PublicIPv6.IsValid() {
		if l.Attrs.BackendV6Data, err = jsonAnnotation(n, a.backendV6Data); err != nil {
			return l, err
		}
	}
	l.Revision = revision(n.ResourceVersion)
	l.CreateRevision = createRevision(n)
	return l, nil
}

// createRevision orders Nodes by age for Lease.CreateRevision: the API
// does not expose the revision an object was created at, so it is the
// creation time in Unix seconds (a Node deleted and created again is
// younger; two created in the same second tie).
func createRevision(n *corev1.Node) int64 {
	if n.CreationTimestamp.IsZero() {
		return 0
	}
	return n.CreationTimestamp.Unix()
}

// jsonAnnotation returns the JSON value of annotation key, nil when it is
// absent or JSON null (Flannel's host-gw writes "null").
func jsonAnnotation(n *corev1.Node, key string) (json.RawMessage, error) {
	v, ok := n.Annotations[key]
	if !ok || v == "" || v == "null" {
		return nil, nil
	}
	if !json.Valid([]byte(v)) {
		return nil, fmt.Errorf("annotation %s is not JSON: %.40q", key, v)
	}
	// Compact JSON is no longer than v: the buffer is allocated once, to
	// size (the informer keeps it for every Node).
	b := bytes.NewBuffer(make([]byte, 0, len(v)))
	if err := json.Compact(b, []byte(v)); err != nil {
		return nil, fmt.Errorf("annotation %s: %w", key, err)
	}
	return b.Bytes(), nil
}

// revision reads a resourceVersion as the lease's Revision. Kubernetes
// calls it opaque; kube-apiserver on etcd gives the etcd revision, a
// decimal. Anything else gives 0.
func revision(rv string) int64 {
	v, err := strconv.ParseInt(rv, 10, 64)
	if err != nil {
		return 0
	}
	return v
}

// publish returns the annotations to set on a Node (whose current ones are
// cur) so that it publishes attrs, and the attributes peers will see: an
// operator's public-ip-overwrite (public-ipv6-overwrite) replaces the
// address. Annotations already right are left out; the result is empty
// when nothing needs writing.
func (a annotations) publish(cur map[string]string, attrs subnet.LeaseAttrs) (map[string]string, subnet.LeaseAttrs, error) {
	pub := attrs
	if v := cur[a.publicIPOverwrite]; v != "" {
		ip, err := netip.ParseAddr(v)
		if err != nil || !ip.Is4() {
			return nil, pub, fmt.Errorf("annotation %s %q is not an IPv4 address; fix or remove it", a.publicIPOverwrite, v)
		}
		pub.PublicIP = ip
	}
	if v := cur[a.publicIPv6Over]; v != "" {
		ip, err := netip.ParseAddr(v)
		if err != nil || !ip.Is6() || ip.Is4In6() {
			return nil, pub, fmt.Errorf("annotation %s %q is not an IPv6 address; fix or remove it", a.publicIPv6Over, v)
		}
		pub.PublicIPv6 = ip
	}
	want := map[string]string{
		a.managed:     "true",
		a.backendType: pub.BackendType,
		a.backendData: jsonValue(pub.BackendData),
	}
	if pub.PublicIP.IsValid() {
		want[a.publicIP] = pub.PublicIP.String()
	}
	if pub.PublicIPv6.IsValid() {
		want[a.publicIPv6] = pub.PublicIPv6.String()
		want[a.backendV6Data] = jsonValue(pub.BackendV6Data)
	}
	for k, v := range want {
		if cur[k] == v {
			delete(want, k)
		}
	}
	return want, pub, nil
}

// jsonValue is the annotation text of a backend data value: Flannel writes
// "null" when there is none.
func jsonValue(m json.RawMessage) string {
	if len(m) == 0 {
		return "null"
	}
	var b bytes.Buffer
	if json.Compact(&b, m) != nil {
		return string(m)
	}
	return b.String()
}
