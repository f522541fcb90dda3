package lab

import (
	"context"
	"fmt"
	"os/exec"
	"runtime/debug"
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
// that need a bin dir of the code under test. When the calling binary was
// built with -race (go test -race), so are they: the race pass of the tests
// then checks weftd, the plugin and weftctl as they run in the lab, and
// Lab.DataRaces finds what they report.
func BuildBinaries(ctx context.Context, dir string) error {
	args := []string{"build"}
	if raceBuilt() {
		args = append(args, "-race")
	}
	args = append(append(args, "-o", dir+"/"), binaryPackages...)
	if out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	return nil
}

// raceBuilt reports whether the running binary was built with -race.
func raceBuilt() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}
