package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// ErrClientConfig marks a Dial error that retrying cannot fix: unreadable or
// mismatched TLS files, a plain http endpoint with TLS files, a TLS handshake
// the server or the client refuses (unknown CA, no or wrong client
// certificate), or rejected credentials. A caller that retries transient
// errors (connection refused, timeouts) should stop and report these.
var ErrClientConfig = errors.New("etcd client configuration refused")

// clientConfigError wraps err so it matches ErrClientConfig while keeping
// its own message.
type clientConfigError struct{ err error }

func (e clientConfigError) Error() string { return e.err.Error() }
func (e clientConfigError) Unwrap() []error {
	return []error{e.err, ErrClientConfig}
}

func refused(err error) error { return clientConfigError{err} }

// DefaultDialTimeout bounds Dial when ClientConfig.DialTimeout is zero.
const DefaultDialTimeout = 5 * time.Second

// ClientConfig says how to reach etcd: the flags --etcd-endpoints,
// --etcd-cafile, --etcd-certfile, --etcd-keyfile, --etcd-username,
// --etcd-password of weftd and weftctl.
type ClientConfig struct {
	Endpoints []string
	// CAFile verifies the server; CertFile and KeyFile (both or neither)
	// authenticate the client.
	CAFile, CertFile, KeyFile string
	Username, Password        string
	// PasswordFile holds the password instead of Password (a mounted
	// Secret keeps it out of argv and the environment); read at every Dial,
	// so a rotated file is used on the next connection.
	PasswordFile string
	// DialTimeout bounds Dial's first contact; DefaultDialTimeout when zero.
	DialTimeout time.Duration
}

// Dial checks the TLS files, connects to etcd and makes one request, so a
// wrong endpoint, CA, certificate or password fails here, within
// DialTimeout, with an error that says which. The client reconnects on its
// own after etcd restarts (backoff capped at 5 s). Close it when done.
func Dial(ctx context.Context, cc ClientConfig) (*clientv3.Client, error) {
	if len(cc.Endpoints) == 0 {
		return nil, refused(errors.New("etcd: no endpoints: set --etcd-endpoints, e.g. http://127.0.0.1:2379"))
	}
	timeout := cc.DialTimeout
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	tlsCfg, err := tlsConfig(cc)
	if err != nil {
		return nil, refused(err)
	}
	if cc.Password, err = password(cc); err != nil {
		return nil, refused(err)
	}
	if (cc.Username == "") != (cc.Password == "") {
		return nil, refused(errors.New("etcd: username and password must be given together"))
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cc.Endpoints,
		TLS:                  tlsCfg,
		Username:             cc.Username,
		Password:             cc.Password,
		DialTimeout:          timeout,
		DialKeepAliveTime:    30 * time.Second,
		DialKeepAliveTimeout: 10 * time.Second,
		Logger:               zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: timeout,
		})},
	})
	if err != nil {
		if errors.Is(err, rpctypes.ErrAuthFailed) {
			return nil, refused(fmt.Errorf("etcd %s: authentication as user %q failed: check the username and password", strings.Join(cc.Endpoints, ","), cc.Username))
		}
		return nil, diagnosed(fmt.Errorf("etcd %s: %w", strings.Join(cc.Endpoints, ","), err), cc.Endpoints, tlsCfg, timeout)
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := cli.MemberList(pctx); err != nil {
		cli.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("etcd %s: %w", strings.Join(cc.Endpoints, ","), ctx.Err())
		}
		if errors.Is(err, rpctypes.ErrAuthFailed) || errors.Is(err, rpctypes.ErrInvalidAuthToken) || errors.Is(err, rpctypes.ErrUserEmpty) {
			return nil, refused(fmt.Errorf("etcd %s: authentication refused: %w: check the username and password", strings.Join(cc.Endpoints, ","), err))
		}
		return nil, diagnosed(fmt.Errorf("etcd %s not reachable within %v: %w", strings.Join(cc.Endpoints, ","), timeout, err), cc.Endpoints, tlsCfg, timeout)
	}
	return cli, nil
}

// password is cc's password: Password, or PasswordFile's content without
// its trailing newline.
func password(cc ClientConfig) (string, error) {
	if cc.PasswordFile == "" {
		return cc.Password, nil
	}
	if cc.Password != "" {
		return "", errors.New("etcd: give the password or a password file, not both")
	}
	b, err := os.ReadFile(cc.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("etcd password file: %w", err)
	}
	p := strings.TrimRight(string(b), "\r\n")
	if p == "" {
		return "", fmt.Errorf("etcd password file %s is empty", cc.PasswordFile)
	}
	return p, nil
}

