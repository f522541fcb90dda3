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
