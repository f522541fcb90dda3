package subnet

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

func TestLeaseAttrsJSONFlannelBytes(t *testing.T) {
	tests := []struct {
		name  string
		attrs LeaseAttrs
		want  string
	}{
		{"vxlan", LeaseAttrs{PublicIP: netip.MustParseAddr("198.18.0.11"), BackendType: "vxlan",
			BackendData: json.RawMessage(`{"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:ff"}`)},
			`{"PublicIP":"198.18.0.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}`},
		{"host-gw", LeaseAttrs{PublicIP: netip.MustParseAddr("198.18.0.12"), BackendType: "host-gw"},
			`{"PublicIP":"198.18.0.12","PublicIPv6":null,"BackendType":"host-gw"}`},
		{"reservation", LeaseAttrs{PublicIP: netip.MustParseAddr("198.18.0.13")},
			`{"PublicIP":"198.18.0.13","PublicIPv6":null}`},
		{"dual stack", LeaseAttrs{PublicIP: netip.MustParseAddr("198.18.0.14"), PublicIPv6: netip.MustParseAddr("fd00::14"),
			BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1}`), BackendV6Data: json.RawMessage(`{"VNI":1}`)},
			`{"PublicIP":"198.18.0.14","PublicIPv6":"fd00::14","BackendType":"vxlan","BackendData":{"VNI":1},"BackendV6Data":{"VNI":1}}`},
		{"ipv6 only", LeaseAttrs{PublicIPv6: netip.MustParseAddr("fd00::15"), BackendType: "host-gw"},
			`{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::15","BackendType":"host-gw"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(tt.attrs)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("Marshal = %s\nwant      %s", got, tt.want)
			}
			var back LeaseAttrs
			if err := json.Unmarshal(got, &back); err != nil {
				t.Fatal(err)
			}
			again, _ := json.Marshal(back)
			if !bytes.Equal(again, got) {
				t.Fatalf("round trip = %s, want %s", again, got)
			}
		})
	}
}

func TestLeaseAttrsUnmarshal(t *testing.T) {
	var a LeaseAttrs
	// Flannel writes null for unset pointer and raw fields in some versions.
	in := `{"PublicIP":"198.18.0.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":null,"BackendV6Data":null}`
	if err := json.Unmarshal([]byte(in), &a); err != nil {
		t.Fatal(err)
	}
	if a.PublicIP != netip.MustParseAddr("198.18.0.11") || a.PublicIPv6.IsValid() || a.BackendData != nil || a.BackendV6Data != nil {
		t.Fatalf("got %+v", a)
	}
	for _, bad := range []string{
		`{}`, `{"PublicIP":""}`, `{"PublicIP":"fd00::1"}`, `{"PublicIP":"300.1.1.1"}`, `{"PublicIP":"0.0.0.0"}`,
		`{"PublicIP":"198.18.0.1","PublicIPv6":"198.18.0.1"}`, `{"PublicIP":1}`, `[]`, `null`,
	} {
		if err := json.Unmarshal([]byte(bad), &a); err == nil {
			t.Errorf("Unmarshal(%s) accepted: %+v", bad, a)
		} else if !strings.Contains(err.Error(), "lease value") && bad != "null" {
			t.Errorf("Unmarshal(%s) error %q does not say what it parsed", bad, err)
		}
	}
	if _, err := json.Marshal(LeaseAttrs{}); err == nil {
		t.Error("Marshal of a lease without PublicIP succeeded")
	}
}

func FuzzLeaseAttrs(f *testing.F) {
	for _, s := range []string{
		`{"PublicIP":"198.18.0.11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}`,
		`{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::15","BackendType":"host-gw","BackendV6Data":[1]}`,
		`{"PublicIP":"198.18.0.11","PublicIPv6":null,"BackendData":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var a LeaseAttrs
		if err := json.Unmarshal(data, &a); err != nil {
			return
		}
		if !a.PublicIP.IsValid() && !a.PublicIPv6.IsValid() {
			t.Fatalf("accepted %q without a public IP", data)
		}
		if a.PublicIP.IsValid() && !a.PublicIP.Is4() {
			t.Fatalf("accepted non-IPv4 PublicIP %s", a.PublicIP)
		}
		out, err := json.Marshal(a)
		if err != nil {
			t.Fatalf("accepted %q but cannot marshal it: %v", data, err)
		}
		var b LeaseAttrs
		if err := json.Unmarshal(out, &b); err != nil {
			t.Fatalf("cannot parse own output %s: %v", out, err)
		}
		out2, _ := json.Marshal(b)
		if !bytes.Equal(out, out2) {
			t.Fatalf("not stable: %s then %s", out, out2)
		}
	})
}
