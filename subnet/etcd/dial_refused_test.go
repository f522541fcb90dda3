package etcd_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/weftnet/weft/subnet/etcd"
	"github.com/weftnet/weft/subnet/etcd/embedded"
	"github.com/weftnet/weft/subnet/etcd/etcdtest"
)

// TestDialErrClientConfig: errors that retrying cannot fix match
// ErrClientConfig; a transient one (nothing listening) does not, so a
// caller keeps retrying it.
func TestDialErrClientConfig(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, dir, "ca")
	other := newCA(t, dir, "other-ca")
	srvCert, srvKey := ca.issue(t, dir, "server", true)
	cliCert, cliKey := ca.issue(t, dir, "client", false)
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	tlsEtcd := etcdtest.StartWith(t, etcdtest.Options{
		Config:   embedded.Config{CertFile: srvCert, KeyFile: srvKey, TrustedCAFile: ca.file, ClientCertAuth: true},
		NoClient: true,
	})
	down := []string{"http://" + etcdtest.RefusedAddr(t)}
	downTLS := []string{"https://" + etcdtest.RefusedAddr(t)}
	for _, tc := range []struct {
		name    string
		cc      etcd.ClientConfig
		refused bool
	}{
		{"wrong CA", etcd.ClientConfig{Endpoints: tlsEtcd.Endpoints, CAFile: other.file, CertFile: cliCert, KeyFile: cliKey}, true},
		{"no client certificate", etcd.ClientConfig{Endpoints: tlsEtcd.Endpoints, CAFile: ca.file}, true},
		{"CA not PEM", etcd.ClientConfig{Endpoints: tlsEtcd.Endpoints, CAFile: notPEM}, true},
		{"http with TLS files", etcd.ClientConfig{Endpoints: down, CAFile: ca.file}, true},
		{"no endpoints", etcd.ClientConfig{}, true},
		{"nothing listening", etcd.ClientConfig{Endpoints: down}, false},
		{"nothing listening, TLS", etcd.ClientConfig{Endpoints: downTLS, CAFile: ca.file, CertFile: cliCert, KeyFile: cliKey}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cc.DialTimeout = time.Second
			cli, err := etcd.Dial(ctxT(t, 20*time.Second), tc.cc)
			if err == nil {
				cli.Close()
				t.Fatal("Dial succeeded")
			}
			if got := errors.Is(err, etcd.ErrClientConfig); got != tc.refused {
				t.Fatalf("errors.Is(%q, ErrClientConfig) = %v, want %v", err, got, tc.refused)
			}
		})
	}
}

// TestDialWrongPasswordRefused: rejected credentials match ErrClientConfig.
func TestDialWrongPasswordRefused(t *testing.T) {
	e := etcdtest.Start(t)
	ctx := ctxT(t, 30*time.Second)
	if _, err := e.Client.UserAdd(ctx, "root", "s3cret"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := etcd.Dial(ctx, etcd.ClientConfig{Endpoints: e.Endpoints, Username: "root", Password: "wrong", DialTimeout: 10 * time.Second})
	if !errors.Is(err, etcd.ErrClientConfig) {
		t.Fatalf("Dial with a wrong password = %v, want ErrClientConfig", err)
	}
}
