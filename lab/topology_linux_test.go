package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/nstest"
)

// testLabName is a lab name no other test (or engineer) uses at once.
func testLabName(prefix string) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// fakeBinDir holds a "weftd" that only sleeps, so the topology and the
// process bookkeeping can be tested without the real daemon.
func fakeBinDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, b := range binaries {
		if err := os.WriteFile(filepath.Join(dir, b), []byte("#!/bin/sh\nexec sleep 120\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func rootLinks(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			names = append(names, f[1])
		}
	}
	return strings.Join(names, " ")
}

// TestTopologyAndDown builds the underlay of a two-node lab (switch, node
// namespaces, fake weftd processes), checks it, simulates a crash that left
// an unrecorded namespace with a process in it, and checks that Down, from a
// fresh Load as another shell would, removes everything and is safe twice.
func TestTopologyAndDown(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := context.Background()
	root := t.TempDir()
	name := testLabName("lt")
	t.Cleanup(func() { _ = Down(context.Background(), root, name) })
	before := rootLinks(t)

	l := &Lab{root: root, progress: newProgress(nil), timeout: 10 * time.Second, exited: map[int]<-chan struct{}{}}
	if err := l.create(Options{Name: name, Backend: "vxlan", StateRoot: root}, fakeBinDir(t)); err != nil {
		t.Fatal(err)
	}
	if err := l.buildSwitch(ctx); err != nil {
		t.Fatal(err)
	}
	var nodes []*Node
	for range 2 {
		n, err := l.startNode(ctx)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	if got := rootLinks(t); got != before {
		t.Fatalf("root namespace links changed: before %q, after %q", before, got)
	}
	if _, err := nsRun(ctx, nodes[0].NS, "ping", "-c", "1", "-W", "2", nodes[1].Underlay.String()); err != nil {
		t.Fatalf("node underlay not connected: %v", err)
	}
	if out, err := nsRun(ctx, nodes[0].NS, "sysctl", "-n", "net.ipv4.ip_forward"); err != nil || strings.TrimSpace(out) != "1" {
		t.Fatalf("ip_forward in node = %q, %v; want 1", out, err)
	}
	if !strings.HasPrefix(nodes[0].Underlay.String(), "198.19.") {
		t.Fatalf("node underlay %s outside 198.19.0.0/16", nodes[0].Underlay)
	}
	for _, n := range nodes {
		if !n.Weftd.Alive() {
			t.Fatalf("node %s: weftd (fake) not running", n.Name)
		}
	}
	if _, err := Up(ctx, Options{Name: name, Nodes: 1, Backend: "vxlan", StateRoot: root, BinDir: fakeBinDir(t)}); err == nil {
		t.Fatal("Up of an existing lab name succeeded")
	}

	// A crash mid-up: a namespace made but not recorded, with a process.
	stray := nsName(name, "n9")
	if err := addNS(ctx, stray); err != nil {
		t.Fatal(err)
	}
	strayProc, _, err := startInNS(stray, filepath.Join(t.TempDir(), "log"), nil, "sleep", "120")
	if err != nil {
		t.Fatal(err)
	}

	other, err := Load(root, name)
	if err != nil {
		t.Fatal(err)
	}
	if len(other.Nodes) != 2 || other.Nodes[1].Weftd.PID != nodes[1].Weftd.PID {
		t.Fatalf("loaded state lacks the nodes: %+v", other.State)
	}
	if err := other.Down(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*Proc{nodes[0].Weftd, nodes[1].Weftd, strayProc} {
		if p.Alive() {
			t.Errorf("process %d (%s) survived Down", p.PID, p.Cmd)
		}
	}
	nss, err := listNamespaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nss {
		if strings.HasPrefix(n, name+"-") {
			t.Errorf("namespace %s survived Down", n)
		}
	}
	if _, err := os.Stat(filepath.Join(root, name)); !os.IsNotExist(err) {
		t.Errorf("state dir survived Down: %v", err)
	}
	if err := Down(ctx, root, name); err != nil {
		t.Errorf("second Down: %v", err)
	}
	if _, err := Load(root, name); err == nil {
		t.Error("Load after Down succeeded")
	}
	if got := rootLinks(t); got != before {
		t.Fatalf("root namespace links changed: before %q, after %q", before, got)
	}
}

// TestDistinctLabsDistinctUnderlays checks name isolation of the addresses:
// a second lab never takes the first one's /24, even when its name hashes
// to the same octet.
func TestDistinctLabsDistinctUnderlays(t *testing.T) {
	nstest.RequireRoot(t)
	root := t.TempDir()
	bin := fakeBinDir(t)
	a := &Lab{root: root, exited: map[int]<-chan struct{}{}}
	if err := a.create(Options{Name: "alpha", Backend: "vxlan", StateRoot: root}, bin); err != nil {
		t.Fatal(err)
	}
	// Find a name that collides with alpha's octet.
	var twin string
	for i := 0; twin == ""; i++ {
		if n := "b" + hex.EncodeToString([]byte{byte(i), byte(i >> 8)}); octetFor(n) == a.Octet {
			twin = n
		}
	}
	b := &Lab{root: root, exited: map[int]<-chan struct{}{}}
	if err := b.create(Options{Name: twin, Backend: "vxlan", StateRoot: root}, bin); err != nil {
		t.Fatal(err)
	}
	if a.Octet == b.Octet {
		t.Fatalf("labs alpha and %s share underlay %s", twin, a.Underlay)
	}
}
