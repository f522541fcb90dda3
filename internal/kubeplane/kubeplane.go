// Package kubeplane runs a minimal Kubernetes control plane as processes for
// tests, benchmarks and the lab: kube-apiserver (token authentication, RBAC
// authorization, TLS with its own CA, service-account tokens) on an etcd the
// caller runs, and kube-controller-manager with only the node IPAM
// controller, so Nodes get their podCIDRs as in a real cluster. The
// binaries are the ones scripts/kube.sh builds. Everything listens on the
// address given (loopback, or an address inside the caller's own network
// namespace); every process started is stopped by PID.
//
// It uses no client-go: readiness is plain HTTPS with the admin token.
package kubeplane

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"
)

// Version is the Kubernetes release the tests run against; scripts/kube.sh
// builds the same one (a test keeps them equal).
const Version = "v1.37.2"

// BinDir is where scripts/kube.sh puts the binaries of Version:
// $WEFT_REF_CACHE/kubernetes-<Version>/bin (default /var/cache/weft/ref).
func BinDir() string {
	root := os.Getenv("WEFT_REF_CACHE")
	if root == "" {
		root = "/var/cache/weft/ref"
	}
	return filepath.Join(root, "kubernetes-"+Version, "bin")
}

// ErrNoBinaries means scripts/kube.sh has not built the binaries.
var ErrNoBinaries = errors.New("kube-apiserver and kube-controller-manager are not built")

// CheckBinaries returns an error wrapping ErrNoBinaries, saying what to
// run, unless the build of Version is complete.
func CheckBinaries() error {
	dir := BinDir()
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), ".complete")); err != nil {
		return fmt.Errorf("%w in %s: run scripts/kube.sh (about 11 minutes the first time)", ErrNoBinaries, filepath.Dir(dir))
	}
	return nil
}

// Options configure Start.
type Options struct {
	// Dir holds certificates, tokens, kubeconfigs and logs. Required.
	Dir string
	// EtcdServers are the etcd client URLs the API server stores in.
	// Required.
	EtcdServers []string
	// Addr is the address the API server binds and advertises; 127.0.0.1
	// when zero.
	Addr netip.Addr
	// Port is the API server's secure port; a free one when zero.
	Port int
	// ServiceCIDR is --service-cluster-ip-range; 10.96.0.0/16 when zero.
	ServiceCIDR netip.Prefix
	// Log, when set, also receives the processes' output.
	Log io.Writer
	// NetNS, when set, is the named network namespace (ip netns) the
	// processes run in; Addr must be one of its addresses.
	NetNS string
	// Dial, when set, makes the connections to the API server (e.g. from
	// inside NetNS); a plain dialer when nil.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// AuditUsers, when set, are the users whose every request the API
	// server writes to AuditLog (Dir/audit.log), one JSON event per line
	// (metadata only): how many requests a client made, and which.
	AuditUsers []string
	// Detach lets the processes outlive this one (the lab's, which
	// `weftctl lab down` stops by PID); otherwise they are killed when it
	// dies.
	Detach bool
}

// Plane is a running control plane.
type Plane struct {
	// URL is the API server's base URL, e.g. https://127.0.0.1:41234.
	URL string
	// AdminToken authenticates as a member of system:masters.
	AdminToken string
	// CAFile and CAData are the CA that signed the serving certificate.
	CAFile string
	CAData []byte
	// AdminKubeconfig is a kubeconfig file for the admin.
	AdminKubeconfig string

	opts Options

	clientOnce sync.Once
	client     *http.Client // made once by httpClient

	mu  sync.Mutex
	api *proc // nil while stopped; guarded by mu
	kcm *proc // guarded by mu
}

