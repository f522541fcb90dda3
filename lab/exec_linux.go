package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// execCommand builds argv with a minimal environment plus env, and stdin.
func execCommand(ctx context.Context, argv, env []string, stdin string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	return cmd
}

// Exec runs argv inside the namespace of target (sw, etcd, n1, n1-p1) with
// the given stdio, the lab's bin dir first on PATH and
// WEFTCTL_ETCD_ENDPOINTS set to the lab's etcd; its exit status is the
// error.
func (l *Lab) Exec(ctx context.Context, target string, argv []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(argv) == 0 {
		return fmt.Errorf("exec: no command given")
	}
	ns, err := l.Resolve(target)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	// The lab's binaries come first on PATH and weftctl talks to the lab's
	// etcd, so `lab exec etcd -- weftctl leases` just works.
	cmd.Env = append(os.Environ(), "PATH="+l.BinDir+":"+os.Getenv("PATH"), "WEFTCTL_ETCD_ENDPOINTS="+l.Etcd.Endpoint)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s in %s: %w", argv[0], ns, err)
	}
	return nil
}

// Run runs argv inside target's namespace and returns its combined output.
func (l *Lab) Run(ctx context.Context, target string, argv ...string) (string, error) {
	ns, err := l.Resolve(target)
	if err != nil {
		return "", err
	}
	return nsRun(ctx, ns, argv...)
}
