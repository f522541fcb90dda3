package wireguard

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/subnet"
)

// A PSK and a public key as `wg genpsk` and `wg pubkey` print them.
const (
	testPSK = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
	testPub = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
)

// TestParseOptionsFlannel reads Backend objects as Flannel users write them.
func TestParseOptionsFlannel(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		want      Options
		err       string
	}{
		{name: "defaults", raw: `{"Type":"wireguard"}`,
			want: Options{ListenPort: 51820, ListenPortV6: 51821, Mode: ModeSeparate, Implementation: ImplAuto}},
		{name: "empty", raw: ``,
			want: Options{ListenPort: 51820, ListenPortV6: 51821, Mode: ModeSeparate, Implementation: ImplAuto}},
		{name: "flannel's full set", raw: `{"Type":"wireguard","ListenPort":51830,"ListenPortV6":51831,"MTU":1400,
			"PSK":"` + testPSK + `","PersistentKeepaliveInterval":25,"Mode":"auto"}`,
			want: Options{ListenPort: 51830, ListenPortV6: 51831, MTU: 1400, PSK: testPSK, PersistentKeepaliveInterval: 25,
				Mode: ModeAuto, Implementation: ImplAuto}},
		{name: "keys any case, mode upper case", raw: `{"type":"wireguard","listenport":6000,"mode":"IPv4","implementation":"Userspace"}`,
			want: Options{ListenPort: 6000, ListenPortV6: 51821, Mode: ModeIPv4, Implementation: ImplUserspace}},
		{name: "unknown keys ignored", raw: `{"Type":"wireguard","VNI":4,"Implementation":"kernel"}`,
			want: Options{ListenPort: 51820, ListenPortV6: 51821, Mode: ModeSeparate, Implementation: ImplKernel}},
		{name: "port 0", raw: `{"ListenPort":0}`, err: "ListenPort 0 out of range"},
		{name: "port too big", raw: `{"ListenPort":70000}`, err: "ListenPort 70000 out of range"},
		{name: "v6 port", raw: `{"ListenPortV6":-1}`, err: "ListenPortV6 -1"},
		{name: "MTU leaves too little", raw: `{"MTU":600}`, err: "MTU 600 too small"},
		{name: "keepalive", raw: `{"PersistentKeepaliveInterval":-5}`, err: "PersistentKeepaliveInterval -5"},
		{name: "keepalive as a duration string", raw: `{"PersistentKeepaliveInterval":"25s"}`, err: "wireguard options"},
		{name: "mode", raw: `{"Mode":"both"}`, err: `Mode "both"`},
		{name: "implementation", raw: `{"Implementation":"ebpf"}`, err: `Implementation "ebpf"`},
		{name: "bad PSK", raw: `{"PSK":"c2VjcmV0LXRvby1zaG9ydA=="}`, err: "PSK is not a WireGuard key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := ParseOptions(json.RawMessage(tc.raw))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				if strings.Contains(err.Error(), "c2VjcmV0") {
					t.Errorf("the error quotes the PSK: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o != tc.want {
				t.Errorf("got %+v, want %+v", o, tc.want)
			}
		})
	}
}

// TestSecretNeverPrinted: Options in a log line, an error or %#v keep the
// PSK out.
func TestSecretNeverPrinted(t *testing.T) {
	o, err := ParseOptions(json.RawMessage(`{"PSK":"` + testPSK + `"}`))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("x", "opts", o, "psk", o.PSK)
	slog.New(slog.NewTextHandler(&b, nil)).Info("x", "opts", o, "psk", o.PSK)
	fmt.Fprintf(&b, "%v %+v %#v %s %q %v", o, o, o, o.PSK, o.PSK, fmt.Errorf("wrap: %v", o))
	if strings.Contains(b.String(), testPSK) {
		t.Errorf("PSK printed:\n%s", b.String())
	}
	if o.psk().String() != testPSK {
		t.Errorf("psk() = %s", o.psk())
	}
}

