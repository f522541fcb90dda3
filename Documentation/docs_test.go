package docs

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// metricDefs returns the weft_ metric names defined in the Go code of
// daemon/ and backend/ (string literals; weft builds no names from parts).
func metricDefs(t *testing.T) map[string]bool {
	t.Helper()
	lit := regexp.MustCompile(`"(weft_[a-z0-9_]+)"`)
	names := map[string]bool{}
	for _, dir := range []string{"../daemon", "../backend"} {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range lit.FindAllSubmatch(src, -1) {
				names[string(m[1])] = true
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(names) < 5 {
		t.Fatalf("found only %d weft_ metrics in daemon/ and backend/: has the way they are defined changed?", len(names))
	}
	return names
}

// seriesName maps a series a query uses to the metric defining it: a
// histogram's _bucket, _sum and _count series belong to the histogram.
func seriesName(s string, defs map[string]bool) (string, bool) {
	if defs[s] {
		return s, true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(s, suf); ok && defs[base] {
			return base, true
		}
	}
	return "", false
}

// standardSeries are the Go and process collector series the dashboard
// may use, with the collector constructor daemon/metrics.go must call.
var standardSeries = map[string]string{
	"go_goroutines":                 "collectors.NewGoCollector",
	"process_resident_memory_bytes": "collectors.NewProcessCollector",
	"process_cpu_seconds_total":     "collectors.NewProcessCollector",
}

var seriesRef = regexp.MustCompile(`\b(?:weft|go|process)_[a-z0-9_]+\b`)

type dashboard struct {
	Title  string `json:"title"`
	UID    string `json:"uid"`
	Panels []struct {
		Type    string `json:"type"`
		Title   string `json:"title"`
		Targets []struct {
			Expr  string `json:"expr"`
			RefID string `json:"refId"`
		} `json:"targets"`
	} `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("grafana-dashboard.json does not parse: %v", err)
	}
	if d.Title == "" || d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard lacks a title, uid or panels")
	}
	defs := metricDefs(t)
	metricsSrc, err := os.ReadFile("../daemon/metrics.go")
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	check := func(where, expr string) {
		refs := seriesRef.FindAllString(expr, -1)
		if len(refs) == 0 {
			t.Errorf("%s: query %q uses no weft, go or process series", where, expr)
		}
		for _, s := range refs {
			if base, ok := seriesName(s, defs); ok {
				used[base] = true
				continue
			}
			if ctor, ok := standardSeries[s]; ok {
				if !strings.Contains(string(metricsSrc), ctor) {
					t.Errorf("%s: %s needs %s registered in daemon/metrics.go", where, s, ctor)
				}
				continue
			}
			t.Errorf("%s: query %q uses %s, which weftd does not define", where, expr, s)
		}
	}
	queries := 0
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			if strings.TrimSpace(q.Expr) == "" || q.RefID == "" {
				t.Errorf("panel %q has an empty query or refId", p.Title)
			}
			check("panel "+p.Title, q.Expr)
			queries++
		}
	}
	for _, v := range d.Templating.List {
		if v.Definition != "" {
			check("variable "+v.Name, v.Definition)
		}
	}
	var unused []string
	for n := range defs {
		if !used[n] {
			unused = append(unused, n)
		}
	}
	sort.Strings(unused)
	t.Logf("%d queries; metrics without a panel: %v", queries, unused)
}

// TestMetricsDoc keeps metrics.md complete and free of stale names.
func TestMetricsDoc(t *testing.T) {
	raw, err := os.ReadFile("metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	defs := metricDefs(t)
	for n := range defs {
		if !strings.Contains(doc, "`"+n+"`") {
			t.Errorf("metrics.md does not list %s (defined in daemon/ or backend/)", n)
		}
	}
	for _, s := range regexp.MustCompile(`\bweft_[a-z0-9_]+\b`).FindAllString(doc, -1) {
		if _, ok := seriesName(s, defs); !ok {
			t.Errorf("metrics.md mentions %s, which weftd does not define", s)
		}
	}
}

// TestLinks checks that the relative links of the pages kept with this test
// lead to files that exist.
func TestLinks(t *testing.T) {
	pages := []string{"install.md", "troubleshooting.md", "migrating-from-flannel.md", "architecture.md", "metrics.md", "flannel-compatibility.md", "configuration.md"}
	link := regexp.MustCompile(`\]\(([^)#\s]+)(?:#[^)]*)?\)`)
	for _, page := range pages {
		raw, err := os.ReadFile(page)
		if err != nil {
			t.Errorf("%s: %v", page, err)
			continue
		}
		for _, m := range link.FindAllStringSubmatch(string(raw), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(page), target)); err != nil {
				t.Errorf("%s links to %s, which does not exist", page, target)
			}
		}
	}
}

// TestGoTestCommands keeps the `go test` commands the pages quote able to
// produce what the text after them reports: every Benchmark and Test named
// between such a command and the next heading is defined in one of the
// packages the command lists.
func TestGoTestCommands(t *testing.T) {
	pages, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	command := regexp.MustCompile("`(go test [^`]*)`")
	named := regexp.MustCompile(`\b(?:Benchmark|Test)[A-Z][A-Za-z0-9_]*\b`)
	checked := 0
	for _, page := range pages {
		raw, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		doc := string(raw)
		locs := command.FindAllStringSubmatchIndex(doc, -1)
		for i, loc := range locs {
			cmd := doc[loc[2]:loc[3]]
			var pkgs []string
			for _, f := range strings.Fields(cmd) {
				if strings.HasPrefix(f, "./") && !strings.Contains(f, "...") {
					pkgs = append(pkgs, filepath.Join("..", f))
				}
			}
			if len(pkgs) == 0 || !strings.Contains(cmd, "-bench") && !strings.Contains(cmd, "-run") {
				continue
			}
			// The section the command's figures are in: up to the next
			// heading or the next go test command.
			end := len(doc)
			if h := strings.Index(doc[loc[1]:], "\n#"); h >= 0 {
				end = loc[1] + h
			}
			if i+1 < len(locs) && locs[i+1][0] < end {
				end = locs[i+1][0]
			}
			defined := funcsIn(t, pkgs)
			for _, name := range named.FindAllString(cmd+" "+doc[loc[1]:end], -1) {
				checked++
				if !defined[name] && (strings.HasPrefix(name, "Benchmark") || strings.Contains(cmd, name)) {
					t.Errorf("%s: `%s` cannot produce %s: none of %v defines it", page, cmd, name, pkgs)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no go test command with named tests or benchmarks found: has the way the pages quote them changed?")
	}
}

// funcsIn returns the Test and Benchmark functions of the _test.go files
// directly in dirs.
func funcsIn(t *testing.T, dirs []string) map[string]bool {
	t.Helper()
	def := regexp.MustCompile(`(?m)^func ((?:Benchmark|Test)[A-Za-z0-9_]*)\(`)
	out := map[string]bool{}
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
		if err != nil || len(files) == 0 {
			t.Errorf("%s has no test files (%v)", dir, err)
		}
		for _, f := range files {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range def.FindAllStringSubmatch(string(src), -1) {
				out[m[1]] = true
			}
		}
	}
	return out
}
