// Package flagenv lets every flag of a FlagSet also be set from an
// environment variable: flag --etcd-endpoints reads PREFIX_ETCD_ENDPOINTS
// unless the flag is given on the command line, which wins.
package flagenv

import (
	"flag"
	"fmt"
	"strings"
)

// VarName is the environment variable for flag name under prefix:
// ("WEFTD", "etcd-endpoints") → "WEFTD_ETCD_ENDPOINTS".
func VarName(prefix, name string) string {
	return prefix + "_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Parse parses args into fs, then fills every flag not given on the command
// line from its environment variable, looked up with getenv: PREFIX_FLAG,
// else ALIAS_FLAG for each alias prefix in order (weftd reads Flannel's
// FLANNELD_ names so). An invalid value in a variable is an error that
// names the variable.
func Parse(fs *flag.FlagSet, prefix string, args []string, getenv func(string) string, aliases ...string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || given[f.Name] {
			return
		}
		for _, p := range append([]string{prefix}, aliases...) {
			name := VarName(p, f.Name)
			v := getenv(name)
			if v == "" {
				continue
			}
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("environment variable %s=%q: %w", name, v, e)
			}
			return
		}
	})
	return err
}

// SplitList splits a comma-separated flag value (--etcd-endpoints a,b),
// dropping blanks and the spaces around items.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
