package daemon

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	etcdstore "github.com/weftnet/weft/subnet/etcd"
)

// TestRunExitsOnClientConfigError: a refusal retrying cannot fix ends Run
// at once with an error matching etcd.ErrClientConfig, instead of a retry
// loop that never ends.
func TestRunExitsOnClientConfigError(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ec   EtcdConfig
	}{
		{"CA not PEM", EtcdConfig{Endpoints: []string{"https://127.0.0.1:1"}, CAFile: notPEM}},
		{"CA missing", EtcdConfig{Endpoints: []string{"https://127.0.0.1:1"}, CAFile: filepath.Join(dir, "nope.pem")}},
		{"plain http with TLS files", EtcdConfig{Endpoints: []string{"http://127.0.0.1:1"}, CAFile: notPEM}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cfg := Config{SubnetFile: filepath.Join(dir, "subnet.env"), HealthzAddr: "off"}
			err := Run(ctx, cfg, tc.ec, slog.New(slog.DiscardHandler))
			if !errors.Is(err, etcdstore.ErrClientConfig) {
				t.Fatalf("Run = %v, want ErrClientConfig", err)
			}
			if ctx.Err() != nil {
				t.Fatal("Run returned only when the context ended")
			}
		})
	}
}

// TestDialEtcdRetriesTransient: with nothing listening, dialEtcd keeps
// retrying until its context ends.
func TestDialEtcdRetriesTransient(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	_, err := dialEtcd(ctx, slog.New(slog.DiscardHandler), etcdstore.ClientConfig{Endpoints: []string{"http://127.0.0.1:1"}, DialTimeout: 200 * time.Millisecond})
	if errors.Is(err, etcdstore.ErrClientConfig) || ctx.Err() == nil {
		t.Fatalf("dialEtcd = %v before its context ended, want retries until then", err)
	}
}
