package lab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// wgDevice is the lab's first wireguard device: weft-wg, or in an
// IPv6-only lab weft-wg-v6 (Mode separate gives IPv6 its own device).
func wgDevice(l *Lab) string {
	if l.IPv6Only {
		return "weft-wg-v6"
	}
	return "weft-wg"
}

// wgKernel reports whether node's wireguard device is the kernel's
// WireGuard (which forwards without weftd) rather than the embedded one on a
// TUN device.
func wgKernel(t *testing.T, l *Lab, node string) bool {
	t.Helper()
	out, err := l.Run(t.Context(), node, "ip", "-d", "link", "show", wgDevice(l))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(out, "wireguard")
}

// forwardsWithoutWeftd reports whether node's data plane keeps forwarding
// while its weftd is down: the kernel backends do; udp and the embedded
// WireGuard are weftd itself.
func forwardsWithoutWeftd(t *testing.T, l *Lab, backend, node string) bool {
	switch backend {
	case "udp":
		return false
	case "wireguard":
		return wgKernel(t, l, node)
	}
	return true
}

// requireWireGuard checks, on a healthy wireguard lab, what the backend
// promises beyond connectivity: no pod payload crosses the underlay in
// plaintext, no secret shows in logs, /status or /metrics, and a rotated key
// reaches the lease and the peers.
func requireWireGuard(t *testing.T, l *Lab) {
	t.Helper()
	requireNoPlaintext(t, l)
	requireNoSecrets(t, l)
	requireRotation(t, l)
}

// requireNoPlaintext captures the underlay (on the switch's bridge, bounded
// in packets and time) while a pod on n1 pings a pod on n2 with a marker in
// every packet (in each family of the lab), and n1 pings n2's underlay
// address with another marker.
// The pod marker must be absent (it crossed encrypted), the underlay marker
// present (the capture would have seen plaintext), and the capture must hold
// WireGuard packets.
func requireNoPlaintext(t *testing.T, l *Lab) {
	t.Helper()
	const (
		secret  = "WEFT-POD-SECRET!" // 16 bytes: ping -p takes up to 16
		control = "WEFT-PLAIN-CTRL!"
	)
	src, dst := l.Node("n1"), l.Node("n2")
	var srcPod, dstPod *Pod
	for _, p := range l.Pods() {
		switch {
		case srcPod == nil && strings.HasPrefix(p.Name, src.Name+"-"):
			srcPod = p
		case dstPod == nil && strings.HasPrefix(p.Name, dst.Name+"-"):
			dstPod = p
		}
	}
	if srcPod == nil || dstPod == nil {
		t.Fatalf("no pods on %s and %s", src.Name, dst.Name)
	}
	pcap := filepath.Join(t.TempDir(), "underlay.pcap")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	// ip netns exec execs tcpdump: the process is tcpdump itself.
	// --immediate-mode: without it the kernel hands captured packets over
	// in blocks, and the last ones before the SIGINT below can be lost
	// (under the race pass the control marker was).
	dump := exec.CommandContext(ctx, "ip", "netns", "exec", switchNS(l.Name),
		"tcpdump", "-i", bridgeName, "-nn", "-U", "--immediate-mode", "-s", "0", "-c", "20000", "-w", pcap)
	stderr, err := dump.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := dump.Start(); err != nil {
		t.Fatalf("tcpdump: %v", err)
	}
	listening := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		ok := false
		for sc.Scan() {
			if !ok && strings.Contains(sc.Text(), "listening on") {
				ok = true
				listening <- true
			}
		}
		if !ok {
			listening <- false
		}
	}()
	select {
	case ok := <-listening:
		if !ok {
			t.Fatal("tcpdump exited before it listened")
		}
	case <-ctx.Done():
		t.Fatal("tcpdump did not start listening")
	}
	pattern := func(s string) string { return hex.EncodeToString([]byte(s)) }
	var pods []netip.Addr
	if l.hasIPv4() {
		pods = append(pods, dstPod.IP)
	}
	if l.hasIPv6() {
		pods = append(pods, dstPod.IPv6)
	}
	for _, to := range pods {
		if _, err := l.Run(t.Context(), srcPod.Name, "ping", "-c", "5", "-i", "0.2", "-W", "2", "-s", "200", "-p", pattern(secret), to.String()); err != nil {
			t.Fatalf("pod ping with the marker: %v", err)
		}
	}
	underlay := dst.Underlay
	if !underlay.IsValid() {
		underlay = dst.UnderlayV6
	}
	if _, err := l.Run(t.Context(), src.Name, "ping", "-c", "2", "-i", "0.2", "-W", "2", "-s", "200", "-p", pattern(control), underlay.String()); err != nil {
		t.Fatalf("underlay ping with the control marker: %v", err)
	}
	_ = dump.Process.Signal(os.Interrupt) // tcpdump writes out what it has and exits
	_ = dump.Wait()
	data, err := os.ReadFile(pcap)
	if err != nil {
		t.Fatal(err)
	}
	// 51820: weft-wg; 51821: weft-wg-v6 (IPv6 pods, Mode separate).
	wg, err := exec.Command("tcpdump", "-nn", "-r", pcap, "udp port 51820 or udp port 51821").Output()
	if err != nil {
		t.Fatalf("read the capture: %v", err)
	}
	switch n := strings.Count(string(wg), "\n"); {
	case bytes.Contains(data, []byte(secret)):
		t.Errorf("the pod payload marker crossed the underlay in plaintext (capture %d bytes)", len(data))
	case !bytes.Contains(data, []byte(control)):
		t.Errorf("the capture did not see the plaintext control marker either: it proves nothing (%d bytes)", len(data))
	case n < 10*len(pods):
		t.Errorf("the capture holds %d WireGuard packets, want the %d pings' worth:\n%s", n, 10*len(pods), wg)
	default:
		t.Logf("underlay capture: %d bytes, %d WireGuard packets, pod marker absent, control marker present", len(data), n)
	}
}