// Start writes the certificates and tokens, starts kube-apiserver and
// waits until it is ready (at most a minute, or until ctx is done).
func Start(ctx context.Context, opts Options) (*Plane, error) {
	if err := CheckBinaries(); err != nil {
		return nil, err
	}
	if opts.Dir == "" || len(opts.EtcdServers) == 0 {
		return nil, errors.New("kubeplane: Dir and EtcdServers are required")
	}
	opts = opts.withDefaults()
	if opts.Port == 0 {
		p, err := freePort(opts.Addr)
		if err != nil {
			return nil, err
		}
		opts.Port = p
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, err
	}
	p := &Plane{opts: opts, URL: "https://" + net.JoinHostPort(opts.Addr.String(), strconv.Itoa(opts.Port))}
	if err := p.writeFiles(); err != nil {
		return nil, fmt.Errorf("kubeplane: %w", err)
	}
	if err := p.StartAPIServer(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

func (o Options) withDefaults() Options {
	if !o.Addr.IsValid() {
		o.Addr = netip.MustParseAddr("127.0.0.1")
	}
	if !o.ServiceCIDR.IsValid() {
		o.ServiceCIDR = netip.MustParsePrefix("10.96.0.0/16")
	}
	return o
}

// Connect returns a Plane for requests to an API server Start made with
// the same opts (from another process: the lab's later commands). It
// starts and stops nothing.
func Connect(opts Options, url string) (*Plane, error) {
	ca, err := os.ReadFile(filepath.Join(opts.Dir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("kubeplane: %w", err)
	}
	tokens, err := os.ReadFile(filepath.Join(opts.Dir, "tokens.csv"))
	if err != nil {
		return nil, fmt.Errorf("kubeplane: %w", err)
	}
	token, _, _ := strings.Cut(string(tokens), ",")
	return &Plane{opts: opts.withDefaults(), URL: url, AdminToken: token, CAData: ca, CAFile: filepath.Join(opts.Dir, "ca.crt"),
		AdminKubeconfig: filepath.Join(opts.Dir, "admin.kubeconf")}, nil
}

// apiServerArgs are kube-apiserver's flags for p's options.
func (p *Plane) apiServerArgs() []string {
	d, opts := p.opts.Dir, p.opts
	args := []string{
		"--etcd-servers=" + strings.Join(opts.EtcdServers, ","),
		"--etcd-prefix=/registry",
		"--bind-address=" + opts.Addr.String(),
		"--advertise-address=" + opts.Addr.String(),
		"--secure-port=" + strconv.Itoa(opts.Port),
		// No kubernetes Service endpoints to keep: the "master" is not a
		// routable node here (kube-apiserver refuses loopback otherwise).
		"--endpoint-reconciler-type=none",
		"--tls-cert-file=" + filepath.Join(d, "apiserver.crt"),
		"--tls-private-key-file=" + filepath.Join(d, "apiserver.key"),
		"--client-ca-file=" + filepath.Join(d, "ca.crt"),
		"--cert-dir=" + filepath.Join(d, "certs"),
		"--token-auth-file=" + filepath.Join(d, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--anonymous-auth=false",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + filepath.Join(d, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(d, "sa.key"),
		"--service-cluster-ip-range=" + opts.ServiceCIDR.String(),
		// DaemonSets of network plugins run privileged, as in every real
		// cluster.
		"--allow-privileged=true",
		"--profiling=false",
		"--enable-priority-and-fairness=false",
		"--v=0",
	}
	if len(opts.AuditUsers) > 0 {
		args = append(args, "--audit-policy-file="+filepath.Join(d, "audit-policy.yaml"), "--audit-log-path="+p.AuditLog(),
			"--audit-log-maxsize=0", "--audit-log-format=json")
	}
	return args
}

// AuditLog is where the API server writes the requests of
// Options.AuditUsers.
func (p *Plane) AuditLog() string { return filepath.Join(p.opts.Dir, "audit.log") }

// StartAPIServer starts kube-apiserver (again, after StopAPIServer) with
// the same address, data and credentials, and waits until it is ready.
func (p *Plane) StartAPIServer(ctx context.Context) error {
	p.mu.Lock()
	if p.api != nil {
		p.mu.Unlock()
		return nil
	}
	api, err := p.spawn("kube-apiserver", p.apiServerArgs())
	if err == nil {
		p.api = api
	}
	p.mu.Unlock()
	if err != nil {
		return err
	}
	if err := p.waitReady(ctx, api, time.Minute); err != nil {
		p.StopAPIServer()
		return err
	}
	return nil
}

// StopAPIServer stops kube-apiserver; clients see it as down.
func (p *Plane) StopAPIServer() {
	p.mu.Lock()
	api := p.api
	p.api = nil
	p.mu.Unlock()
	api.stop()
}

// APIServerPID is the running API server's PID, 0 when stopped.
func (p *Plane) APIServerPID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.api == nil {
		return 0
	}
	return p.api.cmd.Process.Pid
}

// StartControllerManager (re)starts kube-controller-manager with only the
// node IPAM controller, assigning each Node a /maskSize of clusterCIDR and a
// /maskSize6 of clusterCIDR6: dual stack when both are valid, one family
// when the other is zero.
func (p *Plane) StartControllerManager(clusterCIDR, clusterCIDR6 netip.Prefix, maskSize, maskSize6 int) error {
	if !clusterCIDR.IsValid() && !clusterCIDR6.IsValid() {
		return errors.New("kube-controller-manager: no cluster CIDR")
	}
	p.StopControllerManager()
	args := []string{
		"--kubeconfig=" + p.AdminKubeconfig,
		"--controllers=nodeipam",
		"--allocate-node-cidrs=true",
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=false",
		"--service-cluster-ip-range=" + p.opts.ServiceCIDR.String(),
		"--v=0",
	}
	switch {
	case clusterCIDR.IsValid() && clusterCIDR6.IsValid():
		args = append(args, "--cluster-cidr="+clusterCIDR.String()+","+clusterCIDR6.String(),
			"--node-cidr-mask-size-ipv4="+strconv.Itoa(maskSize), "--node-cidr-mask-size-ipv6="+strconv.Itoa(maskSize6))
	case clusterCIDR.IsValid():
		args = append(args, "--cluster-cidr="+clusterCIDR.String(), "--node-cidr-mask-size="+strconv.Itoa(maskSize))
	default:
		args = append(args, "--cluster-cidr="+clusterCIDR6.String(), "--node-cidr-mask-size="+strconv.Itoa(maskSize6))
	}
	kcm, err := p.spawn("kube-controller-manager", args)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.kcm = kcm
	p.mu.Unlock()
	return nil
}

// ControllerManagerPID is the running controller manager's PID, 0 when
// stopped.
func (p *Plane) ControllerManagerPID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.kcm == nil {
		return 0
	}
	return p.kcm.cmd.Process.Pid
}

// StopControllerManager stops kube-controller-manager if it runs.
func (p *Plane) StopControllerManager() {
	p.mu.Lock()
	kcm := p.kcm
	p.kcm = nil
	p.mu.Unlock()
	kcm.stop()
}

// Stop stops every process the plane started.
func (p *Plane) Stop() {
	p.StopControllerManager()
	p.StopAPIServer()
}

// WriteKubeconfig writes a kubeconfig for token to path.
func (p *Plane) WriteKubeconfig(path, token string) error {
	return os.WriteFile(path, []byte(Kubeconfig(p.URL, p.CAData, token)), 0o600)
}

// Kubeconfig renders a kubeconfig for server, CA and bearer token.
func Kubeconfig(server string, ca []byte, token string) string {
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Config\nclusters:\n- name: weft\n  cluster:\n    server: " + server + "\n")
	b.WriteString("    certificate-authority-data: " + b64(ca) + "\n")
	b.WriteString("users:\n- name: weft\n  user:\n    token: " + token + "\n")
	b.WriteString("contexts:\n- name: weft\n  context:\n    cluster: weft\n    user: weft\ncurrent-context: weft\n")
	return b.String()
}

// Do makes an authenticated request to the API server with the admin
// token and returns the status and body.
func (p *Plane) Do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	return p.do(ctx, p.AdminToken, method, path, body, "application/json")
}

// DoContent is Do with a body of content type ctype (a PATCH's
// application/merge-patch+json).
func (p *Plane) DoContent(ctx context.Context, method, path, ctype string, body []byte) (int, []byte, error) {
	return p.do(ctx, p.AdminToken, method, path, body, ctype)
}

func (p *Plane) do(ctx context.Context, token, method, path string, body []byte, ctype string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, p.URL+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := p.httpClient().Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, out, err
}

// httpClient is p's one client: its connections are kept and reused (a
// client per request would leave every connection open and pay a TLS
// handshake per request; the bench creates thousands of Nodes).
func (p *Plane) httpClient() *http.Client {
	p.clientOnce.Do(func() {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(p.CAData)
		// Every call is bounded by its ctx; the timeout only catches a hung
		// server (deleting thousands of Nodes takes a while).
		p.client = &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool}, DialContext: p.opts.Dial,
			MaxIdleConnsPerHost: 32, IdleConnTimeout: 30 * time.Second,
		}}
	})
	return p.client
}

