package main

import (
	"os"
	"strings"
	"testing"

	"github.com/weftnet/weft/backend/wireguard"
)

func TestWireGuardCommands(t *testing.T) {
	dir := t.TempDir()
	code, _, stderr := weftctl(t, "", "", "wireguard", "public-key", "--state-dir", dir)
	if code != 1 || !strings.Contains(stderr, "no wireguard key") {
		t.Errorf("public-key with no key: %d %q", code, stderr)
	}
	code, stdout, stderr := weftctl(t, "", "", "wireguard", "rotate-key", "--state-dir", dir)
	if code != 0 {
		t.Fatalf("rotate-key: %d %s", code, stderr)
	}
	first := strings.TrimSpace(stdout)
	pub, err := wireguard.ReadKey(wireguard.KeyPath(dir))
	if err != nil || pub.String() != first {
		t.Fatalf("rotate-key printed %q, the file's public key is %s (%v)", first, pub, err)
	}
	data, _ := os.ReadFile(wireguard.KeyPath(dir))
	if strings.Contains(stdout+stderr, strings.TrimSpace(string(data))) {
		t.Errorf("rotate-key printed the private key")
	}
	if code, stdout, _ = weftctl(t, "", "", "wireguard", "public-key", "--state-dir", dir); code != 0 || strings.TrimSpace(stdout) != first {
		t.Errorf("public-key = %d %q, want %s", code, stdout, first)
	}
	if code, stdout, _ = weftctl(t, "", "", "wireguard", "rotate-key", "--state-dir", dir); code != 0 || strings.TrimSpace(stdout) == first {
		t.Errorf("second rotate-key = %d %q, want a new key", code, stdout)
	}
	if code, _, _ = weftctl(t, "", "", "wireguard", "show"); code != 2 {
		t.Errorf("unknown verb: exit %d, want 2", code)
	}
}
