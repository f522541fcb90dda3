package reliability

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/lab"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func writePEM(t *testing.T, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	file := filepath.Join(dir, name+".pem")
	writePEM(t, file, "CERTIFICATE", der)
	return &testCA{cert: cert, key: key, file: file}
}

// issue writes name.pem and name-key.pem; ip makes it a server certificate
// for that address.
func (ca *testCA) issue(t *testing.T, dir, name string, ip net.IP) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if ip != nil {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		tmpl.IPAddresses = []net.IP{ip}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cf, kf := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	writePEM(t, cf, "CERTIFICATE", der)
	writePEM(t, kf, "EC PRIVATE KEY", kder)
	return cf, kf
}

// TestEtcdTLSAuth restarts the lab's etcd with an https client URL that
// requires client certificates from a test CA (generated here) and turns
// on etcd auth with a user whose role is limited to weft's prefix. weftd
// on both nodes restarted with certificates and that user works (same
// subnets, pods connected); a wrong CA, no client certificate or a wrong
// password make weftd exit at once with the reason (measured: time to
// exit), not hang; the user cannot touch keys outside the prefix.
func TestEtcdTLSAuth(t *testing.T) {
	t.Parallel()
	l := up(t, lab.Options{Name: labName("tl"), Nodes: 2, PodsPerNode: 1, Backend: "vxlan"})
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	other := newTestCA(t, dir, "other-ca")
	srvCert, srvKey := ca.issue(t, dir, "server", l.Etcd.Addr.AsSlice())
	cliCert, cliKey := ca.issue(t, dir, "client", nil)
	secure := fmt.Sprintf("https://%s:2378", l.Etcd.Addr)
	if err := l.StopEtcd(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	if err := l.StartEtcd(t.Context(), "--listen-client-urls", l.Etcd.Endpoint+","+secure,
		"--cert-file", srvCert, "--key-file", srvKey, "--trusted-ca-file", ca.file); err != nil {
		t.Fatal(err)
	}
	admin := etcdClient(t, l)
	ctx := ctxFor(t, 3*time.Minute)
	steps := []func() error{
		func() error { _, err := admin.RoleAdd(ctx, "weft"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "weft", prefix+"/", clientv3.GetPrefixRangeEnd(prefix+"/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := admin.UserAdd(ctx, "weft", "weft-pw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "weft", "weft"); return err },
		func() error { _, err := admin.UserAdd(ctx, "root", "root-pw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	}
	for i, s := range steps {
		if err := s(); err != nil {
			t.Fatalf("etcd auth setup step %d: %v", i, err)
		}
	}
	good := []string{"--etcd-endpoints", secure, "--etcd-cafile", ca.file, "--etcd-certfile", cliCert, "--etcd-keyfile", cliKey,
		"--etcd-username", "weft", "--etcd-password", "weft-pw"}
	for _, n := range l.Nodes {
		old := n.Subnet
		if err := l.StopWeftd(t.Context(), n.Name, false); err != nil {
			t.Fatal(err)
		}
		n.Args = good
		sn, err := l.StartWeftd(t.Context(), n.Name)
		if err != nil {
			t.Fatalf("weftd over TLS with auth: %v", err)
		}
		if sn != old {
			t.Errorf("%s: subnet %s over TLS, had %s", n.Name, sn, old)
		}
	}
	requireMatrix(t, l, "weftd over TLS with client certificates and auth")

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"wrong CA", []string{"--etcd-cafile", other.file}, "certificate"},
		{"no client certificate", []string{"--etcd-certfile", "", "--etcd-keyfile", ""}, "certificate"},
		{"wrong password", []string{"--etcd-password", "nope"}, "authentication"},
	} {
		off := logSize(t, l, "n2")
		if err := l.StopWeftd(t.Context(), "n2", false); err != nil {
			t.Fatal(err)
		}
		l.Node("n2").Args = append(append([]string(nil), good...), tc.args...)
		start := time.Now()
		if err := l.StartWeftdNoWait("n2"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-l.WeftdExited("n2"):
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: weftd still running 30s later (a hang, not a refusal); log:\n%s", tc.name, strings.Join(logSince(t, l, "n2", off), "\n"))
		}
		took := time.Since(start)
		said := grepLines(logSince(t, l, "n2", off), "level=ERROR")
		if len(said) == 0 || !strings.Contains(said[0], tc.want) {
			t.Errorf("%s: weftd exited without an error naming %q: %v", tc.name, tc.want, said)
			continue
		}
		record(t, "%s: weftd exited %v after start: %s", tc.name, took.Round(10*time.Millisecond), said[0][strings.Index(said[0], "msg="):])
	}

	// The role is limited to weft's prefix.
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	pair, err := tls.LoadX509KeyPair(cliCert, cliKey)
	if err != nil {
		t.Fatal(err)
	}
	user := etcdClientWith(t, l, clientv3.Config{Endpoints: []string{secure}, Username: "weft", Password: "weft-pw",
		TLS: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}})
	if _, err := user.Put(ctx, "/not-weft", "x"); err == nil || !strings.Contains(err.Error(), rpctypes.ErrPermissionDenied.Error()) {
		t.Errorf("user weft wrote outside its prefix: %v", err)
	}
	if _, err := user.Get(ctx, prefix+"/config"); err != nil {
		t.Errorf("user weft cannot read its prefix: %v", err)
	}
}