// TestBackendDataFlannel: what we publish is byte for byte Flannel's lease
// attribute, and Flannel's leases parse.
func TestBackendDataFlannel(t *testing.T) {
	data, err := json.Marshal(BackendData{PublicKey: testPub, Port: 51820})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"PublicKey":"` + testPub + `","Port":51820}`; string(data) != want {
		t.Errorf("BackendData %s, want %s", data, want)
	}
	// A whole Flannel lease value (dual stack, as flanneld v0.28 writes it).
	raw := `{"PublicIP":"198.18.0.11","PublicIPv6":"2001:db8::11","BackendType":"wireguard",` +
		`"BackendData":{"PublicKey":"` + testPub + `","Port":51820},` +
		`"BackendV6Data":{"PublicKey":"` + testPub + `","Port":51821}}`
	var attrs subnet.LeaseAttrs
	if err := json.Unmarshal([]byte(raw), &attrs); err != nil {
		t.Fatal(err)
	}
	d, err := parseBackendData(attrs.BackendData, DefaultListenPort)
	if err != nil {
		t.Fatal(err)
	}
	if d.key.String() != testPub || d.endpoint(attrs.PublicIP) != netip.MustParseAddrPort("198.18.0.11:51820") {
		t.Errorf("parsed %s %v", d.key, d.endpoint(attrs.PublicIP))
	}
}

func TestParseBackendData(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		port      uint16
		err       string
	}{
		{name: "flannel", raw: `{"PublicKey":"` + testPub + `","Port":51820}`, port: 51820},
		{name: "other port", raw: `{"PublicKey":"` + testPub + `","Port":6000}`, port: 6000},
		{name: "no port (old flannel) means ours", raw: `{"PublicKey":"` + testPub + `"}`, port: 7777},
		{name: "missing", raw: ``, err: "missing (no PublicKey)"},
		{name: "null", raw: `null`, err: "missing"},
		{name: "no key", raw: `{"Port":51820}`, err: "no PublicKey"},
		{name: "not json", raw: `{"PublicKey":`, err: "bad wireguard BackendData"},
		{name: "port out of range", raw: `{"PublicKey":"` + testPub + `","Port":70000}`, err: "bad wireguard BackendData"},
		{name: "not base64", raw: `{"PublicKey":"not a key"}`, err: `PublicKey "not a key" is not a WireGuard key`},
		{name: "short", raw: `{"PublicKey":"c2hvcnQ="}`, err: "is not a WireGuard key"},
		{name: "hex, not base64", raw: `{"PublicKey":"` + strings.Repeat("ab", 32) + `"}`, err: "is not a WireGuard key"},
		{name: "long garbage is cut", raw: `{"PublicKey":"` + strings.Repeat("x", 500) + `"}`, err: "…\" is not"},
		{name: "zero key", raw: `{"PublicKey":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`, err: "all zeros"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := parseBackendData(json.RawMessage(tc.raw), 7777)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				if len(err.Error()) > 200 {
					t.Errorf("reason too long (%d bytes)", len(err.Error()))
				}
				return
			}
			if err != nil || d.port != tc.port || d.key.String() != testPub {
				t.Errorf("got %+v, %v; want port %d", d, err, tc.port)
			}
		})
	}
}

// TestPlanPeers: the shared verdict's refusals, wireguard's own, and a key
// claimed twice kept by the older lease.
func TestPlanPeers(t *testing.T) {
	own := mustGen(t)
	k1, k2 := mustGen(t).PublicKey(), mustGen(t).PublicKey()
	lease := func(sn, ip, bt, data string) subnet.Lease {
		return subnet.Lease{Subnet: netip.MustParsePrefix(sn), Attrs: subnet.LeaseAttrs{
			PublicIP: netip.MustParseAddr(ip), BackendType: bt, BackendData: json.RawMessage(data)}}
	}
	data := func(k wgtypes.Key) string { return `{"PublicKey":"` + k.String() + `","Port":51820}` }
	peers := backend.PeerSet{}
	younger, older := lease("10.244.2.0/24", "198.18.0.12", "wireguard", data(k1)), lease("10.244.3.0/24", "198.18.0.13", "wireguard", data(k1))
	younger.CreateRevision, older.CreateRevision = 9, 5
	peers.Replace([]subnet.Lease{
		younger,
		older, // k1 again, and first
		lease("10.244.4.0/24", "198.18.0.14", "wireguard", data(own.PublicKey())),
		lease("10.244.5.0/24", "198.18.0.15", "vxlan", `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`),
		lease("10.244.6.0/24", "198.18.0.11", "wireguard", data(k2)), // our PublicIP
		lease("10.245.0.0/24", "198.18.0.16", "wireguard", data(k2)),
		lease("10.244.7.0/24", "198.18.0.17", "wireguard", `{}`),
		lease("10.244.8.0/24", "198.18.0.18", "wireguard", data(k2)),
	})
	e := env{node: backend.PeerNode{
		Config:      &subnet.Config{EnableIPv4: true, Network: network, SubnetLen: 24, BackendType: "wireguard"},
		Own:         subnet.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24")},
		PublicIP:    netip.MustParseAddr("198.18.0.11"),
		BackendType: "wireguard",
	}, pub: own.PublicKey()}
	devs, err := layout(Options{ListenPort: 51820, ListenPortV6: 51821, Mode: ModeSeparate}, e.node.Config)
	if err != nil || len(devs) != 1 {
		t.Fatalf("layout: %v %v", devs, err)
	}
	plans := planPeers(e, devs[0], peers)
	for sn, want := range map[string]string{
		"10.244.2.0/24": "already used by the older lease of peer 10.244.3.0/24",
		"10.244.3.0/24": "",
		"10.244.4.0/24": "PublicKey is this node's own",
		"10.244.5.0/24": `backend "vxlan", this network uses "wireguard"`,
		"10.244.6.0/24": "PublicIP 198.18.0.11 is this node's own",
		"10.245.0.0/24": "outside the network",
		"10.244.7.0/24": "no PublicKey",
		"10.244.8.0/24": "",
	} {
		p := plans[netip.MustParsePrefix(sn)]
		switch {
		case want == "" && p.state != backend.PeerProgrammed:
			t.Errorf("%s: %s %s, want programmed", sn, p.state, p.reason)
		case want != "" && (p.state != backend.PeerRefused || !strings.Contains(p.reason, want)):
			t.Errorf("%s: %s %q, want refused for %q", sn, p.state, p.reason, want)
		}
	}
	if p := plans[netip.MustParsePrefix("10.244.8.0/24")]; p.endpoint != netip.MustParseAddrPort("198.18.0.18:51820") || p.key != k2 {
		t.Errorf("plan %+v", p)
	}
	// Same verdicts on every pass, whatever the map order.
	for range 20 {
		again := planPeers(e, devs[0], peers)
		for sn, p := range plans {
			if again[sn].state != p.state || again[sn].reason != p.reason {
				t.Fatalf("%s: %s/%s, then %s/%s", sn, p.state, p.reason, again[sn].state, again[sn].reason)
			}
		}
	}
}

func mustGen(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestNewTouchesNothing: New validates (and is what the daemon calls on
// every config poll) but creates no key file.
func TestNewTouchesNothing(t *testing.T) {
	dir := t.TempDir()
	opts := backend.Options{Underlay: backend.Underlay{Link: "eth0", PublicIP: netip.MustParseAddr("198.18.0.11"), MTU: 1500},
		Config: &subnet.Config{EnableIPv4: true, Network: network, BackendType: "wireguard"}, StateDir: dir}
	b, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if b.MTU() != 1420 {
		t.Errorf("MTU %d, want 1500 − 80", b.MTU())
	}
	if _, err := ReadKey(KeyPath(dir)); err == nil {
		t.Errorf("New created a key")
	}
	for _, tc := range []struct {
		name string
		mod  func(*backend.Options)
		err  string
	}{
		{"no state dir", func(o *backend.Options) { o.StateDir = "" }, "--state-dir"},
		{"IPv6 underlay", func(o *backend.Options) { o.Underlay.PublicIP = netip.MustParseAddr("2001:db8::1") }, "no IPv4 address"},
		{"tiny underlay", func(o *backend.Options) { o.Underlay.MTU = 600 }, "too small"},
		{"bad options", func(o *backend.Options) { o.Config.Backend = json.RawMessage(`{"Mode":"x"}`) }, "Mode"},
	} {
		o := opts
		cfg := *opts.Config
		o.Config = &cfg
		tc.mod(&o)
		if _, err := New(o); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
		}
	}
}

// TestDocumentedOptions keeps the options table in backends.md true: every
// key is an option, every option is documented, with its default.
func TestDocumentedOptions(t *testing.T) {
	doc, err := os.ReadFile("../../Documentation/backends.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## wireguard\n")
	if !ok {
		t.Fatal("backends.md has no wireguard section")
	}
	_, table, _ := strings.Cut(section, "### Options\n")
	table, _, _ = strings.Cut(table, "\n\n###")
	defaults, err := ParseOptions(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"ListenPort": fmt.Sprint(defaults.ListenPort), "ListenPortV6": fmt.Sprint(defaults.ListenPortV6),
		"MTU": fmt.Sprint(defaults.MTU), "PSK": "none",
		"PersistentKeepaliveInterval": fmt.Sprint(defaults.PersistentKeepaliveInterval),
		"Mode":                        string(defaults.Mode), "Implementation": string(defaults.Implementation),
	}
	if n := reflect.TypeFor[Options]().NumField(); n != len(want) {
		t.Fatalf("Options has %d fields, this test knows %d: document the new one", n, len(want))
	}
	row := regexp.MustCompile("(?m)^\\| `(\\w+)` \\| `?([^`|]+)`? \\|")
	seen := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(table, -1) {
		key, def := m[1], strings.TrimSpace(m[2])
		w, ok := want[key]
		if !ok {
			t.Errorf("backends.md documents %s, which is no option", key)
			continue
		}
		if def != w {
			t.Errorf("backends.md: %s defaults to %q, the code to %q", key, def, w)
		}
		seen[key] = true
	}
	for key := range want {
		if !seen[key] {
			t.Errorf("option %s is not in backends.md's table", key)
		}
	}
}
