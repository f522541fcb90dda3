// Package nstest gives kernel tests fresh, named network namespaces that are
// always deleted when the test ends, pass or fail. Tests never touch the
// root network namespace: everything they program happens inside namespaces
// made here.
package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
)

// CIEnv names the environment variable CI sets (.ci/run exports
// WEFT_CI=1). With it set, a kernel or e2e test that cannot run fails
// instead of skipping, and scripts/testgate fails the run on any skipped
// test: a CI run is green only when every suite ran. Without it (go test on
// a developer's machine, not root) such tests skip with a message.
const CIEnv = "WEFT_CI"

// InCI reports whether CIEnv is set (to anything but the empty string).
func InCI() bool { return os.Getenv(CIEnv) != "" }

// CannotRun ends a test that cannot run here, saying why: a skip on a
// developer's machine, a failure in CI (InCI). Kernel and e2e tests call it
// instead of t.Skip.
func CannotRun(t testing.TB, why string) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s; %s is set, and CI must run every kernel and e2e test, so this is a failure, not a skip", why, CIEnv)
	}
	t.Skip(why)
}

// RequireRoot ends t unless it runs as root, which kernel tests need:
// skipped on a developer's machine, failed in CI (see CannotRun).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		CannotRun(t, "kernel test: needs root to create network namespaces (run `make test` as root)")
	}
}

// NS is a named network namespace made by New.
type NS struct {
	ns.NetNS
	// Name is the `ip netns` name; `ip netns exec Name ...` enters it.
	Name string
}

// New creates a network namespace named prefix-<random>, brings its loopback
// up and deletes it in t.Cleanup. Without root it ends t (RequireRoot).
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	RequireRoot(t)
	name := UniqueName(prefix)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { Delete(name) })
	h, err := ns.GetNS("/run/netns/" + name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	t.Cleanup(func() { h.Close() })
	n := &NS{NetNS: h, Name: name}
	n.MustRun(t, "ip", "link", "set", "lo", "up")
	return n
}

// UniqueName returns prefix-<8 hex chars>, short enough for interface names
// derived from it.
func UniqueName(prefix string) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return prefix + "-" + hex.EncodeToString(b[:])
}

// Delete kills every process still inside the named namespace (only
// processes a test started live there) and deletes it. Errors are ignored:
// it is cleanup. The calling process is never killed, even when one of its
// threads is still inside the namespace (a goroutine in ns.Do).
func Delete(name string) {
	self := strconv.Itoa(os.Getpid())
	if out, err := exec.Command("ip", "netns", "pids", name).Output(); err == nil {
		for _, pid := range strings.Fields(string(out)) {
			if pid != self {
				_ = exec.Command("kill", "-9", pid).Run()
			}
		}
	}
	_ = exec.Command("ip", "netns", "del", name).Run()
}

// Run runs a command inside the namespace and returns its combined output.
func (n *NS) Run(name string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), n.Name, err, out)
	}
	return string(out), nil
}

// MustRun is Run that fails t on error.
func (n *NS) MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := n.Run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Link joins a and b with a veth pair named nameA (in a) and nameB (in b),
// assigns the given CIDR addresses (empty for none; IPv4 or IPv6, several
// separated by spaces) and brings both ends up. IPv6 addresses are added
// without duplicate address detection, so they are usable at once.
func Link(t testing.TB, a *NS, nameA, addrA string, b *NS, nameB, addrB string) {
	t.Helper()
	tmp := UniqueName("wv")
	a.MustRun(t, "ip", "link", "add", nameA, "type", "veth", "peer", "name", tmp)
	a.MustRun(t, "ip", "link", "set", tmp, "netns", b.Name)
	b.MustRun(t, "ip", "link", "set", tmp, "name", nameB)
	for _, side := range []struct {
		n          *NS
		link, addr string
	}{{a, nameA, addrA}, {b, nameB, addrB}} {
		for _, addr := range strings.Fields(side.addr) {
			args := []string{"ip", "addr", "add", addr, "dev", side.link}
			if strings.Contains(addr, ":") {
				args = append(args, "nodad")
			}
			side.n.MustRun(t, args[0], args[1:]...)
		}
		side.n.MustRun(t, "ip", "link", "set", side.link, "up")
	}
}

// Underlay builds n "nodes" joined through a bridge that lives in its own
// switch namespace, each with an underlay veth "eth0" addressed
// 198.18.<base>.<10+i>/24 and forwarding on. It returns the node namespaces
// and their addresses. base lets concurrent tests use distinct subnets.
func Underlay(t testing.TB, n int, base int) ([]*NS, []string) {
	t.Helper()
	nodes, addrs, _ := underlay(t, n, base, false)
	return nodes, addrs
}

// DualUnderlay is Underlay with IPv6 as well: eth0 of node i also has
// 2001:db8:<base>::<10+i>/64 (nodad), and IPv6 forwarding is on. It returns
// the IPv6 addresses third.
func DualUnderlay(t testing.TB, n int, base int) ([]*NS, []string, []string) {
	t.Helper()
	return underlay(t, n, base, true)
}

func underlay(t testing.TB, n int, base int, v6 bool) ([]*NS, []string, []string) {
	t.Helper()
	sw := New(t, "wsw")
	sw.MustRun(t, "ip", "link", "add", "br0", "type", "bridge")
	sw.MustRun(t, "ip", "link", "set", "br0", "up")
	nodes := make([]*NS, n)
	addrs := make([]string, n)
	addrs6 := make([]string, n)
	for i := range n {
		node := New(t, "wnode")
		addrs[i] = fmt.Sprintf("198.18.%d.%d", base, 10+i)
		cidrs := addrs[i] + "/24"
		if v6 {
			addrs6[i] = fmt.Sprintf("2001:db8:%x::%x", base, 10+i)
			cidrs += " " + addrs6[i] + "/64"
		}
		port := fmt.Sprintf("p%d", i)
		Link(t, node, "eth0", cidrs, sw, port, "")
		sw.MustRun(t, "ip", "link", "set", port, "master", "br0")
		node.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		if v6 {
			node.MustRun(t, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
		}
		nodes[i] = node
	}
	if !v6 {
		addrs6 = nil
	}
	return nodes, addrs, addrs6
}

// PublicDir returns a new directory that any user can read and enter,
// removed when t ends (t.TempDir's is private to the user running the
// test). Tests that run something as another user (Unprivileged) put it
// there.
func PublicDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Unprivileged makes cmd run as nobody (uid and gid 65534) when the test
// runs as root; a test that is not root runs it as itself, which is
// unprivileged already.
func Unprivileged(cmd *exec.Cmd) {
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
}
