package kube

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftnet/weft/internal/kubeplane"
	"github.com/weftnet/weft/subnet"
)

func TestAnnotationPrefix(t *testing.T) {
	for _, tc := range []struct {
		prefix, backendType string // backendType "" means refused
	}{
		{"flannel.alpha.coreos.com", "flannel.alpha.coreos.com/backend-type"},
		{"example.com/", "example.com/backend-type"},
		{"example.com/weft", "example.com/weft-backend-type"},
		{"example.com/weft-", "example.com/weft-backend-type"},
		{"a.b/c/d", ""},
		{"Example.com", ""},
		{"nodots", ""},
		{"", ""},
	} {
		a, err := newAnnotations(tc.prefix)
		if tc.backendType == "" {
			if err == nil {
				t.Errorf("prefix %q accepted as %q", tc.prefix, a.backendType)
			}
			continue
		}
		if err != nil || a.backendType != tc.backendType {
			t.Errorf("prefix %q: %q, %v; want %q", tc.prefix, a.backendType, err, tc.backendType)
		}
	}
}

func node(podCIDRs []string, ann map[string]string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", ResourceVersion: "42", Annotations: ann}, Spec: corev1.NodeSpec{PodCIDRs: podCIDRs}}
}

func TestNodeLease(t *testing.T) {
	a, _ := newAnnotations(DefaultAnnotationPrefix)
	p := "flannel.alpha.coreos.com/"
	base := func(extra map[string]string) map[string]string {
		m := map[string]string{p + "kube-subnet-manager": "true", p + "backend-type": "vxlan", p + "public-ip": "198.18.0.1", p + "backend-data": `{"VNI": 1, "VtepMAC":"aa:bb:cc:dd:ee:ff"}`}
		for k, v := range extra {
			if v == "-" {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		cidrs   []string
		ann     map[string]string
		wantErr string // "" ok, "unpublished" errNotPublished, else a refusal
	}{
		{"vxlan", []string{"10.244.1.0/24"}, base(nil), ""},
		{"dual stack", []string{"10.244.1.0/24", "fd00:1::/64"}, base(map[string]string{p + "public-ipv6": "2001:db8::1", p + "backend-v6-data": "null"}), ""},
		{"host-gw null data", []string{"10.244.1.0/24"}, base(map[string]string{p + "backend-type": "host-gw", p + "backend-data": "null"}), ""},
		// flanneld --kube-subnet-mgr on udp: its backend names no type.
		{"Flannel's udp", []string{"10.244.1.0/24"}, base(map[string]string{p + "backend-type": "", p + "backend-data": "null"}), ""},
		{"not managed", []string{"10.244.1.0/24"}, base(map[string]string{p + "kube-subnet-manager": "-"}), "unpublished"},
		{"no podCIDR", nil, base(nil), "unpublished"},
		{"bad CIDR", []string{"10.244.1.1/24"}, base(nil), "not a CIDR"},
		{"two v4", []string{"10.244.1.0/24", "10.244.2.0/24"}, base(nil), "two CIDRs of one family"},
		{"three", []string{"10.244.1.0/24", "fd00::/64", "fd01::/64"}, base(nil), "at most one"},
		{"bad ip", []string{"10.244.1.0/24"}, base(map[string]string{p + "public-ip": "1.2.3"}), "not an IPv4 address"},
		{"no ip", []string{"10.244.1.0/24"}, base(map[string]string{p + "public-ip": "-"}), "public-ip is missing"},
		{"bad v6", []string{"10.244.1.0/24"}, base(map[string]string{p + "public-ipv6": "10.0.0.1"}), "not an IPv6 address"},
		{"bad json", []string{"10.244.1.0/24"}, base(map[string]string{p + "backend-data": "{"}), "not JSON"},
		{"no type", []string{"10.244.1.0/24"}, base(map[string]string{p + "backend-type": "-"}), "backend-type is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := a.lease(node(tc.cidrs, tc.ann))
			switch {
			case tc.wantErr == "":
				if err != nil {
					t.Fatal(err)
				}
				if l.Revision != 42 || !l.Subnet.IsValid() || !l.Reserved() {
					t.Fatalf("lease %+v", l)
				}
				if tc.name == "vxlan" && string(l.Attrs.BackendData) != `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}` {
					t.Fatalf("backend data %s, want it compacted", l.Attrs.BackendData)
				}
				if want := tc.ann[p+"backend-type"]; l.Attrs.BackendType != want {
					t.Fatalf("backend type %q, want %q", l.Attrs.BackendType, want)
				}
			case tc.wantErr == "unpublished":
				if !errors.Is(err, errNotPublished) {
					t.Fatalf("err = %v, want errNotPublished", err)
				}
			default:
				if err == nil || errors.Is(err, errNotPublished) || !regexp.MustCompile(regexp.QuoteMeta(tc.wantErr)).MatchString(err.Error()) {
					t.Fatalf("err = %v, want a refusal saying %q", err, tc.wantErr)
				}
			}
		})
	}
}

// FuzzNodeLease: no annotation or podCIDR content makes lease panic, and
// what it accepts publishes back to the same lease.
func FuzzNodeLease(f *testing.F) {
	f.Add("10.244.1.0/24", "vxlan", "198.18.0.1", `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`, "", "")
	f.Add("fd00::/64", "host-gw", "", "null", "2001:db8::1", "null")
	f.Add("10.0.0.0/8", "udp", "0.0.0.0", "[]", "::ffff:1.2.3.4", "{")
	a, _ := newAnnotations(DefaultAnnotationPrefix)
	f.Fuzz(func(t *testing.T, cidr, typ, ip, data, ip6, data6 string) {
		ann := map[string]string{a.managed: "true", a.backendType: typ, a.backendData: data, a.backendV6Data: data6}
		if ip != "" {
			ann[a.publicIP] = ip
		}
		if ip6 != "" {
			ann[a.publicIPv6] = ip6
		}
		l, err := a.lease(node([]string{cidr}, ann))
		if err != nil {
			return
		}
		set, pub, err := a.publish(map[string]string{}, l.Attrs)
		if err != nil {
			t.Fatalf("publish of an accepted lease: %v", err)
		}
		back, err := a.lease(node([]string{cidr}, set))
		if err != nil {
			t.Fatalf("what publish wrote (%v) is refused: %v", set, err)
		}
		if !sameLease(back, subnetLease(l, pub)) {
			t.Fatalf("round trip: %+v, want %+v", back, l)
		}
		if l.Attrs.BackendData != nil && !json.Valid(l.Attrs.BackendData) {
			t.Fatalf("accepted invalid JSON %q", l.Attrs.BackendData)
		}
	})
}

// TestVersionMatchesScript: the tests look for the release scripts/kube.sh
// builds.
func TestVersionMatchesScript(t *testing.T) {
	src, err := os.ReadFile("../../scripts/kube.sh")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`KUBE_VERSION=\$\{KUBE_VERSION:-(v[0-9.]+)\}`).FindSubmatch(src)
	if m == nil || string(m[1]) != kubeplane.Version {
		t.Fatalf("scripts/kube.sh builds %q, kubeplane.Version is %s", m, kubeplane.Version)
	}
}