func (p *Plane) waitReady(ctx context.Context, api *proc, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	last := ""
	for {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		code, body, err := p.do(pctx, p.AdminToken, http.MethodGet, "/readyz", nil, "")
		pcancel()
		if err == nil && code == http.StatusOK {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("HTTP %d: %.200s", code, body)
		}
		select {
		case <-api.done:
			return fmt.Errorf("kube-apiserver exited: %v; its log: %s", api.err, api.tail())
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready within %v (last: %s); its log: %s", limit, last, api.tail())
		case <-tick.C:
		}
	}
}

// proc is one started process.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	// logFrom is where this run's output starts in log (a restart
	// appends).
	logFrom int64
	done    chan struct{}
	err     error // set before done closes
}

func (p *Plane) spawn(name string, args []string) (*proc, error) {
	logPath := filepath.Join(p.opts.Dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	argv := append([]string{filepath.Join(BinDir(), name)}, args...)
	if p.opts.NetNS != "" {
		argv = append([]string{"ip", "netns", "exec", p.opts.NetNS}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	var w io.Writer = f
	if p.opts.Log != nil {
		w = io.MultiWriter(f, p.opts.Log)
	}
	cmd.Stdout, cmd.Stderr = w, w
	// Its own process group, and killed if this process dies (a test
	// binary that times out runs no cleanup).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	start := startOnLockedThread
	if p.opts.Detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		start = (*exec.Cmd).Start
	}
	if err := start(cmd); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	var from int64
	if st, err := f.Stat(); err == nil {
		from = st.Size()
	}
	pr := &proc{name: name, cmd: cmd, log: logPath, logFrom: from, done: make(chan struct{})}
	go func() {
		pr.err = cmd.Wait()
		f.Close()
		close(pr.done)
	}()
	return pr, nil
}

// stop ends the process by its PID: SIGTERM, then SIGKILL after 10 s.
func (pr *proc) stop() {
	if pr == nil {
		return
	}
	_ = pr.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-pr.done:
	case <-time.After(10 * time.Second):
		_ = pr.cmd.Process.Kill()
		<-pr.done
	}
}

// tail is the end of the process's log.
func (pr *proc) tail() string {
	b, _ := os.ReadFile(pr.log)
	b = b[min(int64(len(b)), pr.logFrom):]
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// writeFiles makes the CA, the serving certificate, the service-account
// key pair, the admin token and the admin kubeconfig.
func (p *Plane) writeFiles() error {
	d := p.opts.Dir
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "weft-test-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.IP(p.opts.Addr.AsSlice())},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	p.CAData = pemBlock("CERTIFICATE", caDER)
	p.CAFile = filepath.Join(d, "ca.crt")
	token := make([]byte, 24)
	if _, err := rand.Read(token); err != nil {
		return err
	}
	p.AdminToken = fmt.Sprintf("%x", token)
	files := map[string][]byte{
		"ca.crt":         p.CAData,
		"apiserver.crt":  pemBlock("CERTIFICATE", srvDER),
		"apiserver.key":  pemKey(srvKey),
		"sa.key":         pemKey(saKey),
		"sa.pub":         pemPub(&saKey.PublicKey),
		"tokens.csv":     []byte(p.AdminToken + ",weft-admin,weft-admin,\"system:masters\"\n"),
		"admin.kubeconf": []byte(Kubeconfig(p.URL, p.CAData, p.AdminToken)),
	}
	if len(p.opts.AuditUsers) > 0 {
		users, _ := json.Marshal(p.opts.AuditUsers)
		files["audit-policy.yaml"] = []byte("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [\"RequestReceived\"]\nrules:\n" +
			"- level: Metadata\n  users: " + string(users) + "\n- level: None\n")
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(d, name), data, 0o600); err != nil {
			return err
		}
	}
	p.AdminKubeconfig = filepath.Join(d, "admin.kubeconf")
	return nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func pemKey(k *ecdsa.PrivateKey) []byte {
	der, _ := x509.MarshalECPrivateKey(k)
	return pemBlock("EC PRIVATE KEY", der)
}

func pemPub(k *ecdsa.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(k)
	return pemBlock("PUBLIC KEY", der)
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func freePort(addr netip.Addr) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(addr.String(), "0"))
	if err != nil {
		return 0, fmt.Errorf("kubeplane: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Pdeathsig fires when the thread that forked the child exits, not the
// process; Go ends threads whose goroutine exits locked (ns.Do does). So
// every child is started from one goroutine locked, for good, to a thread
// that never exits.
var (
	spawnOnce sync.Once
	spawnReq  chan spawnCall
)

type spawnCall struct {
	cmd  *exec.Cmd
	errc chan error
}

func startOnLockedThread(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReq = make(chan spawnCall)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for c := range spawnReq {
				c.errc <- c.cmd.Start()
			}
		}()
	})
	errc := make(chan error, 1)
	spawnReq <- spawnCall{cmd, errc}
	return <-errc
}

// kindPaths are the API collections Apply creates objects in, by kind;
// "NS" stands for the object's namespace.
var kindPaths = map[string]string{
	"Namespace":          "/api/v1/namespaces",
	"ServiceAccount":     "/api/v1/namespaces/NS/serviceaccounts",
	"ConfigMap":          "/api/v1/namespaces/NS/configmaps",
	"Node":               "/api/v1/nodes",
	"ClusterRole":        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
	"ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
	"DaemonSet":          "/apis/apps/v1/namespaces/NS/daemonsets",
}

// Apply creates, as the admin, every object of a multi-document YAML
// manifest whose kind is in kinds (all of them when kinds is empty), with
// strict field validation: the API server refuses an unknown or misspelt
// field. An object that exists already is left as it is.
func (p *Plane) Apply(ctx context.Context, manifest []byte, kinds ...string) error {
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(manifest), -1) {
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			return fmt.Errorf("manifest document %d: %w", i, err)
		}
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(js, &meta); err != nil {
			return fmt.Errorf("manifest document %d: %w", i, err)
		}
		if meta.Kind == "" || (len(kinds) > 0 && !slices.Contains(kinds, meta.Kind)) {
			continue
		}
		path, ok := kindPaths[meta.Kind]
		if !ok {
			return fmt.Errorf("manifest document %d: kind %s: kubeplane.Apply does not know it", i, meta.Kind)
		}
		path = strings.Replace(path, "NS", meta.Metadata.Namespace, 1)
		if err := p.Create(ctx, path+"?fieldValidation=Strict", js); err != nil {
			return fmt.Errorf("manifest document %d (%s): %w", i, meta.Kind, err)
		}
	}
	return nil
}

