package kube

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps client-go where it belongs: the CNI plugin links none of
// it, and weftd only this package's Node client and the core/v1 types,
// never a clientset (which registers every API group at start: 38 MB of
// binary and 24 MB of RSS measured when weftd had one).
func TestDeps(t *testing.T) {
	for _, tc := range []struct {
		pkg    string
		banned []string
		allow  []string // exceptions to banned
	}{
		{pkg: "github.com/weftnet/weft/cmd/weft", banned: []string{"k8s.io/client-go", "k8s.io/api/", "k8s.io/apimachinery", "go.etcd.io/etcd/client"}},
		{pkg: "github.com/weftnet/weft/cmd/weftd", banned: []string{"k8s.io/client-go/kubernetes", "k8s.io/api/"}, allow: []string{"k8s.io/api/core/v1"}},
	} {
		out, err := exec.Command("go", "list", "-deps", tc.pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", tc.pkg, err, out)
		}
	deps:
		for _, dep := range strings.Fields(string(out)) {
			for _, a := range tc.allow {
				if dep == a {
					continue deps
				}
			}
			for _, b := range tc.banned {
				if strings.HasPrefix(dep, b) {
					t.Errorf("%s links %s", tc.pkg, dep)
				}
			}
		}
	}
}