func subnetLease(l subnet.Lease, attrs subnet.LeaseAttrs) subnet.Lease {
	l.Attrs = attrs
	return l
}

// TestFitFamilies: AcquireLease takes from the Node's podCIDRs the
// subnets of the families the network config enables, and refuses, naming
// the config key and the controller manager's flag, a Node that lacks one.
func TestFitFamilies(t *testing.T) {
	dual := `{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56"}`
	for _, tc := range []struct {
		name, config   string
		cidrs          []string
		wantV4, wantV6 string // "" none
		wantErr        string
	}{
		{"dual stack", dual, []string{"10.244.1.0/24", "fd00:10:244:1::/64"}, "10.244.1.0/24", "fd00:10:244:1::/64", ""},
		{"dual stack, IPv6 first", dual, []string{"fd00:10:244:1::/64", "10.244.1.0/24"}, "10.244.1.0/24", "fd00:10:244:1::/64", ""},
		{"dual config, IPv4 podCIDR only", dual, []string{"10.244.1.0/24"}, "", "", "IPv6 podCIDR (none) is not inside IPv6Network fd00:10:244::/56"},
		{"dual config, IPv6 outside", dual, []string{"10.244.1.0/24", "fd00:99::/64"}, "", "", "give the controller manager an IPv6 --cluster-cidr"},
		{"IPv4 config, dual Node", `{"Network": "10.244.0.0/16"}`, []string{"10.244.1.0/24", "fd00:10:244:1::/64"}, "10.244.1.0/24", "", ""},
		{"IPv6-only config, dual Node", `{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56"}`, []string{"10.244.1.0/24", "fd00:10:244:1::/64"}, "", "fd00:10:244:1::/64", ""},
		{"IPv6-only config, IPv4 Node", `{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56"}`, []string{"10.244.1.0/24"}, "", "", "not inside IPv6Network"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := subnet.ParseConfig([]byte(tc.config))
			if err != nil {
				t.Fatal(err)
			}
			sn, sn6, err := (&Manager{}).fit(node(tc.cidrs, nil), cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to say %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, got6 := prefixText(sn), prefixText(sn6); got != tc.wantV4 || got6 != tc.wantV6 {
				t.Fatalf("subnets %q %q, want %q %q", got, got6, tc.wantV4, tc.wantV6)
			}
		})
	}
}

func prefixText(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}