// PlainCredentials returns the endpoints a password would cross in clear
// text: plain http ones whose host is not a loopback address, when a
// username is set. The caller warns.
func PlainCredentials(cc ClientConfig) []string {
	if cc.Username == "" {
		return nil
	}
	var plain []string
	for _, ep := range cc.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || u.Scheme != "http" {
			continue
		}
		if ip, err := netip.ParseAddr(u.Hostname()); (err == nil && ip.IsLoopback()) || u.Hostname() == "localhost" {
			continue
		}
		plain = append(plain, ep)
	}
	return plain
}

func tlsConfig(cc ClientConfig) (*tls.Config, error) {
	anyHTTPS := false
	for _, ep := range cc.Endpoints {
		if strings.HasPrefix(ep, "https://") {
			anyHTTPS = true
		}
	}
	if cc.CAFile == "" && cc.CertFile == "" && cc.KeyFile == "" {
		if anyHTTPS {
			return &tls.Config{MinVersion: tls.VersionTLS12}, nil
		}
		return nil, nil
	}
	for _, ep := range cc.Endpoints {
		if strings.HasPrefix(ep, "http://") {
			return nil, fmt.Errorf("etcd TLS: endpoint %s is plain http but TLS files are set: use https://", ep)
		}
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cc.CAFile != "" {
		pem, err := os.ReadFile(cc.CAFile)
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd TLS: CA file %s holds no PEM certificate", cc.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (cc.CertFile == "") != (cc.KeyFile == "") {
		return nil, errors.New("etcd TLS: the client certificate and key files must be given together")
	}
	if cc.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cc.CertFile, cc.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: client certificate %s and key %s: %w", cc.CertFile, cc.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// diagnosed appends diagnose's findings to err, and marks it ErrClientConfig
// when a TLS handshake was refused: no endpoint would accept this client, so
// retrying is pointless.
func diagnosed(err error, endpoints []string, cfg *tls.Config, timeout time.Duration) error {
	why, tlsRefused := diagnose(endpoints, cfg, timeout)
	err = fmt.Errorf("%w%s", err, why)
	if tlsRefused {
		return refused(err)
	}
	return err
}

// tlsFailure reports whether err is the TLS layer refusing the peer (a
// certificate that does not verify, an alert from the server, a server that
// does not speak TLS), as opposed to the network failing.
func tlsFailure(err error) bool {
	var (
		rh   tls.RecordHeaderError
		al   tls.AlertError
		ua   x509.UnknownAuthorityError
		ci   x509.CertificateInvalidError
		he   x509.HostnameError
		cv   *tls.CertificateVerificationError
		remo = strings.Contains(err.Error(), "remote error: tls:")
	)
	return remo || errors.As(err, &rh) || errors.As(err, &al) || errors.As(err, &ua) ||
		errors.As(err, &ci) || errors.As(err, &he) || errors.As(err, &cv)
}

// diagnose makes a plain TLS handshake with each endpoint to turn gRPC's
// "deadline exceeded" into the reason, such as an unknown certificate
// authority. It returns "" when there is nothing to add, and whether any
// endpoint refused the handshake (tlsFailure).
func diagnose(endpoints []string, cfg *tls.Config, timeout time.Duration) (string, bool) {
	if cfg == nil {
		return "", false
	}
	var reasons []string
	tlsRefused := false
	for _, ep := range endpoints {
		host := ep
		if u, err := url.Parse(ep); err == nil && u.Host != "" {
			host = u.Host
		}
		c := cfg.Clone()
		if h, _, err := net.SplitHostPort(host); err == nil {
			c.ServerName = h
		}
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: c}
		conn, err := d.Dial("tcp", host)
		if err != nil {
			reasons = append(reasons, fmt.Sprintf("%s: %v", host, err))
			tlsRefused = tlsRefused || tlsFailure(err)
			continue
		}
		// With TLS 1.3 the server checks the client's certificate after the
		// client's handshake is done; its verdict comes as an alert on the
		// first read.
		_ = conn.SetReadDeadline(time.Now().Add(min(timeout, 500*time.Millisecond)))
		var buf [1]byte
		if _, err := conn.Read(buf[:]); err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				if strings.Contains(err.Error(), "tls:") {
					reasons = append(reasons, fmt.Sprintf("%s: %v", host, err))
					tlsRefused = true
				}
			}
		}
		conn.Close()
	}
	if len(reasons) == 0 {
		return "", false
	}
	return " (TLS: " + strings.Join(reasons, "; ") + ": check --etcd-cafile, --etcd-certfile and --etcd-keyfile)", tlsRefused
}
