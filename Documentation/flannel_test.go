package docs

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/weftnet/weft/backend/udp"
	"github.com/weftnet/weft/backend/vxlan"
	"github.com/weftnet/weft/subnet"
)

// tableRows returns the rows (cells trimmed) of the markdown table between
// <!-- marker --> and <!-- /marker --> in page, without the header and the
// separator.
func tableRows(t *testing.T, page, marker string) [][]string {
	t.Helper()
	raw, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(raw), "<!-- "+marker+" -->")
	body, _, ok2 := strings.Cut(rest, "<!-- /"+marker+" -->")
	if !ok || !ok2 {
		t.Fatalf("%s has no <!-- %s --> ... <!-- /%s --> table", page, marker, marker)
	}
	var rows [][]string
	for _, line := range strings.Split(strings.TrimSpace(body), "\n")[2:] {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			t.Fatalf("%s: %q in the %s table is not a table row", page, line, marker)
		}
		// Cells never contain a bare "|" in these tables.
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		rows = append(rows, cells)
	}
	return rows
}

// goSources returns the Go files of the package in dir (tests included).
func goSources(t *testing.T, dir string) map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", dir, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files in %s (%v)", dir, err)
	}
	src := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src[f] = string(b)
	}
	return src
}

// TestFlannelSemanticsTable keeps flannel-compatibility.md true: every row
// names a test (`pkgdir TestName[/case]`) that exists, with that case, and
// every case of the Flannel-shaped tests in subnet/flannel_test.go has a row.
func TestFlannelSemanticsTable(t *testing.T) {
	rows := tableRows(t, "flannel-compatibility.md", "flannel-semantics")
	if len(rows) < 30 {
		t.Fatalf("only %d rows in the Flannel semantics table", len(rows))
	}
	named := map[string]bool{}
	ref := regexp.MustCompile("^`([a-z0-9/]+) (Test[A-Za-z0-9_]+)(?:/([^`]+))?`$")
	for _, r := range rows {
		if len(r) != 4 {
			t.Errorf("row %q has %d cells, want 4", r, len(r))
			continue
		}
		m := ref.FindStringSubmatch(r[3])
		if m == nil {
			t.Errorf("row %q: test cell %q is not `pkgdir TestName[/case]`", r[0]+" "+r[1], r[3])
			continue
		}
		dir, fn, sub := m[1], m[2], m[3]
		named[fn+"/"+sub] = true
		found := false
		for _, s := range goSources(t, dir) {
			if !strings.Contains(s, "func "+fn+"(") {
				continue
			}
			found = true
			if sub != "" && !strings.Contains(s, `"`+sub+`"`) {
				t.Errorf("row %q: %s in %s has no case %q", r[1], fn, dir, sub)
			}
		}
		if !found {
			t.Errorf("row %q: no func %s in %s", r[1], fn, dir)
		}
	}
	// The other way round: each case of subnet's Flannel tests is a row.
	src, err := os.ReadFile("../subnet/flannel_test.go")
	if err != nil {
		t.Fatal(err)
	}
	fn := ""
	funcRe := regexp.MustCompile(`^func (Test[A-Za-z0-9_]+)\(`)
	caseRe := regexp.MustCompile(`(?:name: |t\.Run\()"([^"]+)"`)
	for _, line := range strings.Split(string(src), "\n") {
		if m := funcRe.FindStringSubmatch(line); m != nil {
			fn = m[1]
			if !hasCase(named, fn) {
				t.Errorf("%s in subnet/flannel_test.go has no row in flannel-compatibility.md", fn)
			}
			continue
		}
		for _, m := range caseRe.FindAllStringSubmatch(line, -1) {
			if !named[fn+"/"+m[1]] {
				t.Errorf("case %s/%s of subnet/flannel_test.go has no row in flannel-compatibility.md", fn, m[1])
			}
		}
	}
}

func hasCase(named map[string]bool, fn string) bool {
	for k := range named {
		if strings.HasPrefix(k, fn+"/") {
			return true
		}
	}
	return false
}

// TestFlannelConfigKeyTable: each weft key named in the config-keys table
// of flannel-compatibility.md exists (a field of subnet.Config, of the vxlan
// backend's options, of the udp backend's options), and a key marked "none"
// does not, so the table changes when weft gains it.
func TestFlannelConfigKeyTable(t *testing.T) {
	structs := map[string]reflect.Type{
		"config": reflect.TypeFor[subnet.Config](),
		"vxlan":  reflect.TypeFor[vxlan.Options](),
		"udp":    reflect.TypeFor[udp.Options](),
	}
	rows := tableRows(t, "flannel-compatibility.md", "flannel-config-keys")
	if len(rows) == 0 {
		t.Fatal("no rows")
	}
	for _, r := range rows {
		where, weft := r[0], strings.Trim(r[2], "`")
		typ, ok := structs[where]
		if !ok {
			t.Errorf("row %q: unknown scope %q", r, where)
			continue
		}
		flannelKey := strings.Trim(r[1], "`")
		_, has := typ.FieldByName(flannelKey)
		switch {
		case strings.HasPrefix(weft, "none"):
			if has {
				t.Errorf("%s %s is marked none, but weft has it: update the row", where, flannelKey)
			}
		case weft != flannelKey:
			t.Errorf("%s %s: weft column %q, want the same key name", where, flannelKey, weft)
		case !has:
			t.Errorf("%s %s: weft has no such key", where, flannelKey)
		}
	}
}
