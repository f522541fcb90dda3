package lab

import (
	"strings"
	"testing"
)

func TestCheckIPv6Options(t *testing.T) {
	for _, tt := range []struct {
		name string
		o    Options
		want string // "" for accepted
	}{
		{"IPv4", Options{}, ""},
		{"dual stack", Options{IPv6: true}, ""},
		{"dual stack with Flannel nodes", Options{IPv6: true, FlannelNodes: []string{"n2"}}, ""},
		{"IPv6 only with Flannel nodes", Options{IPv6Only: true, FlannelNodes: []string{"n2"}}, "use --ipv6 (dual stack)"},
		{"both", Options{IPv6: true, IPv6Only: true}, "exclude each other"},
		{"network without IPv6", Options{IPv6Network: "fd00::/56"}, "needs --ipv6"},
		{"IPv4 network as IPv6", Options{IPv6: true, IPv6Network: "10.0.0.0/8"}, "want an IPv6 prefix"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.o
			err := checkIPv6Options(&o)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if (o.IPv6 || o.IPv6Only) && o.IPv6Network != DefaultIPv6Network && tt.o.IPv6Network == "" {
					t.Fatalf("IPv6Network %q, want the default", o.IPv6Network)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("checkIPv6Options = %v, want an error with %q", err, tt.want)
			}
		})
	}
}
