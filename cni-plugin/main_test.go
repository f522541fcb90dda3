package cniplugin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// testBinDir holds the binaries kernel tests run: weft (built from this
// module), cnitool and portmap (built from the CNI modules in the module
// cache). TestMain sets it when running as root; the kernel tests skip
// otherwise, so nothing is built for them.
var testBinDir string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if os.Geteuid() == 0 {
		dir, err := os.MkdirTemp("", "weft-cni-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		if err := buildBinaries(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		testBinDir = dir
	}
	return m.Run()
}

func buildBinaries(dir string) error {
	pkgs := map[string]string{
		"weft":    "github.com/weftnet/weft/cmd/weft",
		"cnitool": "github.com/containernetworking/cni/cnitool",
		"portmap": "github.com/containernetworking/plugins/plugins/meta/portmap",
	}
	errs := make(chan error, len(pkgs))
	for name, pkg := range pkgs {
		go func() {
			out, err := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg).CombinedOutput()
			if err != nil {
				err = fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
			}
			errs <- err
		}()
	}
	var first error
	for range pkgs {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}
