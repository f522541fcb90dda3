package lab

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"weft", true},
		{"e2e-vxlan", true},
		{"a", true},
		{"a23456789012345678901234", true},
		{"a234567890123456789012345", false},
		{"", false},
		{"1lab", false},
		{"Lab", false},
		{"lab-", false},
		{"la b", false},
		{"lab/x", false},
	} {
		err := ValidateName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%t", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrBadName) {
			t.Errorf("ValidateName(%q) = %v, want ErrBadName", tc.name, err)
		}
	}
}

func TestPickOctet(t *testing.T) {
	o := octetFor("weft")
	if got, err := pickOctet("weft", nil); err != nil || got != o {
		t.Fatalf("pickOctet(weft, none used) = %d, %v; want %d", got, err, o)
	}
	if octetFor("weft") != o {
		t.Fatal("octetFor is not stable")
	}
	used := map[int]bool{o: true, (o + 1) % 256: true}
	if got, err := pickOctet("weft", used); err != nil || got != (o+2)%256 {
		t.Fatalf("pickOctet with %d,%d used = %d, %v; want %d", o, o+1, got, err, (o+2)%256)
	}
	all := map[int]bool{}
	for i := range 256 {
		all[i] = true
	}
	if _, err := pickOctet("weft", all); err == nil {
		t.Fatal("pickOctet with every octet used succeeded")
	}
}

func TestAddresses(t *testing.T) {
	if got := underlayPrefix(7).String(); got != "198.19.7.0/24" {
		t.Errorf("underlayPrefix(7) = %s", got)
	}
	if got := hostAddr(7, nodeHostBase+3).String(); got != "198.19.7.13" {
		t.Errorf("node 3 address = %s", got)
	}
	for o := range 256 {
		p := underlayPrefix(o)
		if !strings.HasPrefix(p.String(), "198.19.") {
			t.Fatalf("underlay %s outside 198.19.0.0/16", p)
		}
	}
}

func TestLabNSPattern(t *testing.T) {
	pat := labNSPattern("weft")
	for _, tc := range []struct {
		ns   string
		want bool
	}{
		{"weft-sw", true},
		{"weft-etcd", true},
		{"weft-n1", true},
		{"weft-n12-p3", true},
		{"weft-n1-sw", false}, // lab "weft-n1"'s switch
		{"weft-n1-n1", false}, // lab "weft-n1"'s node
		{"weftx-n1", false},
		{"weft-n", false},
		{"xweft-sw", false},
		{"wnode-1234", false},
	} {
		if got := pat.MatchString(tc.ns); got != tc.want {
			t.Errorf("pattern(weft) matches %q = %t, want %t", tc.ns, got, tc.want)
		}
	}
}

func TestResolve(t *testing.T) {
	s := &State{Name: "lb", Nodes: []*Node{{Name: "n1", NS: "lb-n1", Pods: []*Pod{{Name: "n1-p1", NS: "lb-n1-p1"}}}}}
	for in, want := range map[string]string{
		"sw": "lb-sw", "etcd": "lb-etcd", "n1": "lb-n1", "lb-n1": "lb-n1", "n1-p1": "lb-n1-p1", "lb-n1-p1": "lb-n1-p1",
	} {
		if got, err := s.Resolve(in); err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := s.Resolve("n2"); err == nil {
		t.Error("Resolve(n2) of a one-node lab succeeded")
	}
}
