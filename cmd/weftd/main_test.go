package main

import (
	"bytes"
	"flag"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/flagenv"
)

// TestFlagTableMatchesDocs keeps Documentation/configuration.md's weftd
// flag table in step with the real flag set: every flag documented, nothing
// documented that does not exist, env var names and defaults right.
func TestFlagTableMatchesDocs(t *testing.T) {
	section := docSection(t, "configuration.md", "weftd-flags")
	row := regexp.MustCompile("(?m)^\\| `--([a-z0-9-]+)` \\| `([A-Z0-9_]+)` \\| (.*?) \\| .* \\|$")
	documented := map[string][]string{}
	for _, m := range row.FindAllStringSubmatch(string(section), -1) {
		documented[m[1]] = m[2:]
	}
	var o options
	fs := newFlagSet(&o)
	fs.VisitAll(func(f *flag.Flag) {
		d, ok := documented[f.Name]
		if !ok {
			t.Errorf("flag --%s is not in configuration.md", f.Name)
			return
		}
		delete(documented, f.Name)
		if want := flagenv.VarName("WEFTD", f.Name); d[0] != want {
			t.Errorf("--%s: doc says env %s, want %s", f.Name, d[0], want)
		}
		def := strings.Trim(d[1], "`")
		if want := docDefault(f); def != want {
			t.Errorf("--%s: doc says default %q, want %q", f.Name, def, want)
		}
	})
	for name := range documented {
		t.Errorf("configuration.md documents --%s, which weftd does not have", name)
	}
}

// docDefault is how the docs show a flag's default.
func docDefault(f *flag.Flag) string {
	switch {
	case f.Name == "etcd-endpoints":
		return "http://127.0.0.1:2379"
	case f.DefValue == "":
		return "none"
	case f.DefValue == "INFO":
		return "info"
	}
	return f.DefValue
}

// TestPrintFlagTable prints the table rows (go test -run PrintFlagTable -v)
// to paste into the docs when a flag is added.
func TestPrintFlagTable(t *testing.T) {
	if !testing.Verbose() {
		t.Skip("prints the docs table with -v")
	}
	var o options
	newFlagSet(&o).VisitAll(func(f *flag.Flag) {
		t.Logf("| `--%s` | `%s` | `%s` | %s |", f.Name, flagenv.VarName("WEFTD", f.Name), docDefault(f), f.Usage)
	})
}

func TestRunFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want int
		out  string
	}{
		{name: "version", args: []string{"--version"}, want: 0, out: "weftd "},
		{name: "unknown flag", args: []string{"--nope"}, want: 1, out: "flag provided but not defined"},
		{name: "bad env", env: map[string]string{"WEFTD_SUBNET_LEASE_TTL": "soon"}, want: 1, out: "WEFTD_SUBNET_LEASE_TTL"},
		{name: "bad public ip", args: []string{"--public-ip", "1.2.3"}, want: 1, out: "public-ip"},
		{name: "bad log format", args: []string{"--log-format", "xml"}, want: 1, out: "log format"},
		{name: "stray argument", args: []string{"extra"}, want: 1, out: "unexpected arguments"},
		{name: "bad iface regex", args: []string{"--iface-regex", "eth[0"}, want: 1, out: `regular expression "eth[0"`},
		{name: "bad iface-can-reach", args: []string{"--iface-can-reach", "gw.example"}, want: 1, out: "iface-can-reach"},
		{name: "bad Flannel env names the variable", env: map[string]string{"FLANNELD_SUBNET_LEASE_RENEW_MARGIN": "soon"}, want: 1, out: "FLANNELD_SUBNET_LEASE_RENEW_MARGIN"},
		{name: "renew margin not below the TTL", args: []string{"--subnet-lease-ttl", "1h", "--subnet-lease-renew-margin", "60"}, want: 1, out: "renew margin"},
		{name: "healthz-ip alone", args: []string{"--healthz-ip", "0.0.0.0"}, want: 1, out: "--healthz-ip needs --healthz-port"},
		{name: "healthz-port with healthz-addr", args: []string{"--healthz-port", "8471", "--healthz-addr", "127.0.0.1:1"}, want: 1, out: "not both"},
		{name: "bad iptables-resync", args: []string{"--iptables-resync", "often"}, want: 1, out: "neither whole seconds nor a duration"},
		{name: "negative iptables-resync", args: []string{"--iptables-resync", "-5"}, want: 1, out: "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			got := run(tt.args, &out, &errOut, func(k string) string { return tt.env[k] })
			if got != tt.want {
				t.Errorf("exit = %d, want %d (stderr %q)", got, tt.want, errOut.String())
			}
			if !strings.Contains(out.String()+errOut.String(), tt.out) {
				t.Errorf("output %q lacks %q", out.String()+errOut.String(), tt.out)
			}
		})
	}
}

