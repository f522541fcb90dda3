package interop

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/nstest"
	"github.com/weftnet/weft/lab"
)

var resultsFlag = flag.String("results", "", "append one line per measured migration to this file")

// Set by TestMain when it runs as root and not under -short.
var (
	binDir, buildErr   = "", error(nil)
	flannelDir, refErr = "", error(nil)
	e2eEnabled         = false
)

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	flag.Parse()
	// The tests mostly wait (lease renewals, flanneld starting): run the
	// backends side by side even on two cores, unless -parallel was given.
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		_ = flag.Set("test.parallel", "6")
	}
	if os.Geteuid() == 0 && !testing.Short() {
		e2eEnabled = true
		ctx := context.Background()
		flannelDir, refErr = lab.FlannelRef(ctx, "../../scripts/flannel.sh")
		dir, err := os.MkdirTemp("", "weft-interop-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		binDir, buildErr = dir, lab.BuildBinaries(ctx, dir)
	}
	return m.Run()
}

// bins ends the test unless the weft binaries and the reference Flannel are
// there: skipped when not root or under -short (failed in CI:
// nstest.CannotRun), failed when either is missing (CI builds Flannel with
// `make test`).
func bins(t *testing.T) {
	t.Helper()
	nstest.RequireRoot(t)
	if !e2eEnabled {
		nstest.CannotRun(t, "e2e: skipped under -short")
	}
	if buildErr != nil {
		t.Fatalf("weft binaries: %v", buildErr)
	}
	if refErr != nil {
		t.Fatalf("the mixed-cluster tests need the real Flannel: %v", refErr)
	}
}

func labName(p string) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return p + hex.EncodeToString(b[:])
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// up brings a lab with Flannel nodes up and always tears it down.
func up(t *testing.T, o lab.Options) *lab.Lab {
	t.Helper()
	bins(t)
	o.BinDir, o.FlannelBinDir = binDir, flannelDir
	o.Progress = testWriter{t}
	if o.StateRoot == "" {
		o.StateRoot = t.TempDir()
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 60 * time.Second
	}
	t.Cleanup(func() {
		if err := lab.Down(context.Background(), o.StateRoot, o.Name); err != nil {
			t.Errorf("down: %v", err)
		}
	})
	l, err := lab.Up(t.Context(), o)
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	var b bytes.Buffer
	_ = l.Status(t.Context()).WriteSummary(&b)
	t.Logf("lab %s up:\n%s", l.Name, b.String())
	return l
}

// requireMatrix fails unless every pod reaches every other pod and every
// other node's underlay address, and every node reaches every other node's
// pods.
func requireMatrix(t *testing.T, l *lab.Lab, what string) {
	t.Helper()
	m, err := l.Test(t.Context(), lab.TestOptions{Timeout: 90 * time.Second, FromNodes: true})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	var b bytes.Buffer
	_ = m.WriteTable(&b)
	pods, nodes := len(l.Pods()), len(l.Nodes)
	want := pods*(pods-1) + pods*(nodes-1) // pod → pod, pod → other nodes
	for _, n := range l.Nodes {
		want += pods - len(n.Pods) // node → other nodes' pods
	}
	if l.IPv6 {
		want *= 2 // dual stack: each probe in both families
	}
	if !m.OK || len(m.Probes) != want {
		t.Fatalf("%s: not fully connected (%d probes, want %d):\n%s", what, len(m.Probes), want, b.String())
	}
	t.Logf("%s:\n%s", what, b.String())
}

// record logs a measured result and appends it to -results.
func record(t *testing.T, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf("RESULT %s: %s", t.Name(), fmt.Sprintf(format, args...))
	t.Log(line)
	if *resultsFlag == "" {
		return
	}
	f, err := os.OpenFile(*resultsFlag, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Errorf("results file: %v", err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s %s\n", time.Now().UTC().Format(time.RFC3339), line)
}

// podAddr reads the pod's eth0 IPv4 address from inside the pod.
func podAddr(t *testing.T, l *lab.Lab, pod string) netip.Addr {
	t.Helper()
	out, err := l.Run(t.Context(), pod, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(out)
	for i, w := range f {
		if w == "inet" && i+1 < len(f) {
			p, err := netip.ParsePrefix(f[i+1])
			if err != nil {
				t.Fatal(err)
			}
			return p.Addr()
		}
	}
	t.Fatalf("pod %s has no IPv4 address on eth0: %q", pod, out)
	return netip.Addr{}
}

// routeTo returns node's kernel route for sn ("" when none).
func routeTo(t *testing.T, l *lab.Lab, node string, sn netip.Prefix) string {
	t.Helper()
	fam := "-4"
	if sn.Addr().Is6() {
		fam = "-6" // ip route show lists IPv4 only unless told, whatever the prefix
	}
	out, err := l.Run(t.Context(), node, "ip", fam, "route", "show", "exact", sn.String())
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// fileHas reports whether the file at path contains s.
func fileHas(path, s string) bool {
	b, err := os.ReadFile(path)
	return err == nil && bytes.Contains(b, []byte(s))
}
