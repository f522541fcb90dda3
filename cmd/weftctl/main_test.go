package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftnet/weft/subnet/etcd/etcdtest"
)

// weftctl runs the command in-process against endpoint and returns its exit
// code, stdout and stderr.
func weftctl(t *testing.T, endpoint, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	e := &env{
		stdin:  strings.NewReader(stdin),
		stdout: &out,
		stderr: &errOut,
		getenv: func(k string) string {
			if k == "WEFTCTL_ETCD_ENDPOINTS" {
				return endpoint
			}
			return ""
		},
		logger: slog.New(slog.DiscardHandler),
	}
	code := run(context.Background(), e, args)
	return code, out.String(), errOut.String()
}

func TestStoreCommands(t *testing.T) {
	etcd := etcdtest.Start(t)
	ep := etcd.Endpoints[0]

	code, _, stderr := weftctl(t, ep, "", "config", "get")
	if code != 1 || !strings.Contains(stderr, "weftctl config set") {
		t.Errorf("config get with no config: exit %d, stderr %q; want 1 and a hint", code, stderr)
	}
	code, _, stderr = weftctl(t, ep, `{"Network":"10.244.0.0/16","SubnetLen":31}`, "config", "set", "-")
	if code != 1 || !strings.Contains(stderr, "SubnetLen 31") {
		t.Errorf("invalid config: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = weftctl(t, ep, `{"Network":"10.244.0.0/16"}`, "config", "set", "-")
	if code != 0 || !strings.Contains(stderr, "no Backend, so every node runs udp") {
		t.Errorf("config without Backend: exit %d, stderr %q; want 0 and a note that it runs udp", code, stderr)
	}
	file := filepath.Join(t.TempDir(), "net.json")
	cfg := `{"Network":"10.244.0.0/16","Backend":{"Type":"alloc"}}`
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr = weftctl(t, ep, "", "config", "set", file); code != 0 {
		t.Fatalf("config set FILE: exit %d: %s", code, stderr)
	}
	if code, stdout, _ := weftctl(t, ep, "", "config", "get"); code != 0 || strings.TrimSpace(stdout) != cfg {
		t.Errorf("config get = %d %q, want %q", code, stdout, cfg)
	}

	if code, _, stderr = weftctl(t, ep, "", "reserve", "10.244.9.0/24", "198.18.0.9"); code != 0 {
		t.Fatalf("reserve: exit %d: %s", code, stderr)
	}
	code, stdout, _ := weftctl(t, ep, "", "leases")
	if code != 0 || !strings.Contains(stdout, "10.244.9.0/24") || !strings.Contains(stdout, "never (reserved)") {
		t.Errorf("leases table = %d %q", code, stdout)
	}
	code, stdout, _ = weftctl(t, ep, "", "leases", "-o", "json")
	var rows []leaseView
	if err := json.Unmarshal([]byte(stdout), &rows); code != 0 || err != nil || len(rows) != 1 || !rows[0].Reserved {
		t.Errorf("leases -o json = %d %q (%v)", code, stdout, err)
	}
	// Flannel's key form is accepted too.
	if code, _, stderr = weftctl(t, ep, "", "lease", "release", "10.244.9.0-24"); code != 0 {
		t.Fatalf("lease release: exit %d: %s", code, stderr)
	}
	if code, stdout, _ = weftctl(t, ep, "", "leases", "-o", "json"); code != 0 || strings.TrimSpace(stdout) != "[]" {
		t.Errorf("after release, leases = %q", stdout)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "usage: weftctl"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"config"}, 2, "say get or set"},
		{[]string{"config", "set"}, 2, "give one FILE"},
		{[]string{"reserve", "10.244.1.0/24"}, 2, "give SUBNET and PUBLICIP"},
		{[]string{"reserve", "10.244.1.5/24", "1.2.3.4"}, 1, "host bits set"},
		{[]string{"lease", "release", "nonsense"}, 1, "want a CIDR"},
		{[]string{"version"}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			// Nothing listens here: argument errors must come before any
			// attempt to reach etcd.
			code, _, stderr := weftctl(t, "http://127.0.0.1:1", "", tt.args...)
			if code != tt.code || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr, tt.code, tt.want)
			}
		})
	}
}

func TestUnreachableEtcdFailsFast(t *testing.T) {
	code, _, stderr := weftctl(t, "http://127.0.0.1:1", "", "leases", "--timeout", "2s")
	if code != 1 || stderr == "" {
		t.Errorf("exit %d, stderr %q; want 1 with a reason", code, stderr)
	}
}

// TestGlobalFlags: the etcd flags go before the command too, as etcdctl's
// (weftctl --etcd-endpoints URL leases); a flag after the command wins, and
// a flag weftctl does not take before the command is a usage error.
func TestGlobalFlags(t *testing.T) {
	etcd := etcdtest.Start(t)
	ep := etcd.Endpoints[0]
	// The environment points at nothing: only the global flag reaches etcd.
	dead := "http://127.0.0.1:1"
	if code, _, stderr := weftctl(t, dead, `{"Network":"10.244.0.0/16","Backend":{"Type":"alloc"}}`,
		"--etcd-endpoints", ep, "--etcd-prefix=/other", "config", "set", "-"); code != 0 {
		t.Fatalf("global flags before config set: exit %d: %s", code, stderr)
	}
	code, stdout, stderr := weftctl(t, dead, "", "--etcd-endpoints="+ep, "--etcd-prefix", "/other", "config", "get")
	if code != 0 || !strings.Contains(stdout, "alloc") {
		t.Errorf("global flags before config get: exit %d %q %s", code, stdout, stderr)
	}
	// The prefix matters: the default one holds nothing.
	if code, _, _ := weftctl(t, dead, "", "--etcd-endpoints", ep, "config", "get"); code != 1 {
		t.Errorf("config get under the default prefix: exit %d, want 1 (no config there)", code)
	}
	// After the command wins over before.
	if code, _, stderr := weftctl(t, dead, "", "--etcd-endpoints", dead, "--timeout", "2s", "leases", "--etcd-endpoints", ep, "--etcd-prefix", "/other"); code != 0 {
		t.Errorf("flag after the command did not win: exit %d: %s", code, stderr)
	}
	if code, _, stderr := weftctl(t, dead, "", "--cluster", "status"); code != 2 || !strings.Contains(stderr, "before the command weftctl takes the etcd flags") {
		t.Errorf("a command flag before the command: exit %d %q, want 2 and which flags go there", code, stderr)
	}
}
