package main

// The wireguard backend is measured beside the reference implementation:
// its lab has two more nodes (n3, n4) that come up as weft nodes and then
// have their device served by the wireguard-go binary itself, at the
// version weft embeds, instead of by weftd. weftd's TUN device is
// persistent, so the binary takes over the same device, addresses and
// routes, and is given weftd's keys and peers over the UAPI socket: the
// two pod paths differ only in the program that moves their packets.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/backend/wireguard"
	"github.com/weftnet/weft/lab"
)

// wgModule is the module of the embedded device; its root package is the
// wireguard-go command.
const wgModule = "golang.zx2c4.com/wireguard"

// reference is a built reference binary.
type reference struct {
	bin  string
	name string // "wireguard-go <module version>"
}

// buildReference builds the wireguard-go command at the module version this
// binary embeds (go.mod's, from the module cache) into dir.
func buildReference(ctx context.Context, dir string) (reference, error) {
	version := "(unknown version)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == wgModule {
				version = m.Version
			}
		}
	}
	bin := filepath.Join(dir, "wireguard-go")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, wgModule)
	if out, err := cmd.CombinedOutput(); err != nil {
		return reference{}, fmt.Errorf("go build %s: %w: %s", wgModule, err, lastLines(string(out), 5))
	}
	return reference{bin: bin, name: "wireguard-go " + version}, nil
}

// uapiSettable are the keys of a UAPI get that a set takes back (the rest
// are counters and state).
var uapiSettable = map[string]bool{
	"private_key": true, "listen_port": true, "fwmark": true,
	"public_key": true, "preshared_key": true, "endpoint": true,
	"persistent_keepalive_interval": true, "allowed_ip": true,
}

// deviceConfig turns the answer to a UAPI get into the set operation that
// configures another device the same way: the device's keys first, then
// each peer from its public_key on, as the get lists them.
func deviceConfig(get string) (string, error) {
	var b strings.Builder
	b.WriteString("set=1\n")
	sawKey, errno := false, ""
	for line := range strings.Lines(get) {
		line = strings.TrimSpace(line)
		k, _, ok := strings.Cut(line, "=")
		switch {
		case !ok:
			continue
		case k == "errno":
			errno = line
		case uapiSettable[k]:
			sawKey = sawKey || k == "private_key"
			b.WriteString(line + "\n")
		}
	}
	if errno != "errno=0" {
		return "", fmt.Errorf("UAPI get failed (%q)", errno)
	}
	if !sawKey {
		return "", errors.New("UAPI get has no private key")
	}
	b.WriteString("\n")
	return b.String(), nil
}

// uapi sends one request on a UAPI socket and returns the answer, up to the
// blank line that ends it.
func uapi(sock, req string) (string, error) {
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(req)); err != nil {
		return "", err
	}
	var b strings.Builder
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("UAPI answer: %w", err)
		}
		if line == "\n" {
			return b.String(), nil
		}
		b.WriteString(line)
	}
}

// uapiSocket is the device's UAPI socket as seen from here: every lab node
// has its own /run/wireguard (lab.PrivateRun), reached through the
// process's root.
func uapiSocket(pid int) string {
	return fmt.Sprintf("/proc/%d/root/run/wireguard/%s.sock", pid, wireguard.DeviceName)
}

// swapToReference hands node n's device from weftd to the reference binary:
// weftd's device configuration is read, weftd is killed (its TUN device,
// addresses and routes stay), wireguard-go attaches to the device and is
// given the configuration. The caller stops the returned process.
func swapToReference(ctx context.Context, l *lab.Lab, n *lab.Node, ref reference) (*proc, error) {
	get, err := uapi(uapiSocket(n.Weftd.PID), "get=1\n\n")
	if err != nil {
		return nil, fmt.Errorf("node %s: weftd's device: %w", n.Name, err)
	}
	set, err := deviceConfig(get)
	if err != nil {
		return nil, fmt.Errorf("node %s: weftd's device: %w", n.Name, err)
	}
	if err := l.StopWeftd(ctx, n.Name, true); err != nil {
		return nil, err
	}
	p, err := startDaemon(n.NS, lab.PrivateRun([]string{ref.bin, "-f", wireguard.DeviceName})...)
	if err != nil {
		return nil, err
	}
	sock := uapiSocket(p.pid())
	if _, err := pollUntil(ctx, 10*time.Second, 20*time.Millisecond, func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("exited: %s", lastLines(p.out.String(), 5))
		}
		_, err := os.Stat(sock)
		return err == nil, nil
	}); err != nil {
		p.stop()
		return nil, fmt.Errorf("node %s: %s: %w", n.Name, ref.name, err)
	}
	ans, err := uapi(sock, set)
	if err == nil && strings.TrimSpace(ans) != "errno=0" {
		err = fmt.Errorf("UAPI set: %q", strings.TrimSpace(ans))
	}
	if err != nil {
		p.stop()
		return nil, fmt.Errorf("node %s: %s: %w", n.Name, ref.name, err)
	}
	return p, nil
}

// stopReferences ends the reference processes (SIGTERM, then SIGKILL).
func stopReferences(ps map[*lab.Node]*proc) {
	for _, p := range ps {
		p.signalWait(syscall.SIGTERM, 3*time.Second)
	}
}