// TestFlannelFlags: flanneld's flags and FLANNELD_ variables land where
// weftd's own would: repeated and comma-separated --iface in order,
// --iface-regex in order, --iface-can-reach, the renew margin in minutes,
// --iptables-forward-rules as --forward-rules, --healthz-ip/--healthz-port
// as --healthz-addr, -v as debug logging; WEFTD_ wins over FLANNELD_.
func TestFlannelFlags(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, o *options)
	}{
		{name: "iface repeated and listed", args: []string{"--iface", "eth9", "--iface=10.0.0.5,ens3"}, check: func(t *testing.T, o *options) {
			if got := strings.Join(o.node.Iface, " "); got != "eth9 10.0.0.5 ens3" {
				t.Errorf("Iface = %q", got)
			}
		}},
		{name: "iface regex in order", args: []string{"--iface-regex", `^10\.0\.`, "--iface-regex", "^en"}, check: func(t *testing.T, o *options) {
			if len(o.node.IfaceRegex) != 2 || o.node.IfaceRegex[0].String() != `^10\.0\.` || o.node.IfaceRegex[1].String() != "^en" {
				t.Errorf("IfaceRegex = %v", o.node.IfaceRegex)
			}
		}},
		{name: "Flannel's environment", env: map[string]string{
			"FLANNELD_IFACE": "eth1", "FLANNELD_IFACE_CAN_REACH": "10.0.0.1", "FLANNELD_PUBLIC_IP": "203.0.113.7",
			"FLANNELD_SUBNET_LEASE_RENEW_MARGIN": "90", "FLANNELD_IPTABLES_FORWARD_RULES": "false", "FLANNELD_IP_MASQ": "true",
			"FLANNELD_ETCD_PREFIX": "/flannel", "WEFTD_ETCD_PREFIX": "/weft",
		}, check: func(t *testing.T, o *options) {
			n := o.node
			if len(n.Iface) != 1 || n.Iface[0] != "eth1" || n.IfaceCanReach != netip.MustParseAddr("10.0.0.1") || n.PublicIP != netip.MustParseAddr("203.0.113.7") ||
				n.SubnetLeaseRenewMargin != 90*time.Minute || n.ForwardRules || !n.IPMasq {
				t.Errorf("node config from FLANNELD_ variables: %+v", n)
			}
			if o.etcd.Prefix != "/weft" {
				t.Errorf("etcd prefix %q: WEFTD_ must win over FLANNELD_", o.etcd.Prefix)
			}
		}},
		{name: "healthz port", args: []string{"--healthz-port", "8471"}, check: func(t *testing.T, o *options) {
			if o.node.HealthzAddr != "0.0.0.0:8471" {
				t.Errorf("HealthzAddr = %q, want Flannel's default IP with the port", o.node.HealthzAddr)
			}
		}},
		{name: "healthz ip and port", args: []string{"--healthz-ip", "127.0.0.1", "--healthz-port", "8471"}, check: func(t *testing.T, o *options) {
			if o.node.HealthzAddr != "127.0.0.1:8471" {
				t.Errorf("HealthzAddr = %q", o.node.HealthzAddr)
			}
		}},
		{name: "healthz port 0 is off", args: []string{"--healthz-port", "0"}, check: func(t *testing.T, o *options) {
			if o.node.HealthzAddr != "off" {
				t.Errorf("HealthzAddr = %q, want off", o.node.HealthzAddr)
			}
		}},
		{name: "v", args: []string{"-v", "2"}, check: func(t *testing.T, o *options) {
			if o.logLevel != slog.LevelDebug {
				t.Errorf("log level %v, want debug", o.logLevel)
			}
		}},
		{name: "v does not override log-level", args: []string{"-v", "2", "--log-level", "warn"}, check: func(t *testing.T, o *options) {
			if o.logLevel != slog.LevelWarn {
				t.Errorf("log level %v, want warn", o.logLevel)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, _, err := parseOptions(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, o)
		})
	}
}

// TestWarnFlannelEnv: a FLANNELD_ variable of a flanneld flag weftd lacks
// is said at start; one weftd reads is not.
func TestWarnFlannelEnv(t *testing.T) {
	env := map[string]string{"FLANNELD_PUBLIC_IPV6": "2001:db8::1", "FLANNELD_IP_MASQ": "true"}
	var o options
	fs := newFlagSet(&o)
	var b bytes.Buffer
	warnFlannelEnv(slog.New(slog.NewTextHandler(&b, nil)), fs, func(k string) string { return env[k] })
	if fs.Lookup("public-ipv6") == nil && !strings.Contains(b.String(), "variable=FLANNELD_PUBLIC_IPV6") {
		t.Errorf("no warning for FLANNELD_PUBLIC_IPV6:\n%s", b.String())
	}
	if strings.Contains(b.String(), "FLANNELD_IP_MASQ") {
		t.Errorf("warned about a variable weftd reads:\n%s", b.String())
	}
}

