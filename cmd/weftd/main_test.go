package main

import (
	"bytes"
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/flagenv"
)

// TestFlagTableMatchesDocs keeps Documentation/configuration.md's weftd
// flag table in step with the real flag set: every flag documented, nothing
// documented that does not exist, env var names and defaults right.
func TestFlagTableMatchesDocs(t *testing.T) {
	doc, err := os.ReadFile("../../Documentation/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := bytes.Cut(doc, []byte("<!-- weftd-flags -->"))
	if !ok {
		t.Fatal("configuration.md has no <!-- weftd-flags --> table")
	}
	section, _, _ = bytes.Cut(section, []byte("<!-- /weftd-flags -->"))
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