// Create POSTs the JSON object obj to the collection at path as the admin;
// an object that exists already is not an error.
func (p *Plane) Create(ctx context.Context, path string, obj []byte) error {
	code, body, err := p.Do(ctx, http.MethodPost, path, obj)
	switch {
	case err != nil:
		return err
	case code == http.StatusConflict || code/100 == 2:
		return nil
	}
	return fmt.Errorf("POST %s: HTTP %d: %.300s", path, code, body)
}

// ServiceAccountToken returns a token for the ServiceAccount namespace/name
// (which must exist), valid for about d.
func (p *Plane) ServiceAccountToken(ctx context.Context, namespace, name string, d time.Duration) (string, error) {
	req := fmt.Sprintf(`{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":%d}}`, int64(d.Seconds()))
	path := "/api/v1/namespaces/" + namespace + "/serviceaccounts/" + name + "/token"
	code, body, err := p.Do(ctx, http.MethodPost, path, []byte(req))
	if err != nil {
		return "", err
	}
	if code/100 != 2 {
		return "", fmt.Errorf("token for %s/%s: HTTP %d: %.300s", namespace, name, code, body)
	}
	var tr struct {
		Status struct {
			Token string `json:"token"`
		} `json:"status"`
	}
	if err := json.Unmarshal(body, &tr); err != nil || tr.Status.Token == "" {
		return "", fmt.Errorf("token for %s/%s: no token in %.200s", namespace, name, body)
	}
	return tr.Status.Token, nil
}
