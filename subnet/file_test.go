package subnet

import (
	"path/filepath"
	"testing"
)

func TestFileRoundTrip(t *testing.T) {
	in := []byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
	f, err := ParseFile(in)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(f.Marshal()); got != string(in) {
		t.Fatalf("Marshal = %q, want %q", got, in)
	}
	path := filepath.Join(t.TempDir(), "run", "subnet.env")
	if err := WriteFile(path, f); err != nil {
		t.Fatal(err)
	}
	g, err := ReadFile(path)
	if err != nil || g != f {
		t.Fatalf("ReadFile = %+v, %v; want %+v", g, err, f)
	}
}

func FuzzParseFile(f *testing.F) {
	f.Add([]byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"))
	f.Add([]byte("# x\nFLANNEL_IPV6_SUBNET=fc00::1/64\nFLANNEL_MTU=1400\nOTHER=1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fi, err := ParseFile(data)
		if err != nil {
			return
		}
		if !fi.Subnet.IsValid() && !fi.IPv6Subnet.IsValid() {
			t.Fatalf("accepted %q without a subnet", data)
		}
		if fi.MTU < 68 || fi.MTU > 65535 {
			t.Fatalf("accepted MTU %d", fi.MTU)
		}
		back, err := ParseFile(fi.Marshal())
		if err != nil {
			t.Fatalf("cannot parse own output %q: %v", fi.Marshal(), err)
		}
		if back != fi {
			t.Fatalf("round trip %+v != %+v", back, fi)
		}
	})
}
