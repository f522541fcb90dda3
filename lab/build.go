package lab

import (
	"context"
	"fmt"
	"os/exec"
)

// binaryPackages are what a lab runs, the set `make build` puts in bin/:
// the daemon, the CNI plugin, the CLI and the portmap plugin it chains.
var binaryPackages = []string{
	"github.com/weftnet/weft/cmd/weftd",
	"github.com/weftnet/weft/cmd/weft",
	"github.com/weftnet/weft/cmd/weftctl",
	"github.com/containernetworking/plugins/plugins/meta/portmap",
}

// BuildBinaries builds a lab's binaries into dir with the go tool, for tests
// that need a bin dir of the code under test.
func BuildBinaries(ctx context.Context, dir string) error {
	args := append([]string{"build", "-o", dir + "/"}, binaryPackages...)
	if out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	return nil
}
