package reliability

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
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
	if *resultsFlag == "" {
		return m.Run()
	}
	start := time.Now()
	if err := appendResults(resultsHeader(start)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	status := "passed"
	if code != 0 {
		status = "FAILED"
	}
	if err := appendResults(fmt.Sprintf("# finished %s: %s after %v", time.Now().UTC().Format(time.RFC3339), status, time.Since(start).Round(time.Second))); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return code
}

// resultsHeader says where the figures of a -results file come from: when,
// which commit, which Go, how many CPUs, which kernel, how loaded.
func resultsHeader(start time.Time) string {
	commit, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		commit = []byte("unknown")
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	load, _ := os.ReadFile("/proc/loadavg")
	loadFields := strings.Fields(string(load))
	if len(loadFields) > 3 {
		loadFields = loadFields[:3]
	}
	return fmt.Sprintf("# started %s: commit %s, %s %s/%s, %d CPUs, Linux %s, load average %s; -etcd-down %v, -soak %v, -test.parallel %s",
		start.UTC().Format(time.RFC3339), strings.TrimSpace(string(commit)), runtime.Version(), runtime.GOOS, runtime.GOARCH,
		runtime.NumCPU(), strings.TrimSpace(string(kernel)), strings.Join(loadFields, " "), *etcdDownFlag, *soakFlag,
		flag.Lookup("test.parallel").Value)
}
