package etcd_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/subnet/etcd"
	"github.com/weftnet/weft/subnet/etcd/embedded"
	"github.com/weftnet/weft/subnet/etcd/etcdtest"
)

type certAuthority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newCA(t *testing.T, dir, name string) *certAuthority {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	file := filepath.Join(dir, name+".pem")
	writePEM(t, file, "CERTIFICATE", der)
	return &certAuthority{cert: cert, key: key, file: file}
}

// issue writes name.pem and name-key.pem signed by ca, for server or
// client use.
func (ca *certAuthority) issue(t *testing.T, dir, name string, server bool) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

func writePEM(t *testing.T, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestDialTLS: etcd requires client certificates from its CA. The right
// CA and certificate work; a wrong CA fails within DialTimeout with an
// error that names the certificate problem.
func TestDialTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, dir, "ca")
	other := newCA(t, dir, "other-ca")
	srvCert, srvKey := ca.issue(t, dir, "server", true)
	cliCert, cliKey := ca.issue(t, dir, "client", false)
	e := etcdtest.StartWith(t, etcdtest.Options{
		Config:   embedded.Config{CertFile: srvCert, KeyFile: srvKey, TrustedCAFile: ca.file, ClientCertAuth: true},
		NoClient: true,
	})
	if !strings.HasPrefix(e.Endpoints[0], "https://") {
		t.Fatalf("endpoint %s is not https", e.Endpoints[0])
	}
	ctx := ctxT(t, 30*time.Second)

	cli, err := etcd.Dial(ctx, etcd.ClientConfig{Endpoints: e.Endpoints, CAFile: ca.file, CertFile: cliCert, KeyFile: cliKey, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("Dial with the right certificates: %v", err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "/tls", "ok"); err != nil {
		t.Fatal(err)
	}

	const timeout = 2 * time.Second
	for _, tc := range []struct {
		name string
		cc   etcd.ClientConfig
		want string
	}{
		{"wrong CA", etcd.ClientConfig{CAFile: other.file, CertFile: cliCert, KeyFile: cliKey}, "certificate"},
		{"no client certificate", etcd.ClientConfig{CAFile: ca.file}, "certificate required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cc.Endpoints, tc.cc.DialTimeout = e.Endpoints, timeout
			t0 := time.Now()
			cli, err := etcd.Dial(ctx, tc.cc)
			took := time.Since(t0)
			if err == nil {
				cli.Close()
				t.Fatal("Dial succeeded")
			}
			t.Logf("error after %v: %v", took.Round(time.Millisecond), err)
			if took > 3*timeout {
				t.Fatalf("Dial took %v with DialTimeout %v", took, timeout)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestDialConfigErrors(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, dir, "ca")
	cert, key := ca.issue(t, dir, "client", false)
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	ep := []string{"https://127.0.0.1:1"}
	for _, tc := range []struct {
		name string
		cc   etcd.ClientConfig
		want string
	}{
		{"no endpoints", etcd.ClientConfig{}, "no endpoints"},
		{"missing CA", etcd.ClientConfig{Endpoints: ep, CAFile: filepath.Join(dir, "nope.pem")}, "CA file"},
		{"CA not PEM", etcd.ClientConfig{Endpoints: ep, CAFile: notPEM}, "holds no PEM certificate"},
		{"cert without key", etcd.ClientConfig{Endpoints: ep, CertFile: cert}, "given together"},
		{"key mismatch", etcd.ClientConfig{Endpoints: ep, CertFile: cert, KeyFile: notPEM}, "client certificate"},
		{"http with TLS", etcd.ClientConfig{Endpoints: []string{"http://127.0.0.1:1"}, CAFile: ca.file, CertFile: cert, KeyFile: key}, "use https://"},
		{"password without user", etcd.ClientConfig{Endpoints: ep, Password: "x"}, "together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := etcd.Dial(ctxT(t, 10*time.Second), tc.cc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Dial = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestDialUnreachable(t *testing.T) {
	ep := []string{"http://" + etcdtest.RefusedAddr(t)}
	t0 := time.Now()
	_, err := etcd.Dial(ctxT(t, 10*time.Second), etcd.ClientConfig{Endpoints: ep, DialTimeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "not reachable") {
		t.Fatalf("Dial = %v, want not reachable", err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Fatalf("took %v with DialTimeout 1s", d)
	}
}

func TestDialPassword(t *testing.T) {
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
	cli, err := etcd.Dial(ctx, etcd.ClientConfig{Endpoints: e.Endpoints, Username: "root", Password: "s3cret", DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("Dial with the right password: %v", err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "/auth", "ok"); err != nil {
		t.Fatal(err)
	}
	_, err = etcd.Dial(ctx, etcd.ClientConfig{Endpoints: e.Endpoints, Username: "root", Password: "wrong", DialTimeout: 10 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "authentication") {
		t.Fatalf("Dial with a wrong password = %v", err)
	}
	t.Log(err)

	// The password from a file (a mounted Secret ends in a newline).
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := file("good", "s3cret\n")
	cli2, err := etcd.Dial(ctx, etcd.ClientConfig{Endpoints: e.Endpoints, Username: "root", PasswordFile: good, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("Dial with the password file: %v", err)
	}
	cli2.Close()
	for _, tc := range []struct {
		name string
		cc   etcd.ClientConfig
		want string
	}{
		{"wrong password in the file", etcd.ClientConfig{PasswordFile: file("wrong", "wrong\n")}, "authentication"},
		{"empty file", etcd.ClientConfig{PasswordFile: file("empty", "\n")}, "is empty"},
		{"missing file", etcd.ClientConfig{PasswordFile: filepath.Join(dir, "absent")}, "no such file"},
		{"both", etcd.ClientConfig{Password: "s3cret", PasswordFile: good}, "not both"},
	} {
		tc.cc.Endpoints, tc.cc.Username, tc.cc.DialTimeout = e.Endpoints, "root", 10*time.Second
		if _, err := etcd.Dial(ctx, tc.cc); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Dial = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestPlainCredentials(t *testing.T) {
	for _, tc := range []struct {
		cc   etcd.ClientConfig
		want []string
	}{
		{etcd.ClientConfig{Endpoints: []string{"http://10.0.0.10:2379"}}, nil}, // no credentials
		{etcd.ClientConfig{Username: "u", Endpoints: []string{"http://10.0.0.10:2379", "https://10.0.0.11:2379", "http://127.0.0.1:2379", "http://[::1]:2379", "http://localhost:2379"}}, []string{"http://10.0.0.10:2379"}},
		{etcd.ClientConfig{Username: "u", Endpoints: []string{"http://etcd.example:2379"}}, []string{"http://etcd.example:2379"}},
	} {
		if got := etcd.PlainCredentials(tc.cc); !slices.Equal(got, tc.want) {
			t.Errorf("PlainCredentials(%v) = %v, want %v", tc.cc.Endpoints, got, tc.want)
		}
	}
}
