package nstest

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// childEnv makes TestChildNeedsRoot do its job; without it the test is a
// no-op, so it neither runs nor skips in the normal suite.
const childEnv = "WEFT_NSTEST_CHILD"

// TestChildNeedsRoot is run by TestRequireRootFailsInCI in a child process
// that is not root.
func TestChildNeedsRoot(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		return
	}
	RequireRoot(t)
	t.Log("ran as root")
}

// TestRequireRootFailsInCI runs a kernel test in a child process that is
// not root (this test binary, Unprivileged): it skips with a message when
// CIEnv is unset and fails when CIEnv is set.
func TestRequireRootFailsInCI(t *testing.T) {
	exe := unprivilegedCopy(t)
	for _, tc := range []struct {
		name    string
		ci      bool
		wantOK  bool
		wantOut []string
	}{
		{name: "developer", ci: false, wantOK: true, wantOut: []string{"--- SKIP: TestChildNeedsRoot", "needs root"}},
		{name: "CI", ci: true, wantOK: false, wantOut: []string{"--- FAIL: TestChildNeedsRoot", "needs root", CIEnv + " is set"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(exe, "-test.run=^TestChildNeedsRoot$", "-test.v", "-test.count=1")
			cmd.Dir = filepath.Dir(exe)
			cmd.Env = []string{childEnv + "=1", "PATH=" + os.Getenv("PATH")}
			if tc.ci {
				cmd.Env = append(cmd.Env, CIEnv+"=1")
			}
			Unprivileged(cmd)
			out, err := cmd.CombinedOutput()
			var exited *exec.ExitError
			if err != nil && !errors.As(err, &exited) {
				t.Fatalf("run the child: %v", err)
			}
			if ok := err == nil; ok != tc.wantOK {
				t.Errorf("child succeeded = %v, want %v:\n%s", ok, tc.wantOK, out)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(string(out), w) {
					t.Errorf("child output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// unprivilegedCopy copies this test binary to a directory any user can
// read, since go test's build directory is private to the user running it.
func unprivilegedCopy(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := PublicDir(t, "weft-nstest-")
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	exe := filepath.Join(dir, "nstest.test")
	dst, err := os.OpenFile(exe, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return exe
}
