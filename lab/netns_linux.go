package lab

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

const netnsDir = "/run/netns"

func nsPath(name string) string { return netnsDir + "/" + name }

// listNamespaces returns the names in /run/netns.
func listNamespaces() ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, nil
}

func nsExists(name string) bool {
	_, err := os.Stat(nsPath(name))
	return err == nil
}

// addNS creates a namespace with loopback up.
func addNS(ctx context.Context, name string) error {
	if err := ipCmd(ctx, "netns", "add", name); err != nil {
		return err
	}
	return ipCmd(ctx, "-n", name, "link", "set", "lo", "up")
}

// nsPIDs lists the processes whose network namespace is name.
func nsPIDs(name string) []int {
	out, err := exec.Command("ip", "netns", "pids", name).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killNS SIGKILLs every process inside the namespace (only processes the lab
// started live there) and waits until none is left.
func killNS(ctx context.Context, name string) error {
	ok := poll(ctx, 5*time.Second, 20*time.Millisecond, func() bool {
		pids := nsPIDs(name)
		for _, pid := range pids {
			if pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		return len(pids) == 0 || (len(pids) == 1 && pids[0] == os.Getpid())
	})
	if !ok {
		return fmt.Errorf("processes %v still in namespace %s", nsPIDs(name), name)
	}
	return nil
}

// delNS kills what runs in the namespace and deletes it; a namespace that
// does not exist is a success.
func delNS(ctx context.Context, name string) error {
	if !nsExists(name) {
		return nil
	}
	if err := killNS(ctx, name); err != nil {
		return err
	}
	if err := ipCmd(ctx, "netns", "del", name); err != nil && nsExists(name) {
		return err
	}
	return nil
}

// httpClientIn returns an HTTP client whose connections are made from inside
// the named namespace: the socket is created on a thread switched into it
// (ns.Do) and stays there.
func httpClientIn(name string, timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: timeout}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			Proxy:             nil,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				var c net.Conn
				err := ns.WithNetNSPath(nsPath(name), func(ns.NetNS) error {
					var err error
					c, err = d.DialContext(ctx, network, addr)
					return err
				})
				return c, err
			},
		},
	}
}

// httpOK reports whether GET url from inside the namespace answers 200.
func httpOK(ctx context.Context, c *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
