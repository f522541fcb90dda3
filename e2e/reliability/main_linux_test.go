package reliability

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/weftnet/weft/lab"
)

var (
	etcdDownFlag = flag.Duration("etcd-down", 60*time.Second, "how long etcd stays stopped in TestEtcdDown")
	soakFlag     = flag.Duration("soak", 2*time.Minute, "how long TestSoak runs")
	resultsFlag  = flag.String("results", "", "append one summary line per measured fault to this file")
)

// binDir holds the binaries TestMain built; empty when not root.
var binDir, buildErr = "", error(nil)

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	flag.Parse()
	// The tests spend their time waiting on faults (etcd down for a
	// minute, a soak), not on the CPU: run them side by side even on two
	// cores, unless -parallel was given.
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		_ = flag.Set("test.parallel", "8")
	}
	if os.Geteuid() == 0 && !testing.Short() {
		dir, err := os.MkdirTemp("", "weft-reliability-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		binDir, buildErr = dir, lab.BuildBinaries(context.Background(), dir)
	}
	return m.Run()
}