// requireNoSecrets: n1's private key is in none of its weftd log, /status,
// /metrics or `weftctl leases`.
func requireNoSecrets(t *testing.T, l *Lab) {
	t.Helper()
	n1 := l.Node("n1")
	key, err := os.ReadFile(filepath.Join(n1.StateDir, "wireguard.key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(n1.StateDir, "wireguard.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v %v", fi, err)
	}
	secret := strings.TrimSpace(string(key))
	log, err := os.ReadFile(n1.Log)
	if err != nil {
		t.Fatal(err)
	}
	leases, err := l.weftctl(t.Context(), "", "leases", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	for what, body := range map[string][]byte{
		"weftd log": log, "/status": scrape(t, l, "n1", "/status"), "/metrics": scrape(t, l, "n1", "/metrics"),
		"leases": []byte(leases),
	} {
		if bytes.Contains(body, []byte(secret)) {
			t.Errorf("n1's private key is in its %s", what)
		}
	}
}

// requireRotation rotates n2's key with weftctl, waits for n2's lease to
// carry the new public key, and requires full connectivity again.
func requireRotation(t *testing.T, l *Lab) {
	t.Helper()
	n2 := l.Node("n2")
	out, err := exec.CommandContext(t.Context(), l.bin("weftctl"), "wireguard", "rotate-key", "--state-dir", n2.StateDir).Output()
	if err != nil {
		t.Fatalf("rotate-key: %v", err)
	}
	pub := strings.TrimSpace(string(out))
	start := time.Now()
	ok := poll(t.Context(), 30*time.Second, 100*time.Millisecond, func() bool {
		js, err := l.weftctl(t.Context(), "", "leases", "-o", "json")
		if err != nil {
			return false
		}
		var rows []struct {
			Subnet, IPv6Subnet         string
			BackendData, BackendV6Data struct{ PublicKey string }
		}
		if json.Unmarshal([]byte(js), &rows) != nil {
			return false
		}
		for _, r := range rows {
			// n2.Subnet is the key: the IPv6 subnet of an IPv6-only lease,
			// which has BackendV6Data only.
			switch {
			case r.Subnet == n2.Subnet.String() && l.hasIPv4():
				return r.BackendData.PublicKey == pub && (!l.hasIPv6() || r.BackendV6Data.PublicKey == pub)
			case r.IPv6Subnet == n2.Subnet.String():
				return r.BackendV6Data.PublicKey == pub
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("n2's lease does not carry the rotated key %s after 30s", pub)
	}
	t.Logf("n2's lease carries the rotated key %s after %v", pub, time.Since(start).Round(time.Millisecond))
	if sn, err := n2.ReadSubnet(); err != nil || sn != n2.Subnet {
		t.Errorf("n2's subnet after rotation: %s (%v), had %s", sn, err, n2.Subnet)
	}
	requireMatrix(t, l, "after rotating n2's key")
}