// TestFlanneldFlagTable keeps the flanneld-flags table of
// flannel-compatibility.md true: its rows are flanneldFlags, each weftd
// flag it names exists with the same name, and each flag marked "none"
// does not exist (so the table changes when weftd gains it).
func TestFlanneldFlagTable(t *testing.T) {
	section := docSection(t, "flannel-compatibility.md", "flanneld-flags")
	row := regexp.MustCompile("(?m)^\\| `--([a-z0-9_-]+)` \\| ([^|]+) \\|")
	var o options
	fs := newFlagSet(&o)
	rows := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(string(section), -1) {
		name, weft := m[1], strings.TrimSpace(m[2])
		rows[name] = true
		switch {
		case strings.HasPrefix(weft, "none"):
			if fs.Lookup(name) != nil {
				t.Errorf("--%s is marked %q, but weftd has it: update the row", name, weft)
			}
		case weft != "`--"+name+"`":
			t.Errorf("--%s: weftd column %s, want `--%s` (weftd reads FLANNELD_ variables by the same name)", name, weft, name)
		case fs.Lookup(name) == nil:
			t.Errorf("--%s: weftd has no such flag", name)
		}
	}
	for _, name := range flanneldFlags {
		if !rows[name] {
			t.Errorf("flanneld's --%s has no row", name)
		}
		delete(rows, name)
	}
	for name := range rows {
		t.Errorf("row --%s is not a flanneld flag (flanneldFlags)", name)
	}
}

// docSection is what lies between <!-- marker --> and <!-- /marker --> in
// the named file of Documentation/.
func docSection(t *testing.T, file, marker string) []byte {
	t.Helper()
	doc, err := os.ReadFile("../../Documentation/" + file)
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := bytes.Cut(doc, []byte("<!-- "+marker+" -->"))
	if !ok {
		t.Fatalf("%s has no <!-- %s --> table", file, marker)
	}
	section, _, _ = bytes.Cut(section, []byte("<!-- /"+marker+" -->"))
	return section
}

// TestIPTablesResync: Flannel's whole seconds and Go durations both work.
func TestIPTablesResync(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{{"5", 5 * time.Second}, {"0", 0}, {"90s", 90 * time.Second}, {"1m", time.Minute}} {
		var o options
		fs := newFlagSet(&o)
		if err := fs.Parse([]string{"--iptables-resync", tc.in}); err != nil || o.node.FirewallResync != tc.want {
			t.Errorf("--iptables-resync %s: %v, %v; want %v", tc.in, o.node.FirewallResync, err, tc.want)
		}
	}
	var o options
	newFlagSet(&o)
	if o.node.FirewallResync != 5*time.Second {
		t.Errorf("default %v, want Flannel's 5s", o.node.FirewallResync)
	}
}

// TestGCPercent: weftd's GOGC is its default unless GOGC is in the
// environment (which Go's runtime has applied), and the flag or its
// variable beats both; less than 1 is refused.
func TestGCPercent(t *testing.T) {
	tests := []struct {
		args     []string
		env      map[string]string
		pct      int
		from     string
		refusing bool
	}{
		{pct: defaultGCPercent, from: "50 (default)"},
		{env: map[string]string{"GOGC": "200"}, from: "GOGC=200"},
		{env: map[string]string{"GOGC": "off"}, from: "GOGC=off"},
		{args: []string{"--gc-percent", "100"}, env: map[string]string{"GOGC": "200"}, pct: 100, from: "100 (--gc-percent)"},
		{env: map[string]string{"WEFTD_GC_PERCENT": "80"}, pct: 80, from: "80 (--gc-percent)"},
		{args: []string{"--gc-percent", "0"}, refusing: true},
		{args: []string{"--gc-percent", "-1"}, refusing: true},
	}
	for _, tt := range tests {
		getenv := func(k string) string { return tt.env[k] }
		o, fs, err := parseOptions(tt.args, getenv, io.Discard)
		if tt.refusing {
			if err == nil || !strings.Contains(err.Error(), "--gc-percent") {
				t.Errorf("%v: error %v, want --gc-percent refused", tt.args, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v %v: %v", tt.args, tt.env, err)
		}
		pct, from := gcPercentFor(o.gcPercent, isGiven(fs, "gc-percent"), getenv)
		if pct != tt.pct || from != tt.from {
			t.Errorf("%v %v: GOGC %d from %q, want %d from %q", tt.args, tt.env, pct, from, tt.pct, tt.from)
		}
	}
}
