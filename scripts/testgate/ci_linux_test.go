package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/nstest"
)

// TestCIRunRefuses: .ci/run stops before running anything when it is not
// root or when GOFLAGS would select or shorten the tests. It runs a copy of
// the script in an empty tree, so a refusal it failed to make would stop at
// a missing Makefile, never run the suite.
func TestCIRunRefuses(t *testing.T) {
	script, err := os.ReadFile("../../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	tree := nstest.PublicDir(t, "weft-cirun-")
	if err := os.Mkdir(filepath.Join(tree, ".ci"), 0o755); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(tree, ".ci", "run")
	if err := os.WriteFile(run, script, 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		goflags string
		nobody  bool
		want    string
	}{
		{name: "not root", nobody: true, want: "must run as root"},
		{name: "-short", goflags: "-short", want: "selects or shortens tests"},
		{name: "-run", goflags: "-mod=mod -run=TestNothing", want: "selects or shortens tests"},
		{name: "-skip", goflags: "-skip=TestE2E", want: "selects or shortens tests"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if os.Geteuid() != 0 && !tt.nobody {
				// Not root: the root check refuses first, which the
				// "not root" case covers.
				return
			}
			cmd := exec.Command("bash", run)
			cmd.Dir = tree
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "GOFLAGS=" + tt.goflags}
			if tt.nobody {
				nstest.Unprivileged(cmd)
			}
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tt.want) {
				t.Errorf(".ci/run: %v, output %q; want a refusal saying %q", err, out, tt.want)
			}
			if strings.Contains(string(out), "go version") || strings.Contains(string(out), "make") {
				t.Errorf(".ci/run went on after refusing:\n%s", out)
			}
		})
	}
}
